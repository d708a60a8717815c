"""ONNX Runtime (CPU) against JAX: latency of MamKPD's forward pass, side by side.

For each variant it builds the model (random parameters, 17 keypoints), converts its
forward pass (crops -> heatmaps, no flip test) with `onnx_export.model_to_onnx` (scan
"onnx", depth-wise convs as ONNX Convs, a dynamic batch), checks that ONNX Runtime's
heatmaps equal JAX's, then times each batch size in each runtime alternately: JAX
(jitted, `--jax_scan_impls`, "auto" is the model's default) and ONNX Runtime
(`--threads` intra-op threads, 0: its default). Timing as scripts/benchmark.py
(benchmarking.time_calls: first call apart as compile_s, warm-up, median of repeats).

    python scripts/benchmark_onnx.py --variants=tiny,base --batch_sizes=1,8 --json

Needs onnxruntime, onnx and jax2onnx (README, "Export to ONNX", for the install line).
"""

import datetime
import json
import sys
import time

import jax
import numpy as np
from absl import app, flags

from mamkpd_jax import benchmarking, inference, onnx_export

_VARIANTS = flags.DEFINE_list("variants", ["tiny", "base"], "MamKPD variants.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes.")
_JAX_SCAN_IMPLS = flags.DEFINE_list("jax_scan_impls", ["auto"], "Scans of the JAX rows.")
_HEIGHT = flags.DEFINE_integer("input_height", 256, "Input crop height.")
_WIDTH = flags.DEFINE_integer("input_width", 192, "Input crop width.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed calls (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls after the first.")
_THREADS = flags.DEFINE_integer("threads", 0, "ONNX Runtime intra-op threads; 0: default.")
_JSON = flags.DEFINE_bool("json", False, "End stdout with one JSON object.")


def random_crops(batch):
  return np.random.default_rng(0).integers(
      0, 256, (batch, _HEIGHT.value, _WIDTH.value, 3), np.uint8)


def onnx_session_of(model):
  """(session, export seconds) of model's forward pass converted with scan "onnx"."""
  start = time.perf_counter()
  proto = onnx_export.model_to_onnx(
      inference.with_model_changes(model, scan_impl=onnx_export.SCAN_IMPL),
      (_HEIGHT.value, _WIDTH.value))
  export_s = time.perf_counter() - start
  return onnx_export.onnx_session(proto.SerializeToString(), _THREADS.value), export_s


def benchmark_variant(variant, batches, timing):
  model = benchmarking.build_eval_model(variant, 17)
  session, export_s = onnx_session_of(model)
  rows = []
  for batch in batches:
    crops = random_crops(batch)
    want = np.asarray(jax.jit(model.__call__)(crops))            # default scan
    got = onnx_export.run_onnx(session, crops)["heatmaps"]
    rel_diff = float(np.abs(got - want).max() / np.abs(want).max())
    ort_call = lambda crops=crops: onnx_export.run_onnx(session, crops)
    compile_s, latency = benchmarking.time_calls(ort_call, lambda out: out, timing)
    rows.append(benchmarking.timing_row(batch, compile_s, latency, variant=variant,
                                        runtime="onnxruntime", export_s=round(export_s, 1),
                                        max_rel_diff_to_jax=rel_diff))
    for impl in _JAX_SCAN_IMPLS.value:
      jax_model = inference.with_model_changes(model, scan_impl=impl)
      row = benchmarking.time_model(jax_model, batch, _HEIGHT.value, _WIDTH.value, timing)
      rows.append(dict(row, variant=variant, runtime=f"jax ({impl})"))
    for row in rows[-1 - len(_JAX_SCAN_IMPLS.value):]:
      print(f"{variant:6s} batch {batch:3d} {row['runtime']:14s} "
            f"{row['latency_ms']:9.1f} ms  {row['latency_ms'] / batch:8.1f} ms/crop", flush=True)
  return rows


def run():
  timing = benchmarking.Timing(warmup=_WARMUP.value, repeats=_REPEATS.value)
  batches = [int(b) for b in _BATCH_SIZES.value]
  results = [row for variant in _VARIANTS.value
             for row in benchmark_variant(variant, batches, timing)]
  report = {"device": jax.devices()[0].device_kind, "jax_version": jax.__version__,
            "onnxruntime_version": onnx_export._version("onnxruntime"),   # pylint: disable=protected-access
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv), "results": results}
  if _JSON.value:
    print(json.dumps(report))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  run()


if __name__ == "__main__":
  app.run(main)
