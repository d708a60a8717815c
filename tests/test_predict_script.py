"""`mamkpd predict` on the tiny open-field model (test_inference.write_workdir's), run
as `python -m mamkpd_jax.cli predict`; and its `predict` function used from Python."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest


REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO / "data/samples/dlc-openfield"
FRAMES = [DATA / f"labeled-data/m4s1/img{i:04d}.png" for i in (100, 101)]


@pytest.fixture(scope="module")
def workdir(trained_workdir):
  return trained_workdir


def run_predict(*args):
  """`mamkpd predict`, compiled fast; runs with one crop (bucket 1) or up to 8 share
  their compiled programs through the persistent compilation cache."""
  return subprocess.run([sys.executable, "-m", "mamkpd_jax.cli", "predict", "--fast_compile",
                         *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_one_image_without_boxes_writes_a_png_and_coco_results(workdir, tmp_path):
  out = tmp_path / "pred"
  result = run_predict(f"--checkpoint={workdir}", f"--input={FRAMES[0]}",
                       f"--output={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "frames/s" in result.stdout
  drawn = cv2.imread(str(out / "img0100.png"))
  assert drawn is not None and drawn.shape == (480, 640, 3)
  assert np.any(drawn != cv2.imread(str(FRAMES[0])))             # poses were drawn
  results = json.loads((out / "predictions.json").read_text())
  assert len(results) == 1                                        # the whole image
  assert results[0]["image_id"] == 0 and results[0]["category_id"] == 1
  assert len(results[0]["keypoints"]) == 3 * 4 and results[0]["bbox"] == [0, 0, 640, 480]


def test_folder_with_boxes_and_a_video(workdir, tmp_path):
  folder = tmp_path / "frames"
  folder.mkdir()
  for frame in FRAMES:
    shutil.copy(frame, folder)
  boxes = [{"file_name": "img0100.png", "bbox": [61.5, 384.2, 128.5, 44.3], "score": 0.5},
           {"file_name": "img0100.png", "bbox": [50.0, 370.0, 140.0, 60.0]},
           {"image_id": 7, "bbox": [100.0, 100.0, 50.0, 50.0]}]   # no such image
  (tmp_path / "boxes.json").write_text(json.dumps(boxes))
  video = tmp_path / "clip.mp4"
  writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 480))
  for frame in FRAMES + FRAMES:
    writer.write(cv2.imread(str(frame)))
  writer.release()
  out = tmp_path / "pred"
  result = run_predict(f"--checkpoint={workdir}/checkpoints",
                       f"--input={folder}", f"--boxes={tmp_path / 'boxes.json'}",
                       f"--output={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((out / "predictions.json").read_text())
  assert [r["file_name"] for r in results] == ["img0100.png"] * 2   # img0101: no boxes
  assert sorted(os.listdir(out)) == ["img0100.png", "img0101.png", "predictions.json"]
  result = run_predict(f"--checkpoint={workdir}", f"--input={video}",
                       f"--output={out / 'video'}", "--batch_images=1")
  assert result.returncode == 0, result.stderr[-3000:]
  capture = cv2.VideoCapture(str(out / "video" / "clip.mp4"))
  assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
  results = json.loads((out / "video" / "predictions.json").read_text())
  assert [r["image_id"] for r in results] == [0, 1, 2, 3]


def test_missing_files_are_named(workdir, tmp_path):
  result = run_predict(f"--checkpoint={workdir}",
                       f"--input={tmp_path / 'missing.png'}", f"--output={tmp_path}")
  assert result.returncode != 0 and "input not found" in result.stderr
  assert "missing.png" in result.stderr
  result = run_predict(f"--checkpoint={tmp_path / 'nowhere'}",
                       f"--input={FRAMES[0]}", f"--output={tmp_path}")
  assert result.returncode != 0 and "nowhere" in result.stderr
  result = run_predict(f"--checkpoint={workdir}", f"--input={FRAMES[0]}",
                       f"--boxes={tmp_path / 'boxes.json'}", f"--output={tmp_path}")
  assert result.returncode != 0 and "boxes file not found" in result.stderr


def test_the_predict_function_gives_the_command_s_results(workdir, tmp_path):
  """predict.predict from Python, with an Estimator in hand, writes what `mamkpd
  predict` writes for the same image and boxes file."""
  from mamkpd_jax import inference
  from mamkpd_jax.commands import predict
  boxes = tmp_path / "boxes.json"
  boxes.write_text(json.dumps([{"file_name": "img0100.png", "bbox": [61.5, 384.2, 128.5, 44.3],
                                "score": 0.5}]))
  result = run_predict(f"--checkpoint={workdir}", f"--input={FRAMES[0]}", f"--boxes={boxes}",
                       f"--output={tmp_path / 'cli'}")
  assert result.returncode == 0, result.stderr[-3000:]
  estimator = inference.Estimator.from_workdir(str(workdir),
                                               compiler_options=inference.FAST_COMPILE_CPU)
  results = predict.predict(estimator, str(FRAMES[0]), str(tmp_path / "lib"), boxes=str(boxes))
  (expected,) = json.loads((tmp_path / "cli/predictions.json").read_text())
  (got,) = results
  assert json.loads((tmp_path / "lib/predictions.json").read_text()) == results
  assert got["bbox"] == expected["bbox"] and got["file_name"] == "img0100.png"
  np.testing.assert_allclose(got["keypoints"], expected["keypoints"], atol=1e-3)
  np.testing.assert_allclose(got["score"], expected["score"], atol=1e-5)
  with pytest.raises(ValueError, match="not both"):
    predict.predict(estimator, str(FRAMES[0]), str(tmp_path), boxes=str(boxes),
                    detector="background")
