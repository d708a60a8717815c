"""Heatmap codecs and flip-test helpers against docs/conventions.md's numbers and independent formulas.

Expected values come from closed forms written out here (the Gaussian formula, the
rounding rule, the flip geometry), not from the codec under test; the codec's own
encode only builds inputs, and only the batched-vs-single test compares it with itself.
"""

import ml_dtypes
import numpy as np
import pytest

from mamkpd_jax.data_pipelines import codecs

COCO_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
INPUT_SIZE = (256, 192)    # (height, width)
HEATMAP_SIZE = (64, 48)
SIGMA = 2.0
ROUND_TRIP_CELLS = 0.05    # UDP/DARK round-trip bound, heatmap cells (x scale = input px)


def codec(name):
  return codecs.make_codec(name, INPUT_SIZE, HEATMAP_SIZE, SIGMA)


def gaussian(centre_xy, window_centre_xy=None, radius=6, size=HEATMAP_SIZE, sigma=SIGMA):
  """(h, w) reference target: exp(-d^2 / 2 sigma^2), cut to a square window if given."""
  rows, cols = np.mgrid[0:size[0], 0:size[1]].astype(np.float64)   # (h, w) each
  squared_distance = (cols - centre_xy[0]) ** 2 + (rows - centre_xy[1]) ** 2
  value = np.exp(-squared_distance / (2 * sigma ** 2))
  if window_centre_xy is not None:
    inside = ((np.abs(cols - window_centre_xy[0]) <= radius)
              & (np.abs(rows - window_centre_xy[1]) <= radius))
    value = np.where(inside, value, 0.0)
  return value


def random_cells(rng, count, margin, size=HEATMAP_SIZE):
  """(count, 2) sub-cell (x, y) positions at least `margin` cells inside the map."""
  x = rng.uniform(margin, size[1] - 1 - margin, count)
  y = rng.uniform(margin, size[0] - 1 - margin, count)
  return np.stack([x, y], axis=-1)


# ---------------------------------------------------------------- golden targets

# MSRA: the centre is int(kpt / 4 + 0.5) (truncation toward zero, as mmpose's astype);
# the target is the peak-1 Gaussian on the 13x13 window around it, clipped by the map.
MSRA_TARGET_CASES = [
    # keypoint (x, y) input px,  expected integer centre (x, y) in cells
    ((81.3, 118.3), (20, 30)),   # interior: 20.325 -> 20, 29.575 -> 30
    ((4.0, 8.0), (1, 2)),        # window clipped by the top-left corner
    ((-2.8, 0.0), (0, 0)),       # -0.7 + 0.5 = -0.2 truncates to 0, not floor's -1
    ((191.0, 255.0), (48, 64)),  # 47.75 -> 48: centre one cell past the map, tail only
]


@pytest.mark.parametrize("keypoint,centre", MSRA_TARGET_CASES)
def test_msra_target_is_13x13_window_at_rounded_centre(keypoint, centre):
  heatmaps, weights = codec("msra").encode(np.array([keypoint]), np.ones(1))
  assert heatmaps.shape == (64, 48, 1) and heatmaps.dtype == np.float32
  np.testing.assert_allclose(heatmaps[..., 0], gaussian(centre, centre, radius=6),
                             rtol=1e-6, atol=1e-12)
  np.testing.assert_array_equal(weights, [1.0])
  cx, cy = centre
  if cx < 48 and cy < 64:
    assert heatmaps[cy, cx, 0] == 1.0                                # exact peak


def test_msra_window_is_13_cells_wide():
  heatmaps, _ = codec("msra").encode(np.array([[81.3, 118.3]]), np.ones(1))
  rows, cols = np.nonzero(heatmaps[..., 0])
  assert (rows.min(), rows.max(), cols.min(), cols.max()) == (24, 36, 14, 26)
  assert len(rows) == 13 * 13
  assert heatmaps[30, 26, 0] == np.float32(np.exp(-36 / 8))        # 3 sigma edge


def test_udp_scale_is_input_minus_1_over_heatmap_minus_1():
  np.testing.assert_allclose(codec("udp").scale, [191 / 47, 255 / 63], rtol=1e-15)


UDP_TARGET_CASES = [
    # keypoint (x, y) input px,               exact centre (x, y) in cells, window centre
    ((0.0, 0.0), (0.0, 0.0), (0, 0)),         # first pixel -> first cell exactly
    ((191.0, 255.0), (47.0, 63.0), (47, 63)),  # last pixel -> last cell exactly
    ((10.3 * 191 / 47, 20.6 * 255 / 63), (10.3, 20.6), (10, 21)),   # sub-cell centre
]


@pytest.mark.parametrize("keypoint,centre,window", UDP_TARGET_CASES)
def test_udp_target_is_subpixel_gaussian_in_window(keypoint, centre, window):
  heatmaps, weights = codec("udp").encode(np.array([keypoint]), np.ones(1))
  np.testing.assert_allclose(heatmaps[..., 0], gaussian(centre, window, radius=6),
                             rtol=1e-5, atol=1e-12)
  np.testing.assert_array_equal(weights, [1.0])


def test_dark_target_is_full_map_gaussian_at_float_centre():
  heatmaps, _ = codec("dark").encode(np.array([[81.3, 118.3]]), np.ones(1))
  np.testing.assert_allclose(heatmaps[..., 0], gaussian((20.325, 29.575)),
                             rtol=1e-5, atol=1e-30)
  assert heatmaps[29, 31, 0] > 0      # 10.7 cells away: outside any 13x13 window


WEIGHT_CASES = [
    # codec, keypoint (x, y) input px, visibility, expected weight
    ("msra", (81.3, 118.3), 0.0, 0.0),    # unlabelled
    ("msra", (81.3, 118.3), 0.6, 0.6),    # weight = visibility, as mmpose copies it
    ("msra", (-28.0, 100.0), 1.0, 1.0),   # centre -6: window -12..0 touches column 0
    ("msra", (-32.0, 100.0), 1.0, 0.0),   # centre -7: window -13..-1, entirely off
    ("msra", (100.0, 276.0), 1.0, 1.0),   # centre row 69: window 63..75 touches row 63
    ("msra", (100.0, 280.0), 1.0, 0.0),   # centre row 70: window 64..76, entirely off
    ("msra", (1000.0, -500.0), 1.0, 0.0),  # far away
    ("udp", (81.3, 118.3), 0.0, 0.0),     # unlabelled
    ("udp", (-500.0, 100.0), 1.0, 0.0),   # far away
    ("dark", (81.3, 118.3), 0.0, 0.0),    # unlabelled
    ("dark", (-23.6, 100.0), 1.0, 1.0),   # centre -5.9: cell 0 within 3 sigma
    ("dark", (-24.4, 100.0), 1.0, 0.0),   # centre -6.1: no cell within 3 sigma
    ("dark", (100.0, 1000.0), 1.0, 0.0),  # far away
]


@pytest.mark.parametrize("name,keypoint,visible,weight", WEIGHT_CASES)
def test_weights_and_empty_targets(name, keypoint, visible, weight):
  other = (96.0, 128.0)                   # a labelled interior keypoint beside it
  heatmaps, weights = codec(name).encode(np.array([keypoint, other]),
                                         np.array([visible, 1.0]))
  assert weights.dtype == np.float32
  np.testing.assert_allclose(weights, [weight, 1.0])
  assert (heatmaps[..., 0].max() > 0) == (weight > 0)
  assert heatmaps[..., 1].max() > 0.9


def test_unlabelled_keypoint_may_be_nan():
  heatmaps, weights = codec("dark").encode(np.array([[np.nan, np.nan]]), np.zeros(1))
  assert weights[0] == 0 and np.all(heatmaps == 0)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", ["udp", "dark"])
def test_round_trip_within_005_cells(name):
  """500 random sub-cell keypoints >= 4 cells from the edge (blur's zero padding and the
  refinement bounds bias the last 3 cells, in mmpose too)."""
  subject = codec(name)
  cells = random_cells(np.random.default_rng(0), 500, margin=4)      # (K, 2)
  keypoints = cells * subject.scale
  heatmaps, _ = subject.encode(keypoints, np.ones(len(cells)))
  decoded, scores = subject.decode(heatmaps)
  error_cells = np.abs(decoded - keypoints) / subject.scale
  assert error_cells.max() <= ROUND_TRIP_CELLS, error_cells.max()
  assert np.all(scores > 0.9)


def test_msra_round_trip_is_the_rounded_centre():
  """MSRA is quantised: the peak sits on cell int(u + 0.5) and its two neighbours are
  equal, so no quarter shift applies and decode returns exactly stride * that cell,
  within stride / 2 = 2 input px of the keypoint."""
  subject = codec("msra")
  rng = np.random.default_rng(1)
  cells = np.stack([rng.uniform(0, 47, 500), rng.uniform(0, 63, 500)], axis=-1)
  keypoints = cells * 4
  heatmaps, _ = subject.encode(keypoints, np.ones(len(cells)))
  decoded, _ = subject.decode(heatmaps)
  np.testing.assert_array_equal(decoded, 4 * np.trunc(cells + 0.5))
  assert np.abs(decoded - keypoints).max() <= 2.0


QUARTER_SHIFT_CASES = [
    # argmax cell (x, y), neighbours {(dx, dy): value}, expected decoded cell (x, y)
    ((20, 30), {(1, 0): 0.5, (-1, 0): 0.2}, (20.25, 30.0)),   # right higher
    ((20, 30), {(1, 0): 0.2, (-1, 0): 0.5}, (19.75, 30.0)),   # left higher
    ((20, 30), {(0, 1): 0.5, (0, -1): 0.2}, (20.0, 30.25)),   # lower row higher
    ((20, 30), {(1, 0): 0.5, (-1, 0): 0.5}, (20.0, 30.0)),    # tie: no shift
    ((1, 30), {(1, 0): 0.5}, (1.0, 30.0)),                    # mmpose: x-shift needs x > 1
    ((20, 0), {(1, 0): 0.5}, (20.0, 0.0)),                    # mmpose: x-shift needs y > 0
    ((47, 30), {(-1, 0): 0.5}, (47.0, 30.0)),                 # last column: none
    ((20, 62), {(0, 1): 0.5}, (20.0, 62.25)),                 # y = h - 2 still shifts
    ((20, 63), {(0, -1): 0.5}, (20.0, 63.0)),                 # last row: none
]


@pytest.mark.parametrize("peak,neighbours,expected", QUARTER_SHIFT_CASES)
def test_msra_quarter_shift(peak, neighbours, expected):
  heatmaps = np.zeros((64, 48, 1), np.float32)
  heatmaps[peak[1], peak[0], 0] = 1.0
  for (dx, dy), value in neighbours.items():
    heatmaps[peak[1] + dy, peak[0] + dx, 0] = value
  decoded, scores = codec("msra").decode(heatmaps)
  np.testing.assert_array_equal(decoded[0], 4 * np.array(expected))
  assert scores[0] == 1.0


DARK_BOUND_CASES = [
    # keypoint in cells (x, y), expected decode in cells: None = refined (not the argmax)
    ((1.3, 30.4), (1.0, 30.0)),     # argmax x = 1: mmpose refines only 1 < x < w - 2
    ((45.7, 30.4), (46.0, 30.0)),   # argmax x = 46 = w - 2: not refined
    ((20.3, 1.2), (20.0, 1.0)),     # argmax y = 1: neither axis refined (joint test)
    ((2.3, 30.4), None),            # argmax x = 2: refined
]


@pytest.mark.parametrize("cells,expected", DARK_BOUND_CASES)
def test_dark_refines_only_inside_mmpose_bounds(cells, expected):
  subject = codec("dark")
  heatmaps, _ = subject.encode(np.array([cells]) * 4, np.ones(1))
  decoded = subject.decode(heatmaps)[0][0] / 4
  if expected is None:
    assert np.all(decoded != np.round(decoded))
    np.testing.assert_allclose(decoded, cells, atol=0.3)
  else:
    np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize("amplitude", [
    1.0,      # a perfect target
    0.1,      # a weak prediction
    0.0015,   # blurred peak ~0.00075 < the 1e-3 clip unless rescaled to the original max
])
def test_udp_refinement_is_amplitude_invariant(amplitude):
  """mmpose's blur rescales each map to its original maximum before the UDP clip."""
  subject = codec("udp")
  cells = random_cells(np.random.default_rng(7), 17, margin=4)
  keypoints = cells * subject.scale
  heatmaps, _ = subject.encode(keypoints, np.ones(17))
  heatmaps = amplitude * heatmaps
  decoded, scores = subject.decode(heatmaps)
  np.testing.assert_allclose(decoded, keypoints, atol=ROUND_TRIP_CELLS * subject.scale.min())
  np.testing.assert_array_equal(scores, heatmaps.max(axis=(0, 1)))


# ---------------------------------------------------------------- decode contract


def noisy_batch(subject, rng, batch=3, num_keypoints=17):
  """(N, h, w, K) targets of random keypoints plus noise, as a model might output."""
  maps = []
  for _ in range(batch):
    keypoints = random_cells(rng, num_keypoints, margin=0) * subject.scale
    maps.append(subject.encode(keypoints, np.ones(num_keypoints))[0])
  maps = np.stack(maps)
  return maps + 0.05 * rng.standard_normal(maps.shape).astype(np.float32)


@pytest.mark.parametrize("name", ["msra", "udp", "dark"])
def test_batched_decode_equals_per_sample_decode(name):
  subject = codec(name)
  maps = noisy_batch(subject, np.random.default_rng(2))               # (N, h, w, K)
  keypoints, scores = subject.decode(maps)
  assert keypoints.shape == (3, 17, 2) and scores.shape == (3, 17)
  for n in range(len(maps)):
    single_keypoints, single_scores = subject.decode(maps[n])
    assert single_keypoints.shape == (17, 2) and single_scores.shape == (17,)
    np.testing.assert_array_equal(single_keypoints, keypoints[n])
    np.testing.assert_array_equal(single_scores, scores[n])


@pytest.mark.parametrize("name", ["msra", "udp", "dark"])
def test_scores_are_map_maxima_and_zero_for_empty_channels(name):
  subject = codec(name)
  maps = noisy_batch(subject, np.random.default_rng(3))
  maps[0, ..., 4] = 0.0                                       # an all-zero channel
  maps[1, ..., 7] = -np.abs(maps[1, ..., 7]) - 0.1            # an all-negative channel
  keypoints, scores = subject.decode(maps)
  expected = maps.max(axis=(1, 2))                            # (N, K)
  empty = np.zeros_like(expected, bool)
  empty[0, 4] = empty[1, 7] = True
  np.testing.assert_array_equal(scores[~empty], expected[~empty])
  np.testing.assert_array_equal(scores[empty], [0.0, 0.0])
  assert np.all(np.isfinite(keypoints))
  np.testing.assert_allclose(keypoints[empty], -np.tile(subject.scale, (2, 1)), rtol=1e-6)


@pytest.mark.parametrize("name", ["msra", "udp", "dark"])
def test_decode_accepts_bfloat16_and_zero_keypoints(name):
  """The model may emit bfloat16; a dataset may (in a test) have no keypoints at all."""
  subject = codec(name)
  heatmaps, _ = subject.encode(np.array([[96.0, 128.0]]), np.ones(1))
  as_float32, _ = subject.decode(heatmaps)
  as_bfloat16, _ = subject.decode(heatmaps.astype(ml_dtypes.bfloat16))
  np.testing.assert_allclose(as_bfloat16, as_float32, atol=0.1 * subject.scale.min())
  keypoints, scores = subject.decode(np.zeros((2, 64, 48, 0), np.float32))
  assert keypoints.shape == (2, 0, 2) and scores.shape == (2, 0)


# ---------------------------------------------------------------- flip test


def test_flip_heatmaps_small_example():
  maps = np.arange(6, dtype=np.float32).reshape(1, 1, 3, 2)  # (N=1, h=1, w=3, K=2)
  # channel 0 = [0, 2, 4], channel 1 = [1, 3, 5] along the width
  plain = codecs.flip_heatmaps(maps, [1, 0], shift=False)
  np.testing.assert_array_equal(plain[0, 0, :, 0], [5, 3, 1])   # mirrored channel 1
  np.testing.assert_array_equal(plain[0, 0, :, 1], [4, 2, 0])
  shifted = codecs.flip_heatmaps(maps, [1, 0], shift=True)
  np.testing.assert_array_equal(shifted[0, 0, :, 0], [5, 5, 3])  # 1 right, column 0 kept
  np.testing.assert_array_equal(shifted[0, 0, :, 1], [4, 4, 2])
  np.testing.assert_array_equal(maps.ravel(), np.arange(6))      # input untouched


@pytest.mark.parametrize("shift", [False, True])
def test_flip_heatmaps_twice(shift):
  """Identity without shift; with shift the two 1-cell shifts cancel except column 0,
  which ends up holding column 1 (mmpose's shift keeps column 0's value)."""
  maps = np.random.default_rng(4).standard_normal((2, 8, 6, 17)).astype(np.float32)
  twice = codecs.flip_heatmaps(codecs.flip_heatmaps(maps, COCO_FLIP, shift), COCO_FLIP, shift)
  np.testing.assert_array_equal(twice[:, :, 1:], maps[:, :, 1:])
  np.testing.assert_array_equal(twice[:, :, 0], maps[:, :, 1] if shift else maps[:, :, 0])


def test_flip_keypoints_golden_and_twice():
  keypoints = np.zeros((17, 2))
  keypoints[1] = (0.0, 10.0)      # left_eye at the first column
  keypoints[2] = (191.0, 20.0)    # right_eye at the last column
  keypoints[0] = (50.5, 30.0)     # nose: no partner
  visible = np.zeros(17)
  visible[[0, 1]] = 1.0
  flipped, flipped_visible = codecs.flip_keypoints(keypoints, visible, COCO_FLIP, 192)
  np.testing.assert_array_equal(flipped[0], [140.5, 30.0])       # 191 - 50.5
  np.testing.assert_array_equal(flipped[1], [0.0, 20.0])         # was right_eye at 191
  np.testing.assert_array_equal(flipped[2], [191.0, 10.0])       # was left_eye at 0
  np.testing.assert_array_equal(flipped_visible[[0, 1, 2]], [1.0, 0.0, 1.0])
  back, back_visible = codecs.flip_keypoints(flipped, flipped_visible, COCO_FLIP, 192)
  np.testing.assert_array_equal(back, keypoints)
  np.testing.assert_array_equal(back_visible, visible)


def flip_test_decode(subject, keypoints, shift):
  """Decode of the mean of the crop's target and its flipped crop's target flipped back."""
  visible = np.ones(len(keypoints))
  heatmaps, _ = subject.encode(keypoints, visible)
  flipped_keypoints, flipped_visible = codecs.flip_keypoints(keypoints, visible, COCO_FLIP,
                                                             192)
  flipped_heatmaps, _ = subject.encode(flipped_keypoints, flipped_visible)
  back = codecs.flip_heatmaps(flipped_heatmaps[None], COCO_FLIP, shift)[0]
  return subject.decode((heatmaps + back) / 2)[0]


def expected_flip_bias(subject, shift):
  """x bias (input px) of flip-test averaging, from the geometry alone.

  The flipped crop puts keypoint u (cells) at u' = (192 - 1 - x) / sx; flipping back sends
  cell c to w - 1 - c (w - c with the shift), so the second Gaussian sits at
  u + delta with delta = (w - 1 + shift) - 191 / sx; the mean peaks halfway.
  """
  delta = (48 - 1 + shift) - 191 / subject.scale[0]
  return subject.scale[0] * delta / 2


FLIP_AVERAGE_CASES = [
    # codec, shift, comment on expected_flip_bias
    ("udp", False, "exact alignment: bias 0, UDP's convention"),
    ("udp", True, "the shift moves UDP by half a cell: +191/47/2 px"),
    ("dark", True, "mmpose's convention: +0.25 cell left over, bias +0.5 px"),
    ("dark", False, "without the shift: -0.75 cell, bias -1.5 px"),
]


@pytest.mark.parametrize("name,shift,why", FLIP_AVERAGE_CASES)
def test_flip_test_average_recovers_keypoints(name, shift, why):
  subject = codec(name)
  keypoints = random_cells(np.random.default_rng(5), 17, margin=4) * subject.scale
  decoded = flip_test_decode(subject, keypoints, shift)
  error = decoded - keypoints                                         # (K, 2)
  tolerance = ROUND_TRIP_CELLS * subject.scale
  np.testing.assert_allclose(error[:, 0], expected_flip_bias(subject, shift),
                             atol=tolerance[0], err_msg=why)
  np.testing.assert_allclose(error[:, 1], 0.0, atol=tolerance[1], err_msg=why)


def test_codec_flip_shift_is_the_better_choice():
  for name in ("msra", "udp", "dark"):
    subject = codec(name)
    biases = {shift: abs(expected_flip_bias(subject, shift)) for shift in (False, True)}
    assert biases[subject.flip_shift] < biases[not subject.flip_shift], name


def test_msra_flip_average_matches_quantised_prediction():
  """Both targets are integer Gaussians, at r1 = int(u + 0.5) and r2 = 48 - int(u' + 0.5).
  Equal: decode r1. One apart: two equal maxima, argmax takes the left one and the quarter
  shift moves 0.25 toward the other."""
  subject = codec("msra")
  rng = np.random.default_rng(6)
  for _ in range(5):
    cells = random_cells(rng, 17, margin=2)
    keypoints = cells * 4
    decoded = flip_test_decode(subject, keypoints, shift=True)
    flipped_x = (191 - keypoints[:, 0]) / 4      # u' of keypoint k, in channel flip[k]
    r1 = np.trunc(cells[:, 0] + 0.5)
    r2 = 48 - np.trunc(flipped_x + 0.5)          # flipped back with the shift: c -> 48 - c
    assert np.all(np.abs(r1 - r2) <= 1)
    np.testing.assert_array_equal(decoded[:, 0], 4 * (np.minimum(r1, r2) + 0.25 * (r1 != r2)))
    np.testing.assert_array_equal(decoded[:, 1], 4 * np.trunc(cells[:, 1] + 0.5))


# ---------------------------------------------------------------- interface and errors


@pytest.mark.parametrize("name,cls,flip_shift", [
    ("msra", codecs.MSRAHeatmap, True),
    ("udp", codecs.UDPHeatmap, False),
    ("dark", codecs.DarkHeatmap, True),
])
def test_make_codec(name, cls, flip_shift):
  subject = codecs.make_codec(name, (256, 256), (64, 64), 3.0)
  assert type(subject) is cls and subject.flip_shift is flip_shift
  assert subject.input_size == (256, 256) and subject.heatmap_size == (64, 64)
  assert subject.sigma == 3.0


def test_defaults_are_coco():
  subject = codecs.MSRAHeatmap()
  assert subject.input_size == (256, 192) and subject.heatmap_size == (64, 48)
  assert subject.sigma == 2.0


MSRA = codec("msra")
make = codecs.make_codec
BAD_INPUT_CASES = [
    # call, message fragment (names the argument or lists the choices)
    # unknown codec name: the error lists the known ones
    (lambda: make("simcc", INPUT_SIZE, HEATMAP_SIZE, SIGMA), "'dark', 'msra', 'udp'"),
    # heatmap larger than the input
    (lambda: make("msra", (256, 192), (128, 256), SIGMA), "heatmap_size"),
    # UDP divides by heatmap - 1
    (lambda: make("udp", (256, 192), (64, 1), SIGMA), "heatmap_size"),
    # non-integer strides for MSRA (256/60) and DARK (192/50)
    (lambda: make("msra", (256, 192), (60, 48), SIGMA), "integer multiple"),
    (lambda: make("dark", (256, 192), (64, 50), SIGMA), "integer multiple"),
    # sigma <= 0
    (lambda: make("msra", (256, 192), (64, 48), 0.0), "sigma"),
    (lambda: make("udp", (256, 192), (64, 48), -1.0), "sigma"),
    # sizes that are not two positive integers
    (lambda: make("msra", (256, 192, 3), (64, 48), SIGMA), "input_size"),
    (lambda: make("msra", (256, 0), (64, 48), SIGMA), "input_size"),
    (lambda: make("msra", (256, 192), (64.5, 48), SIGMA), "heatmap_size"),
    # keypoints with a third column, visibility of the wrong length
    (lambda: MSRA.encode(np.zeros((17, 3)), np.ones(17)), "keypoints must"),
    (lambda: MSRA.encode(np.zeros((17, 2)), np.ones(16)), "keypoints_visible"),
    # COCO's raw visibility flag 2 is not in [0, 1]
    (lambda: MSRA.encode(np.zeros((17, 2)), 2 * np.ones(17)), "keypoints_visible"),
    # a labelled keypoint at infinity
    (lambda: MSRA.encode(np.full((1, 2), np.inf), np.ones(1)), "finite"),
    # heatmaps without a K axis, with (w, h) swapped, with NaN
    (lambda: MSRA.decode(np.zeros((64, 48))), "heatmaps"),
    (lambda: MSRA.decode(np.zeros((2, 48, 64, 17))), "heatmaps"),
    (lambda: MSRA.decode(np.full((64, 48, 17), np.nan)), "heatmaps"),
    # flip_heatmaps wants a batch axis
    (lambda: codecs.flip_heatmaps(np.zeros((64, 48, 17)), COCO_FLIP, True), "heatmaps"),
    # flip indices: wrong length, not a permutation, not a pairing (a 3-cycle)
    (lambda: codecs.flip_heatmaps(np.zeros((1, 4, 4, 16)), COCO_FLIP, True), "flip_indices"),
    (lambda: codecs.flip_heatmaps(np.zeros((1, 4, 4, 3)), [0, 0, 1], True), "flip_indices"),
    (lambda: codecs.flip_heatmaps(np.zeros((1, 4, 4, 3)), [1, 2, 0], True), "flip_indices"),
    # flip_keypoints: visibility of the wrong length, zero width
    (lambda: codecs.flip_keypoints(np.zeros((17, 2)), np.ones(16), COCO_FLIP, 192),
     "keypoints_visible"),
    (lambda: codecs.flip_keypoints(np.zeros((17, 2)), np.ones(17), COCO_FLIP, 0),
     "image_width"),
]


@pytest.mark.parametrize("call,fragment", BAD_INPUT_CASES)
def test_bad_input_is_a_clear_value_error(call, fragment):
  with pytest.raises(ValueError, match=fragment):
    call()
