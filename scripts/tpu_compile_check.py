"""Compile the TPU scan kernel and both model families for Cloud TPUs, on a CPU host.

Lowering for TPU (`jax.export(..., platforms=["tpu"])`, tests/test_tpu_scan.py) stops at
the Mosaic module: Mosaic's own passes (vector layouts, VMEM allocation) and XLA:TPU run
only inside libtpu. With libtpu installed, JAX compiles ahead of time for a TPU
*topology* with no TPU attached (`jax.experimental.topologies`), running exactly those
passes. This script does that for each topology and writes what compiled, how long it
took and XLA's memory estimate; a kernel Mosaic rejects shows its message. It measures
no speed: that needs a TPU (`scripts/gpu_check.py` on a TPU VM).

libtpu is ~700 MB and makes every `import jax` probe for TPUs, so use a separate venv,
with the JAX version of the main one:

    python -m venv /tmp/tpu-aot
    /tmp/tpu-aot/bin/pip install -e . "jax[tpu]==$(python -c 'import jax; print(jax.__version__)')"
    /tmp/tpu-aot/bin/python scripts/tpu_compile_check.py --json=/tmp/tpu_compile.json

libtpu lets one process at a time hold /tmp/libtpu_lockfile; ALLOW_MULTIPLE_LIBTPU_LOAD=1
lifts that when another one is running. The models' train steps take minutes each to
compile on a CPU.
"""

import dataclasses
import datetime
import json
import platform
import sys
import time

from absl import app, flags

from mamkpd_jax.benchmarking import lowering

FLAGS = flags.FLAGS
flags.DEFINE_list("topologies", ["v4:2x2x1", "v5e:2x2", "v5p:2x2x1", "v6e:2x2"],
                  "Cloud TPU topologies to compile for (one chip of each is used).")
flags.DEFINE_list("models", ["mamkpd:base", "hrvmamba:tiny"],
                  "family:variant pairs whose forward and train step are compiled; empty: "
                  "the kernel cases only.")
flags.DEFINE_list("model_topologies", ["v5e:2x2"], "topologies the models are compiled for "
                  "(each train step takes minutes to compile on a CPU).")
flags.DEFINE_integer("batch", 8, "images per model step")
flags.DEFINE_string("json", "", "write the rows here as JSON")

# (plain or cross, shape, d_state): plain (b, L, channels, G); cross (b, H, W, P). The
# cross maps are the token counts of MamKPD's stage 1 at 256x192 (32x24), HRVMamba's
# 64x48 branch at 256x192, and a 384x288 input's (96x72).
KERNEL_CASES = (("plain", (2, 100, 200, 4), 16), ("cross", (2, 32, 24, 192), 1),
                ("cross", (2, 64, 48, 192), 1), ("cross", (2, 64, 48, 192), 16),
                ("cross", (1, 96, 72, 128), 1))
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass
class Row:
  topology: str
  device_kind: str
  what: str                      # "kernel ..." or "model ..."
  ok: bool
  compile_s: float
  tpu_kernels: int = 0           # Mosaic custom calls in the compiled program
  temp_mib: float | None = None  # XLA's temporary-buffer estimate
  error: str = ""


def scan_args(kind, shape, d_state, dtype):
  """ShapeDtypeStructs of a scan's seven arguments (no arrays: nothing is run)."""
  import jax
  import jax.numpy as jnp
  s = lambda *dims, dt=dtype: jax.ShapeDtypeStruct(dims, jnp.dtype(dt))
  if kind == "plain":
    b, length, channels, groups = shape
    return (s(b, length, channels), s(b, length, channels), s(channels, d_state, dt="float32"),
            s(b, length, groups, d_state), s(b, length, groups, d_state),
            s(channels, dt="float32"), s(channels, dt="float32"))
  b, h, w, p = shape
  return (s(b, h, w, p), s(b, h, w, 4, p), s(4 * p, d_state, dt="float32"),
          s(b, h, w, 4, d_state), s(b, h, w, 4, d_state), s(4 * p, dt="float32"),
          s(4 * p, dt="float32"))


def kernel_functions(kind):
  """The kernel's forward and the gradient of its sum w.r.t. all seven arguments."""
  import jax
  import jax.numpy as jnp
  from mamkpd_jax import kernels
  scan = kernels.selective_scan if kind == "plain" else kernels.cross_selective_scan
  forward = lambda *a: scan(*a, impl="pallas_tpu", interpret=False)
  grad = jax.grad(lambda *a: jnp.sum(forward(*a)), argnums=tuple(range(7)))
  return {"forward": forward, "forward+backward": grad}


def model_functions(family, variant, batch):
  """{name: (fn, args)}: a model's forward and train step with scan_impl="pallas_tpu",
  abstract (`lowering.train_step_programs`)."""
  from mamkpd_jax import models
  from mamkpd_jax.models import hrvmamba
  config = (models.model_config if family == "mamkpd" else hrvmamba.model_config)(variant)
  config.scan_impl = "pallas_tpu"
  with lowering.accelerator_tracing():
    return lowering.train_step_programs(config, batch)


def attempt(topology, device, what, fn, args):
  """One Row: compile, count Mosaic kernels, or keep the error's first lines."""
  start = time.perf_counter()
  try:
    with lowering.accelerator_tracing():
      compiled = lowering.compile_for_tpu(device, fn, args)
  except Exception as error:   # pylint: disable=broad-except  (Mosaic / XLA rejections)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return Row(topology, device.device_kind, what, False, round(time.perf_counter() - start, 1),
               error=" | ".join(lines[:4]))
  memory = compiled.memory_analysis()
  return Row(topology, device.device_kind, what, True, round(time.perf_counter() - start, 1),
             compiled.as_text().count(f'custom_call_target="{lowering.TPU_KERNEL_MARKER}"'),
             None if memory is None else round(memory.temp_size_in_bytes / 2**20, 2))


def run(topologies, model_specs, model_topologies, batch, report=print):
  rows = []
  for topology in topologies:
    device = lowering.tpu_topology_device(topology)
    for kind, shape, d_state in KERNEL_CASES:
      for dtype in DTYPES:
        for name, fn in kernel_functions(kind).items():
          what = f"kernel {kind} {shape} N={d_state} {dtype} {name}"
          rows.append(attempt(topology, device, what, fn, scan_args(kind, shape, d_state,
                                                                    dtype)))
          report(rows[-1])
    if topology not in model_topologies:
      continue
    for spec in model_specs:
      family, variant = spec.split(":")
      for name, (fn, args) in model_functions(family, variant, batch).items():
        rows.append(attempt(topology, device, f"model {family}-{variant} b{batch} {name}",
                            fn, args))
        report(rows[-1])
  return rows


def _print_row(row):
  status = "ok  " if row.ok else "FAIL"
  extra = (f"{row.tpu_kernels} Mosaic kernels, temp {row.temp_mib} MiB" if row.ok
           else row.error)
  print(f"{status} {row.topology:10s} {row.what:60s} {row.compile_s:6.1f} s  {extra}",
        flush=True)


def main(argv):
  del argv
  import jax
  try:
    import libtpu  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    sys.exit("tpu_compile_check: libtpu is not installed; see this script's docstring "
             "(pip install \"jax[tpu]==<your jax version>\" in a separate venv)")
  rows = run(FLAGS.topologies, FLAGS.models, FLAGS.model_topologies, FLAGS.batch,
             report=_print_row)
  failed = [row for row in rows if not row.ok]
  print(f"{len(rows) - len(failed)} of {len(rows)} compiled")
  if FLAGS.json:
    from importlib import metadata
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes")
    with open(FLAGS.json, "w", encoding="utf-8") as f:
      json.dump({"date": now, "jax": jax.__version__, "libtpu": metadata.version("libtpu"),
                 "python": platform.python_version(),
                 "host": platform.processor() or platform.machine(),
                 "command": " ".join(sys.argv),
                 "rows": [dataclasses.asdict(row) for row in rows]}, f, indent=1)
  sys.exit(1 if failed else 0)


if __name__ == "__main__":
  app.run(main)
