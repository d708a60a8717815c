"""Files written before the package was regrouped still load and give the same answers.

tests/data/compat_63ae4c9 holds what the code of commit 63ae4c9 wrote (its README says
how): a training workdir (config.json + an Orbax checkpoint with the optimiser), the
metadata of each export format, and that code's outputs on them (outputs.npz). Today's
code must load them and reproduce those outputs; the workdir must also resume training
and evaluate. The weights that 63ae4c9 shipped (weights/mamkpd_tiny_openfield until it was
retrained: weights_model.json and weights_model.safetensors there) load and
predict as then; today's committed weights load in the current schema.
"""

import json
import pathlib
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import flags

from mamkpd_jax import config_lib, inference
from mamkpd_jax.data_pipelines import pipeline
from mamkpd_jax.evaluation import evaluate
from mamkpd_jax.export import metadata, pretrained
from mamkpd_jax.models import build_model, parse_model_config
from mamkpd_jax.training import train

REPO = pathlib.Path(__file__).resolve().parents[1]
OLD = REPO / "tests/data/compat_63ae4c9"
OLD_WORKDIR = OLD / "workdir"
WEIGHTS = REPO / "weights/mamkpd_tiny_openfield"       # today's, retrained since
OLD_WEIGHTS = OLD / "weights_model.safetensors"        # the tensors 63ae4c9 shipped
FRAME = REPO / "data/samples/dlc-openfield/labeled-data/m4s1/img0100.png"
BOX = [[61.5407, 384.2046, 128.5116, 44.2728]]          # as record_outputs.py
# The command line that wrote OLD_WORKDIR (its README), as a user would re-run it.
OLD_RUN = {"data.input_height": 64, "data.input_width": 64, "data.num_workers": 0,
           "batch_size": 4, "train.warmup_steps": 2, "train.log_every_steps": 1,
           "train.checkpoint_every_steps": 2, "train.eval_every_epochs": 0,
           "train.num_steps": 2}


@pytest.fixture(scope="module")
def recorded():
  """What the code of 63ae4c9 computed (record_outputs.py)."""
  return dict(np.load(OLD / "outputs.npz"))


def old_run_config(**changes):
  """configs/sample_openfield.py with OLD_RUN's overrides (and changes)."""
  config = config_lib.load_config_file(str(REPO / "configs/sample_openfield.py"))
  config.data.root = str(REPO / config.data.root)        # wherever pytest runs from
  for dotted, value in {**OLD_RUN, **changes}.items():
    *section, field = dotted.split(".")
    (config[section[0]] if section else config)[field] = value
  return config


def assert_same_outputs(estimator, recorded, name):
  """estimator's heatmaps and frame prediction equal recorded[name_*] (to float32
  rounding: the recording was compiled at the default XLA level)."""
  height, width = estimator.input_size
  crops = np.random.default_rng(0).integers(0, 256, (2, height, width, 3), np.uint8)
  want = recorded[f"{name}_heatmaps"]
  np.testing.assert_allclose(estimator.crop_heatmaps(crops), want, rtol=1e-4,
                             atol=1e-5 * np.abs(want).max())
  prediction = estimator.predict(str(FRAME), BOX)
  np.testing.assert_allclose(prediction.keypoints, recorded[f"{name}_keypoints"],
                             atol=1e-2)
  np.testing.assert_allclose(prediction.keypoint_scores,
                             recorded[f"{name}_keypoint_scores"], rtol=1e-3)


# ------------------------------------------------------------------ shipped weights


def test_committed_weights_load_in_the_current_schema():
  """weights/mamkpd_tiny_openfield (retrained since 63ae4c9, so no recorded outputs):
  its model.json as written is in the current schema, and it loads."""
  written = json.loads((WEIGHTS / "model.json").read_text())
  assert (written["format"], written["format_version"]) == (metadata.FORMAT,
                                                            metadata.FORMAT_VERSION)
  estimator = inference.Estimator.from_pretrained(
      "weights/mamkpd_tiny_openfield", compiler_options=inference.FAST_COMPILE_CPU)
  assert estimator.info.keypoint_names == ("snout", "leftear", "rightear", "tailbase")
  assert estimator.input_size == (64, 64)


def test_weights_folder_of_format_version_1_loads(recorded, tmp_path):
  """The folder 63ae4c9 shipped, its model.json as written (format_version 1) beside
  its tensors: loads and predicts as then."""
  old_json = json.loads((OLD / "weights_model.json").read_text())
  assert (old_json["format"], old_json["format_version"]) == ("mamkpd-jax-pretrained", 1)
  shutil.copy(OLD / "weights_model.json", tmp_path / "model.json")
  shutil.copy(OLD_WEIGHTS, tmp_path / "model.safetensors")
  meta = pretrained.load_metadata(str(tmp_path))
  assert meta["format_version"] == metadata.FORMAT_VERSION
  assert meta["artefact"] == {"kind": "weights", "file": "model.safetensors"}
  assert meta["config"] == old_json["config"] and meta["sigmas"] == old_json["sigmas"]
  estimator = inference.Estimator.from_pretrained(
      tmp_path, compiler_options=inference.FAST_COMPILE_CPU)
  assert meta["flip_test"] is estimator.flip_test is True
  np.testing.assert_allclose(meta["codec"]["scale"], estimator.codec.scale)
  assert_same_outputs(estimator, recorded, "weights")


# ------------------------------------------------------------------ export metadata


def test_old_jax_export_model_json_reads_in_the_current_schema():
  old = json.loads((OLD / "jax_export_model.json").read_text())
  assert "format" not in old
  meta = metadata.read(str(OLD / "jax_export_model.json"))
  assert meta["format"] == metadata.FORMAT
  assert meta["artefact"]["kind"] == "jax_export"
  assert meta["artefact"]["platforms"] == old["platforms"] == ["cpu"]
  assert meta["artefact"]["batch_size"] == "symbolic"
  assert meta["artefact"]["outputs"] == old["outputs"]
  assert meta["codec"] == {"name": "udp", "scale": old["codec_scale"]}
  assert meta["config"] == {"model": old["model"]}
  assert (meta["family"], meta["variant"]) == ("mamkpd", "tiny")
  assert meta["flip_pairs"] == [["leftear", "rightear"]]
  for key in ("input_size", "heatmap_size", "keypoint_names", "flip_indices", "skeleton",
              "flip_test"):
    assert meta[key] == old[key], key


def test_old_onnx_metadata_reads_in_the_current_schema():
  text = (OLD / "onnx_metadata_props.json").read_text()
  old = json.loads(text)
  meta = metadata.loads(text, "old.onnx")
  assert meta["artefact"]["kind"] == "onnx" and "platforms" not in meta["artefact"]
  assert meta["artefact"]["onnx_opset"] == old["onnx_opset"]
  assert meta["config"]["model"]["scan_impl"] == "onnx"
  assert meta["keypoint_names"] == old["keypoint_names"]


def test_codec_scale_of_upgraded_weights_is_the_codecs():
  """A format_version 1 file has no codec scale; the upgrade's (from the codec of its
  sizes) equals the one the old jax.export file stored for the same 64x64 model."""
  old = json.loads((OLD / "weights_model.json").read_text())
  old.update(input_size=[64, 64], heatmap_size=[16, 16])
  exported = json.loads((OLD / "jax_export_model.json").read_text())
  assert metadata.validate(old, "x")["codec"]["scale"] == exported["codec_scale"]


# ------------------------------------------------------------------ training workdir


def test_old_workdir_predicts_as_before(recorded):
  estimator = inference.Estimator.from_workdir(
      str(OLD_WORKDIR), compiler_options=inference.FAST_COMPILE_CPU)
  assert estimator.input_size == (64, 64)
  assert_same_outputs(estimator, recorded, "workdir")


def _no_update(model_graphdef, opt_graphdef):
  """A train step that keeps the state (train.make_train_step's signature)."""
  del model_graphdef, opt_graphdef

  def step(state, batch):
    del batch
    zero = jax.numpy.zeros((), jax.numpy.float32)
    return state, {"loss": zero, "grad_norm": zero}

  return step


def saved_state(step_folder):
  """A checkpoint step's whole training state ({"model", "opt"}) as numpy arrays."""
  path = str(step_folder / "state")
  with ocp.PyTreeCheckpointer() as checkpointer:
    tree = checkpointer.metadata(path).item_metadata.tree
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return checkpointer.restore(path, args=ocp.args.PyTreeRestore(tree,
                                                                  restore_args=args))


def in_this_checkout(workdir, config):
  """Points workdir's saved data positions at this checkout's training source.

  Grain checks a position against the source's repr, whose digest covers the absolute
  image paths: a workdir resumes only where its data was (here /tmp/old, where it was
  written). The position itself (indices, seed) is left as saved.
  """
  datasets = pipeline.create_datasets(pipeline.resolve_custom_config(config))
  source = repr(pipeline.InstanceSource(datasets.train_instances))
  for position in workdir.glob("checkpoints/*/data/process_*.json"):
    saved = json.loads(position.read_text())
    assert saved["data_source"].startswith("InstanceSource(92 instances, sha1 ")
    position.write_text(json.dumps({**saved, "data_source": source}, indent=4))


def test_old_workdir_resumes_training(tmp_path):
  """Re-running the old command with more steps resumes from step 2: with a train step
  that changes nothing, step 4 saves exactly the model and optimiser state of step 2
  (a fresh start would save the initial parameters, which differ)."""
  workdir = tmp_path / "workdir"
  shutil.copytree(OLD_WORKDIR, workdir)
  if not flags.FLAGS.is_parsed():        # Grain reads absl flags
    flags.FLAGS.mark_as_parsed()
  config = old_run_config(**{"train.num_steps": 4})
  in_this_checkout(workdir, config)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(train, "make_train_step", _no_update)
    train.train_and_evaluate(config, str(workdir), evaluate_during_training=False)
  assert not (workdir / "unusable_checkpoints").exists()
  old, new = saved_state(OLD_WORKDIR / "checkpoints/2"), saved_state(
      workdir / "checkpoints/4")
  assert set(new) == {"model", "opt"}
  jax.tree.map(np.testing.assert_array_equal, new, old)
  fresh = build_model(parse_model_config(config.model), seed=config.seed)
  trained, initial = pretrained.model_tensors(inference.Estimator.from_workdir(
      str(workdir)).model), pretrained.model_tensors(fresh)
  assert any(not np.array_equal(trained[name], initial[name]) for name in trained)


def test_old_workdir_evaluates_as_before(tmp_path):
  """mamkpd eval --checkpoint=OLD_WORKDIR: the predictions and metrics the old code
  wrote for the same evaluation."""
  config = old_run_config()
  metrics = evaluate.evaluate(config, str(tmp_path), str(OLD_WORKDIR))
  want = json.loads((OLD / "eval_metrics_step2.json").read_text())["metrics"]
  assert set(want) <= set(metrics)
  for name, value in want.items():
    assert metrics[name] == pytest.approx(value, abs=1e-6), name
  got = json.loads((tmp_path / "eval/predictions_step2.json").read_text())
  old = json.loads((OLD / "eval_predictions_step2.json").read_text())
  assert [p["image_id"] for p in got] == [p["image_id"] for p in old] and len(old) == 24
  got_kpts, old_kpts = (np.array([p["keypoints"] for p in preds]).reshape(len(preds), -1, 3)
                        for preds in (got, old))                     # (N, K, 3)
  np.testing.assert_allclose(got_kpts[..., :2], old_kpts[..., :2], atol=1e-2)
  np.testing.assert_allclose(got_kpts[..., 2], old_kpts[..., 2], rtol=1e-3)
