"""Two mice crossing: a synthetic clip tracked by the real pipeline, ID switches counted.

Builds a clip from the bundled single-mouse open-field frames
(mamkpd_jax/inference/synthetic.py: the median background, two mice cut out of labelled
frames and moved along diagonals that cross at the arena's centre, their labelled
keypoints and boxes moved with them), tracks it with the shipped tiny weights, the
static-background detector (max_tracks=2) and tracking.track_video, and counts CLEAR-MOT
ID switches, misses, false positives and MOTA against the pasted boxes
(mamkpd_jax/evaluation/mot.py, box IoU >= 0.5).

    python scripts/two_mouse_clip.py \\
        --json=benchmarks/cpu_2026-12-07_two_mice.json \\
        --image=docs/images/two_mice_tracking.png

Prints the counts and the speed; --json writes them with the command, machine, JAX
version and date; --image writes frames before, during and after the crossing with the
tracked poses and ids drawn. --predict_frames=0 tracks with the last boxes alone (no
motion prediction), for comparison.
"""

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

import cv2
import jax
import numpy as np
from absl import app, flags

from mamkpd_jax import inference
from mamkpd_jax.evaluation import mot
from mamkpd_jax.inference import synthetic, tracking

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = os.path.join(REPO, "data/samples/dlc-openfield/openfield_coco.json")

_FRAMES = flags.DEFINE_integer("frames", 90, "Frames in the clip.")
_ANGLE = flags.DEFINE_float("angle", 30.0, "The paths' tilt from horizontal (degrees).")
_OFFSET = flags.DEFINE_float("offset", 0.0, "Pixels the paths are moved apart vertically.")
_WEIGHTS = flags.DEFINE_string("weights", "weights/mamkpd_tiny_openfield", "Shipped weights.")
_PREDICT = flags.DEFINE_integer("predict_frames", 3, "TrackingConfig.predict_frames (0: "
                                "no motion prediction).")
_JSON = flags.DEFINE_string("json", "", "Write the measurement here.")
_IMAGE = flags.DEFINE_string("image", "", "Write a picture of the tracked crossing here.")


def measure(estimator, clip, predict_frames=3):
  """(clear_mot counts, track_video's result, records) of the clip tracked with two
  tracks."""
  with tempfile.TemporaryDirectory() as folder:
    records, result = synthetic.track_clip(estimator, clip, folder,
                                           predict_frames=predict_frames, log_every=1000)
  counts = mot.clear_mot(synthetic.ground_truth_frames(clip),
                         synthetic.tracked_frames(records, len(clip.frames)))
  return counts, result, records


def picture(clip, records, info, frames, path, crop=(120, 80, 520, 400), scale=0.5):
  """The tracked poses and ids of frames drawn on the clip, the crop (x0, y0, x1, y1) of
  each side by side, scaled, with the frame index written -> PNG at path."""
  tiles = []
  for t in frames:
    mine = [r for r in records if r["frame_index"] == t]
    prediction = inference.Prediction(
        np.array([r["bbox"] for r in mine], np.float32).reshape(-1, 4),
        np.array([np.reshape(r["keypoints"], (-1, 3))[:, :2] for r in mine],
                 np.float32).reshape(len(mine), -1, 2),
        np.array([np.reshape(r["keypoints"], (-1, 3))[:, 2] for r in mine],
                 np.float32).reshape(len(mine), -1),
        np.array([r["score"] for r in mine], np.float32),
        track_ids=np.array([r["track_id"] for r in mine], np.int64))
    drawn = tracking.draw_tracked(clip.frames[t], prediction, info, 0.3)
    x0, y0, x1, y1 = crop
    tile = cv2.resize(drawn[y0:y1, x0:x1], None, fx=scale, fy=scale,
                      interpolation=cv2.INTER_AREA)
    cv2.putText(tile, f"frame {t}", (6, tile.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1, cv2.LINE_AA)
    tiles.append(tile)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  cv2.imwrite(path, cv2.cvtColor(np.concatenate(tiles, 1), cv2.COLOR_RGB2BGR),
              [cv2.IMWRITE_PNG_COMPRESSION, 9])


def machine():
  """lscpu's model name and the core count."""
  try:
    lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    model = next(line.split(":", 1)[1].strip() for line in lines.splitlines()
                 if line.startswith("Model name"))
  except (OSError, subprocess.CalledProcessError, StopIteration):
    model = platform.processor() or "unknown"
  return f"{model}, {os.cpu_count()} cores"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for path in (_JSON.value, _IMAGE.value):
    if path and os.path.exists(path):
      sys.exit(f"two_mouse_clip: {path} exists; choose another path or move it away")
  labelled = synthetic.load_labelled(LABELS)
  clip = synthetic.crossing_clip(labelled, _FRAMES.value, offset=_OFFSET.value,
                                 angle=_ANGLE.value)
  estimator = inference.Estimator.from_pretrained(_WEIGHTS.value)
  counts, result, records = measure(estimator, clip, _PREDICT.value)
  both = sum(len({r["track_id"] for r in records if r["frame_index"] == t}) == 2
             for t in range(len(clip.frames)))
  summary = {
      "id_switches": counts["id_switches"], "mota": round(counts["mota"], 4),
      "matches": counts["matches"], "misses": counts["misses"],
      "false_positives": counts["false_positives"], "objects": counts["objects"],
      "switch_frames": counts["switch_frames"], "frames_with_two_tracks": both,
      "track_ids": result["track_ids"], "frames": result["frames"],
      "frames_per_second": round(result["frames_per_second"], 2),
      "steady_frames_per_second": round(result["steady_frames_per_second"] or 0, 2),
  }
  print(f"{counts['id_switches']} ID switches, MOTA {counts['mota']:.3f} "
        f"({counts['misses']} misses, {counts['false_positives']} false positives, "
        f"{counts['objects']} objects), both mice tracked in {both}/{len(clip.frames)} "
        f"frames, track ids {result['track_ids']}")
  print(result["summary"])
  if _JSON.value:
    with open(_JSON.value, "w", encoding="utf-8") as f:
      json.dump({"command": "python " + " ".join(sys.argv), "machine": machine(),
                 "jax": jax.__version__, "python": platform.python_version(),
                 "date": datetime.date.today().isoformat(),
                 "load_average": os.getloadavg(),
                 "clip": {"frames": _FRAMES.value, "angle": _ANGLE.value,
                          "offset": _OFFSET.value, "size": list(clip.frames.shape[1:3])},
                 "tracking": {"detector": "StaticBackgroundDetector(max_tracks=2)",
                              "max_tracks": 2, "predict_frames": _PREDICT.value,
                              "weights": _WEIGHTS.value},
                 "metric": "CLEAR-MOT (Bernardin & Stiefelhagen 2008), box IoU >= 0.5, "
                           "Hungarian per frame (mamkpd_jax/evaluation/mot.py)",
                 **summary}, f, indent=1)
    print(f"wrote {_JSON.value}")
  if _IMAGE.value:
    middle = len(clip.frames) // 2
    frames = [max(middle - 15, 0), middle - 3, middle + 3, min(middle + 15,
                                                                 len(clip.frames) - 1)]
    picture(clip, records, estimator.info, frames, _IMAGE.value)
    print(f"wrote {_IMAGE.value} ({os.path.getsize(_IMAGE.value) // 1024} KB)")


if __name__ == "__main__":
  app.run(main)
