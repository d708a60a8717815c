"""Whole models timed: benchmark variant names, the jitted forward pass and train step on
random crops, ONNX Runtime beside JAX, and the scan's share of a model's time.

`mamkpd benchmark` (mamkpd_jax/commands/benchmark.py) and scripts/gpu_check.py both
time through `model_call`, so a row means the same in either.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mamkpd_jax import config_lib, inference, kernels
from mamkpd_jax.benchmarking import timing as timing_lib
from mamkpd_jax.models import build_model, common, model_config, model_title, stats
from mamkpd_jax.models.hrvmamba import variants as hrvmamba_variants
from mamkpd_jax.training import parallel, train

HRVMAMBA_PREFIX = "hrvmamba-"   # benchmark variant names of the second family
IDENTITY = "identity"           # the benchmark-only scan (kernels.SCAN_REGISTRY)
ONNXRUNTIME = "onnxruntime"     # a row of the model exported to ONNX, run by ORT


def variant_model_config(variant, num_keypoints):
  """config.model of a benchmark variant: a MamKPD variant ("base"), or "hrvmamba-tiny",
  "hrvmamba-small", "hrvmamba-base"."""
  if variant.startswith(HRVMAMBA_PREFIX):
    return hrvmamba_variants.model_config(variant[len(HRVMAMBA_PREFIX):], num_keypoints)
  return model_config(variant, num_keypoints=num_keypoints)


def variant_title(variant):
  """'MamKPD-base', 'HRVMamba-tiny', ... of a benchmark variant name."""
  return model_title(variant_model_config(variant, num_keypoints=17))


def build_eval_model(variant, num_keypoints):
  """An eval-mode model of benchmark `variant` (float32, its default scan), random
  parameters."""
  model = build_model(variant_model_config(variant, num_keypoints), seed=0)
  model.eval()
  return model


def model_sizes(model, height, width):
  flops = stats.forward_flops(model, height, width)
  return {"params": stats.param_counts(model)["total"], "gflops": round(flops["gmacs"], 4)}


def with_scan(model, dtype, impl):
  """`model`'s parameters in a model computing in `dtype` with scan `impl`.

  A benchmark-only scan ("identity") is set on the typed config directly: config
  validation leaves it out on purpose, so that no configured model can train with it.
  """
  entry = kernels.SCAN_REGISTRY.get(impl)
  benchmark_only = entry is not None and entry.benchmark_only
  return inference.with_model_changes(model, validate=not benchmark_only, dtype=dtype,
                                      scan_impl=impl)


def inference_call(model, crops):
  """() -> heatmaps: the jitted forward pass of eval-mode `model` on `crops` (numpy)."""
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda state, images: nnx.merge(graphdef, state)(images))
  images = jax.device_put(crops)
  return lambda: forward(state, images)


def _mesh(batch):
  """Every device when they split the batch evenly, else the first one alone."""
  if batch % jax.device_count() == 0:
    return parallel.make_mesh()
  return jax.sharding.Mesh(np.array(jax.devices()[:1]), (parallel.DATA_AXIS,))


def train_call(model, crops):
  """() -> metrics: one step of training.train's step (the paper's Adam, data-parallel)
  on `crops` and random targets of the model's heatmap shape; the state is carried
  from call to call. `model` itself is left as it was (the step donates a copy)."""
  n, height, width = crops.shape[:3]
  targets_shape = (n, height // common.HEATMAP_STRIDE, width // common.HEATMAP_STRIDE,
                   model.config.num_keypoints)                       # (N, h, w, K)
  graphdef, state = nnx.split(model)
  copy = nnx.merge(graphdef, jax.tree.map(jnp.copy, state))
  mesh = _mesh(len(crops))
  trainer, state, _ = train.trainer_for_model(copy, config_lib.train_config(), 1, mesh)
  rng = np.random.default_rng(1)
  batch = parallel.global_batch({
      "image": crops, "heatmaps": rng.random(targets_shape, np.float32),
      "keypoint_weights": np.ones((len(crops), targets_shape[-1]), np.float32)}, mesh)
  carried = {"state": state}

  def call():
    carried["state"], metrics = trainer.step_fn(carried["state"], batch)
    return metrics
  return call


MODES = {"inference": inference_call, "train": train_call}


def model_call(model, batch, height, width, mode="inference"):
  """(call, sync) of the forward pass (or a train step) on `timing_lib.random_crops`, for
  `timing_lib.time_in_turns`."""
  crops = timing_lib.random_crops(batch, height, width)
  return MODES[mode](model, crops), jax.block_until_ready


def time_model(model, batch, height, width, timing, mode="inference"):
  """One timing_row of the forward pass (or a train step) on random uint8 crops."""
  compile_s, latency = timing_lib.time_calls(
      *model_call(model, batch, height, width, mode), timing)
  return timing_lib.timing_row(batch, compile_s, latency, mode=mode)


def add_scan_shares(rows):
  """scan_share = 1 - identity latency / row latency, when identity was timed alike."""
  identity = {(r["variant"], r["dtype"], r["mode"], r["batch"]): r["latency_ms"]
              for r in rows if r["scan_impl"] == IDENTITY}
  for row in rows:
    base = identity.get((row["variant"], row["dtype"], row["mode"], row["batch"]))
    if base is not None:
      row["scan_share"] = round(1 - base / row["latency_ms"], 3)
      row["x_identity"] = round(row["latency_ms"] / base, 3)


# ------------------------------------------------------------------ ONNX Runtime


def onnxruntime_session(model, height, width, threads=None):
  """(ONNX Runtime session, export seconds) of model's forward pass (crops -> heatmaps,
  no flip test), converted with scan "onnx" and a dynamic batch; needs jax2onnx and
  onnxruntime."""
  from mamkpd_jax.export import onnx_export   # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  proto = onnx_export.model_to_onnx(
      inference.with_model_changes(model, scan_impl=onnx_export.SCAN_IMPL), (height, width))
  export_s = time.perf_counter() - start
  return onnx_export.onnx_session(proto.SerializeToString(), threads), export_s


def onnxruntime_call(session, batch, height, width):
  """(call, sync) of the ONNX Runtime session's forward pass on `random_crops`, for
  `timing_lib.time_in_turns` (ONNX Runtime returns when done: sync does nothing)."""
  from mamkpd_jax.export import onnx_export   # pylint: disable=g-import-not-at-top
  crops = timing_lib.random_crops(batch, height, width)
  return lambda: onnx_export.run_onnx(session, crops), lambda out: out


def onnxruntime_rel_diff(session, model, batch, height, width):
  """max |ORT - JAX| / max |JAX| of the heatmaps (JAX: model's own scan) on the crops."""
  from mamkpd_jax.export import onnx_export   # pylint: disable=g-import-not-at-top
  crops = timing_lib.random_crops(batch, height, width)
  want = np.asarray(jax.jit(model.__call__)(crops))
  got = onnx_export.run_onnx(session, crops)["heatmaps"]
  return float(np.abs(got - want).max() / np.abs(want).max())
