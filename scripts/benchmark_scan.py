"""Times SS2D's scan (cross-scan -> selective scan -> merge) at MamKPD's stage shapes.

For each variant, stage, batch size, implementation and pass (forward, forward+backward)
it reports the median time, the bytes the op must move at least, the bandwidth that
implies, and that as a fraction of the device's peak memory bandwidth. Compilation is
excluded (warm-up calls), every timed call ends with `block_until_ready`.

    python scripts/benchmark_scan.py --json                         # GPU defaults
    python scripts/benchmark_scan.py --variants=base --stages=3 --batch_sizes=1 \
        --repeats=3 --json                                          # a CPU smoke run

"reference" is the unfused pure-XLA pipeline (materialised cross-scan, chunked
associative scan, merge); "pallas" is the fused kernel. On a CPU the kernel runs in
interpret mode: its timings there say nothing about a GPU. The last stdout line with
--json is one JSON object: device, jax_version, date, command, peak_gbps, results[].

Byte model (minimum traffic of a fused op; activations in their dtype, outputs f32):
  forward:  per direction read u and delta (P channels each) and B, C (N each);
            write the merged y once (P channels, float32).
  backward: the forward's reads again (recomputation), read dy once, write du once,
            d(delta) per direction (float32), dB and dC per direction.
"""

import datetime
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from absl import app, flags, logging

from mamkpd_jax import kernels
from mamkpd_jax.models import model_config, ModelConfig

_VARIANTS = flags.DEFINE_list("variants", ["base", "large"], "MamKPD variants.")
_STAGES = flags.DEFINE_list("stages", ["1", "2", "3"], "Encoder stages (1-3).")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["64", "1"], "Batch sizes.")
_IMPLS = flags.DEFINE_list("impls", ["pallas", "reference"], "Scan implementations.")
_PASSES = flags.DEFINE_list("passes", ["forward", "forward_backward"], "Passes to time.")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"],
                           "dtype of u, delta, B, C (state and output are float32).")
_HEIGHT = flags.DEFINE_integer("input_height", 256, "Model input height.")
_WIDTH = flags.DEFINE_integer("input_width", 192, "Model input width.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed calls (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed calls after compilation.")
_PEAK = flags.DEFINE_float("peak_gbps", None,
                           "Peak memory bandwidth in GB/s (default: from the device name).")
_JSON = flags.DEFINE_bool("json", False, "End stdout with one JSON object.")

K = kernels.NUM_DIRECTIONS
# Published HBM bandwidth (GB/s) by device name fragment, most specific first.
PEAK_GBPS = [("H200", 4800.0), ("H100 PCIe", 2000.0), ("H100", 3350.0), ("A100", 2039.0)]


def peak_gbps(device):
  if _PEAK.value:
    return _PEAK.value
  for fragment, gbps in PEAK_GBPS:
    if fragment in device.device_kind:
      return gbps
  return None


def stage_shape(variant, stage, batch):
  """(batch, H, W, d_inner, d_state) of the SS2D scans in `stage` of `variant`."""
  config = ModelConfig.from_config(model_config(variant))
  stride = 4 * 2 ** (stage - 1)
  return (batch, _HEIGHT.value // stride, _WIDTH.value // stride,
          config.d_inner(config.dims[stage - 1]), config.d_state)


def make_inputs(shape, dtype):
  batch, height, width, per_group, d_state = shape
  keys = jax.random.split(jax.random.key(0), 5)
  act = lambda key, *s: jax.random.normal(key, s, jnp.float32).astype(dtype)
  channels = K * per_group
  return (act(keys[0], batch, height, width, per_group),
          act(keys[1], batch, height, width, K, per_group),
          -jnp.tile(jnp.arange(1, d_state + 1, dtype=jnp.float32), (channels, 1)),
          act(keys[2], batch, height, width, K, d_state),
          act(keys[3], batch, height, width, K, d_state),
          jnp.ones((channels,), jnp.float32),
          jnp.full((channels,), -4.0, jnp.float32))


def min_bytes(shape, dtype, pass_name):
  """The byte model of the module docstring."""
  batch, height, width, p, n = shape
  tokens, act = batch * height * width, jnp.dtype(dtype).itemsize
  forward = tokens * (K * (2 * p + 2 * n) * act + 4 * p)
  if pass_name == "forward":
    return forward
  backward = forward - tokens * 4 * p + tokens * (4 * p + 4 * p + K * (4 * p + 2 * n * 4))
  return forward + backward


def make_fn(impl, pass_name):
  scan = lambda *a: kernels.cross_selective_scan(*a, impl=impl)
  if pass_name == "forward":
    return jax.jit(scan)
  return jax.jit(jax.grad(lambda *a: jnp.sum(scan(*a)), argnums=tuple(range(7))))


def time_ms(fn, args):
  jax.block_until_ready(fn(*args))                       # compile
  for _ in range(_WARMUP.value):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append((time.perf_counter() - start) * 1e3)
  return statistics.median(times)


def run():
  device = jax.devices()[0]
  peak = peak_gbps(device)
  results = []
  for variant in _VARIANTS.value:
    for stage in map(int, _STAGES.value):
      for batch in map(int, _BATCH_SIZES.value):
        shape = stage_shape(variant, stage, batch)
        args = make_inputs(shape, _DTYPE.value)
        for pass_name in _PASSES.value:
          gbytes = min_bytes(shape, _DTYPE.value, pass_name) / 1e9
          for impl in _IMPLS.value:
            ms = time_ms(make_fn(impl, pass_name), args)
            gbps = gbytes / (ms / 1e3)
            row = dict(variant=variant, stage=stage, batch=batch, height=shape[1],
                       width=shape[2], d_inner=shape[3], d_state=shape[4], impl=impl,
                       dtype=_DTYPE.value, pass_name=pass_name, ms=round(ms, 4),
                       min_gbytes=round(gbytes, 4), gbps=round(gbps, 3),
                       fraction_of_peak=round(gbps / peak, 3) if peak else None,
                       interpret=(kernels.SCAN_IMPLS[impl].takes_interpret
                                  and jax.default_backend() == "cpu"))
            logging.info("%s", row)
            print(f"{variant:<6} stage {stage} batch {batch:>3} {pass_name:<16} "
                  f"{impl:<9} {ms:9.3f} ms  {gbps:8.1f} GB/s"
                  + (f"  {gbps / peak:6.1%} of peak" if peak else ""), flush=True)
            results.append(row)
  return dict(device=device.device_kind, platform=device.platform,
              jax_version=jax.__version__,
              date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              command=" ".join(["python"] + sys.argv), peak_gbps=peak, results=results)


def main(argv):
  del argv
  report = run()
  if _JSON.value:
    print(json.dumps(report))


if __name__ == "__main__":
  app.run(main)
