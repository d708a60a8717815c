"""`mamkpd predict`: a trained model on an image, a folder of images or a video; draws
and saves poses.

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
map ids to file names (read by data_pipelines.sources.read_boxes_file). An image's id
is its file stem when that is a number (COCO), else its index in sorted order; a video
frame's id is its index.

Writes to --output: an annotated PNG per image (or OUTPUT/<video stem>.mp4) and
predictions.json in COCO results format (image_id, category_id, keypoints [x, y, s] * K,
score, plus bbox and file_name). The instance score is the estimator's rescoring times
the box's score when the boxes file gives one. An output folder where a drawing would
overwrite its input (the video's own folder, a folder of PNGs) is refused before the
model loads. A video runs through the tracker's frame loop (video.run_frames: decoding
and boxes ahead of the model, drawing and encoding behind it).

--formats=slp,dlc,nwb,coco adds label files beside predictions.json
(inference/label_files.py: predictions.slp, predictions.dlc.csv and .dlc.h5, predictions.nwb for a
video); by default predictions.slp when sleap-io is installed. An existing label file
is never overwritten (it may hold proofreading): the run stops before the model loads.

--input=LABELS (a SLEAP .slp, a DeepLabCut project folder or CollectedData file, any
label file data_pipelines/labels.py reads) predicts on the labelled frames, in the
labelled boxes (keypoints' box, 10% a side) unless --boxes or --detector give others,
prints PCK@0.1 against the labelled points (evaluation.pck.bbox_pck) and writes
predictions.json and predictions.slp (one predicted instance per labelled instance, the
labels' skeleton, videos and frames); no drawings (predict_labels; reading, matching
and scoring the frames: inference/labelled_frames.py).

From Python, `predict(estimator, input_path, output_dir, boxes=..., detector=...)` does
the same with an Estimator in hand; `main` only reads the flags.
"""

import dataclasses
import functools
import json
import os
import sys
import time

from absl import app, flags, logging

from mamkpd_jax import inference
from mamkpd_jax import progress as progress_lib
from mamkpd_jax.commands import model_flags
from mamkpd_jax.evaluation import pck
from mamkpd_jax.inference import detectors, label_files, labelled_frames, video
from mamkpd_jax.inference.detectors import boxes_for
from mamkpd_jax.training import checkpointing

FLAGS = flags.FLAGS


@functools.cache
def define_flags():
  """Defines `mamkpd predict`'s flags; the cli calls it before parsing (see cli.py)."""
  model_flags.define_input_output("An image, a folder of images or a video.",
                                  "Folder for annotated images/video and predictions.json.")
  flags.adopt_module_key_flags(model_flags)     # --checkpoint | --weights, --config, ...
  flags.DEFINE_string("boxes", "", "Optional boxes json (see the docstring).")
  flags.DEFINE_string("detector", "", "Optional detector instead of --boxes: background "
                      "(static camera, one animal; fitted on the input's frames), "
                      "yolox:MODEL.onnx or boxes:FILE.json.")
  flags.DEFINE_float("threshold", 0.3, "Keypoints below this score are not drawn.")
  flags.DEFINE_integer("batch_images", 8, "Images (frames) predicted together.")
  flags.DEFINE_integer("log_every", 50, "Progress line every N images.")
  flags.DEFINE_integer("category_id", 1, "category_id of the results.")
  flags.DEFINE_bool("fast_compile", False, "XLA:CPU optimisation level 0: compiles ~3x "
                    "faster, runs ~1.7x slower (a few images on a CPU).")
  flags.DEFINE_list("formats", None, "Label files beside predictions.json: slp, dlc, nwb, "
                    "coco (inference/label_files.py). Default: slp when sleap-io is "
                    "installed (pip install \"mamkpd-jax[labels]\"), else coco only.")


@dataclasses.dataclass(frozen=True)
class Drawing:
  """How results are drawn, batched and reported (the flags of the same names)."""

  threshold: float = 0.3        # keypoints below it are not drawn
  batch_images: int = 8         # images (frames) per model call
  log_every: int = 50           # progress line every N images
  category_id: int = 1          # category_id of the results


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


def check_inputs(input_path, boxes=None, detector=None):
  """Errors a run can give before any model loads."""
  if not os.path.exists(input_path):
    raise FileNotFoundError(f"input not found: {input_path}")
  if boxes is not None and detector is not None:
    raise ValueError("give --boxes or --detector, not both")


def read_boxes(boxes):
  """A boxes file path -> detectors.load_boxes's mapping; a mapping or None as is."""
  return detectors.load_boxes(boxes) if isinstance(boxes, (str, os.PathLike)) else boxes


def make_detector(detector, input_path):
  """A detector spec ("background", "yolox:PATH", "boxes:PATH") -> a detector;
  a callable or None as is."""
  if isinstance(detector, str):
    return detectors.make_detector(detector, input_path)
  return detector


def is_video(path):
  return os.path.isfile(path) and path.lower().endswith(video.VIDEO_EXTENSIONS)


# ------------------------------------------------------------------ outputs


def results_of(prediction, box_scores, image_id, file_name, category_id=1):
  """COCO results of one image (Prediction.to_json, with file_name); the instance
  scores are multiplied by the boxes file's scores when it gives them."""
  if box_scores is not None:
    prediction = dataclasses.replace(prediction, scores=prediction.scores * box_scores)
  results = prediction.to_json(image_id, category_id)
  for result in results:
    result["file_name"] = file_name
  return results


def output_path(path, output, ext):
  """OUTPUT/<stem><ext>: where the drawing of an image (.png) or a video (.mp4) goes."""
  return os.path.join(output, os.path.splitext(os.path.basename(path))[0] + ext)


def check_outputs(input_path, output_dir):
  """An error when a drawing would overwrite an input (an mp4 video or a PNG image drawn
  into its own folder), before any model loads."""
  if is_video(input_path):
    video.refuse_overwrite(output_path(input_path, output_dir, ".mp4"), input_path)
  elif os.path.exists(input_path):
    for _, path in list_images(input_path):
      video.refuse_overwrite(output_path(path, output_dir, ".png"), path)


def label_paths(output_dir, formats):
  """{format: OUTPUT/predictions.<ext>} of the label files asked for (coco: the json)."""
  return label_files.output_paths(os.path.join(output_dir, "predictions"), formats)


def check_label_outputs(input_path, output_dir, formats):
  """Errors of the label files before any model loads: NWB of images, a file that
  exists (it may hold proofreading) or would overwrite the input."""
  if not is_video(input_path):
    label_files.check_images(formats)
  label_files.check_outputs(label_paths(output_dir, formats), [input_path])


def write_label_files(results, input_path, output_dir, info, formats):
  """The label files of predict's COCO results (label_files.write_records); {format:
  path}."""
  paths = label_paths(output_dir, formats)
  if not paths:                                 # coco alone: the json is written
    return {}
  source = input_path if is_video(input_path) else [p for _, p in list_images(input_path)]
  return label_files.write_records(results, source, info, paths, frame_key="image_id")


def predict_images(estimator, images, all_boxes, output, detector=None, drawing=Drawing()):
  """Annotated PNGs and COCO results of [(image_id, path)]."""
  results, progress = [], progress_lib.Progress(len(images), drawing.log_every)
  for chunk in video.batches(images, drawing.batch_images):
    pixels = [inference.load_image(path) for _, path in chunk]
    boxes = [boxes_of(all_boxes, detector, image, image_id, path)
             for image, (image_id, path) in zip(pixels, chunk)]
    predictions = estimator.predict_batch(pixels, [b for b, _ in boxes],
                                          pad_to=drawing.batch_images)
    for (image_id, path), prediction, (_, box_scores) in zip(chunk, predictions, boxes):
      prediction.save(output_path(path, output, ".png"), threshold=drawing.threshold)
      results += results_of(prediction, box_scores, image_id, os.path.basename(path),
                            drawing.category_id)
    progress.add(len(chunk))
  return results


def predict_video(estimator, path, all_boxes, output, detector=None, drawing=Drawing(),
                  overlap=True):
  """OUTPUT/<stem>.mp4 with the poses drawn, and COCO results (image_id = frame), through
  the tracker's frame loop (video.run_frames: frames decoded and boxes found on a
  reader thread, drawing and encoding on a writer thread; overlap=False: one thread)."""
  mp4_path = output_path(path, output, ".mp4")
  total, fps = video.frame_count_and_fps(path)
  writer, results = video.VideoWriter(mp4_path, fps), []

  def find_boxes(batch):                       # reader thread: items + (boxes, scores)
    return [(index, name, frame, boxes_of(all_boxes, detector, frame, index, name))
            for index, name, frame in batch]

  def process(batch):                          # this thread: the model
    return estimator.predict_batch([frame for _, _, frame, _ in batch],
                                   [boxes for _, _, _, (boxes, _) in batch],
                                   pad_to=drawing.batch_images)

  def consume(item, prediction):               # writer thread: draw, encode, results
    index, _, _, (_, box_scores) = item
    writer.write(prediction.plot(threshold=drawing.threshold))
    results.extend(results_of(prediction, box_scores, index, os.path.basename(path),
                              drawing.category_id))

  frames = video.batches(video.read_frames(path), drawing.batch_images)
  try:
    throughput = video.run_frames(map(find_boxes, frames), process, consume,
                                  progress_lib.Progress(total, drawing.log_every), overlap)
  finally:
    frames.close()
    writer.close()              # a finished mp4 of what was done, even after an error
  logging.info("%s", throughput.line("predicted"))
  return results


def boxes_of(all_boxes, detector, image, image_id, name):
  """(boxes (M, 4) or None for the whole image, box scores or None) of one image: the
  detector's (looked up by (image_id, name) when it reads a boxes file), else the
  boxes file's."""
  if detector is not None:
    return detectors.detect(detector, image, key=(image_id, name)).boxes, None
  return boxes_for(all_boxes, image_id, name)


def write_results(results, output_dir):
  """OUTPUT/predictions.json; returns its path."""
  json_path = os.path.join(output_dir, "predictions.json")
  with open(json_path, "w", encoding="utf-8") as f:
    json.dump(results, f)
  return json_path


def predict(estimator, input_path, output_dir, boxes=None, detector=None,
            drawing=Drawing(), formats=("coco",)):
  """Poses of an image, a folder of images or a video, drawn into output_dir with
  output_dir/predictions.json (COCO results) and the label files of `formats`; returns
  the results.

  Args:
    estimator: an inference.Estimator.
    input_path: an image, a folder of images or a video file.
    output_dir: created if missing.
    boxes: a boxes json path or detectors.load_boxes's mapping; None: each image is one
      box, the whole image.
    detector: instead of boxes, a detector (callable) or spec ("background",
      "yolox:PATH", "boxes:PATH").
    drawing: threshold, batch size, progress and category id (Drawing).
    formats: label_files.parse_formats's names: slp, dlc, nwb (predictions.slp,
      .dlc.csv and .dlc.h5, .nwb; need sleap-io) and coco (the json, always written).
  """
  formats = label_files.parse_formats(formats)
  check_inputs(input_path, boxes, detector)
  check_outputs(input_path, output_dir)
  check_label_outputs(input_path, output_dir, formats)
  all_boxes, detector = read_boxes(boxes), make_detector(detector, input_path)
  os.makedirs(output_dir, exist_ok=True)
  start = time.perf_counter()
  if is_video(input_path):
    results = predict_video(estimator, input_path, all_boxes, output_dir, detector, drawing)
  else:
    results = predict_images(estimator, list_images(input_path), all_boxes, output_dir,
                             detector, drawing)
  json_path = write_results(results, output_dir)
  logging.info("%d poses in %.1f s -> %s", len(results), time.perf_counter() - start,
               json_path)
  write_label_files(results, input_path, output_dir, estimator.info, formats)
  return results


# ------------------------------------------------------------------ labelled frames


def predict_labelled(estimator, labelled, all_boxes, detector, drawing, order):
  """Poses on every labelled frame (inference.labelled_frames): (COCO results with
  file_name relative to the labels' image root, matched poses per frame, points
  (M_i, K, 2) per frame for PCK). The labelled boxes unless boxes or a detector give
  others."""
  results, poses, points = [], [], []
  progress = progress_lib.Progress(len(labelled.images), drawing.log_every)
  for chunk in video.batches(range(len(labelled.images)), drawing.batch_images):
    pixels = [inference.load_image(labelled.images[i]) for i in chunk]
    found = [(labelled.boxes[i], None) if all_boxes is None and detector is None else
             boxes_of(all_boxes, detector, image, i + 1, labelled.images[i])
             for image, i in zip(pixels, chunk)]
    predictions = estimator.predict_batch(pixels, [b for b, _ in found],
                                          pad_to=drawing.batch_images)
    for i, prediction, (_, box_scores) in zip(chunk, predictions, found):
      name = os.path.relpath(labelled.images[i], labelled.root)
      results += results_of(prediction, box_scores, i + 1, name, drawing.category_id)
      pose, frame_points = labelled_frames.matched_poses(labelled.boxes[i], prediction, order)
      poses.append(pose)
      points.append(frame_points)
    progress.add(len(chunk))
  return results, poses, points


def predict_labels(estimator, labels_path, output_dir, boxes=None, detector=None,
                   drawing=Drawing(), formats=("slp", "coco")):
  """Poses on a label file's labelled frames, in the labelled boxes (keypoints' box,
  10% a side) unless boxes or a detector give others; PCK@0.1 against the labelled
  points (box-normalised, evaluation.pck.bbox_pck; a labelled instance without a
  matching pose counts its keypoints as wrong). Writes OUTPUT/predictions.json (COCO
  results, file_name relative to the labels' image root) and the label files of
  `formats` (predictions.slp: one PredictedInstance per matched labelled instance, the
  labels' skeleton, videos and frames). Returns {"PCK@0.1", "instances", "matched",
  "labels": {format: path}}."""
  formats = label_files.parse_formats(formats)
  paths = label_paths(output_dir, formats)
  label_files.check_outputs(paths, [labels_path])
  labelled = labelled_frames.read_labelled(labels_path)
  order = labelled_frames.keypoint_order(estimator.info.keypoint_names,
                                         labelled.labels.skeleton.node_names, labels_path)
  if "nwb" in formats and any(isinstance(v.filename, list) for v in labelled.labels.videos):
    label_files.check_images(formats)
  all_boxes = read_boxes(boxes)
  detector = make_detector(detector, os.path.dirname(labelled.images[0]))
  os.makedirs(output_dir, exist_ok=True)
  results, poses, points = predict_labelled(estimator, labelled, all_boxes, detector,
                                            drawing, order)
  write_results(results, output_dir)
  written = label_files.write(labelled_frames.predicted_labels(labelled, poses), paths)
  return {**labelled_frames.score(labelled, points),
          "instances": sum(len(gt) for gt in labelled.gt),
          "matched": sum(len(pose[2]) for pose in poses), "labels": written}


# ------------------------------------------------------------------ the command


def run(input_path, output_dir, model, boxes_path="", detector_spec="",
        fast_compile=False, drawing=Drawing(), formats=None):
  """The command's work from plain values: model = (checkpoint, weights, config);
  formats: --formats (None: slp when sleap-io is installed, and the json). An input
  that is another tool's labels runs run_labels."""
  if labelled_frames.labels_kind(input_path) is not None:
    return run_labels(input_path, output_dir, model, boxes_path, detector_spec,
                      fast_compile, drawing, formats)
  chosen = label_files.parse_formats(formats)
  if not formats:
    logging.info("%s", label_files.describe_default(chosen))
  check_inputs(input_path, boxes_path or None, detector_spec or None)
  check_outputs(input_path, output_dir)
  check_label_outputs(input_path, output_dir, chosen)
  all_boxes = read_boxes(boxes_path or None)        # errors before the model loads
  detector = make_detector(detector_spec or None, input_path)
  options = inference.FAST_COMPILE_CPU if fast_compile else None
  estimator = inference.load_estimator(*model, compiler_options=options)
  results = predict(estimator, input_path, output_dir, all_boxes, detector, drawing, chosen)
  labels = "".join(f", {path}" for path in label_paths(output_dir, chosen).values())
  print(f"wrote {os.path.join(output_dir, 'predictions.json')} ({len(results)} poses){labels} "
        f"and the annotated images to {output_dir}")
  return results


def run_labels(labels_path, output_dir, model, boxes_path="", detector_spec="",
               fast_compile=False, drawing=Drawing(), formats=None):
  """`mamkpd predict --input=LABELS`: predict_labels; prints the PCK line."""
  chosen = label_files.parse_formats(formats or ("slp",))   # reading labels needs sleap-io
  check_inputs(labels_path, boxes_path or None, detector_spec or None)
  label_files.check_outputs(label_paths(output_dir, chosen), [labels_path])
  all_boxes = read_boxes(boxes_path or None)        # errors before the model loads
  options = inference.FAST_COMPILE_CPU if fast_compile else None
  estimator = inference.load_estimator(*model, compiler_options=options)
  summary = predict_labels(estimator, labels_path, output_dir, all_boxes,
                           detector_spec or None, drawing, chosen)
  key = pck.pck_key(labelled_frames.PCK_THRESHOLD)
  print(f"{key} {summary[key]:.3f} on {summary['instances']} labelled instances of "
        f"{labels_path} ({summary['matched']} with a pose)")
  written = ", ".join([os.path.join(output_dir, "predictions.json"),
                       *summary["labels"].values()])
  print(f"wrote {written}")
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  drawing = Drawing(threshold=FLAGS.threshold, batch_images=FLAGS.batch_images,
                    log_every=FLAGS.log_every, category_id=FLAGS.category_id)
  try:
    run(FLAGS.input, FLAGS.output, model_flags.model_source(FLAGS), FLAGS.boxes,
        FLAGS.detector, FLAGS.fast_compile, drawing, FLAGS.formats)
  except (ValueError, FileNotFoundError, ImportError,    # LabelsError is a ValueError
          checkpointing.CheckpointMismatchError) as error:
    logging.error("%s", error)
    sys.exit(f"predict: {error}")
