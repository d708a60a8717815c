"""`mamkpd predict` (scripts/predict.py): a trained model on an image, a folder of images
or a video; draws and saves poses.

    mamkpd predict --weights=weights/mamkpd_tiny_openfield \\
        --input=data/samples/dlc-openfield/labeled-data/m4s1/img0100.png --output=/tmp/pred
    mamkpd predict --checkpoint=/tmp/sample_openfield \\
        --input=data/samples/dlc-openfield/labeled-data/m4s1/img0100.png --output=/tmp/pred
    mamkpd predict --checkpoint=/tmp/sample_coco --input=data/samples/coco \\
        --boxes=boxes.json --output=/tmp/pred_coco
    mamkpd predict --checkpoint=WORKDIR/checkpoints/1200 --input=video.mp4 \\
        --output=/tmp/pred_video

--weights is a folder of shipped weights (model.safetensors + model.json, written by
`mamkpd export --format=safetensors`; Estimator.from_pretrained), --checkpoint a training
workdir, its checkpoints/ folder or one step folder (give one of the two); a
checkpoint's config is the workdir's config.json unless --config names a config file.
Without --boxes each image (frame) is one box, the whole image. --boxes is a json list
of {"image_id" or "file_name", "bbox": [x, y, w, h], optional "score"} (a COCO
detections file), or a COCO dict whose "annotations" carry the boxes and whose "images"
map ids to file names. An image's id is its file stem when that is a number (COCO), else its index in sorted
order; a video frame's id is its index.

Writes to --output: an annotated PNG per image (or OUTPUT/<video stem>.mp4) and
predictions.json in COCO results format (image_id, category_id, keypoints [x, y, s] * K,
score, plus bbox and file_name). The instance score is the estimator's rescoring times
the box's score when the boxes file gives one.
"""

import dataclasses
import json
import os
import sys
import time

import cv2
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from mamkpd_jax import checkpointing, inference

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A workdir, checkpoints/ folder or "
                                  "step folder.")
_WEIGHTS = flags.DEFINE_string("weights", None, "A folder of shipped weights "
                               "(model.safetensors + model.json), e.g. "
                               "weights/mamkpd_tiny_openfield.")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Optional configs/*.py file "
                                          "instead of the workdir's config.json.")
_INPUT = flags.DEFINE_string("input", None, "An image, a folder of images or a video.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for annotated images/video and "
                              "predictions.json.")
_BOXES = flags.DEFINE_string("boxes", "", "Optional boxes json (see the docstring).")
_THRESHOLD = flags.DEFINE_float("threshold", 0.3, "Keypoints below this score are not drawn.")
_BATCH = flags.DEFINE_integer("batch_images", 8, "Images (frames) predicted together.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 50, "Progress line every N images.")
_CATEGORY = flags.DEFINE_integer("category_id", 1, "category_id of the results.")
_FAST_COMPILE = flags.DEFINE_bool("fast_compile", False, "XLA:CPU optimisation level 0: "
                                  "compiles ~3x faster, runs ~1.7x slower (a few images "
                                  "on a CPU).")
flags.mark_flags_as_required(["input", "output"])
flags.mark_flags_as_mutual_exclusive(["checkpoint", "weights"], required=True)


# ------------------------------------------------------------------ inputs


def image_id_of(path, index):
  """COCO-style: the numeric file stem, else the index."""
  stem = os.path.splitext(os.path.basename(path))[0]
  return int(stem) if stem.isdigit() else index


def list_images(path):
  """[(image_id, file path)] of an image or of a folder's images (sorted)."""
  if os.path.isfile(path):
    return [(image_id_of(path, 0), path)]
  names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
  if not names:
    raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {path}")
  return [(image_id_of(n, i), os.path.join(path, n)) for i, n in enumerate(names)]


def _box_entries(data, path):
  """A boxes json's content -> [{"image_id" | "file_name", "bbox", "score"?}]."""
  if isinstance(data, dict):
    names = {image["id"]: image["file_name"] for image in data.get("images", [])}
    return [{**ann, "file_name": names.get(ann.get("image_id"), ann.get("file_name"))}
            for ann in data.get("annotations", [])]
  if isinstance(data, list):
    return data
  raise ValueError(f"{path}: expected a list of boxes or a COCO dict, got "
                   f"{type(data).__name__}")


def load_boxes(path):
  """{image_id or file basename: (boxes (M, 4), scores (M,))} from a boxes json."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"boxes file not found: {path}")
  with open(path, encoding="utf-8") as f:
    entries = _box_entries(json.load(f), path)
  grouped = {}
  for i, entry in enumerate(entries):
    if "bbox" not in entry or ("image_id" not in entry and not entry.get("file_name")):
      raise ValueError(f"{path}: entry {i} needs a bbox and an image_id or file_name")
    key = os.path.basename(entry["file_name"]) if entry.get("file_name") else \
        int(entry["image_id"])
    grouped.setdefault(key, []).append((entry["bbox"], float(entry.get("score", 1.0))))
  return {key: (np.array([b for b, _ in rows], np.float32).reshape(-1, 4),
                np.array([s for _, s in rows], np.float32)) for key, rows in grouped.items()}


def boxes_for(all_boxes, image_id, file_name):
  """(boxes, box scores) of one image; (None, None) = the whole image."""
  if all_boxes is None:
    return None, None
  found = all_boxes.get(os.path.basename(file_name)) or all_boxes.get(image_id)
  if found is None:
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
  return found


# ------------------------------------------------------------------ outputs


def results_of(prediction, box_scores, image_id, file_name):
  """COCO results of one image (Prediction.to_json, with file_name); the instance
  scores are multiplied by the boxes file's scores when it gives them."""
  if box_scores is not None:
    prediction = dataclasses.replace(prediction, scores=prediction.scores * box_scores)
  results = prediction.to_json(image_id, _CATEGORY.value)
  for result in results:
    result["file_name"] = file_name
  return results


class Progress:
  """Logs images done and images/s every `every` images."""

  def __init__(self, total, every):
    self.total, self.every, self.done = total, every, 0
    self.start = time.perf_counter()

  def add(self, count):
    before, self.done = self.done, self.done + count
    if self.done // self.every > before // self.every or self.done == self.total:
      rate = self.done / max(time.perf_counter() - self.start, 1e-9)
      logging.info("%d/%s frames, %.1f frames/s", self.done, self.total or "?", rate)
      print(f"{self.done}/{self.total or '?'} frames, {rate:.1f} frames/s", flush=True)


def _chunks(items, size):
  for start in range(0, len(items), size):
    yield items[start:start + size]


def predict_images(estimator, images, all_boxes, output):
  """Annotated PNGs and COCO results of [(image_id, path)]."""
  results, progress = [], Progress(len(images), _LOG_EVERY.value)
  for chunk in _chunks(images, _BATCH.value):
    pixels = [inference.load_image(path) for _, path in chunk]
    boxes = [boxes_for(all_boxes, image_id, path) for image_id, path in chunk]
    predictions = estimator.predict_batch(pixels, [b for b, _ in boxes])
    for (image_id, path), image, prediction, (_, box_scores) in zip(
        chunk, pixels, predictions, boxes):
      name = os.path.splitext(os.path.basename(path))[0] + ".png"
      prediction.save(os.path.join(output, name), threshold=_THRESHOLD.value)
      results += results_of(prediction, box_scores, image_id, os.path.basename(path))
    progress.add(len(chunk))
  return results


def _video_frames(capture, count):
  """Up to `count` RGB frames from an opened cv2.VideoCapture."""
  frames = []
  while len(frames) < count:
    ok, frame = capture.read()
    if not ok:
      break
    frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
  return frames


def predict_video(estimator, path, all_boxes, output):
  """OUTPUT/<stem>.mp4 with the poses drawn, and COCO results (image_id = frame)."""
  capture = cv2.VideoCapture(path)
  if not capture.isOpened():
    raise ValueError(f"cannot open video {path} (OpenCV could not decode it)")
  fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
  total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or 0
  out_path = os.path.join(output, os.path.splitext(os.path.basename(path))[0] + ".mp4")
  writer, results, index = None, [], 0
  progress = Progress(total, _LOG_EVERY.value)
  while frames := _video_frames(capture, _BATCH.value):
    if writer is None:
      height, width = frames[0].shape[:2]
      writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    boxes = [boxes_for(all_boxes, index + i, f"frame{index + i:06d}")
             for i in range(len(frames))]
    predictions = estimator.predict_batch(frames, [b for b, _ in boxes])
    for frame, prediction, (_, box_scores) in zip(frames, predictions, boxes):
      drawn = prediction.plot(threshold=_THRESHOLD.value)
      writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
      results += results_of(prediction, box_scores, index, os.path.basename(path))
      index += 1
    progress.add(len(frames))
  capture.release()
  if writer is not None:
    writer.release()
  logging.info("wrote %s (%d frames)", out_path, index)
  return results


def load_estimator(checkpoint, weights, config, compiler_options):
  """From shipped weights (no training stack) or a training checkpoint."""
  if weights:
    return inference.Estimator.from_pretrained(weights, compiler_options=compiler_options)
  checkpointing.resolve_checkpoint(checkpoint)            # a clear error before loading
  return inference.Estimator.from_workdir(checkpoint, config=config,
                                          compiler_options=compiler_options)


def run(checkpoint, config, input_path, output, boxes_path, weights=None):
  if not os.path.exists(input_path):
    raise FileNotFoundError(f"input not found: {input_path}")
  all_boxes = load_boxes(boxes_path) if boxes_path else None
  options = inference.FAST_COMPILE_CPU if _FAST_COMPILE.value else None
  estimator = load_estimator(checkpoint, weights, config, options)
  os.makedirs(output, exist_ok=True)
  start = time.perf_counter()
  if os.path.isfile(input_path) and input_path.lower().endswith(VIDEO_EXTENSIONS):
    results = predict_video(estimator, input_path, all_boxes, output)
  else:
    results = predict_images(estimator, list_images(input_path), all_boxes, output)
  json_path = os.path.join(output, "predictions.json")
  with open(json_path, "w", encoding="utf-8") as f:
    json.dump(results, f)
  logging.info("%d poses in %.1f s -> %s", len(results), time.perf_counter() - start,
               json_path)
  print(f"wrote {json_path} ({len(results)} poses) and the annotated images to {output}")
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    run(_CHECKPOINT.value, _CONFIG.value, _INPUT.value, _OUTPUT.value, _BOXES.value,
        _WEIGHTS.value)
  except (ValueError, FileNotFoundError, checkpointing.CheckpointMismatchError) as error:
    logging.error("%s", error)
    sys.exit(f"predict: {error}")

