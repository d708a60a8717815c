"""export.metadata: the one schema of model files (weights, jax.export, ONNX) and its
reader's errors, which name the file and the field.

The written metadata is checked against the config and keypoint layout it describes
(pipeline.make_codec, pipeline.dataset_info); older files are read in
test_compatibility.py.
"""

import copy
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mamkpd_jax import config_lib, inference
from mamkpd_jax.data_pipelines import pipeline
from mamkpd_jax.export import metadata, serving

SOURCE = "some/model.json"


@pytest.fixture(scope="module")
def config():
  config = config_lib.openfield("tiny")
  config.data.input_height, config.data.input_width = 96, 64
  return inference.with_data_root(config)


@pytest.fixture(scope="module")
def written(config):
  """describe() of the tiny open-field config, as a jax.export folder's model.json."""
  info = pipeline.dataset_info(config)
  return metadata.describe(config, info, metadata.serving_artefact(
      "jax_export", "model.jax_exported", None, platforms=["cpu"]))


def test_describe_holds_the_config_and_layout(config, written):
  info, codec = pipeline.dataset_info(config), pipeline.make_codec(config)
  assert (written["format"], written["format_version"]) == ("mamkpd-jax-model", 2)
  assert written["artefact"]["kind"] == "jax_export"
  assert written["artefact"]["batch_size"] == "symbolic"
  assert written["artefact"]["platforms"] == ["cpu"]
  assert set(written["artefact"]["outputs"]) == {"heatmaps", "keypoints", "scores"}
  assert written["input_size"] == [96, 64] and written["heatmap_size"] == [24, 16]
  assert written["keypoint_names"] == list(info.keypoint_names)
  assert written["flip_indices"] == list(info.flip_indices)
  assert written["flip_pairs"] == [["leftear", "rightear"]]
  np.testing.assert_allclose(written["sigmas"], info.sigmas)
  assert written["codec"]["name"] == config.data.codec
  np.testing.assert_allclose(written["codec"]["scale"], codec.scale)
  assert written["flip_test"] is bool(config.eval.flip_test)
  assert written["config"]["model"]["variant"] == "tiny"
  assert set(written["config"]) == {"model", "data", "eval"}


def test_written_metadata_reads_back_unchanged(written, tmp_path):
  path = metadata.write(written, str(tmp_path))
  assert metadata.read(path) == written
  assert metadata.read(str(tmp_path)) == written                 # its folder too
  config = metadata.config_of(written)
  assert config.data.input_height == 96 and config.model.dims == (16, 32, 64)
  assert metadata.info_of(written).flip_indices == (0, 2, 1, 3)


@pytest.mark.parametrize("field", ["artefact", "family", "variant", "input_size",
                                   "heatmap_size", "flip_test", "codec", "config",
                                   "keypoint_names", "flip_indices"])
def test_missing_field_is_named(written, field):
  meta = copy.deepcopy(written)
  del meta[field]
  with pytest.raises(ValueError, match=f"{SOURCE}: field '{field}'"):
    metadata.validate(meta, SOURCE)


@pytest.mark.parametrize("change, message", [
    ({"input_size": [64]}, "field 'input_size' must be \\[height, width\\]"),
    ({"input_size": [64, 0]}, "field 'input_size' must be \\[height, width\\]"),
    ({"flip_test": 1}, "field 'flip_test' must be a bool"),
    ({"artefact": {"kind": "tflite"}}, "field 'artefact.kind' must be one of"),
    ({"codec": {"sigma": 2.0}}, "field 'codec.name' must be a string"),
    ({"config": {"data": {}}}, "field 'config.model' is missing"),
    ({"flip_indices": [0, 1, 1, 3]}, "keypoint layout"),
    ({"skeleton": [[0, 9]]}, "keypoint layout"),
    ({"format": "other"}, "field 'format' is 'other', not 'mamkpd-jax-model'"),
    ({"format_version": 1}, "field 'format_version' must be an int >= 2"),
    ({"format_version": 3}, "format_version 3 is newer than this code's 2; update"),
])
def test_bad_field_is_named(written, change, message):
  with pytest.raises(ValueError, match=f"{SOURCE}: {message}"):
    metadata.validate({**copy.deepcopy(written), **change}, SOURCE)


def test_weights_need_every_config_section_and_sigmas(written):
  weights = {**copy.deepcopy(written), "artefact": {"kind": "weights"}}
  metadata.validate(weights, SOURCE)
  del weights["config"]["eval"]
  with pytest.raises(ValueError, match="field 'config.eval' is missing"):
    metadata.validate(weights, SOURCE)
  weights = {**copy.deepcopy(written), "artefact": {"kind": "weights"}}
  del weights["sigmas"]
  with pytest.raises(ValueError, match="field 'sigmas' is missing"):
    metadata.validate(weights, SOURCE)


def test_unreadable_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="model.json not found"):
    metadata.read(str(tmp_path))
  (tmp_path / "model.json").write_text("{not json")
  with pytest.raises(ValueError, match="model.json: not valid json"):
    metadata.read(str(tmp_path))
  (tmp_path / "model.json").write_text("[1, 2]")
  with pytest.raises(ValueError, match="model.json: expected a json object, got list"):
    metadata.read(str(tmp_path))
  with pytest.raises(ValueError, match="x.onnx: not valid json"):
    metadata.loads("{", "x.onnx")


def test_save_exported_refuses_other_metadata_and_writes_nothing(written, tmp_path):
  exported = jax.export.export(jax.jit(lambda x: x + 1))(
      jax.ShapeDtypeStruct((2,), jnp.float32))
  with pytest.raises(ValueError, match="describes a weights artefact, not jax_export"):
    serving.save_exported(exported, {**written, "artefact": {"kind": "weights"}},
                          str(tmp_path / "a"))
  with pytest.raises(ValueError, match="model.json: field 'format' is None"):
    serving.save_exported(exported, {}, str(tmp_path / "b"))
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
  _, meta_path = serving.save_exported(exported, written, str(tmp_path / "c"))
  assert json.loads(open(meta_path, encoding="utf-8").read())["artefact"]["platforms"] == \
      list(exported.platforms)
  assert serving.load_metadata(str(tmp_path / "c" / "model.jax_exported")) == \
      metadata.read(meta_path)


def test_onnx_metadata_names_the_file(written, tmp_path):
  onnx = pytest.importorskip("onnx")
  from mamkpd_jax.export import onnx_export   # pylint: disable=import-outside-toplevel
  from onnx import TensorProto, helper        # pylint: disable=import-outside-toplevel
  value = helper.make_tensor_value_info("crops", TensorProto.UINT8, [1])
  graph = helper.make_graph([helper.make_node("Identity", ["crops"], ["out"])], "g",
                            [value], [helper.make_tensor_value_info(
                                "out", TensorProto.UINT8, [1])])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
  onnx_meta = {**written, "artefact": metadata.serving_artefact("onnx", "m.onnx", 2)}
  helper.set_model_props(model, {onnx_export.METADATA_KEY: json.dumps(onnx_meta)})
  onnx.save(model, str(tmp_path / "m.onnx"))
  assert onnx_export.onnx_metadata(str(tmp_path / "m.onnx"))["artefact"]["batch_size"] == 2
  helper.set_model_props(model, {onnx_export.METADATA_KEY: json.dumps({"format": "x"})})
  onnx.save(model, str(tmp_path / "bad.onnx"))
  with pytest.raises(ValueError, match=r"bad.onnx \(metadata_props 'mamkpd'\): field "
                                       "'format'"):
    onnx_export.onnx_metadata(str(tmp_path / "bad.onnx"))
