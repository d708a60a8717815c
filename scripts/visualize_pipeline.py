"""A PNG grid of what the network is fed: augmented crops, keypoints and target heatmaps.

Runs the real transforms of the config (pipeline.train_transforms, or the evaluation
transforms plus the codec's target for --split=eval) in this process over a seeded
grain.MapDataset, so the grid is the same for the same --seed. Each instance is two
tiles side by side: the crop (un-normalised back to RGB) with its labelled keypoints and
the dataset's skeleton (left keypoints/links in blue, right in orange, the rest green),
and the crop with the target heatmaps (max over keypoints) overlaid as a colour map.

    python scripts/visualize_pipeline.py --config=configs/sample_coco.py --output=crops.png
    python scripts/visualize_pipeline.py --config=configs/sample_coco.py --output=eval.png \
        --split=eval --num=8 --seed=1

Only keypoints with target weight > 0 are drawn (labelled and with their Gaussian on
the heatmap). --split=eval uses GT boxes even when the config names a det_file
(detections carry no keypoints to draw). With --json the last stdout line is one JSON
object: output, num (instances drawn), split, seed, tile [H, W], grid [rows, cols],
image [height, width].
"""

import json
import math

import cv2
import grain
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from mamkpd_jax.data_pipelines import pipeline, transforms

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/*.py file.",
                                          lock_config=True)
_OUTPUT = flags.DEFINE_string("output", None, "PNG file to write.")
_NUM = flags.DEFINE_integer("num", 16, "Number of instances drawn.", lower_bound=1)
_SPLIT = flags.DEFINE_enum("split", "train", ["train", "eval"],
                           "train: training augmentation; eval: evaluation crops.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the instance order and augmentation.")
_COLUMNS = flags.DEFINE_integer("columns", 4, "Instances per row.", lower_bound=1)
_JSON = flags.DEFINE_bool("json", False, "End stdout with one JSON object.")
flags.mark_flags_as_required(["config", "output"])

# BGR (cv2 draws in BGR).
LEFT_COLOUR = (255, 128, 0)       # blue
RIGHT_COLOUR = (0, 128, 255)      # orange
CENTRE_COLOUR = (0, 200, 0)       # green
HEATMAP_ALPHA = 0.75              # colour-map weight at a heatmap peak (0 where cold)


# ---------------------------------------------------------------- the pipeline


def without_select_keys(steps):
  """The transforms minus the final SelectKeys, so keypoints survive for drawing."""
  return [step for step in steps if not isinstance(step, pipeline.SelectKeys)]


def visual_transforms(config, info, codec, split):
  """The split's transforms, each element ending with image, keypoints and heatmaps."""
  if split == "train":
    return without_select_keys(pipeline.train_transforms(config, info, codec))
  return without_select_keys(pipeline.eval_transforms(config)) + [
      transforms.GenerateTarget(codec)]


def instance_dataset(config, split, seed):
  """A seeded, shuffled grain.MapDataset of the split's transformed instances."""
  if split == "eval":
    config = pipeline.with_gt_boxes(config)
  info = pipeline.dataset_info(config)
  codec = pipeline.make_codec(config)
  instances = pipeline.load_instances(config, info, "train" if split == "train" else "val")
  if not instances:
    raise ValueError(f"no {split} instances with keypoints in config {config.data.dataset!r}")
  dataset = grain.MapDataset.source(pipeline.InstanceSource(instances)).seed(seed).shuffle()
  for step in visual_transforms(config, info, codec, split):
    if isinstance(step, grain.transforms.RandomMap):
      dataset = dataset.random_map(step)
    elif isinstance(step, grain.transforms.Filter):
      dataset = dataset.filter(step)            # a dropped element reads back as None
    else:
      dataset = dataset.map(step)
  return dataset, info


# ---------------------------------------------------------------- drawing


def to_bgr_uint8(image):
  """(H, W, 3) uint8 RGB crop (the pipeline's output) -> (H, W, 3) uint8 BGR for cv2."""
  return np.ascontiguousarray(np.asarray(image, np.uint8)[..., ::-1])


def keypoint_side(name):
  """'left', 'right' or 'centre' from a keypoint name (left_eye, l_hip, L_Eye, leftear)."""
  lower = name.lower()
  if lower.startswith(("left", "l_")):
    return "left"
  if lower.startswith(("right", "r_")):
    return "right"
  return "centre"


def side_colour(*sides):
  if all(side == "left" for side in sides):
    return LEFT_COLOUR
  if all(side == "right" for side in sides):
    return RIGHT_COLOUR
  return CENTRE_COLOUR


def draw_pose(image, keypoints, weights, info):
  """Skeleton links and keypoints with weight > 0 on a copy of image (H, W, 3) BGR."""
  canvas = image.copy()
  sides = [keypoint_side(name) for name in info.keypoint_names]
  points = [tuple(int(round(v)) for v in point) for point in np.asarray(keypoints)]
  shown = np.asarray(weights) > 0                                     # (K,)
  for a, b in info.skeleton:
    if shown[a] and shown[b]:
      cv2.line(canvas, points[a], points[b], side_colour(sides[a], sides[b]), 2, cv2.LINE_AA)
  for k in np.flatnonzero(shown):
    cv2.circle(canvas, points[k], 3, side_colour(sides[k]), -1, cv2.LINE_AA)
    cv2.circle(canvas, points[k], 3, (255, 255, 255), 1, cv2.LINE_AA)
  return canvas


def overlay_heatmaps(image, heatmaps):
  """image (H, W, 3) BGR with max_k heatmaps (h, w, K) resized and colour-mapped on top."""
  height, width = image.shape[:2]
  peak = np.asarray(heatmaps).max(axis=-1)                          # (h, w)
  peak = cv2.resize(peak.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
  peak = np.clip(peak, 0, 1)                                         # (H, W)
  colours = cv2.applyColorMap((peak * 255).astype(np.uint8), cv2.COLORMAP_JET)
  alpha = (HEATMAP_ALPHA * np.sqrt(peak))[..., None]                # opaque where hot
  return (image * (1 - alpha) + colours * alpha).astype(np.uint8)


def tile_pair(element, info, index):
  """One instance -> (H, 2W, 3) uint8: crop with pose | crop with heatmaps."""
  image = to_bgr_uint8(element["image"])
  pose = draw_pose(image, element["keypoints"], element["keypoint_weights"], info)
  cv2.putText(pose, str(index), (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
              cv2.LINE_AA)
  return np.concatenate([pose, overlay_heatmaps(image, element["heatmaps"])], axis=1)


def grid(tiles, columns):
  """Tiles (each (H, W, 3)) -> one (rows * H, columns * W, 3) image, blank-padded."""
  columns = min(columns, len(tiles))
  rows = math.ceil(len(tiles) / columns)
  blank = np.zeros_like(tiles[0])
  tiles = tiles + [blank] * (rows * columns - len(tiles))
  return np.concatenate([np.concatenate(tiles[r * columns:(r + 1) * columns], axis=1)
                         for r in range(rows)], axis=0)


# ---------------------------------------------------------------- main


def render(config, num, split, seed, columns):
  """(grid image (uint8 BGR), instances drawn): `num`, fewer if the split has fewer."""
  dataset, info = instance_dataset(config, split, seed)
  count = min(num, len(dataset))
  if count < num:
    logging.warning("The %s split has only %d instances; drawing %d", split, count, count)
  tiles = []
  for index in range(len(dataset)):
    if len(tiles) == count:
      break
    element = dataset[index]                    # None: dropped (unreadable image)
    if element is not None:
      tiles.append(tile_pair(element, info, len(tiles)))
  return grid(tiles, columns), count


def save_png(path, image):
  if not path.lower().endswith(".png"):
    raise ValueError(f"--output must be a .png file, got {path!r}")
  if not cv2.imwrite(path, image):
    raise ValueError(f"could not write {path!r} (does its folder exist?)")


def main(argv):
  del argv
  config = _CONFIG.value
  try:
    image, count = render(config, _NUM.value, _SPLIT.value, _SEED.value, _COLUMNS.value)
    save_png(_OUTPUT.value, image)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"visualize_pipeline.py: {e}") from None
  height, width = pipeline.input_size(config)
  rows, cols = image.shape[0] // height, image.shape[1] // (2 * width)
  print(f"Wrote {_OUTPUT.value}: {count} instances in {rows}x{cols} ({_SPLIT.value}, seed "
        f"{_SEED.value}), each crop {height}x{width} | target heatmaps")
  if _JSON.value:
    print(json.dumps({"output": _OUTPUT.value, "num": count,
                      "split": _SPLIT.value, "seed": _SEED.value, "tile": [height, width],
                      "grid": [rows, cols], "image": list(image.shape[:2])}))


if __name__ == "__main__":
  app.run(main)
