"""onnx_export: the .onnx file of the tiny open-field model runs in ONNX Runtime and
equals the estimator (Estimator.crop_heatmaps, flip test on) within 1e-4 relative;
its int8 variant (--onnx_quantize=int8) stays close to the float32 file; bad input (no
jax2onnx, another scan, wrong crops, an unknown quantisation) is a clear error.

Skipped without jax2onnx / onnxruntime (installed with --no-deps: docs/export.md, "ONNX").
"""

import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from mamkpd_jax.export import onnx_export
from test_export import estimator, workdir  # pylint: disable=unused-import  (fixtures)

REPO = pathlib.Path(__file__).resolve().parents[1]
pytest.importorskip("jax2onnx", reason="ONNX export needs jax2onnx (README)")
pytest.importorskip("onnxruntime", reason="ONNX export tests run it in onnxruntime")


def _export(workdir, tmp_path_factory, *flags):
  """`mamkpd export --format=onnx *flags` (dynamic batch): (path of model.onnx, stdout)."""
  output = tmp_path_factory.mktemp("onnx") / "out"
  result = subprocess.run(
      [sys.executable, "-m", "mamkpd_jax.cli", "export", f"--checkpoint={workdir}",
       f"--output={output}", "--format=onnx", *flags],
      capture_output=True, text=True, check=False, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  return str(output / "model.onnx"), result.stdout


@pytest.fixture(scope="module")
def exported(workdir, tmp_path_factory):
  """The float32 file: the module's one float32 conversion (jax2onnx takes minutes even
  for the tiny model: its per-equation graph checks grow with the graph), so every
  test reads this file."""
  return _export(workdir, tmp_path_factory)


@pytest.fixture(scope="module")
def exported_int8(exported, tmp_path_factory):
  """The float32 file quantised as `export --onnx_quantize=int8` quantises its graph
  (onnx_export.quantize_int8), without a second conversion (minutes)."""
  import onnx   # pylint: disable=import-outside-toplevel
  path = str(tmp_path_factory.mktemp("onnx_int8") / "model.onnx")
  onnx.save(onnx_export.quantize_int8(onnx.load(exported[0])), path)
  return path


@pytest.fixture(scope="module")
def onnx_path(exported):
  return exported[0]


def test_onnxruntime_equals_the_estimator(estimator, onnx_path):
  assert estimator.flip_test
  session = onnx_export.onnx_session(onnx_path)
  assert session.get_inputs()[0].shape[0] == "B"
  crops = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), np.uint8)
  out = onnx_export.run_onnx(session, crops)
  want = estimator.crop_heatmaps(crops)                     # (3, 16, 16, 4)
  np.testing.assert_allclose(out["heatmaps"], want, rtol=1e-4,
                             atol=1e-4 * np.abs(want).max())
  flat = out["heatmaps"].reshape(3, -1, 4)
  cell = np.argmax(flat, axis=1)                            # (3, K)
  np.testing.assert_allclose(out["keypoints"],
                             np.stack([cell % 16, cell // 16], -1) * estimator.codec.scale)
  np.testing.assert_allclose(out["scores"], flat.max(1))
  single = onnx_export.run_onnx(session, crops[:1])         # another batch size
  np.testing.assert_allclose(single["heatmaps"], out["heatmaps"][:1], rtol=1e-5,
                             atol=1e-6)


def test_metadata_is_in_the_file(onnx_path):
  meta = onnx_export.onnx_metadata(onnx_path)
  assert meta["keypoint_names"] == ["snout", "leftear", "rightear", "tailbase"]
  assert meta["input_size"] == [64, 64] and meta["codec"]["name"] == "udp"
  assert meta["artefact"]["kind"] == "onnx" and meta["artefact"]["file"] == "model.onnx"
  assert meta["artefact"]["batch_size"] == "symbolic"
  assert meta["config"]["model"]["scan_impl"] == "onnx"
  assert meta["format"] == "mamkpd-jax-model" and meta["format_version"] == 2


def test_wrong_crops_are_an_error(onnx_path):
  session = onnx_export.onnx_session(onnx_path)
  with pytest.raises(ValueError, match=r"crops must be uint8 \['B', 64, 64, 3\]"):
    onnx_export.run_onnx(session, np.zeros((1, 64, 64, 3), np.float32))
  with pytest.raises(ValueError, match="crops must be uint8"):
    onnx_export.run_onnx(session, np.zeros((1, 32, 64, 3), np.uint8))


def test_other_scan_is_an_error(estimator, tmp_path):
  with pytest.raises(ValueError, match="needs scan_impl='onnx'.*'chunked'"):
    onnx_export.export_onnx(estimator, str(tmp_path / "m.onnx"), scan_impl="chunked")
  with pytest.raises(ValueError, match="batch_size must be None"):
    onnx_export.export_onnx(estimator, str(tmp_path / "m.onnx"), batch_size=0)
  assert not (tmp_path / "m.onnx").exists()


def test_missing_jax2onnx_names_the_install_line(estimator, tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "jax2onnx", None)       # import raises ImportError
  assert "pip install --no-deps jax2onnx" in onnx_export.INSTALL
  with pytest.raises(ImportError, match=re.escape(onnx_export.INSTALL)):
    onnx_export.export_onnx(estimator, str(tmp_path / "m.onnx"))


def test_export_script_checks_the_file_in_onnxruntime(exported):
  _, stdout = exported
  diff = float(stdout.split("max |heatmap difference| to the model ")[1].split()[0])
  assert diff < 1e-4


def test_fixed_batch_file_refuses_other_sizes(tmp_path):
  """A file exported at --batch_size=2 has its input dimension fixed (as _crops_spec(2)
  gives); run_onnx then rejects 3 crops by name. Checked on a one-node file with that
  input, not a second conversion of the model (minutes)."""
  import onnx   # pylint: disable=import-outside-toplevel
  from onnx import TensorProto, helper   # pylint: disable=import-outside-toplevel
  assert onnx_export._crops_spec(2, (64, 64)).shape == (2, 64, 64, 3)  # pylint: disable=protected-access
  crops = helper.make_tensor_value_info("crops", TensorProto.UINT8, [2, 64, 64, 3])
  out = helper.make_tensor_value_info("heatmaps", TensorProto.UINT8, [2, 64, 64, 3])
  graph = helper.make_graph([helper.make_node("Identity", ["crops"], ["heatmaps"])],
                            "fixed", [crops], [out])
  path = str(tmp_path / "fixed.onnx")
  onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
  session = onnx_export.onnx_session(path)
  assert onnx_export.run_onnx(session, np.ones((2, 64, 64, 3), np.uint8))[
      "heatmaps"].shape == (2, 64, 64, 3)
  with pytest.raises(ValueError, match="exported for batch 2, got 3 crops"):
    onnx_export.run_onnx(session, np.zeros((3, 64, 64, 3), np.uint8))


def test_newest_nodes_first_answers_as_jax2onnx(monkeypatch):
  """onnx_export's speed-up of jax2onnx's graph-connectivity check changes no answer:
  at every check of a conversion, looking at the newest 1 or 256 nodes first answers
  as jax2onnx's own full scan; the file is the same; jax2onnx's check is restored."""
  import jax                                              # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp                                 # pylint: disable=g-import-not-at-top
  import onnx_ir as ir                                    # pylint: disable=g-import-not-at-top
  from jax2onnx.converter import output_binding           # pylint: disable=g-import-not-at-top
  own_check = output_binding._value_is_graph_connected     # pylint: disable=protected-access
  matches = output_binding._value_matches_reference        # pylint: disable=protected-access
  answers = []

  def compared_check(ctx, value):
    for asked in (value, ir.Value(name="in_no_graph")):   # connected, then not
      answers.append((own_check(ctx, asked), *(
          onnx_export._connected_newest_first(ctx, asked, own_check, matches, newest)
          for newest in (1, 256))))                       # pylint: disable=protected-access
    return own_check(ctx, value)

  weights = np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32)

  def fn(x):                                              # (B, 8) -> (B, 8), (B,)
    for _ in range(12):
      x = jnp.tanh(x @ weights) + jnp.mean(x, axis=-1, keepdims=True)
    return x, jnp.max(x, axis=-1)

  spec = jax.ShapeDtypeStruct((jax.export.symbolic_shape("B")[0], 8), jnp.float32)
  fast = onnx_export.to_onnx(fn, spec, ("y", "peak")).SerializeToString()
  assert output_binding._value_is_graph_connected is own_check   # pylint: disable=protected-access
  monkeypatch.setattr(output_binding, "_value_is_graph_connected", compared_check)
  monkeypatch.setattr(onnx_export, "_NEWEST_NODES", 0)    # the wrapper defers to the spy
  slow = onnx_export.to_onnx(fn, spec, ("y", "peak")).SerializeToString()
  assert len(answers) > 100 and {want for want, *_ in answers} == {True, False}
  assert all(want == got_1 == got_256 for want, got_1, got_256 in answers)
  assert fast == slow


def test_int8_file_is_close_to_float32(exported, exported_int8):
  """The int8 file (wide matmuls int8, activations quantised per call) against the
  float32 file on the same crops. Bound: each quantised matmul rounds its activations
  to 1/255 of their range and its weights to 1/127 of each channel's, so heatmaps move
  by a few percent of their peak, not more (measured on MamKPD-B's random weights:
  5-6%, with every matmul quantised); the argmax cells, what the keypoints are, agree
  for most (crop, keypoint) pairs. A float32 file (no quantisation) or a broken one
  (another model's weights, a wrong dequantisation scale) fails the bounds."""
  import onnx   # pylint: disable=import-outside-toplevel
  session = onnx_export.onnx_session(exported[0])
  int8 = onnx_export.onnx_session(exported_int8)
  ops = {node.op_type for node in onnx.load(exported_int8).graph.node}
  assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops, ops
  crops = np.random.default_rng(1).integers(0, 256, (8, 64, 64, 3), np.uint8)
  want = onnx_export.run_onnx(session, crops)["heatmaps"]
  got = onnx_export.run_onnx(int8, crops)["heatmaps"]
  assert np.abs(got - want).max() <= 0.1 * np.abs(want).max()
  assert not np.array_equal(got, want)                      # it is quantised
  cells = lambda h: h.reshape(len(h), -1, h.shape[-1]).argmax(1)   # (8, K)
  assert np.mean(cells(got) == cells(want)) >= 0.75
  assert onnx_export.onnx_metadata(exported[0])["artefact"]["onnx_quantize"] is None
  assert "float32" in exported[1]                         # the command names the dtype


def test_unknown_quantisation_is_an_error(estimator, tmp_path):
  from mamkpd_jax.commands import export as export_command   # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match=r"onnx quantize must be one of .*got 'int4'"):
    onnx_export.export_onnx(estimator, str(tmp_path / "m.onnx"), quantize="int4")
  assert not (tmp_path / "m.onnx").exists()
  with pytest.raises(ValueError, match=r"--onnx_quantize must be one of \['int8'\], got 'fp8'"):
    export_command.run(None, str(tmp_path), "onnx", onnx_quantize="fp8")
  with pytest.raises(ValueError, match="--onnx_quantize=int8 needs --format=onnx, not 'jax'"):
    export_command.run(None, str(tmp_path), "jax", onnx_quantize="int8")


def test_gemms_as_matmuls_keeps_the_values():
  """The Gemm -> MatMul (+ Add) rewrite quantisation relies on: same outputs in ONNX
  Runtime for transB 0/1, with a bias, and beta 0 (bias ignored)."""
  import onnx   # pylint: disable=import-outside-toplevel
  from onnx import TensorProto, helper, numpy_helper   # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  weight = rng.standard_normal((6, 5)).astype(np.float32)
  inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(weight.T.copy(), "wt"),
           numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "c")]
  nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["y0"], name="g0"),
           helper.make_node("Gemm", ["x", "wt"], ["y1"], name="g1", transB=1),
           helper.make_node("Gemm", ["x", "w", "c"], ["y2"], name="g2", beta=0.0)]
  outputs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [3, 5]) for i in range(3)]
  graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
      "x", TensorProto.FLOAT, [3, 6])], outputs, inits)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
  run = lambda m: onnx_export.onnx_session(m.SerializeToString()).run(
      None, {"x": np.arange(18, dtype=np.float32).reshape(3, 6) / 7})
  want = run(model)
  rewritten = onnx_export._gemms_as_matmuls(onnx.ModelProto.FromString(  # pylint: disable=protected-access
      model.SerializeToString()))
  assert "Gemm" not in {node.op_type for node in rewritten.graph.node}
  for got, expected in zip(run(rewritten), want):
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
