"""`mamkpd track` (scripts/track.py): poses tracked through a video, a folder of frames or
a webcam, drawn with track ids.

    mamkpd track --weights=weights/mamkpd_tiny_openfield \
        --input=data/samples/dlc-openfield/labeled-data/m4s1 --detector=background \
        --max_tracks=1 --output=/tmp/track
    mamkpd track --checkpoint=WORKDIR --input=people.mp4 \
        --detector=yolox:yolox_tiny.onnx --det_every=5 --smooth --output=/tmp/track
    mamkpd track --checkpoint=WORKDIR --input=0 --detector=yolox:yolox_tiny.onnx \
        --output=/tmp/webcam        # webcam 0 until Ctrl-C (or --max_frames)

--detector: "background" (one animal under a fixed camera: the median frame is the
background), "yolox:PATH" (an official YOLOX ONNX export; pip install 'mamkpd-jax[onnx]';
--classes picks person, animal or COCO class names), "boxes:PATH" (a COCO detections
json keyed by frame index or file name), or "" (the whole first frame, then boxes carried
from the keypoints). Writes OUTPUT/<input stem>.mp4 (poses, boxes, "id N") and
OUTPUT/<input stem>.json: per pose frame_index, track_id, bbox [x, y, w, h], keypoints
[x, y, score] * K, score (COCO results fields). The library function is
mamkpd_jax.inference.tracking.track_video.
"""

import sys

from absl import app, flags, logging

from mamkpd_jax import inference
from mamkpd_jax.inference import detectors, tracking, video
from mamkpd_jax.training import checkpointing
from mamkpd_jax.commands import model_flags

flags.adopt_module_key_flags(model_flags)     # --checkpoint | --weights, --config
_INPUT = flags.DEFINE_string("input", None, "A video, a folder of frames or a webcam index.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for the mp4 and the json.")
_DETECTOR = flags.DEFINE_string("detector", "", "background, yolox:PATH, boxes:PATH or ''.")
_CLASSES = flags.DEFINE_list("classes", ["person"], "YOLOX classes: person, animal or COCO "
                             "class names.")
_SCORE = flags.DEFINE_float("score_threshold", 0.3, "YOLOX: boxes below this are dropped.")
_DET_EVERY = flags.DEFINE_integer("det_every", 1, "Run the detector every N frames; boxes "
                                  "are carried from the keypoints in between.")
_MAX_TRACKS = flags.DEFINE_integer("max_tracks", 0, "The number of subjects when known (1 "
                                   "for a single animal): new ids only up to it; 0: any.")
_SMOOTH = flags.DEFINE_bool("smooth", False, "One-Euro filter the keypoints of each track.")
_MIN_CUTOFF = flags.DEFINE_float("min_cutoff", 1.0, "One-Euro min_cutoff (Hz): lower "
                                 "smooths more.")
_BETA = flags.DEFINE_float("beta", 0.05, "One-Euro beta: higher follows fast motion more.")
_BATCH = flags.DEFINE_integer("batch_frames", 8, "Frames per model call (det_every=1).")
_MAX_FRAMES = flags.DEFINE_integer("max_frames", None, "Stop after this many frames.")
_THRESHOLD = flags.DEFINE_float("threshold", 0.3, "Keypoints below this score are not "
                                "drawn nor carried into the next box.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 50, "Progress line every N frames.")
_FAST_COMPILE = flags.DEFINE_bool("fast_compile", False, "XLA:CPU optimisation level 0: "
                                  "compiles ~3x faster, runs ~1.7x slower.")
flags.mark_flags_as_required(["input", "output"])


def make_detector(spec, source):
  """detectors.make_detector with the YOLOX flags."""
  if spec.startswith("yolox:"):
    classes = _CLASSES.value[0] if len(_CLASSES.value) == 1 else _CLASSES.value
    return detectors.make_detector(spec, classes=classes, score_threshold=_SCORE.value)
  return detectors.make_detector(spec, source=source)


def run():
  source = _INPUT.value
  webcam = video.webcam_index(source)
  detector = make_detector(_DETECTOR.value, source if webcam is None else webcam)
  options = inference.FAST_COMPILE_CPU if _FAST_COMPILE.value else None
  estimator = model_flags.load_estimator(options)
  result = tracking.track_video(
      estimator, source if webcam is None else webcam, _OUTPUT.value, detector=detector,
      det_every=_DET_EVERY.value, smoothing=_SMOOTH.value, batch_frames=_BATCH.value,
      max_frames=_MAX_FRAMES.value, log_every=_LOG_EVERY.value,
      max_tracks=_MAX_TRACKS.value, keypoint_threshold=_THRESHOLD.value,
      min_cutoff=_MIN_CUTOFF.value, beta=_BETA.value)
  print(f"wrote {result['video']} and {result['json']}: {result['frames']} frames, "
        f"track ids {result['track_ids']}, {result['frames_per_second']:.1f} frames/s")
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    run()
  except (ValueError, FileNotFoundError, ImportError,
          checkpointing.CheckpointMismatchError) as error:
    logging.error("%s", error)
    sys.exit(f"track: {error}")


