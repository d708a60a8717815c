"""The compiled CPU scan against another version of its source, timed in turns.

    git show 0e335c1:kernels/selective_scan_cpu.cc > /tmp/baseline.cc
    python scripts/compare_cpu_scan.py --baseline=/tmp/baseline.cc

The baseline source is compiled with the same compiler and flags as the project's CPU
kernels (kernels/cpu_kernels.py) into a scratch library, its handler registered under
another FFI target, and both scan MamKPD's stage shapes (random inputs in SS2D's
ranges, a low-rank delta) in turns (benchmarking.timing). Prints per shape the two
medians, their ratio (baseline / current: > 1 is faster now) and the largest relative
difference of the outputs.
"""

import ctypes
import pathlib
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from mamkpd_jax.benchmarking import timing as timing_lib
from mamkpd_jax.kernels import cpu_kernels, selective_scan_cpu

_BASELINE = flags.DEFINE_string("baseline", None, "The baseline selective_scan_cpu.cc.")
_SHAPES = flags.DEFINE_list("shapes", ["8x64x48x192x6", "8x32x24x384x12", "8x16x12x768x24",
                                       "1x64x48x192x6"],
                            "batch x H x W x channels x dt rank (MamKPD-B's stages at "
                            "256x192).")
_REPEATS = flags.DEFINE_integer("repeats", 9, "Calls timed in turns (median).")
BASELINE_TARGET = "mamkpd_cross_scan_forward_baseline"


def register_baseline(source):
  """Compiles `source` as cpu_kernels would and registers it as BASELINE_TARGET."""
  with tempfile.TemporaryDirectory() as scratch:     # loaded libraries stay mapped
    output = pathlib.Path(scratch) / "baseline.so"
    subprocess.run(cpu_kernels.compile_command(cpu_kernels.find_compiler(), output,
                                               sources=[source]), check=True)
    library = ctypes.cdll.LoadLibrary(str(output))
  jax.ffi.register_ffi_target(BASELINE_TARGET, jax.ffi.pycapsule(
      library.MamkpdCrossScanForward), platform="cpu")


def scan_inputs(batch, height, width, channels, rank, seed=0):
  """The kernel's operands: x, dts, weight_t, A, B, C, sum_k D_k, bias (float32)."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape: jnp.asarray(rng.standard_normal(shape).astype(np.float32))
  return (normal(batch, height, width, channels), 0.5 * normal(batch, height, width, 4, rank),
          0.1 * normal(4, rank, channels), -jnp.exp(0.5 * normal(4, 1, channels)),
          normal(batch, height, width, 4, 1), normal(batch, height, width, 4, 1),
          normal(channels), 0.5 * normal(4, channels))


def scan_call(target, inputs):
  call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(inputs[0].shape, jnp.float32),
                          vmap_method="sequential")
  fn = jax.jit(lambda *a: call(*a, low_rank=True, softplus=True))
  return lambda: fn(*inputs)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _BASELINE.value or not pathlib.Path(_BASELINE.value).is_file():
    raise app.UsageError(f"--baseline: no such file {_BASELINE.value!r}")
  cpu_kernels.load()
  register_baseline(_BASELINE.value)
  for shape in _SHAPES.value:
    inputs = scan_inputs(*map(int, shape.split("x")))
    calls = {"baseline": scan_call(BASELINE_TARGET, inputs),
             "current": scan_call(selective_scan_cpu.TARGET, inputs)}
    want, got = (np.asarray(calls[name]()) for name in ("baseline", "current"))
    timed = timing_lib.time_in_turns(
        {name: (call, jax.block_until_ready) for name, call in calls.items()},
        timing_lib.Timing(2, _REPEATS.value))
    baseline_s, current_s = timed["baseline"][1], timed["current"][1]
    print(f"{shape:<18} baseline {baseline_s * 1e3:8.2f} ms  current "
          f"{current_s * 1e3:8.2f} ms  x{baseline_s / current_s:.2f}  max rel diff "
          f"{np.abs(got - want).max() / np.abs(want).max():.1e}", flush=True)


if __name__ == "__main__":
  app.run(main)
