"""jax.export of the serving function: the artefact reloads and matches the model.

The model is test_inference.write_workdir's (the tiny open-field model at 64x64, flip
test on); the artefact is compared with Estimator.crop_heatmaps (test_decode checks the
whole decode path: evaluation, the Estimator and the artefact agree).
"""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from mamkpd_jax import inference
from mamkpd_jax.export import serving

REPO = pathlib.Path(__file__).resolve().parents[1]
# Exported.serialize needs flatbuffers, which jax does not install (setup.py must list it).
pytest.importorskip("flatbuffers", reason="jax.export serialisation needs flatbuffers")
BATCH = 2


@pytest.fixture(scope="module")
def workdir(trained_workdir):
  return trained_workdir


@pytest.fixture(scope="module")
def estimator(workdir):
  return inference.Estimator.from_workdir(workdir,
                                          compiler_options=inference.FAST_COMPILE_CPU)


def run_exported(exported, crops):
  """exported.call, compiled as fast as the estimator's forward pass."""
  call = jax.jit(exported.call, compiler_options=inference.FAST_COMPILE_CPU)
  return jax.tree.map(np.asarray, call(crops))


def random_crops(batch, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (batch, 64, 64, 3), np.uint8)


def test_symbolic_batch_artefact_reloads_and_matches(estimator, tmp_path):
  assert estimator.flip_test
  exported = serving.export_forward(estimator)                  # batch "b"
  artefact, meta_path = serving.save_exported(
      exported, serving.export_metadata(estimator), str(tmp_path))
  loaded = serving.load_exported(str(tmp_path))                 # the folder works too
  assert str(loaded.in_avals[0].shape[0]) == "b"
  crops = random_crops(BATCH)
  out = run_exported(loaded, crops)
  heatmaps = out["heatmaps"]                          # (B, 16, 16, K)
  np.testing.assert_allclose(heatmaps, estimator.crop_heatmaps(crops), rtol=1e-5,
                             atol=1e-6)
  flat = heatmaps.reshape(BATCH, -1, 4)
  cell = np.argmax(flat, axis=1)                                  # (B, K)
  want = np.stack([cell % 16, cell // 16], -1) * estimator.codec.scale
  np.testing.assert_allclose(out["keypoints"], want, rtol=1e-6)
  np.testing.assert_allclose(out["scores"], flat.max(1))
  meta = json.loads(pathlib.Path(meta_path).read_text())
  assert meta["input_size"] == [64, 64] and meta["codec"]["name"] == "udp"
  assert meta["keypoint_names"] == ["snout", "leftear", "rightear", "tailbase"]
  assert meta["artefact"]["kind"] == "jax_export"
  assert meta["artefact"]["platforms"] == [jax.export.default_export_platform()]
  assert pathlib.Path(artefact).stat().st_size > 100_000     # parameters are inside


def test_fixed_batch_artefact_refuses_other_sizes(estimator, tmp_path):
  exported = serving.export_forward(estimator, batch_size=BATCH)
  artefact, _ = serving.save_exported(exported, serving.export_metadata(estimator, BATCH),
                                      str(tmp_path))
  loaded = serving.load_exported(artefact)
  assert tuple(loaded.in_avals[0].shape) == (BATCH, 64, 64, 3)
  with pytest.raises(ValueError, match="shape"):
    loaded.call(random_crops(BATCH + 1))


def test_missing_artefact_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="model.jax_exported"):
    serving.load_exported(str(tmp_path))


def test_export_script_writes_a_reloadable_artefact(workdir, estimator, tmp_path):
  result = subprocess.run([sys.executable, "-m", "mamkpd_jax.cli", "export",
                           f"--checkpoint={workdir}", f"--output={tmp_path}", "--nocheck"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "batch symbolic" in result.stdout
  meta = json.loads((tmp_path / "model.json").read_text())
  assert meta["artefact"]["batch_size"] == "symbolic" and meta["input_size"] == [64, 64]
  crops = random_crops(BATCH, seed=1)
  np.testing.assert_allclose(run_exported(serving.load_exported(str(tmp_path)), crops)[
      "heatmaps"], estimator.crop_heatmaps(crops), rtol=1e-5, atol=1e-6)
