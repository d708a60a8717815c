"""`mamkpd track`: poses tracked through a video, a folder of frames or a webcam, drawn
with track ids.

    mamkpd track --weights=weights/mamkpd_tiny_openfield \\
        --input=data/samples/dlc-openfield/labeled-data/m4s1 --detector=background \\
        --max_tracks=1 --output=/tmp/track
    mamkpd track --checkpoint=WORKDIR --input=people.mp4 \\
        --detector=yolox:yolox_tiny.onnx --det_every=5 --smooth --output=/tmp/track
    mamkpd track --checkpoint=WORKDIR --input=0 --detector=yolox:yolox_tiny.onnx \\
        --output=/tmp/webcam        # webcam 0 until Ctrl-C (or --max_frames)

--detector: "background" (one animal under a fixed camera: the median frame is the
background), "yolox:PATH" (an official YOLOX ONNX export; pip install 'mamkpd-jax[onnx]';
--classes picks person, animal or COCO class names), "boxes:PATH" (a boxes file read by
data_pipelines.sources.read_boxes_file, looked up by frame index or file name), or ""
(the whole first frame, then boxes carried from the keypoints). Writes
OUTPUT/<input stem>.mp4 (poses, boxes, "id N"; not with --novideo) and
OUTPUT/<input stem>.json: per pose
the frame's Prediction.to_json record (COCO results: image_id = frame index,
category_id, keypoints [x, y, score] * K, score; plus bbox [x, y, w, h] and track_id)
with frame_index and file_name (tracking.frame_records). The last line printed is the
speed: "tracked N frames in T s: X frames/s steady state (first batch, compilation,
Y s)". --formats=slp,dlc,nwb,coco adds label files OUTPUT/<input stem>.slp, .dlc.csv, .dlc.h5,
.nwb (inference/label_files.py; the track ids become SLEAP tracks "track_N"); by
default the .slp when sleap-io is installed; an existing one is never overwritten. The
library function is mamkpd_jax.inference.tracking.track_video; `run` is the command
from plain values.
"""

import functools
import json
import os
import sys

from absl import app, flags, logging

from mamkpd_jax import inference
from mamkpd_jax.inference import detectors, label_files, tracking, video
from mamkpd_jax.training import checkpointing
from mamkpd_jax.commands import model_flags

FLAGS = flags.FLAGS


@functools.cache
def define_flags():
  """Defines `mamkpd track`'s flags; the cli calls it before parsing (see cli.py)."""
  model_flags.define_input_output("A video, a folder of frames or a webcam index.",
                                  "Folder for the mp4 and the json.")
  flags.adopt_module_key_flags(model_flags)     # --checkpoint | --weights, --config, ...
  flags.DEFINE_string("detector", "", "background, yolox:PATH, boxes:PATH or ''.")
  flags.DEFINE_list("classes", ["person"], "YOLOX classes: person, animal or COCO class "
                    "names.")
  flags.DEFINE_float("score_threshold", 0.3, "YOLOX: boxes below this are dropped.")
  flags.DEFINE_integer("det_every", 1, "Run the detector every N frames; boxes are "
                       "carried from the keypoints in between.")
  flags.DEFINE_integer("max_tracks", 0, "The number of subjects when known (1 for a "
                       "single animal): new ids only up to it; 0: any.")
  flags.DEFINE_bool("smooth", False, "One-Euro filter the keypoints of each track.")
  flags.DEFINE_float("min_cutoff", 1.0, "One-Euro min_cutoff (Hz): lower smooths more.")
  flags.DEFINE_float("beta", 0.05, "One-Euro beta: higher follows fast motion more.")
  flags.DEFINE_integer("batch_frames", 8, "Frames per model call (det_every=1).")
  flags.DEFINE_integer("max_frames", None, "Stop after this many frames.")
  flags.DEFINE_float("threshold", 0.3, "Keypoints below this score are not drawn nor "
                     "carried into the next box.")
  flags.DEFINE_integer("log_every", 50, "Progress line every N frames.")
  flags.DEFINE_bool("video", True, "Write the mp4 with the poses drawn; --novideo: the "
                    "json only (no drawing nor encoding).")
  flags.DEFINE_bool("fast_compile", False, "XLA:CPU optimisation level 0: compiles ~3x "
                    "faster, runs ~1.7x slower.")
  flags.DEFINE_list("formats", None, "Label files beside the json, track ids as SLEAP "
                    "tracks: slp, dlc, nwb, coco (inference/label_files.py). Default: slp "
                    "when sleap-io is installed (pip install \"mamkpd-jax[labels]\"), else "
                    "coco only.")


def make_detector(spec, source, classes=("person",), score_threshold=0.3, max_tracks=0):
  """detectors.make_detector; classes and score_threshold are YOLOX's; max_tracks the
  background detector's number of animals (0: one, the largest region, as for one animal)."""
  if spec.startswith("yolox:"):
    classes = classes[0] if len(classes) == 1 else list(classes)
    return detectors.make_detector(spec, classes=classes, score_threshold=score_threshold)
  if spec.startswith("background"):
    return detectors.make_detector(spec, source=source, max_tracks=max_tracks or 1)
  return detectors.make_detector(spec, source=source)


def label_paths(source, output_dir, formats):
  """{format: OUTPUT/<stem>.<ext>} of the label files, beside the mp4 and the json."""
  _, json_path = tracking.output_paths(source, output_dir)
  return label_files.output_paths(os.path.splitext(json_path)[0], formats)


def check_label_outputs(source, output_dir, formats):
  """Errors of the label files before any model loads (NWB of a frame folder, a file
  that exists or would overwrite the input)."""
  if video.webcam_index(source) is None and os.path.isdir(str(source)):
    label_files.check_images(formats)
  inputs = [] if video.webcam_index(source) is not None else [source]
  label_files.check_outputs(label_paths(source, output_dir, formats), inputs)


def write_label_files(result, source, output_dir, info, formats):
  """The label files of track_video's json (frame_records: frame_index, file_name,
  track_id): poses of a video file or of a frame folder's images; a webcam's poses
  refer to the mp4 recorded beside them. Returns {format: path}."""
  paths = label_paths(source, output_dir, formats)
  if not paths:
    return {}
  with open(result["json"], encoding="utf-8") as f:
    records = json.load(f)
  if video.webcam_index(source) is not None:
    source = os.path.splitext(result["json"])[0] + ".mp4"
  elif os.path.isdir(str(source)):
    source = video.list_image_files(source)
  return label_files.write_records(records, source, info, paths, frame_key="frame_index")


def run(source, output_dir, model, detector_spec="", classes=("person",),
        score_threshold=0.3, fast_compile=False, formats=None, **tracking_options):
  """The command's work from plain values; returns tracking.track_video's summary with
  "labels": {format: path} of the label files written.

  source: a video, a folder of frames or a webcam index ("0"); model: (checkpoint,
  weights, config) as model_flags.ModelSource; formats: --formats (None: slp when
  sleap-io is installed, and the json); **tracking_options: track_video's (det_every,
  smoothing, batch_frames, max_frames, log_every, max_tracks, ...)."""
  webcam = video.webcam_index(source)
  source = source if webcam is None else webcam
  chosen = label_files.parse_formats(formats)
  if not formats:
    logging.info("%s", label_files.describe_default(chosen))
  tracking.output_paths(source, output_dir)      # would overwrite the input: before loading
  check_label_outputs(source, output_dir, chosen)
  detector = make_detector(detector_spec, source, classes, score_threshold,
                           tracking_options.get("max_tracks", 0))
  options = inference.FAST_COMPILE_CPU if fast_compile else None
  estimator = inference.load_estimator(*model, compiler_options=options)
  result = tracking.track_video(estimator, source, output_dir, detector=detector,
                                **tracking_options)
  result["labels"] = write_label_files(result, source, output_dir, estimator.info, chosen)
  files = [result["video"], result["json"], *result["labels"].values()]
  written = ", ".join(path for path in files if path)
  print(f"wrote {written}: {result['frames']} frames, track ids {result['track_ids']}")
  print(result["summary"], flush=True)
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  tracking_options = dict(
      det_every=FLAGS.det_every, smoothing=FLAGS.smooth, batch_frames=FLAGS.batch_frames,
      max_frames=FLAGS.max_frames, log_every=FLAGS.log_every, max_tracks=FLAGS.max_tracks,
      keypoint_threshold=FLAGS.threshold, min_cutoff=FLAGS.min_cutoff, beta=FLAGS.beta,
      write_video=FLAGS.video)
  try:
    run(FLAGS.input, FLAGS.output, model_flags.model_source(FLAGS), FLAGS.detector,
        tuple(FLAGS.classes), FLAGS.score_threshold, FLAGS.fast_compile, FLAGS.formats,
        **tracking_options)
  except (ValueError, FileNotFoundError, ImportError,
          checkpointing.CheckpointMismatchError) as error:
    logging.error("%s", error)
    sys.exit(f"track: {error}")
