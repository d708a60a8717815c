"""ONNX export of a trained model, and running the .onnx file in ONNX Runtime.

    from mamkpd_jax import inference, onnx_export
    estimator = inference.Estimator.from_workdir("/tmp/sample_openfield")
    onnx_export.export_onnx(estimator, "/tmp/model.onnx")          # any batch size
    session = onnx_export.onnx_session("/tmp/model.onnx")
    outputs = onnx_export.run_onnx(session, crops)    # crops (B, H, W, 3) uint8
    outputs["heatmaps"], outputs["keypoints"], outputs["scores"]
    onnx_export.onnx_metadata("/tmp/model.onnx")     # keypoint names, codec, input size

The graph is `inference.serving_fn`'s, the same function `inference.export_forward`
serialises with jax.export: crops (B, H, W, 3) uint8 RGB -> "heatmaps" (B, h, w, K)
float32 (flip-averaged when the config's eval.flip_test), "keypoints" (B, K, 2) input
pixels at each heatmap's argmax cell, "scores" (B, K). The metadata of
`inference.export_metadata` (keypoint names, flip indices, skeleton, codec, input size)
is stored as JSON in the model's metadata_props under "mamkpd".

It is converted by jax2onnx with two changes that leave the parameters alone:
`scan_impl="onnx"` (`kernels/selective_scan_onnx.py`: the scan with no Loop), and the
depth-wise convolutions traced as grouped convolutions
(`models.common.grouped_depthwise_convs`: one ONNX Conv node each). Export is
inference only. jax2onnx is installed without its dependencies (it pins an older
orbax-checkpoint than ours but never imports it): see `INSTALL`.
"""

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np

from mamkpd_jax import inference
from mamkpd_jax.models import common

INSTALL = 'pip install -e ".[onnx]" && pip install --no-deps jax2onnx onnx-ir'
SCAN_IMPL = "onnx"           # the only scan jax2onnx converts to a loop-free graph
METADATA_KEY = "mamkpd"      # metadata_props key of the JSON metadata
OPSET = 23                   # jax2onnx 0.17's default
INPUT_NAME = "crops"
OUTPUT_NAMES = ("heatmaps", "keypoints", "scores")   # serving_fn's keys, in this order


def _require(module):
  """Imports `module`; if it is missing, an ImportError naming the install line."""
  try:
    return __import__(module)
  except ImportError as error:
    raise ImportError(f"ONNX export needs {module!r}, which is not installed; install "
                      f"with: {INSTALL}") from error


def _onnx_estimator(estimator, scan_impl):
  """The estimator's parameters in a model that runs `scan_impl`."""
  if scan_impl != SCAN_IMPL:
    raise ValueError(f"ONNX export needs scan_impl={SCAN_IMPL!r} (no Loop, no "
                     f"associative_scan); got scan_impl={scan_impl!r}")
  model = inference.with_model_changes(estimator.model, scan_impl=scan_impl)
  config = estimator.config.copy_and_resolve_references()
  with config.unlocked():
    config.model.scan_impl = scan_impl
  return inference.Estimator(config, model, info=estimator.info)


def export_onnx(estimator, path, batch_size=None, scan_impl=SCAN_IMPL, opset=OPSET):
  """Writes `path` (.onnx): crops -> heatmaps, keypoints, scores (module docstring).

  Args:
    estimator: an `inference.Estimator` (`Estimator.from_workdir(...)`).
    path: the .onnx file to write.
    batch_size: None for a dynamic batch dimension "B", or a fixed int.
    scan_impl: must be "onnx"; any other is a ValueError (they do not convert).
    opset: the ONNX opset.
  Returns:
    the metadata dict stored in the file.
  """
  jax2onnx = _require("jax2onnx")
  onnx = _require("onnx")
  if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
    raise ValueError(f"batch_size must be None (dynamic) or a positive int, got "
                     f"{batch_size!r}")
  onnx_estimator = _onnx_estimator(estimator, scan_impl)
  serve = inference.serving_fn(onnx_estimator)
  outputs = lambda crops: tuple(serve(crops)[name] for name in OUTPUT_NAMES)
  height, width = onnx_estimator.input_size
  batch = jax.export.symbolic_shape("B")[0] if batch_size is None else batch_size
  spec = jax.ShapeDtypeStruct((batch, height, width, 3), jnp.uint8)
  logging.getLogger("jax2onnx").setLevel(logging.ERROR)   # its optional plugins' noise
  with common.grouped_depthwise_convs():
    model = jax2onnx.to_onnx(
        outputs, [spec],
        opset=opset, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
        model_name="mamkpd")
  # jax2onnx annotates some intermediate shapes with a symbolic batch wrongly (the
  # flip test's concatenation as "B", not 2B); ONNX Runtime infers them itself.
  del model.graph.value_info[:]
  metadata = {**inference.export_metadata(onnx_estimator, batch_size),
              "onnx_opset": opset, "jax2onnx_version": _version("jax2onnx")}
  onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(metadata)})
  onnx.save(model, path)
  return metadata


def _version(package):
  from importlib import metadata   # pylint: disable=import-outside-toplevel
  return metadata.version(package)


def onnx_metadata(path):
  """The metadata dict `export_onnx` stored in the .onnx file at `path`."""
  onnx = _require("onnx")
  model = onnx.load(path, load_external_data=False)
  props = {prop.key: prop.value for prop in model.metadata_props}
  if METADATA_KEY not in props:
    raise ValueError(f"{path}: no {METADATA_KEY!r} metadata; not written by export_onnx")
  return json.loads(props[METADATA_KEY])


def onnx_session(path, threads=None):
  """An onnxruntime.InferenceSession of `path` on the CPU (`threads` intra-op threads;
  None: onnxruntime's default, one per core)."""
  onnxruntime = _require("onnxruntime")
  options = onnxruntime.SessionOptions()
  if threads:
    options.intra_op_num_threads = threads
  return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run_onnx(session, crops):
  """crops (B, H, W, 3) uint8 -> {"heatmaps", "keypoints", "scores"} numpy arrays."""
  crops = np.asarray(crops)
  expected = session.get_inputs()[0].shape                    # ["B" or int, H, W, 3]
  if crops.dtype != np.uint8 or crops.ndim != 4 or list(crops.shape[1:]) != expected[1:]:
    raise ValueError(f"crops must be uint8 {['B', *expected[1:]]}, got {crops.dtype} "
                     f"{list(crops.shape)}")
  if isinstance(expected[0], int) and crops.shape[0] != expected[0]:
    raise ValueError(f"this model was exported for batch {expected[0]}, got "
                     f"{crops.shape[0]} crops")
  values = session.run(list(OUTPUT_NAMES), {session.get_inputs()[0].name: crops})
  return dict(zip(OUTPUT_NAMES, values))
