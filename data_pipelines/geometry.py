"""Box -> crop geometry for top-down keypoint detection (mmpose 1.x semantics, numpy).

The one source of truth for how a person box becomes the network input and how
predictions go back to the image; training transforms, evaluation and inference all
call these functions. Conventions (docs/conventions.md, Box → crop):

- Boxes are xywh in image pixels. Image and output sizes are (height, width).
- A crop is described by `center` (x, y) and `scale` (w, h), both in image pixels
  (mmpose 1.x `bbox_center` / `bbox_scale`; no /200 as in mmpose 0.x), plus a rotation
  in degrees.
- `affine_matrix` is mmpose's `get_warp_matrix`: a similarity with zoom
  output_width / scale_w that sends `center` to (W/2, H/2), so the box corner
  center - scale/2 goes to (0, 0) and center + scale/2 to (W, H) (pixel edges).
  A positive rotation turns the content by -rotation: the point at
  center + R(rotation) (0, -r) lands straight above the output centre.
- `udp_affine_matrix` is mmpose's `get_udp_warp_matrix` (UDP, CVPR 2020): zoom
  (size - 1) / scale per axis, so center - scale/2 goes to pixel centre (0, 0) and
  center + scale/2 to (W - 1, H - 1). mmpose builds it as diag(zoom) R(rotation), the
  opposite turning sense to `affine_matrix`; both are kept exactly as mmpose has them
  (random rotations are symmetric, so training does not care).
- `crop_to_image` is mmpose's TopdownPoseEstimator mapping of input-pixel predictions
  back to the image: kpt / input_size * scale + center - scale / 2. It is the exact
  inverse of the standard warp at rotation 0; with UDP it is what mmpose does too.
"""

import cv2
import numpy as np

# Input pixels per heatmap cell. Both model families predict at 1/4 of the input
# (MamKPD: two stride-2 deconvolutions on the /16 encoder output; HRVMamba: its /4
# branch), and the pipeline draws targets there.
HEATMAP_STRIDE = 4
DEFAULT_PADDING = 1.25


def _vector(value, name, length=2):
  """`value` as a finite float64 vector of `length`, or a ValueError naming `name`."""
  array = np.asarray(value, dtype=np.float64)
  if array.shape != (length,):
    raise ValueError(f"{name} must have shape ({length},), got {array.shape}")
  if not np.all(np.isfinite(array)):
    raise ValueError(f"{name} must be finite, got {array.tolist()}")
  return array


def _positive_vector(value, name):
  array = _vector(value, name)
  if np.any(array <= 0):
    raise ValueError(f"{name} must be positive, got {array.tolist()}")
  return array


def as_size(size, name):
  """`size` as a (height, width) pair of positive ints, or a ValueError naming `name`."""
  pair = tuple(np.ravel(size))
  if len(pair) != 2 or any(int(s) != s or s <= 0 for s in pair):
    raise ValueError(f"{name} must be (height, width) positive integers, got {size}")
  return int(pair[0]), int(pair[1])


def _matrix(matrix, name="matrix"):
  matrix = np.asarray(matrix, dtype=np.float64)
  if matrix.shape != (2, 3):
    raise ValueError(f"{name} must have shape (2, 3), got {matrix.shape}")
  return matrix


def fix_aspect_ratio(scale, aspect_ratio):
  """Grows the short side of `scale` (w, h) so that w / h == aspect_ratio (mmpose)."""
  width, height = _vector(scale, "scale")
  if aspect_ratio <= 0:
    raise ValueError(f"aspect_ratio must be positive, got {aspect_ratio}")
  if width > height * aspect_ratio:
    return np.array([width, width / aspect_ratio])
  return np.array([height * aspect_ratio, height])


def clip_box(box_xywh, image_size):
  """Clips an xywh box to the pixel centres [0, W-1] x [0, H-1], as mmpose's datasets do."""
  x, y, w, h = _vector(box_xywh, "box_xywh", 4)
  height, width = as_size(image_size, "image_size")
  x1, x2 = np.clip([x, x + w], 0, width - 1)
  y1, y2 = np.clip([y, y + h], 0, height - 1)
  return np.array([x1, y1, x2 - x1, y2 - y1])


def box_to_center_scale(box_xywh, aspect_ratio, padding=DEFAULT_PADDING, image_size=None):
  """Box -> (center (2,), scale (2,)) float32 in image pixels.

  Args:
    box_xywh: (4,) box (x, y, w, h) in image pixels.
    aspect_ratio: input width / input height (0.75 for 256x192).
    padding: factor applied to (w, h) before the aspect fix (mmpose: 1.25).
    image_size: (height, width); when given the box is first clipped to the image.
  """
  box = _vector(box_xywh, "box_xywh", 4)
  if image_size is not None:
    box = clip_box(box, image_size)
  if box[2] <= 0 or box[3] <= 0:
    raise ValueError(f"box_xywh must have positive width and height (after clipping to "
                     f"the image when image_size is given), got {box.tolist()}")
  if padding <= 0:
    raise ValueError(f"padding must be positive, got {padding}")
  center = box[:2] + box[2:] / 2
  scale = fix_aspect_ratio(box[2:] * padding, aspect_ratio)
  return center.astype(np.float32), scale.astype(np.float32)


def _rotation(rotation_deg):
  """2x2 matrix [[cos, -sin], [sin, cos]] of `rotation_deg` degrees."""
  angle = np.deg2rad(float(rotation_deg))
  cos, sin = np.cos(angle), np.sin(angle)
  return np.array([[cos, -sin], [sin, cos]])


def _affine(linear, offset):
  """(2, 2) linear part and (2,) offset -> (2, 3) matrix of x -> linear @ x + offset."""
  return np.concatenate([linear, offset[:, None]], axis=1)


def invert_affine(matrix):
  """The inverse of a (2, 3) affine matrix, float64."""
  matrix = _matrix(matrix)
  linear_inv = np.linalg.inv(matrix[:, :2])
  return _affine(linear_inv, -linear_inv @ matrix[:, 2])


def affine_matrix(center, scale, rotation_deg, output_size, shift=(0.0, 0.0), inverse=False):
  """mmpose's `get_warp_matrix`: image -> output (or output -> image if `inverse`).

  x_out = zoom * R(-rotation) (x - center - shift * scale) + (W/2, H/2),
  zoom = W / scale_w (only the width sets the zoom, as in mmpose; fix the aspect first).

  Args:
    center: (2,) crop centre (x, y) in image pixels.
    scale: (2,) crop size (w, h) in image pixels.
    rotation_deg: rotation in degrees.
    output_size: (height, width) of the output.
    shift: (2,) shift of the centre as a fraction of `scale`.
    inverse: return the output -> image matrix instead.

  Returns:
    (2, 3) float32 matrix.
  """
  center = _vector(center, "center")
  scale = _positive_vector(scale, "scale")
  shift = _vector(shift, "shift")
  out_height, out_width = as_size(output_size, "output_size")
  zoom = out_width / scale[0]
  linear = zoom * _rotation(-rotation_deg)
  source_center = center + shift * scale
  matrix = _affine(linear, np.array([out_width / 2, out_height / 2]) - linear @ source_center)
  if inverse:
    matrix = invert_affine(matrix)
  return matrix.astype(np.float32)


def udp_affine_matrix(center, scale, rotation_deg, output_size, inverse=False):
  """mmpose's `get_udp_warp_matrix` (UDP): image -> output (or back if `inverse`).

  x_out = diag(zoom) (R(rotation) (x - center) + scale / 2),
  zoom = ((W - 1) / scale_w, (H - 1) / scale_h).

  Args as `affine_matrix` (UDP has no shift). Returns a (2, 3) float32 matrix.
  """
  center = _vector(center, "center")
  scale = _positive_vector(scale, "scale")
  out_height, out_width = as_size(output_size, "output_size")
  zoom = np.array([out_width - 1, out_height - 1]) / scale
  linear = zoom[:, None] * _rotation(rotation_deg)
  matrix = _affine(linear, zoom * scale / 2 - linear @ center)
  if inverse:
    matrix = invert_affine(matrix)
  return matrix.astype(np.float32)


def transform_points(points, matrix):
  """Applies a (2, 3) affine matrix to points (..., 2); returns float32 (..., 2)."""
  points = np.asarray(points, dtype=np.float64)
  if points.ndim < 1 or points.shape[-1] != 2:
    raise ValueError(f"points must have shape (..., 2), got {points.shape}")
  matrix = _matrix(matrix)
  return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def warp_image(image, matrix, output_size):
  """Warps image (H, W[, C]) to output_size (height, width): bilinear, zero border."""
  image = np.asarray(image)
  if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
    raise ValueError(f"image must have shape (H, W) or (H, W, C), got {image.shape}")
  matrix = _matrix(matrix)
  out_height, out_width = as_size(output_size, "output_size")
  return cv2.warpAffine(image, matrix, (out_width, out_height), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def crop_to_image(keypoints_in_input, center, scale, input_size, use_udp=False):
  """Input-pixel keypoints -> image pixels (docs/conventions.md, mmpose's TopdownPoseEstimator).

  kpt_img = kpt_input / (W, H) * scale + center - scale / 2, the inverse of the standard
  warp. With use_udp the divisor is (W - 1, H - 1), the exact inverse of the UDP warp
  (which maps the crop onto pixel centres 0 .. W-1): the UDP codec decodes to true input
  pixels, so the mmpose formula would shrink poses by (W - 1) / W about the crop corner.

  Args:
    keypoints_in_input: (..., K, 2) keypoints (x, y) in input pixels.
    center: (..., 2) crop centres, leading dims as the keypoints'.
    scale: (..., 2) crop sizes (w, h), leading dims as the keypoints'.
    input_size: (height, width) of the network input.
    use_udp: the crop was made with `udp_affine_matrix`.

  Returns:
    (..., K, 2) float32 keypoints in image pixels.
  """
  keypoints = np.asarray(keypoints_in_input, dtype=np.float64)
  if keypoints.ndim < 2 or keypoints.shape[-1] != 2:
    raise ValueError(f"keypoints_in_input must have shape (..., K, 2), got {keypoints.shape}")
  leading = keypoints.shape[:-2]
  center = np.asarray(center, dtype=np.float64)
  scale = np.asarray(scale, dtype=np.float64)
  for name, value in (("center", center), ("scale", scale)):
    if value.shape != leading + (2,):
      raise ValueError(f"{name} must have shape {leading + (2,)} to match keypoints of "
                       f"shape {keypoints.shape}, got {value.shape}")
  if np.any(scale <= 0):
    raise ValueError("scale must be positive")
  height, width = as_size(input_size, "input_size")
  center, scale = center[..., None, :], scale[..., None, :]       # (..., 1, 2)
  extent = np.array([width - 1, height - 1] if use_udp else [width, height], np.float64)
  image_points = keypoints / extent * scale + center - scale / 2
  return image_points.astype(np.float32)
