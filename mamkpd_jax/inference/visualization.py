"""Pictures of predictions: keypoints and skeleton on the image, heatmap overlays (OpenCV).

Every function takes and returns uint8 RGB arrays (H, W, 3) and never draws into its
input. Keypoints are coloured by side, read from their names (metadata.keypoint_side:
left_*, l_*, *_l, leftX get LEFT_COLOR, the right ones RIGHT_COLOR, others
CENTER_COLOR (mmpose's COCO colours); a skeleton link takes its endpoints' side when
they agree, else the centre colour. Keypoints (and links) below `threshold` are not drawn.
"""

import os

import cv2
import numpy as np

from mamkpd_jax.data_pipelines import metadata
from mamkpd_jax.inference import video

LEFT_COLOR = (0, 255, 0)          # RGB
RIGHT_COLOR = (255, 128, 0)
CENTER_COLOR = (51, 153, 255)
BOX_COLOR = (255, 255, 255)


def side(name):
  """'left', 'right' or 'center' from a keypoint name (metadata.keypoint_side)."""
  return metadata.keypoint_side(name)


def keypoint_colors(names):
  """(K,) RGB colour tuples by side."""
  by_side = {"left": LEFT_COLOR, "right": RIGHT_COLOR, "center": CENTER_COLOR}
  return [by_side[side(name)] for name in names]


def _link_color(names, a, b):
  sides = {side(names[a]), side(names[b])}
  return keypoint_colors([names[a]])[0] if len(sides) == 1 else CENTER_COLOR


def _line_width(image):
  """Marker radius and line thickness that stay visible on small and large images."""
  size = min(image.shape[:2])
  return max(2, round(size / 120)), max(1, round(size / 240))


def _as_image(image):
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
  return image


def _point(xy):
  return int(round(float(xy[0]))), int(round(float(xy[1])))


def _draw_pose(canvas, keypoints, scores, names, skeleton, threshold, radius, thickness):
  """One instance (K, 2), scores (K,), drawn into canvas (BGR) in place."""
  shown = np.isfinite(keypoints).all(-1) & (scores >= threshold)        # (K,)
  for a, b in skeleton:
    if shown[a] and shown[b]:
      color = _link_color(names, a, b)[::-1]
      cv2.line(canvas, _point(keypoints[a]), _point(keypoints[b]), color, thickness,
               cv2.LINE_AA)
  for k, color in enumerate(keypoint_colors(names)):
    if shown[k]:
      cv2.circle(canvas, _point(keypoints[k]), radius, color[::-1], -1, cv2.LINE_AA)


def draw_keypoints(image, keypoints, scores=None, keypoint_names=None, skeleton=(),
                   threshold=0.3, boxes=None):
  """The poses drawn on a copy of image.

  Args:
    image: (H, W, 3) uint8 RGB.
    keypoints: (M, K, 2) or (K, 2) x, y in image pixels.
    scores: (M, K) or (K,) keypoint scores; None draws every keypoint.
    keypoint_names: (K,) names (side colours); None: all centre colour.
    skeleton: (a, b) links, 0-based (DatasetInfo.skeleton).
    threshold: keypoints scoring below it are not drawn.
    boxes: optional (M, 4) xywh boxes, drawn as rectangles.

  Returns:
    (H, W, 3) uint8 RGB.
  """
  image = _as_image(image)
  keypoints = np.asarray(keypoints, np.float64).reshape(-1, *np.shape(keypoints)[-2:])
  num, k = keypoints.shape[:2]
  scores = np.ones((num, k)) if scores is None else np.asarray(scores).reshape(num, k)
  names = list(keypoint_names) if keypoint_names is not None else [""] * k
  canvas = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
  radius, thickness = _line_width(image)
  for x, y, w, h in (np.asarray(boxes).reshape(-1, 4) if boxes is not None else ()):
    cv2.rectangle(canvas, _point((x, y)), _point((x + w, y + h)), BOX_COLOR[::-1], thickness)
  for pose, pose_scores in zip(keypoints, scores):
    _draw_pose(canvas, pose, pose_scores, names, skeleton, threshold, radius, thickness)
  return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)


def draw_prediction(image, prediction, info, threshold=0.3, draw_boxes=True):
  """draw_keypoints for an inference.Prediction and the dataset's DatasetInfo."""
  return draw_keypoints(image, prediction.keypoints, prediction.keypoint_scores,
                        info.keypoint_names, info.skeleton, threshold,
                        prediction.boxes if draw_boxes else None)


def prediction_sheet(image_paths, keypoints, scores, info, threshold=0.3, tile_width=480):
  """Predicted poses on frames, tiled two per row: (H, W, 3) uint8 RGB.

  Args:
    image_paths: (F,) frames to draw.
    keypoints: per frame, (M, K, 2) predictions in image pixels.
    scores: per frame, (M, K) keypoint scores.
    info: the dataset's DatasetInfo (names, skeleton).
    tile_width: each frame is resized to this width.
  """
  tiles = []
  for path, frame_keypoints, frame_scores in zip(image_paths, keypoints, scores):
    drawn = draw_keypoints(video.load_image(path), frame_keypoints, frame_scores,
                           info.keypoint_names, info.skeleton, threshold)
    height = round(drawn.shape[0] * tile_width / drawn.shape[1])
    tiles.append(cv2.resize(drawn, (tile_width, height), interpolation=cv2.INTER_AREA))
  height = max(tile.shape[0] for tile in tiles)
  tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0))) for t in tiles]
  tiles += [np.zeros_like(tiles[0])] * (len(tiles) % 2)
  rows = [np.concatenate(tiles[i:i + 2], axis=1) for i in range(0, len(tiles), 2)]
  return np.concatenate(rows, axis=0)


def heatmap_overlay(image_crop, heatmaps, keypoint=None, alpha=0.5):
  """Heatmaps blended over their crop as a JET colour map.

  Args:
    image_crop: (H, W, 3) uint8 RGB, the network input the heatmaps belong to.
    heatmaps: (h, w, K) (or (h, w)) heatmaps of that crop.
    keypoint: a channel index; None shows the maximum over all channels.
    alpha: weight of the colour map.

  Returns:
    (H, W, 3) uint8 RGB.
  """
  crop = _as_image(image_crop)
  maps = np.asarray(heatmaps, np.float32)
  maps = maps[..., None] if maps.ndim == 2 else maps
  if maps.ndim != 3:
    raise ValueError(f"heatmaps must be (h, w, K) or (h, w), got {np.shape(heatmaps)}")
  plane = maps.max(axis=-1) if keypoint is None else maps[..., keypoint]    # (h, w)
  plane = np.clip(plane / max(float(plane.max()), 1e-6), 0.0, 1.0)
  plane = cv2.resize(plane, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR)
  colored = cv2.applyColorMap(np.round(plane * 255).astype(np.uint8), cv2.COLORMAP_JET)
  colored = cv2.cvtColor(colored, cv2.COLOR_BGR2RGB)
  return cv2.addWeighted(crop, 1.0 - alpha, colored, alpha, 0.0)


def heatmap_grid(image_crop, heatmaps, keypoint_names=None):
  """The crop, then one overlay per keypoint, side by side: (H, (K + 1) W, 3) uint8."""
  maps = np.asarray(heatmaps, np.float32)
  tiles = [_as_image(image_crop)]
  for k in range(maps.shape[-1]):
    tile = heatmap_overlay(image_crop, maps, keypoint=k).copy()
    if keypoint_names is not None:
      cv2.putText(tile, str(keypoint_names[k])[:12], (2, 12), cv2.FONT_HERSHEY_SIMPLEX,
                  0.35, (255, 255, 255), 1, cv2.LINE_AA)
    tiles.append(tile)
  return np.concatenate(tiles, axis=1)


def save_image(path, image):
  """Writes an (H, W, 3) uint8 RGB array (PNG, JPEG, ... by extension); returns path."""
  image = _as_image(image)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
    raise ValueError(f"could not write an image to {path} (unknown extension?)")
  return path


def draw_labels(image, boxes, labels):
  """Text labels (e.g. "id 3") at the top-left corners of boxes (M, 4) xywh, white on a
  dark outline, on a copy of image (H, W, 3) uint8 RGB."""
  canvas = _as_image(image).copy()
  scale = max(0.4, min(canvas.shape[:2]) / 800)
  for (x, y, _, _), label in zip(np.asarray(boxes).reshape(-1, 4), labels):
    origin = (int(round(x)), max(int(round(y)) - 4, 12))
    for color, width in ((0, 0, 0), 3), (BOX_COLOR, 1):
      cv2.putText(canvas, str(label), origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color, width,
                  cv2.LINE_AA)
  return canvas
