"""Synthetic multi-animal clips from single-animal labelled frames, with ground truth.

The bundled open-field frames show one mouse; tracking several animals needs a clip with
several whose identities are known. This module builds one:

    labelled = load_labelled("data/samples/dlc-openfield/openfield_coco.json")
    clip = crossing_clip(labelled, num_frames=90)
    clip.frames      # (T, H, W, 3) RGB uint8
    clip.boxes       # (T, N, 4) xywh: each mouse's pasted extent (ground-truth boxes)
    clip.keypoints   # (T, N, K, 2): its labelled keypoints, moved with it

The background is the per-pixel median of the labelled frames (the mouse moves, so the
median is the empty arena); a mouse is cut out of a labelled frame (pixels differing
from the background inside its padded labelled box, the largest such region), turned
to face along its path, and pasted frame after frame along that path. Every frame of
the clip is a function of its index alone (no randomness).
"""

import dataclasses
import json
import os

import cv2
import numpy as np

from mamkpd_jax.inference import detectors, tracking, video


@dataclasses.dataclass
class Labelled:
  """The labelled frames of one single-animal dataset (F frames, K keypoints)."""

  images: list               # F paths
  keypoints: np.ndarray      # (F, K, 2) image pixels
  boxes: np.ndarray          # (F, 4) xywh labelled boxes
  keypoint_names: tuple      # K names


@dataclasses.dataclass
class Sprite:
  """One animal cut out of a frame: its pixels, where they are, and its keypoints."""

  pixels: np.ndarray         # (h, w, 3) uint8 RGB
  alpha: np.ndarray          # (h, w) float32 in [0, 1]: 1 on the animal
  keypoints: np.ndarray      # (K, 2) in the sprite's pixels


@dataclasses.dataclass
class Clip:
  """A synthetic clip: T frames, N animals with known identities (the index n)."""

  frames: np.ndarray         # (T, H, W, 3) uint8 RGB
  boxes: np.ndarray          # (T, N, 4) xywh, the pasted animals' extents
  keypoints: np.ndarray      # (T, N, K, 2)
  background: np.ndarray     # (H, W, 3) uint8 RGB


def load_labelled(coco_path):
  """The single-animal frames of a COCO keypoint file (image paths relative to its
  folder); frames with other than one annotation are skipped."""
  with open(coco_path, encoding="utf-8") as f:
    data = json.load(f)
  for field in ("images", "annotations", "categories"):
    if field not in data:
      raise ValueError(f"{coco_path}: no {field!r} (not a COCO keypoint file)")
  by_image = {}
  for annotation in data["annotations"]:
    by_image.setdefault(annotation["image_id"], []).append(annotation)
  root = os.path.dirname(os.path.abspath(coco_path))
  images, keypoints, boxes = [], [], []
  for image in sorted(data["images"], key=lambda i: i["file_name"]):
    found = by_image.get(image["id"], [])
    if len(found) != 1:
      continue
    images.append(os.path.join(root, image["file_name"]))
    keypoints.append(np.reshape(found[0]["keypoints"], (-1, 3))[:, :2])
    boxes.append(found[0]["bbox"])
  if not images:
    raise ValueError(f"{coco_path}: no image with exactly one annotation")
  return Labelled(images, np.array(keypoints, np.float32), np.array(boxes, np.float32),
                  tuple(data["categories"][0]["keypoints"]))


def median_background(frames):
  """The per-pixel median (H, W, 3) uint8 of frames (N, H, W, 3): the empty arena."""
  return np.median(np.stack(frames), axis=0).astype(np.uint8)


def cut_out(frame, background, box, keypoints, padding=1.4, threshold=30, opening=5):
  """The animal in frame (H, W, 3) inside box (4,) xywh scaled by padding: the largest
  region whose grey level differs from background's by more than threshold (opened
  with an opening x opening ellipse, then the holes filled) -> Sprite."""
  height, width = frame.shape[:2]
  x, y, w, h = box
  x0, y0 = int(max(x - (padding - 1) * w / 2, 0)), int(max(y - (padding - 1) * h / 2, 0))
  x1 = int(min(x + w + (padding - 1) * w / 2, width))
  y1 = int(min(y + h + (padding - 1) * h / 2, height))
  gray = [cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
          for image in (frame, background)]
  mask = (cv2.absdiff(*gray) > threshold).astype(np.uint8)
  mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN,
                          cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (opening, opening)))
  count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
  if count < 2:
    raise ValueError(f"no animal differs from the background inside box {list(box)}")
  largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
  mask = (labels == largest).astype(np.uint8)
  contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
  mask = cv2.drawContours(np.zeros_like(mask), contours, -1, 1, cv2.FILLED)  # no holes
  return Sprite(frame[y0:y1, x0:x1].copy(), mask.astype(np.float32),
                np.asarray(keypoints, np.float32) - [x0, y0])


def heading(keypoints, tail=3, head=0):
  """The angle (radians, image axes: x right, y down) from keypoint tail to head."""
  dx, dy = keypoints[head] - keypoints[tail]
  return float(np.arctan2(dy, dx))


def rotate(sprite, angle):
  """sprite turned by angle (radians, counter-clockwise as seen: image y points down)
  about its centre, on a canvas large enough to hold it."""
  h, w = sprite.alpha.shape
  size = int(np.ceil(np.hypot(h, w))) + 2
  matrix = cv2.getRotationMatrix2D((w / 2, h / 2), np.degrees(angle), 1.0)     # (2, 3)
  matrix[:, 2] += [(size - w) / 2, (size - h) / 2]
  pixels = cv2.warpAffine(sprite.pixels, matrix, (size, size), flags=cv2.INTER_LINEAR)
  alpha = cv2.warpAffine(sprite.alpha, matrix, (size, size), flags=cv2.INTER_LINEAR)
  keypoints = sprite.keypoints @ matrix[:, :2].T + matrix[:, 2]
  return Sprite(pixels, alpha, keypoints.astype(np.float32))


def facing(sprite, direction):
  """sprite turned so that its heading (tail base to snout) points along direction
  (radians)."""
  return rotate(sprite, heading(sprite.keypoints) - direction)


def paste(canvas, sprite, center):
  """sprite alpha-blended onto canvas (H, W, 3) uint8 in place, its alpha's centre of mass
  at center (x, y) (rounded to pixels) -> (box (4,) xywh of its visible pixels or None,
  keypoints (K, 2) in canvas pixels)."""
  ys, xs = np.nonzero(sprite.alpha > 0.5)
  offset = np.round(np.asarray(center) - [xs.mean(), ys.mean()]).astype(int)   # (2,)
  h, w = sprite.alpha.shape
  height, width = canvas.shape[:2]
  x0, y0 = max(offset[0], 0), max(offset[1], 0)
  x1, y1 = min(offset[0] + w, width), min(offset[1] + h, height)
  keypoints = sprite.keypoints + offset
  if x1 <= x0 or y1 <= y0:
    return None, keypoints
  alpha = sprite.alpha[y0 - offset[1]:y1 - offset[1], x0 - offset[0]:x1 - offset[0], None]
  pixels = sprite.pixels[y0 - offset[1]:y1 - offset[1], x0 - offset[0]:x1 - offset[0]]
  region = canvas[y0:y1, x0:x1].astype(np.float32)
  canvas[y0:y1, x0:x1] = np.round(alpha * pixels + (1 - alpha) * region).astype(np.uint8)
  shown_y, shown_x = np.nonzero(alpha[..., 0] > 0.5)
  if not len(shown_x):
    return None, keypoints
  box = [x0 + shown_x.min(), y0 + shown_y.min(), shown_x.max() - shown_x.min() + 1,
         shown_y.max() - shown_y.min() + 1]
  return np.array(box, np.float32), keypoints


def straight_path(start, end, num_frames):
  """Centres (T, 2) from start (x, y) to end at constant speed."""
  steps = np.linspace(0.0, 1.0, num_frames)[:, None]
  return (1 - steps) * np.asarray(start, np.float32) + steps * np.asarray(end, np.float32)


def render(background, sprites, paths):
  """A clip of sprites (N) moving along paths (N, T, 2) over background, each turned to
  face its direction of travel; sprite 0 is drawn on top -> Clip."""
  paths = np.asarray(paths, np.float32)
  num_frames = paths.shape[1]
  turned = [facing(sprite, heading(path[[0, -1]], tail=0, head=1))
            for sprite, path in zip(sprites, paths)]
  frames, boxes, keypoints = [], [], []
  for t in range(num_frames):
    canvas = background.copy()
    found = [paste(canvas, sprite, path[t])
             for sprite, path in reversed(list(zip(turned, paths)))][::-1]
    frames.append(canvas)
    boxes.append([box if box is not None else np.full(4, np.nan, np.float32)
                  for box, _ in found])
    keypoints.append([points for _, points in found])
  return Clip(np.stack(frames), np.array(boxes, np.float32), np.array(keypoints, np.float32),
              background)


def crossing_clip(labelled, num_frames=90, sprite_frames=(0, 60), margin=90, offset=0.0,
                  angle=30.0):
  """Two mice crossing: one from the left to the right edge of the arena, the other from
  the right to the left, on paths tilted by +-angle degrees that cross at the centre
  (offset: each path moved that many pixels apart vertically). The mice are cut out of
  labelled frames sprite_frames (indices into labelled); the background is the median
  of all labelled frames."""
  if num_frames < 2:
    raise ValueError(f"crossing_clip needs at least 2 frames, got {num_frames}")
  frames = [video.load_image(path) for path in labelled.images]
  background = median_background(frames)
  sprites = [cut_out(frames[i], background, labelled.boxes[i], labelled.keypoints[i])
             for i in sprite_frames]
  height, width = background.shape[:2]
  rise = np.tan(np.radians(angle)) * (width / 2 - margin)
  center = np.array([width / 2, height / 2])
  paths = [straight_path(center + [margin - width / 2, -rise - offset],
                         center + [width / 2 - margin, rise - offset], num_frames),
           straight_path(center + [width / 2 - margin, -rise + offset],
                         center + [margin - width / 2, rise + offset], num_frames)]
  return render(background, sprites, paths)


def write_frames(clip, folder):
  """The clip's frames as folder/frame%04d.png (an image folder `read_frames` reads);
  refuses a folder that already holds files."""
  if os.path.isdir(folder) and os.listdir(folder):
    raise ValueError(f"{folder} is not empty: choose a new folder for the clip's frames")
  os.makedirs(folder, exist_ok=True)
  paths = []
  for t, frame in enumerate(clip.frames):
    paths.append(os.path.join(folder, f"frame{t:04d}.png"))
    cv2.imwrite(paths[-1], np.ascontiguousarray(frame[..., ::-1]))
  return paths


def ground_truth_frames(clip):
  """Per frame, {animal index: (4,) xywh box} of the animals in view (mot.clear_mot's
  ground truth)."""
  return [{n: box for n, box in enumerate(boxes) if np.all(np.isfinite(box))}
          for boxes in clip.boxes]


def tracked_frames(records, num_frames):
  """Per frame, {track id: (4,) xywh box} of tracking.frame_records' records
  (mot.clear_mot's hypotheses)."""
  frames = [{} for _ in range(num_frames)]
  for record in records:
    frames[record["frame_index"]][record["track_id"]] = np.asarray(record["bbox"], np.float32)
  return frames


def track_clip(estimator, clip, folder, max_tracks=2, known_background=True, **options):
  """The clip through the real pipeline: its frames written to folder/frames, a
  StaticBackgroundDetector of them (max_tracks animals; known_background: its
  background is the clip's empty arena, else the median of the frames) and
  tracking.track_video (max_tracks, **options: its other arguments, e.g.
  split_hints=False) -> (records, track_video's result).

  A short clip of animals crossing on one row covers that row in most of its frames,
  so their median is not the empty arena there; the median of a long recording is."""
  frames = os.path.join(folder, "frames")
  write_frames(clip, frames)
  detector = detectors.StaticBackgroundDetector.from_video(
      frames, max_tracks=max_tracks, background=clip.background if known_background else None)
  result = tracking.track_video(estimator, frames, folder, detector=detector,
                                max_tracks=max_tracks, **{"write_video": False, **options})
  with open(result["json"], encoding="utf-8") as f:
    return json.load(f), result
