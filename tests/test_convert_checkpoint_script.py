"""`mamkpd convert` (mamkpd_jax.commands.convert, used here as a library): reads .npz /
.safetensors, writes a checkpoint that evaluation, config.init_from and the Estimator's
loader read back unchanged."""

import jax
import numpy as np
import pytest
from flax import nnx

from mamkpd_jax import config_lib, inference
from mamkpd_jax.commands import convert as script
from mamkpd_jax.training import checkpointing

from test_hrvmamba import random_state_dict, read_manifest


def test_reads_npz_and_safetensors_and_refuses_other_input(tmp_path):
  tensors = {"backbone.conv1.weight": np.ones((64, 3, 3, 3), np.float32)}
  np.savez(tmp_path / "w.npz", **tensors)
  from safetensors.numpy import save_file   # pylint: disable=g-import-not-at-top
  save_file(tensors, str(tmp_path / "w.safetensors"))
  for name in ("w.npz", "w.safetensors"):
    read = script.read_state_dict(str(tmp_path / name))
    np.testing.assert_array_equal(read["backbone.conv1.weight"], tensors["backbone.conv1.weight"])
  with pytest.raises(FileNotFoundError, match="missing.npz"):
    script.read_state_dict(str(tmp_path / "missing.npz"))
  (tmp_path / "w.bin").write_bytes(b"")
  with pytest.raises(ValueError, match="unknown format"):
    script.read_state_dict(str(tmp_path / "w.bin"))
  with pytest.raises(ValueError, match="HRVMamba checkpoints only"):
    script.convert_checkpoint(str(tmp_path / "w.npz"), config_lib.coco("tiny"),
                              str(tmp_path / "out"))


def test_converted_checkpoint_loads_for_eval_and_init_from(tmp_path):
  rows = read_manifest("tiny")
  state_dict = random_state_dict(rows)
  np.savez(tmp_path / "tiny.npz", **state_dict)
  config = config_lib.coco("tiny", family="hrvmamba")
  output = tmp_path / "converted"
  script.convert_checkpoint(str(tmp_path / "tiny.npz"), config, str(output))
  with pytest.raises(FileExistsError, match="not empty"):
    script.convert_checkpoint(str(tmp_path / "tiny.npz"), config, str(output))

  # --mode=eval / Estimator path: the workdir's config.json and the checkpoint.
  saved_config = inference.load_config_json(str(output / "config.json"))
  model, meta = inference.load_trained_model(saved_config, str(output))
  assert meta["converted_from"].endswith("tiny.npz")
  kernel = np.asarray(model.stage2[0].branches[0][0].op.in_proj.kernel[...])
  np.testing.assert_array_equal(
      kernel, state_dict["backbone.stage2.0.branches.0.0.op.in_proj.weight"].T)
  np.testing.assert_array_equal(
      np.asarray(model.bn1.var[...]), state_dict["backbone.bn1.running_var"])

  # --config.init_from: every model array is loaded.
  state = {"model": nnx.state(model)}
  loaded = checkpointing.restore_params_for_finetuning(str(output), state)
  assert loaded == len(jax.tree.leaves(checkpointing.to_saveable(state)["model"]))
