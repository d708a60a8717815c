"""Top-down heatmap codecs (MSRA, UDP, DARK) and the flip-test helpers, as in mmpose 1.x.

A codec turns one instance's keypoints (in input-crop pixels) into training targets and
turns predicted heatmaps back into keypoints (docs/conventions.md, Heatmap codecs).
Everything is numpy (cv2 only for the Gaussian blur of the DARK/UDP refinement, as in
mmpose), except `flip_heatmaps`, which also runs on traced arrays inside exports.
Heatmaps are channels-last like the model: (h, w, K) per instance, (N, h, w, K) batched.
Sizes are (height, width); keypoints are (x, y).

| codec       | cell -> input px          | target                          | decode       |
|-------------|---------------------------|---------------------------------|--------------|
| MSRAHeatmap | x stride (input/heatmap)  | 13x13 Gaussian at int(u + 0.5)  | argmax +-1/4 |
| UDPHeatmap  | x (input-1)/(heatmap-1)   | 13x13 window, sub-cell centre   | blur, Newton |
| DarkHeatmap | x stride                  | full-map Gaussian, float centre | blur, Taylor |

(13x13 = the (6 sigma + 1) window for sigma 2.) Conventions kept from mmpose 1.x, and
the places where this module knowingly differs:

- Labelled means keypoints_visible > 0; the weight of a labelled keypoint is its
  visibility (mmpose copies keypoints_visible into keypoint_weights). mmpose skips drawing
  below 0.5 while keeping the weight; with 0/1 visibilities (COCO's min(v, 1)) the two agree.
- The MSRA/UDP window centre is int(u + 0.5), truncated toward zero as numpy's astype
  does in mmpose (u = -0.7 lands on cell 0). The window holds the cells within
  floor(3 sigma) of it: mmpose's (6 sigma + 1) grid whenever 3 sigma is an integer.
- Weight 0 when no heatmap cell lies in the window (DARK: within 3 sigma of the float
  centre). mmpose's test is one cell looser on the low side and keeps weight 1 with an
  empty target when the window ends exactly at cell -1.
- MSRA decode uses mmpose's refine_keypoints bounds as they are (x-shift only for
  1 < x < w - 1 and y > 0; y-shift only for 1 < y < h - 1 and x > 0).
- UDP: mmpose encodes with (input - 1)/(heatmap - 1) but its UDPHeatmap.decode multiplies
  by input/(heatmap - 1), so its decode does not invert its encode (1 px off at the far
  edge of a 192-wide crop). Here (input - 1)/(heatmap - 1) is used both ways, so decoded
  keypoints are true input pixels on the UDP grid. Mapping them to the image therefore
  needs the UDP inverse, kpt / (input - 1) * scale + center - scale / 2 (the inverse of
  the UDP warp), not kpt / input * scale + ... (mmpose's pairing, which only works with
  its own decode).
- A channel whose maximum is <= 0 decodes to heatmap cell (-1, -1) (mmpose's
  get_heatmap_maximum), mapped to input pixels, with score 0 (mmpose reports the max).
"""

import cv2
import numpy as np

from mamkpd_jax.data_pipelines import metadata

BLUR_KERNEL_SIZE = 11        # DARK/UDP modulation; cv2's sigma for 11 is 2.0
UDP_LOG_CLIP = (1e-3, 50.0)  # refine_keypoints_dark_udp clips before the log
DARK_LOG_FLOOR = 1e-10       # refine_keypoints_dark floors before the log
NO_KEYPOINT = -1.0           # heatmap cell reported for a channel with max <= 0


# ---------------------------------------------------------------- argument checks


def _check_size(size, name):
  """(height, width) of positive integers, or a ValueError naming `name`."""
  values = np.asarray(size)
  if values.shape != (2,) or values.dtype.kind not in "iuf":
    raise ValueError(f"{name} must be (height, width), got {size!r}")
  if np.any(values != np.round(values)) or np.any(values < 1):
    raise ValueError(f"{name} must hold positive integers (height, width), got {size!r}")
  return int(values[0]), int(values[1])


def _check_sigma(sigma):
  if (isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating))
      or not np.isfinite(sigma) or sigma <= 0):
    raise ValueError(f"sigma must be a positive number, got {sigma!r}")
  return float(sigma)


def _check_keypoints(keypoints, keypoints_visible):
  """-> keypoints (K, 2) float64 with unlabelled ones zeroed, visibility (K,) float64."""
  points = np.asarray(keypoints, dtype=np.float64)
  if points.ndim != 2 or points.shape[1] != 2:
    raise ValueError(f"keypoints must have shape (K, 2), got {points.shape}")
  visible = np.asarray(keypoints_visible, dtype=np.float64)
  if visible.shape != points.shape[:1]:
    raise ValueError(f"keypoints_visible must have shape ({points.shape[0]},) to match "
                     f"keypoints, got {visible.shape}")
  if not np.all((visible >= 0) & (visible <= 1)):
    raise ValueError("keypoints_visible must lie in [0, 1] (COCO's 0/1/2 flags: use "
                     f"min(v, 1)), got {visible.tolist()}")
  labelled = visible > 0
  if not np.all(np.isfinite(points[labelled])):
    raise ValueError("keypoints must be finite where keypoints_visible > 0")
  return np.where(labelled[:, None], points, 0.0), visible


def _check_heatmaps(heatmaps, heatmap_size, name="heatmaps"):
  """-> (N, h, w, K) float32 and whether the input was batched."""
  maps = np.asarray(heatmaps)
  if maps.ndim not in (3, 4):
    raise ValueError(f"{name} must be (h, w, K) or (N, h, w, K), got shape {maps.shape}")
  try:
    if maps.dtype.kind in "cOSU":
      raise TypeError(maps.dtype)
    maps = maps.astype(np.float32)   # bfloat16 (from JAX) included
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be real numbers, got dtype {maps.dtype}") from None
  batched = maps.ndim == 4
  if not batched:
    maps = maps[None]
  if maps.shape[1:3] != tuple(heatmap_size):
    raise ValueError(f"{name} must be {tuple(heatmap_size)} (height, width) maps, got "
                     f"shape {np.shape(heatmaps)}")
  if not np.all(np.isfinite(maps)):
    raise ValueError(f"{name} must be finite")
  return maps, batched


def _check_flip_indices(flip_indices, num_keypoints):
  """flip_indices as an int array, checked by the metadata module's one rule."""
  return np.asarray(metadata.check_flip_indices(flip_indices, num_keypoints))


# ---------------------------------------------------------------- encoding


def _gaussian_profile(length, centres, sigma, window_centres=None, radius=None):
  """(length, K) 1-D Gaussian exp(-(c - centre)^2 / 2 sigma^2) over cells c.

  Zero outside the window |c - window_centre| <= radius when a window is given.
  """
  cells = np.arange(length, dtype=np.float64)[:, None]            # (length, 1)
  profile = np.exp(-(cells - centres) ** 2 / (2 * sigma ** 2))    # (length, K)
  if window_centres is not None:
    profile = np.where(np.abs(cells - window_centres) <= radius, profile, 0.0)
  return profile


def _rounded_centres(centres):
  """mmpose's (u + 0.5).astype(int64): rounds half up, truncating toward zero."""
  return np.trunc(centres + 0.5)


def _window_hits_map(lows, highs, heatmap_size):
  """(K,) whether the window [low, high] (x, y) holds a cell of the map on both axes."""
  height, width = heatmap_size
  last = np.array([width - 1, height - 1], dtype=np.float64)
  return np.all((highs >= 0) & (lows <= last), axis=-1)


# ---------------------------------------------------------------- decoding


def _values_at(maps, xs, ys):
  """(N, K) values maps[n, y, x, k], indices clamped to the map (= edge padding)."""
  num, height, width, channels = maps.shape
  ys = np.clip(ys, 0, height - 1)
  xs = np.clip(xs, 0, width - 1)
  return maps[np.arange(num)[:, None], ys, xs, np.arange(channels)[None, :]]


def _heatmap_maximum(maps):
  """(N, h, w, K) -> argmax cells (N, K) x and y (first in row-major order), max (N, K)."""
  num, height, width, channels = maps.shape
  flat = maps.reshape(num, height * width, channels)              # (N, h*w, K)
  index = np.argmax(flat, axis=1)                                 # (N, K)
  ys, xs = np.divmod(index, width)
  return xs, ys, np.max(flat, axis=1)


def _gaussian_blur(maps, kernel_size):
  """mmpose's gaussian_blur, channels-last: zero-padded cv2 blur, rescaled per channel
  back to the channel's original maximum. (N, h, w, K) float32 -> same."""
  num, height, width, channels = maps.shape
  if maps.size == 0:
    return maps.copy()
  border = (kernel_size - 1) // 2
  planes = np.ascontiguousarray(maps.transpose(0, 3, 1, 2)).reshape(-1, height, width)
  padded = np.pad(planes, ((0, 0), (border, border), (border, border)))  # zeros
  blurred = np.stack([cv2.GaussianBlur(plane, (kernel_size, kernel_size), 0)
                      for plane in padded])                       # (N*K, h+2b, w+2b)
  blurred = blurred[:, border:border + height, border:border + width]
  blurred = blurred.reshape(num, channels, height, width).transpose(0, 2, 3, 1)
  origin_max = maps.max(axis=(1, 2))                              # (N, K)
  blurred_max = blurred.max(axis=(1, 2))
  ratio = np.divide(origin_max, blurred_max, out=np.ones_like(origin_max),
                    where=blurred_max > 0)
  return blurred * ratio[:, None, None, :]


def _newton_offsets(grad_x, grad_y, hess_xx, hess_xy, hess_yy):
  """-H^-1 g for 2x2 symmetric H, per keypoint; zero where H is singular."""
  det = hess_xx * hess_yy - hess_xy ** 2
  safe = det != 0
  det = np.where(safe, det, 1.0)
  offset_x = -(hess_yy * grad_x - hess_xy * grad_y) / det
  offset_y = -(hess_xx * grad_y - hess_xy * grad_x) / det
  return np.where(safe, offset_x, 0.0), np.where(safe, offset_y, 0.0)


def _quarter_shift(maps, xs, ys):
  """mmpose's refine_keypoints: +-0.25 cell toward the higher neighbour, per axis."""
  _, height, width, _ = maps.shape
  at = lambda dx, dy: _values_at(maps, xs + dx, ys + dy)
  can_x = (xs > 1) & (xs < width - 1) & (ys > 0) & (ys < height)
  can_y = (ys > 1) & (ys < height - 1) & (xs > 0) & (xs < width)
  diff_x = np.where(can_x, at(1, 0) - at(-1, 0), 0.0)
  diff_y = np.where(can_y, at(0, 1) - at(0, -1), 0.0)
  return 0.25 * np.sign(diff_x), 0.25 * np.sign(diff_y)


def _dark_offsets(maps, xs, ys):
  """mmpose's refine_keypoints_dark: one Taylor step on the blurred log map.

  Gradient by +-1 central differences, Hessian by +-2 ones; only where
  1 < x < w - 2 and 1 < y < h - 2.
  """
  _, height, width, _ = maps.shape
  log_maps = np.log(np.maximum(_gaussian_blur(maps, BLUR_KERNEL_SIZE), DARK_LOG_FLOOR))
  at = lambda dx, dy: _values_at(log_maps, xs + dx, ys + dy).astype(np.float64)
  centre = at(0, 0)
  offset_x, offset_y = _newton_offsets(
      grad_x=0.5 * (at(1, 0) - at(-1, 0)),
      grad_y=0.5 * (at(0, 1) - at(0, -1)),
      hess_xx=0.25 * (at(2, 0) - 2 * centre + at(-2, 0)),
      hess_xy=0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)),
      hess_yy=0.25 * (at(0, 2) - 2 * centre + at(0, -2)))
  inside = (xs > 1) & (xs < width - 2) & (ys > 1) & (ys < height - 2)
  return np.where(inside, offset_x, 0.0), np.where(inside, offset_y, 0.0)


def _udp_offsets(maps, xs, ys):
  """mmpose's refine_keypoints_dark_udp: one Newton step on the clipped, blurred log map.

  +-1 differences with edge padding (clamped indices); Hessian + float32 eps * I.
  """
  blurred = np.clip(_gaussian_blur(maps, BLUR_KERNEL_SIZE), *UDP_LOG_CLIP)
  log_maps = np.log(blurred)
  at = lambda dx, dy: _values_at(log_maps, xs + dx, ys + dy).astype(np.float64)
  centre, right, left, down, up = at(0, 0), at(1, 0), at(-1, 0), at(0, 1), at(0, -1)
  eps = np.finfo(np.float32).eps
  return _newton_offsets(
      grad_x=0.5 * (right - left),
      grad_y=0.5 * (down - up),
      hess_xx=right - 2 * centre + left + eps,
      hess_xy=0.5 * (at(1, 1) - right - down + 2 * centre - left - up + at(-1, -1)),
      hess_yy=down - 2 * centre + up + eps)


# ---------------------------------------------------------------- codecs


class _HeatmapCodec:
  """Shared encode/decode; subclasses set the scale, the target and the refinement.

  Attributes:
    input_size: (height, width) of the network input, pixels.
    heatmap_size: (height, width) of the heatmaps.
    sigma: Gaussian sigma in heatmap cells.
    flip_shift: whether flip-test heatmaps are shifted 1 cell right after flipping back.
    scale: (x, y) input pixels per heatmap cell.
  """

  flip_shift = True

  def __init__(self, input_size=(256, 192), heatmap_size=(64, 48), sigma=2.0):
    self.input_size = _check_size(input_size, "input_size")
    self.heatmap_size = _check_size(heatmap_size, "heatmap_size")
    if any(hm > inp for hm, inp in zip(self.heatmap_size, self.input_size)):
      raise ValueError(f"heatmap_size {self.heatmap_size} must not exceed input_size "
                       f"{self.input_size}")
    self.sigma = _check_sigma(sigma)
    self.radius = 3 * self.sigma   # the 3-sigma window, heatmap cells
    self.scale = self._scale()     # (x, y)

  def __repr__(self):
    return (f"{type(self).__name__}(input_size={self.input_size}, "
            f"heatmap_size={self.heatmap_size}, sigma={self.sigma})")

  def _scale(self):
    raise NotImplementedError

  def _targets(self, centres):
    """centres (K, 2) in cells -> heatmaps (h, w, K) float64, on-map flags (K,)."""
    raise NotImplementedError

  def _refine(self, maps, xs, ys):
    """Sub-cell offsets (x, y), each (N, K), to add to the argmax cells."""
    raise NotImplementedError

  def encode(self, keypoints, keypoints_visible):
    """Keypoints of one instance -> training target.

    Args:
      keypoints: (K, 2) float (x, y) in input pixels.
      keypoints_visible: (K,) float in [0, 1]; > 0 means labelled.

    Returns:
      heatmaps: (h, w, K) float32, all zero for a keypoint of weight 0.
      keypoint_weights: (K,) float32, the visibility, or 0 when unlabelled or when the
        keypoint's window lies entirely off the heatmap.
    """
    keypoints, visible = _check_keypoints(keypoints, keypoints_visible)
    centres = keypoints / self.scale                              # (K, 2) cells
    heatmaps, on_map = self._targets(centres)                     # (h, w, K), (K,)
    weights = np.where((visible > 0) & on_map, visible, 0.0)      # (K,)
    heatmaps = heatmaps * (weights > 0)
    return heatmaps.astype(np.float32), weights.astype(np.float32)

  def decode(self, heatmaps):
    """Heatmaps -> keypoints in input pixels and their scores (the map maxima).

    Args:
      heatmaps: (h, w, K) or (N, h, w, K).

    Returns:
      keypoints: (K, 2) or (N, K, 2) float32 (x, y) in input pixels.
      scores: (K,) or (N, K) float32; 0 for a channel whose maximum is <= 0.
    """
    maps, batched = _check_heatmaps(heatmaps, self.heatmap_size)  # (N, h, w, K)
    xs, ys, scores = _heatmap_maximum(maps)                       # (N, K) each
    found = scores > 0
    offset_x, offset_y = self._refine(maps, xs, ys)
    cells = np.stack([xs + offset_x, ys + offset_y], axis=-1)     # (N, K, 2)
    cells = np.where(found[..., None], cells, NO_KEYPOINT)
    keypoints = (cells * self.scale).astype(np.float32)
    scores = np.where(found, scores, 0.0).astype(np.float32)
    if not batched:
      return keypoints[0], scores[0]
    return keypoints, scores


class _StrideCodec(_HeatmapCodec):
  """Heatmap cell i sits at input pixel stride * i (MSRA and DARK)."""

  def _scale(self):
    strides = []
    for inp, hm in zip(self.input_size, self.heatmap_size):
      if inp % hm:
        raise ValueError(f"input_size {self.input_size} must be an integer multiple of "
                         f"heatmap_size {self.heatmap_size} for {type(self).__name__}")
      strides.append(inp // hm)
    stride_y, stride_x = strides
    return np.array([stride_x, stride_y], dtype=np.float64)


class MSRAHeatmap(_StrideCodec):
  """SimpleBaseline's codec: peak-1 Gaussian in a (6 sigma + 1) window at the rounded
  centre; decode = argmax, +-0.25 cell toward the higher neighbour, x stride."""

  def _targets(self, centres):
    height, width = self.heatmap_size
    rounded = _rounded_centres(centres)                           # (K, 2)
    radius = np.floor(self.radius)
    profile_x = _gaussian_profile(width, rounded[:, 0], self.sigma, rounded[:, 0], radius)
    profile_y = _gaussian_profile(height, rounded[:, 1], self.sigma, rounded[:, 1], radius)
    heatmaps = profile_y[:, None, :] * profile_x[None, :, :]      # (h, w, K)
    return heatmaps, _window_hits_map(rounded - radius, rounded + radius, self.heatmap_size)

  def _refine(self, maps, xs, ys):
    return _quarter_shift(maps, xs, ys)


class DarkHeatmap(_StrideCodec):
  """DarkPose (mmpose MSRAHeatmap with unbiased=True): full-map Gaussian at the exact
  centre keypoint / stride; decode = argmax, blur 11, log, one Taylor step, x stride."""

  def _targets(self, centres):
    height, width = self.heatmap_size
    profile_x = _gaussian_profile(width, centres[:, 0], self.sigma)
    profile_y = _gaussian_profile(height, centres[:, 1], self.sigma)
    heatmaps = profile_y[:, None, :] * profile_x[None, :, :]      # (h, w, K)
    return heatmaps, _window_hits_map(centres - self.radius, centres + self.radius,
                                      self.heatmap_size)

  def _refine(self, maps, xs, ys):
    return _dark_offsets(maps, xs, ys)


class UDPHeatmap(_HeatmapCodec):
  """Unbiased Data Processing (ViTPose's codec): cell i sits at input pixel
  i * (input - 1)/(heatmap - 1), e.g. (191/47, 255/63) for 256x192 -> 64x48; the target
  is a Gaussian at the exact sub-cell centre, cut to the (6 sigma + 1) window around the
  rounded centre; decode = argmax, blur 11, clipped log, one Newton step.

  Decode uses the same (input - 1)/(heatmap - 1) as encode, so it inverts it; mmpose's
  UDPHeatmap.decode uses input/(heatmap - 1) instead (see the module docstring for what
  this means when mapping keypoints back to the image).
  """

  flip_shift = False

  def _scale(self):
    if min(self.heatmap_size) < 2:
      raise ValueError(f"heatmap_size {self.heatmap_size} must be at least 2 per axis "
                       "for UDPHeatmap ((input - 1)/(heatmap - 1) scaling)")
    (in_h, in_w), (hm_h, hm_w) = self.input_size, self.heatmap_size
    return np.array([(in_w - 1) / (hm_w - 1), (in_h - 1) / (hm_h - 1)], dtype=np.float64)

  def _targets(self, centres):
    height, width = self.heatmap_size
    rounded = _rounded_centres(centres)                           # (K, 2)
    radius = np.floor(self.radius)
    profile_x = _gaussian_profile(width, centres[:, 0], self.sigma, rounded[:, 0], radius)
    profile_y = _gaussian_profile(height, centres[:, 1], self.sigma, rounded[:, 1], radius)
    heatmaps = profile_y[:, None, :] * profile_x[None, :, :]      # (h, w, K)
    return heatmaps, _window_hits_map(rounded - radius, rounded + radius, self.heatmap_size)

  def _refine(self, maps, xs, ys):
    return _udp_offsets(maps, xs, ys)


CODECS = {"msra": MSRAHeatmap, "udp": UDPHeatmap, "dark": DarkHeatmap}


def make_codec(name, input_size=(256, 192), heatmap_size=(64, 48), sigma=2.0):
  """The codec called `name` ("msra", "udp" or "dark"); sizes are (height, width)."""
  if name not in CODECS:
    raise ValueError(f"unknown codec name {name!r}; known: {sorted(CODECS)}")
  return CODECS[name](input_size=input_size, heatmap_size=heatmap_size, sigma=sigma)


# ---------------------------------------------------------------- flip test


def flip_heatmaps(heatmaps, flip_indices, shift):
  """mmpose's flip_heatmaps: the heatmaps of a flipped crop, flipped back.

  Mirrors the width axis, swaps left/right channels with `flip_indices`, and when `shift`
  (MSRA, DARK: codec.flip_shift) moves the maps 1 cell right, column 0 keeping its value.
  That shift is why flipping twice with shift=True is the identity on columns 1..w-1 only.

  Written as two gathers with constant indices, so that the same function runs on numpy
  arrays and inside a traced JAX function (jit, jax.export, ONNX conversion), where the
  exported models do their flip test.

  Args:
    heatmaps: (N, h, w, K) numpy or JAX array (N may be symbolic).
    flip_indices: K ints, the dataset's left/right pairing (COCO: [0, 2, 1, 4, 3, ...]).
    shift: bool.

  Returns:
    (N, h, w, K), the same array type and dtype.
  """
  maps = heatmaps if hasattr(heatmaps, "ndim") else np.asarray(heatmaps)
  if maps.ndim != 4:
    raise ValueError(f"heatmaps must be (N, h, w, K), got shape {maps.shape}")
  indices = _check_flip_indices(flip_indices, maps.shape[-1])
  width = maps.shape[2]
  # output column j reads input column w-1-j; shifted: w-j, column 0 keeping w-1
  columns = width - 1 - np.arange(width)                          # (w,)
  if shift:
    columns = np.minimum(columns + 1, width - 1)
  return maps[:, :, columns, :][..., indices]                     # (N, h, w, K)


def flip_keypoints(keypoints, keypoints_visible, flip_indices, image_width):
  """Horizontal flip of keypoints: x' = image_width - 1 - x, then left/right swap.

  Args:
    keypoints: (..., K, 2) (x, y) in pixels of an image `image_width` wide.
    keypoints_visible: (..., K).
    flip_indices: K ints, the dataset's left/right pairing.
    image_width: width of the image the keypoints live in (the input crop: 192).

  Returns:
    keypoints (..., K, 2) float64 and keypoints_visible (..., K), flipped.
  """
  points = np.array(keypoints, dtype=np.float64)
  if points.ndim < 2 or points.shape[-1] != 2:
    raise ValueError(f"keypoints must have shape (..., K, 2), got {points.shape}")
  visible = np.asarray(keypoints_visible)
  if visible.shape != points.shape[:-1]:
    raise ValueError(f"keypoints_visible must have shape {points.shape[:-1]} to match "
                     f"keypoints, got {visible.shape}")
  if not np.isscalar(image_width) or not image_width > 0:
    raise ValueError(f"image_width must be a positive number, got {image_width!r}")
  indices = _check_flip_indices(flip_indices, points.shape[-2])
  points[..., 0] = image_width - 1 - points[..., 0]
  return points[..., indices, :], visible[..., indices]
