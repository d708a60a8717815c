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


@pytest.fixture(scope="module")
def estimator(workdir):
  from mamkpd_jax import inference   # pylint: disable=g-import-not-at-top
  return inference.Estimator.from_workdir(str(workdir),
                                          compiler_options=inference.FAST_COMPILE_CPU)


def write_clip(path, frames):
  """An mp4 of the frames (paths), 10 frames/s."""
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 480))
  for frame in frames:
    writer.write(cv2.imread(str(frame)))
  writer.release()
  return path


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
  assert sorted(os.listdir(out)) == ["img0100.png", "img0101.png", "predictions.json",
                                     "predictions.slp"]      # SLEAP's file: sleap-io is in [dev]
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


def test_the_predict_function_gives_the_command_s_results(workdir, estimator, tmp_path):
  """predict.predict from Python, with an Estimator in hand, writes what `mamkpd
  predict` writes for the same image and boxes file."""
  from mamkpd_jax.commands import predict
  boxes = tmp_path / "boxes.json"
  boxes.write_text(json.dumps([{"file_name": "img0100.png", "bbox": [61.5, 384.2, 128.5, 44.3],
                                "score": 0.5}]))
  result = run_predict(f"--checkpoint={workdir}", f"--input={FRAMES[0]}", f"--boxes={boxes}",
                       f"--output={tmp_path / 'cli'}")
  assert result.returncode == 0, result.stderr[-3000:]
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


def test_a_video_through_the_frame_loop_gives_the_frame_by_frame_poses(estimator, tmp_path):
  """predict_video (the tracker's loop: frames read and boxes found ahead, drawn and
  encoded behind, batches of 3 padded to bucket 8) gives, with threads or without, what
  Estimator.predict gives frame by frame; a boxes detector is looked up by frame index."""
  from mamkpd_jax.commands import predict
  from mamkpd_jax.inference import detectors, video
  clip = write_clip(tmp_path / "clip.mp4", FRAMES + FRAMES[::-1])
  boxes = tmp_path / "boxes.json"
  boxes.write_text(json.dumps([{"image_id": i, "bbox": [60.0 + 5 * i, 380.0, 130.0, 50.0]}
                               for i in range(4)]))
  detector = detectors.BoxFileDetector(str(boxes))
  drawing = predict.Drawing(batch_images=3)
  runs = [predict.predict_video(estimator, str(clip), None, str(tmp_path / f"o{overlap}"),
                                detector, drawing, overlap=overlap) for overlap in (True, False)]
  assert runs[0] == runs[1] and [r["image_id"] for r in runs[0]] == [0, 1, 2, 3]
  for result, (index, _, frame) in zip(runs[0], video.read_frames(str(clip))):
    alone = estimator.predict(frame, [[60.0 + 5 * index, 380.0, 130.0, 50.0]])
    assert result["bbox"] == [60.0 + 5 * index, 380.0, 130.0, 50.0]
    np.testing.assert_allclose(np.reshape(result["keypoints"], (-1, 3))[:, :2],
                               alone.keypoints[0], atol=1e-3)
  capture = cv2.VideoCapture(str(tmp_path / "oTrue/clip.mp4"))
  assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4


def test_overwriting_an_input_is_refused_before_the_model_loads(tmp_path):
  from mamkpd_jax.commands import predict
  clip = write_clip(tmp_path / "clip.mp4", FRAMES)
  no_model = (None, None, None)            # never read: the error comes first
  with pytest.raises(ValueError, match=f"output {clip} would overwrite the input"):
    predict.run(str(clip), str(tmp_path), no_model)
  folder = tmp_path / "frames"
  folder.mkdir()
  shutil.copy(FRAMES[0], folder)
  with pytest.raises(ValueError, match="img0100.png would overwrite the input"):
    predict.run(str(folder), str(folder), no_model)
  predict.check_outputs(str(clip), str(tmp_path / "elsewhere"))        # fine
  predict.check_outputs(str(FRAMES[0]), str(folder))                   # a copy: fine
