"""Two mice crossing: synthetic clips tracked by the real pipeline, ID switches counted.

Builds clips from the bundled single-mouse open-field frames
(mamkpd_jax/inference/synthetic.py: the empty arena, two mice cut out of labelled frames
and moved at constant speed along straight paths that cross at the arena's centre,
their labelled keypoints and boxes moved with them), in five crossing geometries
(GEOMETRIES: diagonals tilted 30, 45 and 60 degrees, one row head-on, two rows 20 px
apart), tracks each with the shipped tiny weights, the static-background detector
(max_tracks=2) and tracking.track_video, twice: with the tracks' predicted boxes as
the detector's hints (split_hints, the default) and without (the previous
behaviour); and counts CLEAR-MOT ID switches, misses, false positives and MOTA against
the pasted boxes (mamkpd_jax/evaluation/mot.py, box IoU >= 0.5).

    python scripts/two_mouse_clip.py --json=/tmp/two_mice.json \\
        --image=docs/images/two_mice_tracking.png

(benchmarks/README.md, "Several animals", holds the recorded run and its JSON.)

Prints a row per geometry and mode and the totals; --json writes them with the
command, machine, JAX version and date; --image writes frames before, during and after
the crossing of --image_geometry (hints on), with the tracked poses and ids drawn.
--background=median builds the detector's background from the clip's frames (which a
90-frame crossing on one row covers) instead of the known empty arena.
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

GEOMETRIES = {                      # name -> synthetic.crossing_clip arguments
    "diagonals_30": {"angle": 30.0},
    "diagonals_45": {"angle": 45.0},
    "diagonals_60": {"angle": 60.0},
    "row_head_on": {"angle": 0.0},
    "rows_20px_apart": {"angle": 0.0, "offset": 10.0},   # each path 10 px off the row
}
MODES = {"hints": True, "no_hints": False}   # TrackingConfig.split_hints

_FRAMES = flags.DEFINE_integer("frames", 90, "Frames in each clip.")
_WEIGHTS = flags.DEFINE_string("weights", "weights/mamkpd_tiny_openfield", "Shipped weights.")
_BACKGROUND = flags.DEFINE_enum("background", "empty", ["empty", "median"],
                                "The detector's background: the clip's empty arena, or "
                                "the median of its frames.")
_JSON = flags.DEFINE_string("json", "", "Write the measurement here.")
_IMAGE = flags.DEFINE_string("image", "", "Write a picture of a tracked crossing here.")
_IMAGE_GEOMETRY = flags.DEFINE_enum("image_geometry", "row_head_on", list(GEOMETRIES),
                                    "The crossing drawn in --image.")


def measure(estimator, clip, split_hints=True, known_background=True):
  """(summary dict, records) of the clip tracked with two tracks."""
  with tempfile.TemporaryDirectory() as folder:
    records, result = synthetic.track_clip(estimator, clip, folder, split_hints=split_hints,
                                           known_background=known_background,
                                           log_every=1000)
  counts = mot.clear_mot(synthetic.ground_truth_frames(clip),
                         synthetic.tracked_frames(records, len(clip.frames)))
  both = sum(len({r["track_id"] for r in records if r["frame_index"] == t}) == 2
             for t in range(len(clip.frames)))
  return {
      "id_switches": counts["id_switches"], "mota": round(counts["mota"], 4),
      "matches": counts["matches"], "misses": counts["misses"],
      "false_positives": counts["false_positives"], "objects": counts["objects"],
      "switch_frames": counts["switch_frames"], "frames_with_two_tracks": both,
      "track_ids": result["track_ids"], "frames": result["frames"],
      "frames_per_second": round(result["frames_per_second"], 2),
      "steady_frames_per_second": round(result["steady_frames_per_second"] or 0, 2),
  }, records


def total(rows):
  """The counts of rows (summary dicts) added up; MOTA of the sum."""
  keys = ("id_switches", "matches", "misses", "false_positives", "objects",
          "frames_with_two_tracks", "frames")
  summed = {key: sum(row[key] for row in rows) for key in keys}
  summed["mota"] = round(mot.mota(summed), 4)
  return summed


def line(name, mode, row):
  return (f"{name:16s} {mode:9s} {row['id_switches']:2d} ID switches, MOTA "
          f"{row['mota']:.3f} ({row['misses']} misses, {row['false_positives']} false "
          f"positives), both tracked in {row['frames_with_two_tracks']}/{row['frames']} "
          f"frames" + (f", {row['frames_per_second']:.1f} frames/s"
                       if "frames_per_second" in row else ""))


def picture(clip, records, info, frames, path, crop=(130, 170, 510, 310), scale=1.0):
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
  estimator = inference.Estimator.from_pretrained(_WEIGHTS.value)
  known = _BACKGROUND.value == "empty"
  results, drawn = {}, None
  for name, geometry in GEOMETRIES.items():
    clip = synthetic.crossing_clip(labelled, _FRAMES.value, **geometry)
    results[name] = {}
    for mode, hints in MODES.items():
      results[name][mode], records = measure(estimator, clip, hints, known)
      print(line(name, mode, results[name][mode]), flush=True)
      if name == _IMAGE_GEOMETRY.value and hints:
        drawn = (clip, records)
  totals = {mode: total([results[name][mode] for name in GEOMETRIES]) for mode in MODES}
  for mode, row in totals.items():
    print(line("total", mode, row))
  if _JSON.value:
    with open(_JSON.value, "w", encoding="utf-8") as f:
      json.dump({"command": "python " + " ".join(sys.argv), "machine": machine(),
                 "jax": jax.__version__, "python": platform.python_version(),
                 "date": datetime.date.today().isoformat(),
                 "load_average": os.getloadavg(),
                 "clips": {"frames": _FRAMES.value, "size": [480, 640],
                           "geometries": GEOMETRIES,
                           "background": "the clip's empty arena" if known else
                                         "the median of the clip's frames"},
                 "tracking": {"detector": "StaticBackgroundDetector(max_tracks=2)",
                              "max_tracks": 2, "weights": _WEIGHTS.value,
                              "modes": {"hints": "split_hints=True (the tracks' predicted "
                                                 "boxes split touching mice)",
                                        "no_hints": "split_hints=False (the previous "
                                                    "behaviour: k-means by shape)"}},
                 "metric": "CLEAR-MOT (Bernardin & Stiefelhagen 2008), box IoU >= 0.5, "
                           "Hungarian per frame (mamkpd_jax/evaluation/mot.py)",
                 "total": totals, "per_geometry": results}, f, indent=1)
    print(f"wrote {_JSON.value}")
  if _IMAGE.value:
    clip, records = drawn
    middle = len(clip.frames) // 2
    frames = [max(middle - 12, 0), middle - 3, middle + 3, min(middle + 12,
                                                                 len(clip.frames) - 1)]
    picture(clip, records, estimator.info, frames, _IMAGE.value)
    print(f"wrote {_IMAGE.value} ({os.path.getsize(_IMAGE.value) // 1024} KB)")


if __name__ == "__main__":
  app.run(main)
