"""Box -> crop geometry against mmpose 1.x's conventions, numbers worked by hand.

`mmpose_warp_matrix` and `mmpose_udp_warp_matrix` below restate mmpose's
get_warp_matrix (three point pairs through cv2.getAffineTransform) and
get_udp_warp_matrix (entry by entry) independently of geometry.py's closed forms.
"""

import math

import cv2
import numpy as np
import pytest

from mamkpd_jax.data_pipelines import geometry

INPUT_SIZE = (256, 192)   # (height, width)
ASPECT = 192 / 256


def _rotate(point, angle_rad):
  sin, cos = np.sin(angle_rad), np.cos(angle_rad)
  return np.array([[cos, -sin], [sin, cos]]) @ point


def _third_point(a, b):
  direction = a - b
  return b + np.array([-direction[1], direction[0]])


def mmpose_warp_matrix(center, scale, rotation_deg, output_wh, shift=(0.0, 0.0), inv=False):
  """mmpose get_warp_matrix: output_wh is (w, h) as in mmpose."""
  shift = np.asarray(shift)
  out_w, out_h = output_wh
  src_dir = _rotate(np.array([0.0, -0.5 * scale[0]]), np.deg2rad(rotation_deg))
  src0 = center + scale * shift
  src = np.stack([src0, src0 + src_dir, _third_point(src0, src0 + src_dir)])
  dst0 = np.array([out_w * 0.5, out_h * 0.5])
  dst1 = dst0 + np.array([0.0, -0.5 * out_w])
  dst = np.stack([dst0, dst1, _third_point(dst0, dst1)])
  src, dst = np.float32(src), np.float32(dst)
  return cv2.getAffineTransform(dst, src) if inv else cv2.getAffineTransform(src, dst)


def mmpose_udp_warp_matrix(center, scale, rotation_deg, output_wh):
  """mmpose get_udp_warp_matrix, entry by entry (input_size = 2 * center)."""
  cx, cy = center
  rad = np.deg2rad(rotation_deg)
  cos, sin = math.cos(rad), math.sin(rad)
  sx = (output_wh[0] - 1) / scale[0]
  sy = (output_wh[1] - 1) / scale[1]
  return np.array([
      [cos * sx, -sin * sx, sx * (-cx * cos + cy * sin + 0.5 * scale[0])],
      [sin * sy, cos * sy, sy * (-cx * sin - cy * cos + 0.5 * scale[1])],
  ])


def _compose(outer, inner):
  """(2, 3) matrices -> (3, 3) product outer @ inner."""
  def full(m):
    return np.vstack([np.asarray(m, np.float64), [0.0, 0.0, 1.0]])
  return full(outer) @ full(inner)


# ---------------------------------------------------------------- box_to_center_scale

@pytest.mark.parametrize("box, padding, center, scale", [
    # 100x100 square: 125x125 after padding, height grown to 125 / 0.75.
    ((10, 20, 100, 100), 1.25, (60, 70), (125, 125 / 0.75)),
    # wide 200x100: 250x125, height grown to 250 / 0.75 = 333.33.
    ((0, 0, 200, 100), 1.25, (100, 50), (250, 250 / 0.75)),
    # tall 50x200: 62.5x250, width grown to 250 * 0.75 = 187.5.
    ((5, 5, 50, 200), 1.25, (30, 105), (187.5, 250)),
    # exactly 3:4 already, no padding: unchanged.
    ((0, 0, 30, 40), 1.0, (15, 20), (30, 40)),
])
def test_box_to_center_scale_by_hand(box, padding, center, scale):
  got_center, got_scale = geometry.box_to_center_scale(box, ASPECT, padding)
  np.testing.assert_allclose(got_center, center, rtol=1e-6)
  np.testing.assert_allclose(got_scale, scale, rtol=1e-6)
  assert got_center.dtype == np.float32 and got_scale.dtype == np.float32


def test_box_is_clipped_to_pixel_centres_of_the_image():
  # Image 100 high, 200 wide: x in [0, 199], y in [0, 99] (mmpose's clip).
  # Box x -10..40, y 20..150 -> x 0..40, y 20..99 -> 40x79, centre (20, 59.5).
  center, scale = geometry.box_to_center_scale((-10, 20, 50, 130), ASPECT, 1.0,
                                               image_size=(100, 200))
  np.testing.assert_allclose(center, (20, 59.5))
  np.testing.assert_allclose(scale, (79 * 0.75, 79), rtol=1e-6)


@pytest.mark.parametrize("kwargs, field", [
    (dict(box_xywh=(0, 0, 0, 10)), "box_xywh"),            # zero width
    (dict(box_xywh=(0, 0, 10, -5)), "box_xywh"),           # negative height
    (dict(box_xywh=(0, 0, 10)), "box_xywh"),               # 3 numbers
    (dict(box_xywh=(0, 0, 10, np.nan)), "box_xywh"),       # not finite
    (dict(box_xywh=(500, 0, 10, 10), image_size=(100, 200)), "box_xywh"),  # off the image
    (dict(box_xywh=(0, 0, 10, 10), image_size=(100,)), "image_size"),
    (dict(box_xywh=(0, 0, 10, 10), padding=0.0), "padding"),
    (dict(box_xywh=(0, 0, 10, 10), aspect_ratio=-1.0), "aspect_ratio"),
])
def test_box_to_center_scale_rejects_bad_input(kwargs, field):
  kwargs = dict(dict(aspect_ratio=ASPECT), **kwargs)
  with pytest.raises(ValueError, match=field):
    geometry.box_to_center_scale(**kwargs)


# ---------------------------------------------------------------- affine matrices

MATRIX_CASES = [
    # (center, scale (w, h), rotation, shift)
    ((100.0, 80.0), (60.0, 80.0), 0.0, (0.0, 0.0)),
    ((123.0, 77.0), (90.0, 120.0), 30.0, (0.0, 0.0)),
    ((50.5, 300.25), (150.0, 200.0), -70.0, (0.1, -0.05)),
    ((10.0, 20.0), (30.0, 40.0), 90.0, (0.0, 0.16)),
]


@pytest.mark.parametrize("center, scale, rotation, shift", MATRIX_CASES)
def test_affine_matrix_is_mmpose_get_warp_matrix(center, scale, rotation, shift):
  center, scale = np.array(center), np.array(scale)
  for inverse in (False, True):
    got = geometry.affine_matrix(center, scale, rotation, INPUT_SIZE, shift, inverse)
    want = mmpose_warp_matrix(center, scale, rotation, INPUT_SIZE[::-1], shift, inverse)
    assert got.shape == (2, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("center, scale, rotation, _", MATRIX_CASES)
def test_udp_affine_matrix_is_mmpose_get_udp_warp_matrix(center, scale, rotation, _):
  got = geometry.udp_affine_matrix(center, scale, rotation, INPUT_SIZE)
  want = mmpose_udp_warp_matrix(np.array(center), np.array(scale), rotation, INPUT_SIZE[::-1])
  assert got.shape == (2, 3) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("center, scale, rotation, shift", MATRIX_CASES)
def test_forward_then_inverse_is_identity(center, scale, rotation, shift):
  # float32 matrices: translations of a few hundred pixels carry ~3e-5 rounding.
  forward = geometry.affine_matrix(center, scale, rotation, INPUT_SIZE, shift)
  inverse = geometry.affine_matrix(center, scale, rotation, INPUT_SIZE, shift, inverse=True)
  np.testing.assert_allclose(_compose(inverse, forward), np.eye(3), atol=1e-4)
  np.testing.assert_allclose(_compose(forward, inverse), np.eye(3), atol=1e-4)
  forward = geometry.udp_affine_matrix(center, scale, rotation, INPUT_SIZE)
  inverse = geometry.udp_affine_matrix(center, scale, rotation, INPUT_SIZE, inverse=True)
  np.testing.assert_allclose(_compose(inverse, forward), np.eye(3), atol=1e-4)


def test_standard_warp_sends_box_corners_to_crop_corners():
  # A 60x80 (3:4) crop around (100, 80) onto an 8 high, 6 wide output: zoom 0.1.
  matrix = geometry.affine_matrix((100, 80), (60, 80), 0.0, (8, 6))
  corners = np.array([[70, 40], [130, 40], [70, 120], [130, 120], [100, 80]])
  want = np.array([[0, 0], [6, 0], [0, 8], [6, 8], [3, 4]])
  np.testing.assert_allclose(geometry.transform_points(corners, matrix), want, atol=1e-5)


def test_udp_warp_sends_box_corners_to_corner_pixel_centres():
  # UDP: the crop's extremes land on the centres of the first and last pixels.
  height, width = INPUT_SIZE
  matrix = geometry.udp_affine_matrix((100, 80), (90, 120), 0.0, INPUT_SIZE)
  corners = np.array([[55, 20], [145, 140], [100, 80]])
  want = np.array([[0, 0], [width - 1, height - 1], [(width - 1) / 2, (height - 1) / 2]])
  np.testing.assert_allclose(geometry.transform_points(corners, matrix), want, atol=1e-4)
  # one image pixel step = (W - 1) / scale_w output pixels
  step = geometry.transform_points([[101, 81]], matrix) - geometry.transform_points(
      [[100, 80]], matrix)
  np.testing.assert_allclose(step[0], [(width - 1) / 90, (height - 1) / 120], rtol=1e-5)


def test_rotation_by_90_degrees_moves_a_point_as_mmpose_does():
  center, scale, distance = np.array([100.0, 80.0]), np.array([60.0, 80.0]), 15.0
  right_of_center = center + [distance, 0.0]
  height, width = INPUT_SIZE
  zoom = width / scale[0]
  # Standard (get_warp_matrix): the point right of the centre goes straight up.
  moved = geometry.transform_points(
      right_of_center, geometry.affine_matrix(center, scale, 90.0, INPUT_SIZE))
  np.testing.assert_allclose(moved, [width / 2, height / 2 - distance * zoom], atol=1e-4)
  # UDP (get_udp_warp_matrix) turns the other way: the point goes straight down.
  udp = geometry.udp_affine_matrix(center, scale, 90.0, INPUT_SIZE)
  moved = geometry.transform_points(right_of_center, udp)
  want = [(width - 1) / 2, (height - 1) / 2 + distance * (height - 1) / scale[1]]
  np.testing.assert_allclose(moved, want, atol=1e-4)


# ---------------------------------------------------------------- points and images

def test_crop_to_image_undoes_the_standard_warp():
  rng = np.random.default_rng(0)
  center, scale = geometry.box_to_center_scale((40, 30, 70, 150), ASPECT)
  points = rng.uniform(0, 300, size=(17, 2))                          # (K, 2) image px
  matrix = geometry.affine_matrix(center, scale, 0.0, INPUT_SIZE)
  in_input = geometry.transform_points(points, matrix)
  back = geometry.crop_to_image(in_input, center, scale, INPUT_SIZE)
  np.testing.assert_allclose(back, points, atol=1e-3)
  # The formula of docs/conventions.md on one point, by hand: the input's far corner is the crop's.
  corner = geometry.crop_to_image([[192, 256]], center, scale, INPUT_SIZE)
  np.testing.assert_allclose(corner[0], center + scale / 2, atol=1e-4)


def test_crop_to_image_undoes_the_udp_warp():
  """UDP crops map back with (W - 1, H - 1): exact inverse of `udp_affine_matrix`."""
  rng = np.random.default_rng(1)
  center, scale = geometry.box_to_center_scale((40, 30, 70, 150), ASPECT)
  points = rng.uniform(0, 300, size=(17, 2))                          # (K, 2) image px
  matrix = geometry.udp_affine_matrix(center, scale, 0.0, INPUT_SIZE)
  in_input = geometry.transform_points(points, matrix)
  back = geometry.crop_to_image(in_input, center, scale, INPUT_SIZE, use_udp=True)
  np.testing.assert_allclose(back, points, atol=1e-3)
  # the standard formula would be off by up to (1 - 191/192) of the crop width
  standard = geometry.crop_to_image(in_input, center, scale, INPUT_SIZE)
  assert np.abs(standard - points).max() > 0.1


def test_crop_to_image_batches_over_instances():
  keypoints = np.array([[[0, 0], [96, 128]], [[192, 256], [48, 64]]], np.float32)  # (N=2, K=2, 2)
  centers = np.array([[100, 100], [10, 20]], np.float32)                           # (N, 2)
  scales = np.array([[75, 100], [150, 200]], np.float32)                           # (N, 2)
  got = geometry.crop_to_image(keypoints, centers, scales, INPUT_SIZE)
  want = np.array([[[62.5, 50], [100, 100]], [[85, 120], [-27.5, -30]]])
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_warp_image_puts_a_bright_pixel_where_the_matrix_says():
  image = np.zeros((120, 100, 3), np.uint8)
  image[50, 30] = (255, 128, 7)                                    # pixel (x=30, y=50)
  # zoom 1: a 30 wide, 40 high crop around (35, 45) onto a 40x30 output.
  for rotation in (0.0, 90.0, -90.0):
    matrix = geometry.affine_matrix((35, 45), (30, 40), rotation, (40, 30))
    crop = geometry.warp_image(image, matrix, (40, 30))
    assert crop.shape == (40, 30, 3) and crop.dtype == np.uint8
    x, y = np.rint(geometry.transform_points([30, 50], matrix)).astype(int)
    np.testing.assert_array_equal(crop[y, x], (255, 128, 7))
    assert np.count_nonzero(crop.any(axis=-1)) == 1
  # Outside the image the border is black.
  far = geometry.affine_matrix((-500, -500), (30, 40), 0.0, (40, 30))
  assert not geometry.warp_image(image + 9, far, (40, 30)).any()


@pytest.mark.parametrize("call, field", [
    (lambda: geometry.transform_points(np.zeros((4, 3)), np.eye(2, 3)), "points"),
    (lambda: geometry.transform_points(np.zeros((4, 2)), np.eye(3)), "matrix"),
    (lambda: geometry.affine_matrix((0, 0), (-1, 10), 0, (8, 6)), "scale"),
    (lambda: geometry.affine_matrix((0, 0, 0), (10, 10), 0, (8, 6)), "center"),
    (lambda: geometry.affine_matrix((0, 0), (10, 10), 0, (8, 0)), "output_size"),
    (lambda: geometry.udp_affine_matrix((0, 0), (10, 0), 0, (8, 6)), "scale"),
    (lambda: geometry.warp_image(np.zeros((4,)), np.eye(2, 3), (8, 6)), "image"),
    (lambda: geometry.crop_to_image(np.zeros((5, 2)), (0, 0, 0), (1, 1), (8, 6)), "center"),
    (lambda: geometry.crop_to_image(np.zeros((2, 5, 2)), np.zeros((3, 2)), np.ones((2, 2)),
                                    (8, 6)), "center"),
    (lambda: geometry.crop_to_image(np.zeros((5,)), (0, 0), (1, 1), (8, 6)),
     "keypoints_in_input"),
])
def test_bad_shapes_raise_value_error_naming_the_argument(call, field):
  with pytest.raises(ValueError, match=field):
    call()
