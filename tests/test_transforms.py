"""Top-down Grain transforms on small synthetic numpy elements (mmpose 1.x behaviour)."""

import cv2
import grain
import numpy as np
import pytest

from mamkpd_jax.data_pipelines import geometry
from mamkpd_jax.data_pipelines import transforms

COCO_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
COCO_UPPER = list(range(11))
COCO_LOWER = list(range(11, 17))
ASPECT = 0.75


def make_element(num_keypoints=3, height=60, width=80, seed=0):
  """An instance with a black image, random keypoints inside it, all visible."""
  rng = np.random.default_rng(seed)
  keypoints = rng.uniform([5, 5], [width - 5, height - 5], size=(num_keypoints, 2))
  return {
      "image_path": "synthetic.png", "image_id": 1, "instance_id": 7,
      "bbox": np.array([10, 8, 40, 36], np.float32),
      "bbox_score": np.float32(1.0),
      "keypoints": keypoints.astype(np.float32),
      "keypoints_visible": np.ones(num_keypoints, np.float32),
      "image": np.zeros((height, width, 3), np.uint8),
  }


def with_center_scale(element):
  return transforms.BoxToCenterScale(ASPECT).map(element)


def assert_elements_equal(a, b, atol=0.0):
  """Same fields and values; float fields within `atol`."""
  assert a.keys() == b.keys()
  for key in a:
    if atol and np.asarray(a[key]).dtype.kind == "f":
      np.testing.assert_allclose(a[key], b[key], atol=atol, err_msg=key)
    else:
      np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


def bright_pixels(image):
  """(x, y) of every non-black pixel."""
  ys, xs = np.nonzero(image.any(axis=-1))
  return set(zip(xs.tolist(), ys.tolist()))


# ---------------------------------------------------------------- DecodeImage

def test_decode_image_reads_rgb(tmp_path):
  rgb = np.zeros((5, 7, 3), np.uint8)
  rgb[2, 3] = (200, 100, 50)                       # R, G, B
  path = tmp_path / "one.png"
  assert cv2.imwrite(str(path), rgb[..., ::-1])    # cv2 writes BGR
  element = transforms.DecodeImage().map({"image_path": str(path), "image_id": 3})
  assert element["image"].dtype == np.uint8
  np.testing.assert_array_equal(element["image"], rgb)
  assert element["image_id"] == 3


@pytest.mark.parametrize("content", [None, b"", b"this is not a png"])
def test_decode_image_names_a_missing_or_corrupt_file(tmp_path, content):
  path = tmp_path / "broken.jpg"
  if content is not None:
    path.write_bytes(content)
  with pytest.raises(ValueError, match="broken.jpg"):
    transforms.DecodeImage().map({"image_path": str(path)})


def test_decode_image_names_a_missing_field():
  with pytest.raises(ValueError, match="image_path"):
    transforms.DecodeImage().map({"image_id": 1})


# ---------------------------------------------------------------- BoxToCenterScale

def test_box_to_center_scale_adds_center_scale_rotation():
  element = make_element()                                     # bbox 10, 8, 40x36
  out = transforms.BoxToCenterScale(ASPECT).map(element)
  # 40x36 * 1.25 = 50x45; 50 > 45 * 0.75, so the height grows to 50 / 0.75.
  np.testing.assert_allclose(out["center"], (30, 26))
  np.testing.assert_allclose(out["scale"], (50, 50 / 0.75), rtol=1e-6)
  assert out["rotation"] == 0 and out["rotation"].dtype == np.float32
  assert out["center"].dtype == np.float32 and out["scale"].dtype == np.float32
  assert "center" not in element                               # the input is untouched


def test_box_to_center_scale_clips_to_the_image_only_when_asked():
  element = make_element(height=60, width=80)
  element["bbox"] = np.array([60, 8, 40, 36], np.float32)      # x 60..100, image x 0..79
  clipped = transforms.BoxToCenterScale(ASPECT, padding=1.0).map(element)
  np.testing.assert_allclose(clipped["center"], (69.5, 26))
  raw = transforms.BoxToCenterScale(ASPECT, padding=1.0, clip_to_image=False).map(element)
  np.testing.assert_allclose(raw["center"], (80, 26))
  del element["image"]
  with pytest.raises(ValueError, match="image"):
    transforms.BoxToCenterScale(ASPECT).map(element)


# ---------------------------------------------------------------- RandomFlip

def test_flip_moves_pixel_keypoint_and_center():
  element = with_center_scale(make_element(num_keypoints=3, width=80))
  element["keypoints"] = np.array([[40, 30], [12, 20], [70, 50]], np.float32)
  element["image"][20, 12] = 255                               # under keypoint 1 (left)
  out = transforms.flip_element(element, np.array([0, 2, 1]))
  # The pixel goes to x = 79 - 12 = 67; keypoint 1 becomes keypoint 2 (its mirror twin).
  assert bright_pixels(out["image"]) == {(67, 20)}
  np.testing.assert_array_equal(out["keypoints"], [[39, 30], [9, 50], [67, 20]])
  np.testing.assert_allclose(out["center"], (79 - 30, 26))
  # xywh box 10..50 -> 29..69
  np.testing.assert_allclose(out["bbox"], (29, 8, 40, 36))


def test_flip_swaps_visibility_with_the_keypoints():
  element = make_element(num_keypoints=3)
  element["keypoints_visible"] = np.array([1, 0, 1], np.float32)
  out = transforms.flip_element(element, np.array([0, 2, 1]))
  np.testing.assert_array_equal(out["keypoints_visible"], [1, 1, 0])


def test_flip_twice_is_the_identity():
  element = with_center_scale(make_element(num_keypoints=17, seed=3))
  element["image"] = np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8)
  flip = transforms.RandomFlip(COCO_FLIP, prob=1.0)
  rng = np.random.default_rng(0)
  once = flip.random_map(element, rng)
  assert not np.array_equal(once["image"], element["image"])
  # Exact for the image and visibility; x -> 79 - (79 - x) rounds in float32.
  assert_elements_equal(flip.random_map(once, rng), element, atol=1e-5)


def test_flip_probability_zero_never_one_always_half_sometimes():
  element = make_element(num_keypoints=17)
  element["image"][5, 5] = 255
  never = transforms.RandomFlip(COCO_FLIP, prob=0.0)
  always = transforms.RandomFlip(COCO_FLIP, prob=1.0)
  half = transforms.RandomFlip(COCO_FLIP, prob=0.5)
  flipped = []
  for seed in range(200):
    assert_elements_equal(never.random_map(element, np.random.default_rng(seed)), element)
    assert bright_pixels(always.random_map(element, np.random.default_rng(seed))["image"]) == {
        (74, 5)}
    out = half.random_map(element, np.random.default_rng(seed))
    flipped.append(bright_pixels(out["image"]) == {(74, 5)})
  assert 70 < sum(flipped) < 130


def test_flip_rejects_mismatched_or_invalid_flip_indices():
  with pytest.raises(ValueError, match="flip_indices"):
    transforms.RandomFlip([0, 2, 1], prob=1.0).random_map(
        make_element(num_keypoints=17), np.random.default_rng(0))
  with pytest.raises(ValueError, match="flip_indices"):
    transforms.RandomFlip([0, 0, 1])                             # not a permutation
  element = make_element(num_keypoints=3)
  element["keypoints_visible"] = np.ones(4, np.float32)
  with pytest.raises(ValueError, match="keypoints_visible"):
    transforms.RandomFlip([0, 2, 1], prob=1.0).random_map(element, np.random.default_rng(0))


# ---------------------------------------------------------------- RandomHalfBody

def half_body_element():
  """17 COCO keypoints: upper body (0-10) around y 10..30, lower body (11-16) y 60..90."""
  element = with_center_scale(make_element(num_keypoints=17, height=100, width=80))
  upper = np.stack([np.linspace(20, 40, 11), np.linspace(10, 30, 11)], axis=1)
  lower = np.stack([np.linspace(30, 42, 6), np.linspace(60, 90, 6)], axis=1)
  element["keypoints"] = np.concatenate([upper, lower]).astype(np.float32)
  return element


def half_body(**kwargs):
  kwargs = dict(dict(aspect_ratio=ASPECT, prob=1.0), **kwargs)
  return transforms.RandomHalfBody(COCO_UPPER, COCO_LOWER, **kwargs)


def test_half_body_upper_box_by_hand():
  out = half_body(upper_prob=1.0).random_map(half_body_element(), np.random.default_rng(0))
  # upper keypoints: x 20..40, y 10..30, mean (30, 20); extent 20x20 * 1.5 = 30x30,
  # height grown to 30 / 0.75 = 40.
  np.testing.assert_allclose(out["center"], (30, 20), atol=1e-5)
  np.testing.assert_allclose(out["scale"], (30, 40), atol=1e-4)


def test_half_body_lower_box_by_hand():
  out = half_body(upper_prob=0.0).random_map(half_body_element(), np.random.default_rng(0))
  # lower keypoints: x 30..42, y 60..90, mean (36, 75); extent 12x30 * 1.5 = 18x45,
  # width grown to 45 * 0.75 = 33.75.
  np.testing.assert_allclose(out["center"], (36, 75), atol=1e-5)
  np.testing.assert_allclose(out["scale"], (33.75, 45), atol=1e-4)


def test_half_body_needs_enough_visible_keypoints():
  element = half_body_element()
  element["keypoints_visible"][8:] = 0                  # 8 visible < min_total_keypoints 9
  rng = np.random.default_rng(0)
  assert_elements_equal(half_body().random_map(element, rng), element)
  element["keypoints_visible"][8] = 1                   # 9 visible, all upper: upper only
  out = half_body(upper_prob=0.0).random_map(element, rng)
  np.testing.assert_allclose(out["center"], element["keypoints"][:9].mean(axis=0), atol=1e-5)


def test_half_body_uses_only_visible_keypoints_and_skips_thin_halves():
  element = half_body_element()
  visible = np.zeros(17, np.float32)
  visible[:9] = 1                                       # upper: ids 0-8 visible
  visible[[15, 16]] = 1                                 # lower: 2 visible < 3 (mmpose)
  element["keypoints_visible"] = visible                # 11 visible in total
  element["keypoints"][10] = (500, 500)                 # invisible: must not count
  out = half_body(upper_prob=0.0).random_map(element, np.random.default_rng(0))
  # Lower is too thin, so upper despite upper_prob 0: ids 0-8 span x 20..36, y 10..26,
  # extent 16x16 * 1.5 = 24x24, height grown to 32.
  np.testing.assert_allclose(out["center"], element["keypoints"][:9].mean(axis=0), atol=1e-5)
  np.testing.assert_allclose(out["scale"], (24, 32), atol=1e-4)


def test_half_body_does_nothing_when_both_halves_are_thin():
  element = half_body_element()
  visible = np.zeros(17, np.float32)
  visible[[0, 15, 16]] = 1                              # upper 1 < 2, lower 2 < 3
  element["keypoints_visible"] = visible
  out = half_body(min_total_keypoints=3).random_map(element, np.random.default_rng(0))
  assert_elements_equal(out, element)


def test_half_body_probability_and_determinism():
  element = half_body_element()
  never = half_body(prob=0.0)
  default = transforms.RandomHalfBody(COCO_UPPER, COCO_LOWER, aspect_ratio=ASPECT)
  changed = 0
  for seed in range(300):
    assert_elements_equal(never.random_map(element, np.random.default_rng(seed)), element)
    out = default.random_map(element, np.random.default_rng(seed))
    assert_elements_equal(out, default.random_map(element, np.random.default_rng(seed)))
    changed += not np.array_equal(out["center"], element["center"])
  assert 60 < changed < 120                               # prob 0.3 of 300


def test_half_body_rejects_ids_beyond_the_keypoints():
  with pytest.raises(ValueError, match="keypoints"):
    half_body().random_map(with_center_scale(make_element(num_keypoints=5)),
                           np.random.default_rng(0))


# ---------------------------------------------------------------- RandomBBoxTransform

def test_truncated_normal_is_in_range_with_the_right_spread():
  samples = transforms.truncated_normal(np.random.default_rng(0), 20000)
  assert np.abs(samples).max() <= 1
  # N(0, 1) truncated to [-1, 1]: variance 1 - 2 phi(1) / (Phi(1) - Phi(-1)) = 0.2911.
  assert abs(samples.std() - 0.2911 ** 0.5) < 0.01
  assert abs(samples.mean()) < 0.01


def test_bbox_transform_with_zero_probabilities_changes_nothing():
  element = with_center_scale(make_element())
  still = transforms.RandomBBoxTransform(shift_prob=0, scale_prob=0, rotate_prob=0)
  for seed in range(20):
    out = still.random_map(element, np.random.default_rng(seed))
    assert_elements_equal(out, element)


def test_bbox_transform_stays_in_its_ranges_and_keeps_the_aspect():
  element = with_center_scale(make_element())
  always = transforms.RandomBBoxTransform(shift_prob=1, scale_prob=1, rotate_prob=1)
  resizes, rotations = [], []
  for seed in range(300):
    out = always.random_map(element, np.random.default_rng(seed))
    shift = (out["center"] - element["center"]) / element["scale"]
    resize = out["scale"] / element["scale"]
    assert np.all(np.abs(shift) <= 0.16 + 1e-6)
    assert resize[0] == pytest.approx(resize[1], rel=1e-5)
    assert 0.5 - 1e-6 <= resize[0] <= 1.5 + 1e-6
    assert abs(out["rotation"]) <= 80 and out["rotation"].dtype == np.float32
    resizes.append(resize[0])
    rotations.append(float(out["rotation"]))
  # s = 1 + 0.5 t and r = 80 t with t of std 0.54: both spread, both centred.
  assert 0.2 < np.std(resizes) < 0.35 and abs(np.mean(resizes) - 1) < 0.06
  assert 35 < np.std(rotations) < 50


def test_bbox_transform_rotation_probability():
  element = with_center_scale(make_element())
  default = transforms.RandomBBoxTransform()
  rotated = sum(default.random_map(element, np.random.default_rng(seed))["rotation"] != 0
                for seed in range(300))
  assert 150 < rotated < 210                              # prob 0.6 of 300


def test_bbox_transform_is_deterministic_per_rng():
  element = with_center_scale(make_element())
  default = transforms.RandomBBoxTransform()
  a = default.random_map(element, np.random.default_rng(5))
  b = default.random_map(element, np.random.default_rng(5))
  c = default.random_map(element, np.random.default_rng(6))
  assert_elements_equal(a, b)
  assert not np.array_equal(a["scale"], c["scale"])


def test_bbox_transform_needs_center_and_scale():
  with pytest.raises(ValueError, match="center"):
    transforms.RandomBBoxTransform().random_map(make_element(), np.random.default_rng(0))
  with pytest.raises(ValueError, match="scale_factor"):
    transforms.RandomBBoxTransform(scale_factor=(1.5, 0.5))


# ---------------------------------------------------------------- TopdownAffine

@pytest.mark.parametrize("use_udp", [False, True])
@pytest.mark.parametrize("rotation", [0.0, 90.0, -37.0])
def test_affine_moves_pixel_and_keypoint_together(use_udp, rotation):
  element = make_element(num_keypoints=2, height=120, width=100)
  element["keypoints"] = np.array([[30, 50], [500, 500]], np.float32)
  element["image"][50, 30] = 255                               # under keypoint 0
  element.update(center=np.array([35, 45], np.float32), scale=np.array([30, 40], np.float32),
                 rotation=np.float32(rotation))
  out = transforms.TopdownAffine((40, 30), use_udp=use_udp).map(element)
  assert out["image"].shape == (40, 30, 3) and out["image"].dtype == np.uint8
  x, y = out["keypoints"][0]
  # The bilinear blob of the bright pixel peaks at the keypoint's input position.
  intensity = out["image"][..., 0].astype(float)
  peak_y, peak_x = np.unravel_index(intensity.argmax(), intensity.shape)
  assert abs(peak_x - x) <= 0.5 and abs(peak_y - y) <= 0.5
  matrix = (geometry.udp_affine_matrix if use_udp else geometry.affine_matrix)(
      (35, 45), (30, 40), rotation, (40, 30))
  np.testing.assert_allclose(out["keypoints"], geometry.transform_points(
      element["keypoints"], matrix), atol=1e-4)
  # mmpose leaves visibility alone, even for the keypoint far outside the input.
  np.testing.assert_array_equal(out["keypoints_visible"], [1, 1])


def test_affine_standard_warp_at_zoom_one_by_hand():
  element = make_element(num_keypoints=1, height=120, width=100)
  element["keypoints"] = np.array([[30, 50]], np.float32)
  element["image"][50, 30] = (255, 10, 20)
  element.update(center=np.array([35, 45], np.float32), scale=np.array([30, 40], np.float32),
                 rotation=np.float32(0))
  out = transforms.TopdownAffine((40, 30)).map(element)
  # x - 35 + 15, y - 45 + 20
  np.testing.assert_allclose(out["keypoints"], [[10, 25]], atol=1e-5)
  assert bright_pixels(out["image"]) == {(10, 25)}
  np.testing.assert_array_equal(out["image"][25, 10], (255, 10, 20))


def test_affine_fixes_the_aspect_ratio_of_the_scale():
  element = with_center_scale(make_element())
  element["scale"] = np.array([30, 30], np.float32)
  out = transforms.TopdownAffine((256, 192)).map(element)
  np.testing.assert_allclose(out["scale"], (30, 40))
  assert out["image"].shape == (256, 192, 3)


def test_affine_can_mark_keypoints_outside_the_input_invisible():
  element = with_center_scale(make_element(num_keypoints=3, height=100, width=100))
  element["center"], element["scale"] = np.array([50, 50], np.float32), np.array(
      [30, 40], np.float32)
  element["keypoints"] = np.array([[50, 50], [10, 50], [50, 69.9]], np.float32)
  out = transforms.TopdownAffine((40, 30), invisible_outside=True).map(element)
  np.testing.assert_array_equal(out["keypoints_visible"], [1, 0, 1])


# ---------------------------------------------------------------- GenerateTarget

class PeakCodec:
  """Stand-in codec: a one-hot (h, w, K) map at int(kpt / stride); weight = visible,
  and 0 for a keypoint off the map."""

  def __init__(self, heatmap_size=(8, 6), stride=4, bad_shape=False):
    self.heatmap_size, self.stride, self.bad_shape = heatmap_size, stride, bad_shape

  def encode(self, keypoints, keypoints_visible):
    height, width = self.heatmap_size
    heatmaps = np.zeros((height, width, len(keypoints)))
    weights = np.asarray(keypoints_visible, np.float64).copy()
    for k, (x, y) in enumerate(np.floor(keypoints / self.stride).astype(int)):
      if 0 <= x < width and 0 <= y < height:
        heatmaps[y, x, k] = 1.0
      else:
        weights[k] = 0.0
    return (heatmaps[..., :-1] if self.bad_shape else heatmaps), weights


def test_generate_target_adds_heatmaps_and_weights():
  element = make_element(num_keypoints=2)
  element["keypoints"] = np.array([[5, 9], [20, 30]], np.float32)
  element["keypoints_visible"] = np.array([1, 0], np.float32)
  out = transforms.GenerateTarget(PeakCodec()).map(element)
  assert out["heatmaps"].shape == (8, 6, 2) and out["heatmaps"].dtype == np.float32
  assert out["heatmaps"][2, 1, 0] == 1 and out["heatmaps"][7, 5, 1] == 1
  assert out["keypoint_weights"].dtype == np.float32
  np.testing.assert_array_equal(out["keypoint_weights"], [1, 0])


def test_generate_target_checks_the_codec():
  with pytest.raises(ValueError, match="codec"):
    transforms.GenerateTarget(object())
  with pytest.raises(ValueError, match="heatmaps"):
    transforms.GenerateTarget(PeakCodec(bad_shape=True)).map(make_element(num_keypoints=2))


# ---------------------------------------------------------------- the whole pipeline

def train_pipeline(source, seed):
  """mmpose's train order through Grain, on 17-keypoint elements."""
  return (grain.MapDataset.source(source)
          .map(transforms.BoxToCenterScale(ASPECT))
          .random_map(transforms.RandomFlip(COCO_FLIP), seed=seed)
          .random_map(transforms.RandomHalfBody(COCO_UPPER, COCO_LOWER, aspect_ratio=ASPECT),
                      seed=seed + 1)
          .random_map(transforms.RandomBBoxTransform(), seed=seed + 2)
          .map(transforms.TopdownAffine((32, 24)))
          .map(transforms.GenerateTarget(PeakCodec(heatmap_size=(8, 6)))))


def test_grain_pipeline_runs_and_is_deterministic():
  source = [make_element(num_keypoints=17, seed=seed) for seed in range(6)]
  for seed, element in enumerate(source):
    element["keypoints"] = element["keypoints"] * 0.2 + 20     # near the box, inside crops
    element["image"] = np.random.default_rng(seed).integers(0, 255, (60, 80, 3), np.uint8)
  first = [train_pipeline(source, seed=0)[i] for i in range(6)]
  again = [train_pipeline(source, seed=0)[i] for i in range(6)]
  other = [train_pipeline(source, seed=10)[i] for i in range(6)]
  for a, b in zip(first, again):
    assert_elements_equal(a, b)
    assert a["image"].shape == (32, 24, 3) and a["image"].dtype == np.uint8
    assert a["heatmaps"].shape == (8, 6, 17)
  assert any(not np.array_equal(a["image"], c["image"]) for a, c in zip(first, other))
  assert any(not np.array_equal(a["keypoints"], c["keypoints"]) for a, c in zip(first, other))
