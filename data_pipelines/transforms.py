"""Top-down Grain transforms (mmpose 1.x train/val pipeline) on one instance dict.

Element contract (shared with the dataset sources):

    image_path str, image_id int, instance_id int,
    bbox (4,) float32 xywh image px, bbox_score () float32,
    keypoints (K, 2) float32 image px, keypoints_visible (K,) float32 in {0, 1},
    image (H, W, 3) uint8 RGB (after DecodeImage).

The transforms add center (2,), scale (2,) and rotation () (float32, image pixels and
degrees, see `geometry`); TopdownAffine replaces image by the (H_in, W_in, 3) crop and
keypoints by input-pixel coordinates; GenerateTarget adds heatmaps (h, w, K) and
keypoint_weights (K,). Sizes are (height, width) throughout.

mmpose 1.x order, with its defaults (docs/conventions.md, Training augmentation):

    train: DecodeImage, BoxToCenterScale, RandomFlip, RandomHalfBody,
           RandomBBoxTransform, TopdownAffine, GenerateTarget
    val:   DecodeImage, BoxToCenterScale, TopdownAffine

Every transform returns a new dict and never writes into the arrays it was given.
Random transforms draw only from the `rng` Grain passes in, so a seed fixes the output.
"""

import os

import cv2
import grain
import numpy as np
from absl import logging

from mamkpd_jax.data_pipelines import codecs, geometry, metadata



def _field(element, key, owner):
  """element[key], or a ValueError naming the transform and the missing field."""
  if key not in element:
    raise ValueError(f"{owner}: element has no {key!r} field (fields: {sorted(element)})")
  return element[key]


def _keypoints(element, owner):
  """(keypoints (K, 2), keypoints_visible (K,)) with their shapes checked."""
  keypoints = np.asarray(_field(element, "keypoints", owner))
  visible = np.asarray(_field(element, "keypoints_visible", owner))
  if keypoints.ndim != 2 or keypoints.shape[1] != 2:
    raise ValueError(f"{owner}: keypoints must have shape (K, 2), got {keypoints.shape}")
  if visible.shape != keypoints.shape[:1]:
    raise ValueError(f"{owner}: keypoints_visible must have shape {keypoints.shape[:1]} "
                     f"to match keypoints, got {visible.shape}")
  return keypoints, visible


def _image(element, owner):
  image = np.asarray(_field(element, "image", owner))
  if image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
    raise ValueError(f"{owner}: image must have shape (H, W, C), got {image.shape}")
  return image


def _probability(value, name):
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"{name} must be in [0, 1], got {value}")
  return float(value)


def _index_list(indices, name):
  indices = [int(i) for i in indices]
  if not indices or min(indices) < 0:
    raise ValueError(f"{name} must be a non-empty list of keypoint indices, got {indices}")
  return indices


def truncated_normal(rng, size):
  """Standard normal samples truncated to [-1, 1] (rejection sampling), float64."""
  samples = rng.standard_normal(size)
  outside = np.abs(samples) > 1
  while outside.any():
    samples[outside] = rng.standard_normal(int(outside.sum()))
    outside = np.abs(samples) > 1
  return samples


def decode_image_bytes(data, path):
  """Encoded JPEG/PNG bytes -> uint8 RGB (H, W, 3); a ValueError names `path`."""
  data = np.frombuffer(data, dtype=np.uint8)
  image_bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
  if image_bgr is None:
    raise ValueError(f"image_path {path!r}: not a readable image (empty or corrupt file)")
  return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)


def decode_image(path):
  """Reads an image file as uint8 RGB (H, W, 3); a ValueError names a bad path."""
  if not os.path.isfile(path):
    raise ValueError(f"image_path {path!r}: no such file")
  return decode_image_bytes(np.fromfile(path, dtype=np.uint8).tobytes(), path)


class DecodeImage(grain.transforms.Map):
  """Adds "image" (H, W, 3) uint8 RGB: from element["image_bytes"] when the source
  carries the encoded file (ArrayRecord), else read from element["image_path"].

  A missing or corrupt image raises a ValueError naming the path, or with
  on_bad="skip" is logged and gets image None, which `DropUndecoded` then removes.
  """

  def __init__(self, on_bad="error"):
    if on_bad not in ("error", "skip"):
      raise ValueError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
    self.on_bad = on_bad

  def map(self, element):
    element = dict(element)
    path = str(_field(element, "image_path", "DecodeImage"))
    try:
      if "image_bytes" in element:
        element["image"] = decode_image_bytes(element.pop("image_bytes"), path)
      else:
        element["image"] = decode_image(path)
    except ValueError as error:
      if self.on_bad == "error":
        raise
      logging.warning("skipping instance %s: %s", element.get("instance_id"), error)
      element["image"] = None
    return element


class DropUndecoded(grain.transforms.Filter):
  """Removes the elements whose image `DecodeImage(on_bad="skip")` could not read."""

  def filter(self, element):
    return element.get("image") is not None


class BoxToCenterScale(grain.transforms.Map):
  """bbox -> center, scale (padded, aspect-fixed) and rotation 0 (mmpose GetBBoxCenterScale).

  With `clip_to_image` the box is first clipped to the decoded image, as mmpose does for
  ground-truth boxes; pass False for detector boxes (mmpose does not clip those).
  """

  def __init__(self, aspect_ratio, padding=geometry.DEFAULT_PADDING, clip_to_image=True):
    self.aspect_ratio = aspect_ratio
    self.padding = padding
    self.clip_to_image = clip_to_image

  def map(self, element):
    element = dict(element)
    image_size = None
    if self.clip_to_image:
      image_size = _image(element, "BoxToCenterScale").shape[:2]
    center, scale = geometry.box_to_center_scale(
        _field(element, "bbox", "BoxToCenterScale"), self.aspect_ratio, self.padding,
        image_size)
    element["center"], element["scale"] = center, scale
    element["rotation"] = np.float32(0.0)
    return element


def flip_element(element, flip_indices):
  """Horizontal flip of image, keypoints (x' = W-1-x, left/right swapped), center, bbox."""
  owner = "RandomFlip"
  image = _image(element, owner)
  keypoints, visible = _keypoints(element, owner)
  if len(keypoints) != len(flip_indices):
    raise ValueError(f"{owner}: flip_indices has {len(flip_indices)} entries but keypoints "
                     f"has {len(keypoints)} (K must match)")
  width = image.shape[1]
  element = dict(element)
  element["image"] = cv2.flip(image, 1)             # mirror; ~10x a numpy [:, ::-1] copy
  flipped, flipped_visible = codecs.flip_keypoints(keypoints, visible, flip_indices, width)
  element["keypoints"] = flipped.astype(np.float32)                # (K, 2)
  element["keypoints_visible"] = flipped_visible.copy()
  if "center" in element:
    center = np.array(element["center"], dtype=np.float32)
    center[0] = width - 1 - center[0]
    element["center"] = center
  if "bbox" in element:       # xywh: the right edge x + w becomes the left edge
    bbox = np.array(element["bbox"], dtype=np.float32)
    bbox[0] = width - 1 - (bbox[0] + bbox[2])
    element["bbox"] = bbox
  return element


class RandomFlip(grain.transforms.RandomMap):
  """Horizontal flip with probability `prob` (mmpose RandomFlip, direction horizontal)."""

  def __init__(self, flip_indices, prob=0.5):
    flip_indices = list(flip_indices)
    self.flip_indices = np.array(metadata.check_flip_indices(flip_indices, len(flip_indices)))
    self.prob = _probability(prob, "prob")

  def random_map(self, element, rng):
    if rng.random() < self.prob:
      return flip_element(element, self.flip_indices)
    return dict(element)


class RandomHalfBody(grain.transforms.RandomMap):
  """mmpose 1.x RandomHalfBody: re-centre the crop on the upper or lower body.

  Applies with probability `prob` to instances with at least `min_total_keypoints`
  visible keypoints. The upper body is preferred with probability `upper_prob`; a half
  with too few visible keypoints (`min_upper_keypoints`, `min_lower_keypoints`) is never
  chosen, and nothing happens when both halves have too few. The new crop: centre = mean
  of the chosen visible keypoints, size = their extent x `padding`, aspect-fixed. A
  degenerate extent (all chosen keypoints on one line) keeps the old crop.
  """

  def __init__(self, upper_body_ids, lower_body_ids, *, aspect_ratio, prob=0.3,
               min_total_keypoints=9, min_upper_keypoints=2, min_lower_keypoints=3,
               upper_prob=0.7, padding=1.5):
    self.upper_body_ids = _index_list(upper_body_ids, "upper_body_ids")
    self.lower_body_ids = _index_list(lower_body_ids, "lower_body_ids")
    self.aspect_ratio = aspect_ratio
    self.prob = _probability(prob, "prob")
    self.min_total_keypoints = min_total_keypoints
    self.min_upper_keypoints = min_upper_keypoints
    self.min_lower_keypoints = min_lower_keypoints
    self.upper_prob = _probability(upper_prob, "upper_prob")
    self.padding = padding

  def _choose_half(self, visible, rng):
    """Visible ids of the chosen half, or None. Draws as mmpose does (two uniforms)."""
    if (visible > 0).sum() < self.min_total_keypoints:
      return None
    if not rng.random() < self.prob:
      return None
    prefer_upper = rng.random() < self.upper_prob
    upper = [i for i in self.upper_body_ids if visible[i] > 0]
    lower = [i for i in self.lower_body_ids if visible[i] > 0]
    upper_ok = len(upper) >= self.min_upper_keypoints
    lower_ok = len(lower) >= self.min_lower_keypoints
    if upper_ok and lower_ok:
      return upper if prefer_upper else lower
    if upper_ok:
      return upper
    return lower if lower_ok else None

  def random_map(self, element, rng):
    keypoints, visible = _keypoints(element, "RandomHalfBody")
    largest_id = max(self.upper_body_ids + self.lower_body_ids)
    if largest_id >= len(keypoints):
      raise ValueError(f"RandomHalfBody: body ids go up to {largest_id} but keypoints has "
                       f"only {len(keypoints)} entries")
    element = dict(element)
    chosen = self._choose_half(visible, rng)
    if chosen is None:
      return element
    points = keypoints[chosen].astype(np.float64)                # (k, 2)
    extent = (points.max(axis=0) - points.min(axis=0)) * self.padding
    if np.any(extent <= 0):
      return element
    element["center"] = points.mean(axis=0).astype(np.float32)
    element["scale"] = geometry.fix_aspect_ratio(extent, self.aspect_ratio).astype(np.float32)
    return element


class RandomBBoxTransform(grain.transforms.RandomMap):
  """mmpose 1.x RandomBBoxTransform: random shift, resize and rotation of the crop.

  With t ~ N(0, 1) truncated to [-1, 1] (four draws): centre += t[0:2] * shift_factor *
  scale (prob `shift_prob`); scale *= mean + t[2] * half_range of `scale_factor`
  (prob `scale_prob`); rotation = t[3] * rotate_factor degrees (prob `rotate_prob`,
  else 0).
  """

  def __init__(self, shift_factor=0.16, shift_prob=0.3, scale_factor=(0.5, 1.5),
               scale_prob=1.0, rotate_factor=80.0, rotate_prob=0.6):
    low, high = scale_factor
    if not 0 < low <= high:
      raise ValueError(f"scale_factor must be (low, high) with 0 < low <= high, "
                       f"got {scale_factor}")
    self.shift_factor = shift_factor
    self.shift_prob = _probability(shift_prob, "shift_prob")
    self.scale_factor = (float(low), float(high))
    self.scale_prob = _probability(scale_prob, "scale_prob")
    self.rotate_factor = rotate_factor
    self.rotate_prob = _probability(rotate_prob, "rotate_prob")

  def random_map(self, element, rng):
    center = np.asarray(_field(element, "center", "RandomBBoxTransform"), np.float64)
    scale = np.asarray(_field(element, "scale", "RandomBBoxTransform"), np.float64)
    t = truncated_normal(rng, 4)
    shift = t[:2] * self.shift_factor if rng.random() < self.shift_prob else np.zeros(2)
    low, high = self.scale_factor
    resize = (low + high) / 2 + t[2] * (high - low) / 2 if rng.random() < self.scale_prob else 1.0
    rotation = t[3] * self.rotate_factor if rng.random() < self.rotate_prob else 0.0
    element = dict(element)
    element["center"] = (center + shift * scale).astype(np.float32)
    element["scale"] = (scale * resize).astype(np.float32)
    element["rotation"] = np.float32(rotation)
    return element


class TopdownAffine(grain.transforms.Map):
  """Warps the crop to input_size (height, width); keypoints to input pixels (mmpose).

  The crop scale is first aspect-fixed to width / height (as mmpose does, and stored
  back). mmpose 1.x leaves keypoints_visible alone: keypoints that land outside the input
  are down-weighted by the heatmap codec (zero weight when their Gaussian misses the
  map). `invisible_outside=True` instead sets keypoints_visible 0 for keypoints outside
  [0, W) x [0, H) (not mmpose's behaviour; off by default).
  """

  def __init__(self, input_size, use_udp=False, invisible_outside=False):
    self.input_size = geometry.as_size(input_size, "input_size")
    self.use_udp = use_udp
    self.invisible_outside = invisible_outside

  def _matrix(self, center, scale, rotation):
    if self.use_udp:
      return geometry.udp_affine_matrix(center, scale, rotation, self.input_size)
    return geometry.affine_matrix(center, scale, rotation, self.input_size)

  def map(self, element):
    owner = "TopdownAffine"
    height, width = self.input_size
    image = _image(element, owner)
    keypoints, visible = _keypoints(element, owner)
    center = _field(element, "center", owner)
    scale = geometry.fix_aspect_ratio(_field(element, "scale", owner), width / height)
    matrix = self._matrix(center, scale, float(element.get("rotation", 0.0)))
    element = dict(element)
    element["image"] = geometry.warp_image(image, matrix, self.input_size)   # (H, W, 3)
    element["keypoints"] = geometry.transform_points(keypoints, matrix)        # (K, 2)
    element["scale"] = scale.astype(np.float32)
    if self.invisible_outside:
      x, y = element["keypoints"][:, 0], element["keypoints"][:, 1]
      inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
      element["keypoints_visible"] = np.where(inside, visible, 0).astype(np.float32)
    return element


class GenerateTarget(grain.transforms.Map):
  """Adds heatmaps (h, w, K) and keypoint_weights (K,) from codec.encode (float32)."""

  def __init__(self, codec):
    if not callable(getattr(codec, "encode", None)):
      raise ValueError(f"codec must have an encode(keypoints, keypoints_visible) method, "
                       f"got {type(codec).__name__}")
    self.codec = codec

  def map(self, element):
    keypoints, visible = _keypoints(element, "GenerateTarget")
    heatmaps, weights = self.codec.encode(keypoints, visible)
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float32)
    num_keypoints = len(keypoints)
    if heatmaps.ndim != 3 or heatmaps.shape[-1] != num_keypoints:
      raise ValueError(f"GenerateTarget: codec.encode returned heatmaps of shape "
                       f"{heatmaps.shape}, expected (h, w, {num_keypoints})")
    if weights.shape != (num_keypoints,):
      raise ValueError(f"GenerateTarget: codec.encode returned keypoint_weights of shape "
                       f"{weights.shape}, expected ({num_keypoints},)")
    element = dict(element)
    element["heatmaps"], element["keypoint_weights"] = heatmaps, weights
    return element
