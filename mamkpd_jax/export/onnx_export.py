"""ONNX export of a trained model, and running the .onnx file in ONNX Runtime.

    from mamkpd_jax import inference
    from mamkpd_jax.export import onnx_export
    estimator = inference.Estimator.from_workdir("/tmp/sample_openfield")
    onnx_export.export_onnx(estimator, "/tmp/model.onnx")          # any batch size
    session = onnx_export.onnx_session("/tmp/model.onnx")
    outputs = onnx_export.run_onnx(session, crops)    # crops (B, H, W, 3) uint8
    outputs["heatmaps"], outputs["keypoints"], outputs["scores"]
    onnx_export.onnx_metadata("/tmp/model.onnx")     # keypoint names, codec, input size

The graph is `serving.serving_fn`'s, the same function `serving.export_forward`
serialises with jax.export: crops (B, H, W, 3) uint8 RGB -> "heatmaps" (B, h, w, K)
float32 (flip-averaged when the config's eval.flip_test), "keypoints" (B, K, 2) input
pixels at each heatmap's argmax cell, "scores" (B, K). Its metadata (export.metadata's
schema, artefact kind "onnx": keypoint names, flip indices, skeleton, codec, input size,
config) is stored as JSON in the model's metadata_props under "mamkpd".

It is converted by jax2onnx with two changes that leave the parameters alone:
`scan_impl="onnx"` (`kernels/selective_scan_onnx.py`: the scan with no Loop), and the
depth-wise convolutions traced as grouped convolutions
(`models.common.depthwise_conv_mode("grouped")`: one ONNX Conv node each). Export is
inference only. jax2onnx is installed without its dependencies (it pins an older
orbax-checkpoint than ours but never imports it): see `INSTALL`. `model_to_onnx`
converts a bare model's forward pass (no flip test, no metadata) for benchmarks
(`mamkpd benchmark --scan_impls=auto,onnxruntime`); ONNX Runtime against JAX, and
where its time goes: kernels/README.md, "ONNX Runtime against JAX".

`quantize="int8"` (`mamkpd export --onnx_quantize=int8`, opt-in) makes the wide matmuls
int8 with ONNX Runtime's dynamic quantisation (`quantize_int8`); the artefact's
metadata records it (artefact.onnx_quantize). Its speed and held-out accuracy:
docs/export.md.
"""

import contextlib
import functools
import importlib
import itertools
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from mamkpd_jax import inference
from mamkpd_jax.models import common
from mamkpd_jax.export import metadata, serving

INSTALL = 'pip install -e ".[onnx]" && pip install --no-deps jax2onnx'
SCAN_IMPL = "onnx"           # the only scan jax2onnx converts to a loop-free graph
METADATA_KEY = "mamkpd"      # metadata_props key of the JSON metadata
KIND = "onnx"                # its artefact.kind
OPSET = 23                   # jax2onnx 0.17's default
INPUT_NAME = "crops"
QUANTIZE = (None, "int8")    # export_onnx's `quantize` values (module docstring)
QUANTIZE_MIN_DIM = 64        # int8 matmuls only where both weight sides are this wide
OUTPUT_NAMES = ("heatmaps", "keypoints", "scores")   # serving_fn's keys, in this order


def _require(module):
  """Imports `module`; if it is missing, an ImportError naming the install line."""
  try:
    return __import__(module)
  except ImportError as error:
    raise ImportError(f"ONNX export needs {module!r}, which is not installed; install "
                      f"with: {INSTALL}") from error


def _check_scan_impl(scan_impl):
  if scan_impl != SCAN_IMPL:
    raise ValueError(f"ONNX export needs scan_impl={SCAN_IMPL!r} (no Loop, no "
                     f"associative_scan); got scan_impl={scan_impl!r}")


def _onnx_estimator(estimator, scan_impl):
  """The estimator's parameters in a model that runs `scan_impl`."""
  _check_scan_impl(scan_impl)
  model = inference.with_model_changes(estimator.model, scan_impl=scan_impl)
  config = estimator.config.copy_and_resolve_references()
  with config.unlocked():
    config.model.scan_impl = scan_impl
  return inference.Estimator(config, model, info=estimator.info)


def _crops_spec(batch_size, input_size):
  """(B or batch_size, H, W, 3) uint8; B symbolic (a dynamic ONNX dimension)."""
  if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
    raise ValueError(f"batch_size must be None (dynamic) or a positive int, got "
                     f"{batch_size!r}")
  batch = jax.export.symbolic_shape("B")[0] if batch_size is None else batch_size
  return jax.ShapeDtypeStruct((batch, *input_size, 3), jnp.uint8)


# jax2onnx (0.16-0.17) checks after each equation that its outputs are in the graph by
# scanning every node built so far (`output_binding._value_is_graph_connected`): quadratic
# in the graph's size (MamKPD-B at 256x192: 86 s to convert; with this, 22 s). An output
# just built is among the newest nodes, so these are looked at first, newest first; any
# value not found there gets jax2onnx's own full check, so every answer is jax2onnx's.
_NEWEST_NODES = 256


def _connected_newest_first(ctx, value, full_check, matches, newest=None):
  """jax2onnx's `_value_is_graph_connected(ctx, value)`, looking first among the newest
  nodes for one that outputs `value` (`matches`: jax2onnx's own comparison)."""
  newest = _NEWEST_NODES if newest is None else newest
  try:
    recent = itertools.islice(reversed(ctx.builder.nodes), newest)
    if any(matches(output, value) for node in recent for output in node.outputs):
      return True
  except TypeError:                                          # nodes not reversible
    pass
  return full_check(ctx, value)


@contextlib.contextmanager
def _newest_nodes_first():
  """While active, jax2onnx's graph-connectivity check looks at the newest nodes first."""
  try:
    binding = importlib.import_module("jax2onnx.converter.output_binding")
    full_check = binding._value_is_graph_connected           # pylint: disable=protected-access
    matches = binding._value_matches_reference               # pylint: disable=protected-access
  except (ImportError, AttributeError):                      # another jax2onnx: as it is
    yield
    return
  binding._value_is_graph_connected = functools.partial(     # pylint: disable=protected-access
      _connected_newest_first, full_check=full_check, matches=matches)
  try:
    yield
  finally:
    binding._value_is_graph_connected = full_check           # pylint: disable=protected-access


def to_onnx(fn, spec, output_names, opset=OPSET):
  """jax2onnx's ModelProto of fn(crops) -> tuple, depth-wise convs as ONNX Convs."""
  jax2onnx = _require("jax2onnx")
  logging.getLogger("jax2onnx").setLevel(logging.ERROR)   # its optional plugins' noise
  with common.depthwise_conv_mode("grouped"), _newest_nodes_first():
    model = jax2onnx.to_onnx(fn, [spec], opset=opset, input_names=[INPUT_NAME],
                             # one LayerNormalization node, not jax2onnx's
                             # decomposition, which runs in float64 in ORT
                             normalization_mode="prefer_native",
                             output_names=list(output_names), model_name="mamkpd")
  # jax2onnx annotates some intermediate shapes with a symbolic batch wrongly (the
  # flip test's concatenation as "B", not 2B); ONNX Runtime infers them itself.
  del model.graph.value_info[:]
  return model


def model_to_onnx(model, input_size, batch_size=None, opset=OPSET, quantize=None):
  """A bare model's forward pass, crops -> ("heatmaps",), as a ModelProto (no flip
  test, no metadata: for benchmarks; export_onnx is the serving artefact).

  `model` must already run scan_impl="onnx" (`inference.with_model_changes`);
  quantize: as export_onnx's.
  """
  _check_scan_impl(model.config.scan_impl)
  model.eval()
  return _quantized(to_onnx(lambda crops: (model(crops),), _crops_spec(batch_size, input_size),
                            ("heatmaps",), opset), quantize)


def _constants_folded(model, directory):
  """The model with its constant subgraphs computed (ONNX Runtime's basic,
  hardware-independent graph optimisations): the weights jax2onnx builds from
  parameters in the graph (x_proj's transpose, dt_proj's padded blocks) become
  initializers, which quantisation needs."""
  onnx, onnxruntime = _require("onnx"), _require("onnxruntime")
  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3
  options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
  options.optimized_model_filepath = os.path.join(directory, "folded.onnx")
  onnxruntime.InferenceSession(model.SerializeToString(), options,
                               providers=["CPUExecutionProvider"])
  return onnx.load(options.optimized_model_filepath)


def _gemms_as_matmuls(model):
  """The model with every Gemm of a constant weight (alpha 1, beta 1 or 0, no transA) as
  MatMul (+ Add of its bias): ONNX Runtime's dynamic quantisation quantises MatMuls
  only. Same values: the transposed weight is stored transposed."""
  from onnx import helper, numpy_helper   # pylint: disable=import-outside-toplevel
  weights = {init.name: init for init in model.graph.initializer}
  nodes = []
  for node in model.graph.node:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if (node.op_type != "Gemm" or node.input[1] not in weights or attrs.get("transA", 0)
        or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) not in (0.0, 1.0)):
      nodes.append(node)
      continue
    inputs = list(node.input[:2 if attrs.get("beta", 1.0) == 0.0 else 3])  # beta 0: no C
    weight = node.input[1]
    if attrs.get("transB", 0):
      transposed = numpy_helper.to_array(weights[weight]).T.copy()
      weight = f"{weight}_transposed"
      model.graph.initializer.append(numpy_helper.from_array(transposed, weight))
    product = node.output[0] if len(inputs) < 3 else f"{node.output[0]}_matmul"
    nodes.append(helper.make_node("MatMul", [inputs[0], weight], [product],
                                  name=f"{node.name}_matmul"))
    if len(inputs) > 2:
      nodes.append(helper.make_node("Add", [product, inputs[2]], [node.output[0]],
                                    name=f"{node.name}_bias"))
  del model.graph.node[:]
  model.graph.node.extend(nodes)
  return model


def _wide_matmuls(model, min_dim=QUANTIZE_MIN_DIM):
  """Names of the MatMul nodes whose constant weight is at least min_dim x min_dim."""
  weights = {init.name: init.dims for init in model.graph.initializer}
  return [node.name for node in model.graph.node
          if node.op_type == "MatMul" and node.input[1] in weights
          and len(weights[node.input[1]]) == 2 and min(weights[node.input[1]]) >= min_dim]


def quantize_int8(model):
  """ModelProto -> ModelProto with the weights of its wide matmuls (in_proj, out_proj,
  the CMM linears: both sides >= QUANTIZE_MIN_DIM) int8 per output channel and their
  activations quantised per call (ONNX Runtime's dynamic quantisation: int8 GEMMs,
  AVX-512 VNNI where the CPU has it). The low-rank x_proj and dt_proj (a few dozen
  channels on one side), the scan, the convolutions and the norms stay float32:
  quantising the activations costs a pass over them that a narrow matmul does not
  repay (measured: docs/export.md)."""
  import tempfile   # pylint: disable=import-outside-toplevel
  onnx = _require("onnx")
  quantization = importlib.import_module("onnxruntime.quantization")
  with tempfile.TemporaryDirectory() as directory:
    model = _gemms_as_matmuls(_constants_folded(model, directory))
    path = os.path.join(directory, "int8.onnx")
    quantization.quantize_dynamic(model, path, op_types_to_quantize=["MatMul"],
                                  nodes_to_quantize=_wide_matmuls(model), per_channel=True,
                                  weight_type=quantization.QuantType.QInt8)
    return onnx.load(path)


def _check_quantize(quantize):
  if quantize not in QUANTIZE:
    raise ValueError(f"onnx quantize must be one of {QUANTIZE} (None: float32), got "
                     f"{quantize!r}")


def _quantized(model, quantize):
  """`model` as export_onnx's `quantize` asks (QUANTIZE); else a ValueError."""
  _check_quantize(quantize)
  if quantize is None:
    return model
  _require("onnxruntime")
  return quantize_int8(model)


def export_onnx(estimator, path, batch_size=None, scan_impl=SCAN_IMPL, opset=OPSET,
                quantize=None):
  """Writes `path` (.onnx): crops -> heatmaps, keypoints, scores (module docstring).

  Args:
    estimator: an `inference.Estimator` (`Estimator.from_workdir(...)`).
    path: the .onnx file to write.
    batch_size: None for a dynamic batch dimension "B", or a fixed int.
    scan_impl: must be "onnx"; any other is a ValueError (they do not convert).
    opset: the ONNX opset.
    quantize: None (float32) or "int8": the matmul weights int8, their activations
      quantised per call (`quantize_int8`; opt-in, less exact: docs/export.md).
  Returns:
    the metadata dict stored in the file (export.metadata's schema, kind "onnx";
    artefact.onnx_quantize records `quantize`).
  """
  onnx = _require("onnx")
  _check_quantize(quantize)                                   # before minutes of tracing
  spec = _crops_spec(batch_size, estimator.input_size)
  onnx_estimator = _onnx_estimator(estimator, scan_impl)
  serve = serving.serving_fn(onnx_estimator)
  model = _quantized(to_onnx(lambda crops: tuple(serve(crops)[name] for name in OUTPUT_NAMES),
                             spec, OUTPUT_NAMES, opset), quantize)
  meta = metadata.of_estimator(onnx_estimator, metadata.serving_artefact(
      KIND, os.path.basename(path), batch_size, jax_version=jax.__version__,
      onnx_opset=opset, jax2onnx_version=_version("jax2onnx"), onnx_quantize=quantize))
  onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(meta)})
  onnx.save(model, path)
  return meta


def _version(package):
  from importlib import metadata   # pylint: disable=import-outside-toplevel
  return metadata.version(package)


def onnx_metadata(path):
  """The metadata `export_onnx` stored in the .onnx file at `path`, in export.metadata's
  current schema (older files' metadata is read too)."""
  onnx = _require("onnx")
  model = onnx.load(path, load_external_data=False)
  props = {prop.key: prop.value for prop in model.metadata_props}
  if METADATA_KEY not in props:
    raise ValueError(f"{path}: no {METADATA_KEY!r} metadata; not written by export_onnx")
  return metadata.loads(props[METADATA_KEY], f"{path} (metadata_props {METADATA_KEY!r})")


def onnx_session(path, threads=None):
  """An onnxruntime.InferenceSession of `path` on the CPU (`threads` intra-op threads;
  None: onnxruntime's default, one per core)."""
  onnxruntime = _require("onnxruntime")
  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3        # errors only: not jax2onnx's unused constants
  if threads:
    options.intra_op_num_threads = threads
  return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run_onnx(session, crops):
  """crops (B, H, W, 3) uint8 -> {output name: numpy array}: "heatmaps", "keypoints",
  "scores" for export_onnx's files."""
  crops = np.asarray(crops)
  expected = session.get_inputs()[0].shape                    # ["B" or int, H, W, 3]
  if crops.dtype != np.uint8 or crops.ndim != 4 or list(crops.shape[1:]) != expected[1:]:
    raise ValueError(f"crops must be uint8 {['B', *expected[1:]]}, got {crops.dtype} "
                     f"{list(crops.shape)}")
  if isinstance(expected[0], int) and crops.shape[0] != expected[0]:
    raise ValueError(f"this model was exported for batch {expected[0]}, got "
                     f"{crops.shape[0]} crops")
  names = [output.name for output in session.get_outputs()]
  return dict(zip(names, session.run(names, {session.get_inputs()[0].name: crops})))
