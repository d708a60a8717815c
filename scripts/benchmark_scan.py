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

Byte model: mamkpd_jax/benchmarking/scan.py (minimum traffic of a fused op).
"""

import datetime
import json
import sys

import jax
from absl import app, flags, logging

from mamkpd_jax.benchmarking import roofline
from mamkpd_jax.benchmarking import scan as scan_lib
from mamkpd_jax.benchmarking import timing as timing_lib

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


def timing():
  return timing_lib.Timing(warmup=_WARMUP.value, repeats=_REPEATS.value)


def run():
  device = jax.devices()[0]
  peak = _PEAK.value or roofline.peak_gbps(device.device_kind)
  results = []
  for variant in _VARIANTS.value:
    for stage in map(int, _STAGES.value):
      for batch in map(int, _BATCH_SIZES.value):
        shape = scan_lib.scan_stage_shape(variant, stage, batch, _HEIGHT.value,
                                          _WIDTH.value)
        args = scan_lib.scan_inputs(shape, _DTYPE.value)
        for pass_name in _PASSES.value:
          for impl in _IMPLS.value:
            fn = scan_lib.scan_fn(impl, pass_name)
            _, seconds = timing_lib.time_calls(lambda: fn(*args), jax.block_until_ready,
                                               timing())
            row = dict(variant=variant, stage=stage, **scan_lib.scan_row(
                shape, _DTYPE.value, pass_name, impl, seconds, peak))
            logging.info("%s", row)
            print(f"{variant:<6} stage {stage} batch {batch:>3} {pass_name:<16} "
                  f"{impl:<9} {row['ms']:9.3f} ms  {row['gbps']:8.1f} GB/s"
                  + (f"  {row['fraction_of_peak']:6.1%} of peak" if peak else ""),
                  flush=True)
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
