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

from absl import app, flags, logging

from mamkpd_jax import inference
from mamkpd_jax.inference import detectors, video
from mamkpd_jax.training import checkpointing
from mamkpd_jax.commands import model_flags
from mamkpd_jax.inference.detectors import boxes_for, load_boxes

flags.adopt_module_key_flags(model_flags)     # --checkpoint | --weights, --config
_INPUT = flags.DEFINE_string("input", None, "An image, a folder of images or a video.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for annotated images/video and "
                              "predictions.json.")
_BOXES = flags.DEFINE_string("boxes", "", "Optional boxes json (see the docstring).")
_DETECTOR = flags.DEFINE_string("detector", "", "Optional detector instead of --boxes: "
                                "background (static camera, one animal; fitted on the "
                                "input's frames), yolox:MODEL.onnx or boxes:FILE.json.")
_THRESHOLD = flags.DEFINE_float("threshold", 0.3, "Keypoints below this score are not drawn.")
_BATCH = flags.DEFINE_integer("batch_images", 8, "Images (frames) predicted together.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 50, "Progress line every N images.")
_CATEGORY = flags.DEFINE_integer("category_id", 1, "category_id of the results.")
_FAST_COMPILE = flags.DEFINE_bool("fast_compile", False, "XLA:CPU optimisation level 0: "
                                  "compiles ~3x faster, runs ~1.7x slower (a few images "
                                  "on a CPU).")
flags.mark_flags_as_required(["input", "output"])


# ------------------------------------------------------------------ inputs


def image_id_of(path, index):
  """COCO-style: the numeric file stem, else the index."""
  stem = os.path.splitext(os.path.basename(path))[0]
  return int(stem) if stem.isdigit() else index


def list_images(path):
  """[(image_id, file path)] of an image or of a folder's images (sorted)."""
  if os.path.isfile(path):
    return [(image_id_of(path, 0), path)]
  files = video.list_image_files(path)
  return [(image_id_of(f, i), f) for i, f in enumerate(files)]


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


def _chunks(items, size):
  for start in range(0, len(items), size):
    yield items[start:start + size]


def predict_images(estimator, images, all_boxes, output, detector=None):
  """Annotated PNGs and COCO results of [(image_id, path)]."""
  results, progress = [], video.Progress(len(images), _LOG_EVERY.value)
  for chunk in _chunks(images, _BATCH.value):
    pixels = [inference.load_image(path) for _, path in chunk]
    boxes = [boxes_for(all_boxes, image_id, path) for image_id, path in chunk]
    predictions = _predict(estimator, pixels, [b for b, _ in boxes], detector)
    for (image_id, path), image, prediction, (_, box_scores) in zip(
        chunk, pixels, predictions, boxes):
      name = os.path.splitext(os.path.basename(path))[0] + ".png"
      prediction.save(os.path.join(output, name), threshold=_THRESHOLD.value)
      results += results_of(prediction, box_scores, image_id, os.path.basename(path))
    progress.add(len(chunk))
  return results


def predict_video(estimator, path, all_boxes, output, detector=None):
  """OUTPUT/<stem>.mp4 with the poses drawn, and COCO results (image_id = frame)."""
  total, fps = video.frame_count_and_fps(path)
  writer = video.VideoWriter(
      os.path.join(output, os.path.splitext(os.path.basename(path))[0] + ".mp4"), fps)
  results, progress = [], video.Progress(total, _LOG_EVERY.value)
  for batch in video.batches(video.read_frames(path), _BATCH.value):
    frames = [frame for _, _, frame in batch]
    boxes = [boxes_for(all_boxes, index, name) for index, name, _ in batch]
    predictions = _predict(estimator, frames, [b for b, _ in boxes], detector)
    for (index, _, frame), prediction, (_, box_scores) in zip(batch, predictions, boxes):
      writer.write(prediction.plot(threshold=_THRESHOLD.value))
      results += results_of(prediction, box_scores, index, os.path.basename(path))
    progress.add(len(batch))
  writer.close()
  return results


def _predict(estimator, images, boxes_list, detector):
  """predict_batch with the boxes file's boxes, or the detector's when there is one."""
  if detector is not None:
    return estimator.predict_batch(images, detector=detector)
  return estimator.predict_batch(images, boxes_list)


def run(checkpoint, config, input_path, output, boxes_path, weights=None, detector=""):
  if not os.path.exists(input_path):
    raise FileNotFoundError(f"input not found: {input_path}")
  if boxes_path and detector:
    raise ValueError("give --boxes or --detector, not both")
  all_boxes = load_boxes(boxes_path) if boxes_path else None
  detector = detectors.make_detector(detector, input_path) if detector else None
  options = inference.FAST_COMPILE_CPU if _FAST_COMPILE.value else None
  estimator = inference.load_estimator(checkpoint, weights, config, options)
  os.makedirs(output, exist_ok=True)
  start = time.perf_counter()
  if os.path.isfile(input_path) and input_path.lower().endswith(video.VIDEO_EXTENSIONS):
    results = predict_video(estimator, input_path, all_boxes, output, detector)
  else:
    results = predict_images(estimator, list_images(input_path), all_boxes, output,
                             detector)
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
    run(model_flags.CHECKPOINT.value, model_flags.CONFIG.value, _INPUT.value, _OUTPUT.value,
        _BOXES.value, model_flags.WEIGHTS.value, _DETECTOR.value)
  except (ValueError, FileNotFoundError, checkpointing.CheckpointMismatchError) as error:
    logging.error("%s", error)
    sys.exit(f"predict: {error}")

