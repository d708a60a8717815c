"""evaluation.decode, the one heatmaps -> keypoints path, and its three users.

Unit checks against independent computations (keypoints placed in an image, warped into
a crop by geometry's matrices, encoded by the codec and decoded back; argmax cells by
numpy's unravel_index), then the whole path: the same crops through evaluation
(evaluate.predict_dataset), the Estimator and the jax.export artefact give the same
heatmaps and keypoints. The ONNX graph is serving_fn's too: test_onnx_export compares
its heatmaps with the Estimator's.
"""

import jax
import numpy as np
import pytest
from flax import nnx

from mamkpd_jax import inference
from mamkpd_jax.data_pipelines import codecs, geometry
from mamkpd_jax.evaluation import decode, evaluate
from mamkpd_jax.export import serving
from mamkpd_jax.training import parallel
# The tiny open-field workdir and its fast-compiled estimator (module fixtures).
from test_inference import FRAME, boxes, estimator, workdir  # pylint: disable=unused-import

COCO_FLIP = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)


# ------------------------------------------------------------------ the parts


@pytest.mark.parametrize("shift", [False, True])   # UDP; MSRA and DARK
def test_flip_heatmaps_is_one_function_for_numpy_and_traced_arrays(shift):
  maps = np.random.default_rng(1).normal(size=(2, 5, 6, 17)).astype(np.float32)
  in_numpy = codecs.flip_heatmaps(maps, COCO_FLIP, shift)
  traced = jax.jit(lambda m: codecs.flip_heatmaps(m, COCO_FLIP, shift))(maps)
  np.testing.assert_array_equal(np.asarray(traced), in_numpy)
  # written out: mirror the columns, swap left/right channels, shift one column right
  want = maps[:, :, ::-1][..., list(COCO_FLIP)]
  if shift:
    want = np.concatenate([want[:, :, :1], want[:, :, :-1]], axis=2)
  np.testing.assert_array_equal(in_numpy, want)


def test_argmax_keypoints_are_the_first_maximum_cells():
  rng = np.random.default_rng(0)
  maps = rng.integers(0, 4, (3, 7, 5, 4)).astype(np.float32)   # ties: 3 occurs often
  maps[1, :, :, 2] = 0.0                                         # a flat channel: cell 0
  scale = (4.0, 2.5)
  keypoints, scores = jax.jit(decode.argmax_keypoints, static_argnums=1)(maps, scale)
  for n in range(3):
    for k in range(4):
      row, col = np.unravel_index(np.argmax(maps[n, :, :, k]), (7, 5))   # first in row order
      np.testing.assert_array_equal(keypoints[n, k], [col * 4.0, row * 2.5])
      assert scores[n, k] == maps[n, :, :, k].max()


@pytest.mark.parametrize("name", ["msra", "udp", "dark"])
def test_argmax_keypoints_match_the_codec_on_peaks_at_cell_centres(name):
  """Targets centred on whole cells: the codec's refinement adds nothing, so its decode
  and the exported argmax step agree."""
  codec = codecs.make_codec(name, (128, 96), (32, 24), sigma=2.0)
  # at least the blur's radius (5 cells) from every edge: symmetric neighbourhoods
  cells = np.array([[6, 6], [17, 9], [8, 25], [12, 16]], np.float64)   # (K, 2) x, y
  target, _ = codec.encode(cells * codec.scale, np.ones(4))              # (h, w, K)
  want, _ = codec.decode(target[None])
  got, _ = decode.argmax_keypoints(target[None], codec.scale)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-3)
  np.testing.assert_allclose(want[0], cells * codec.scale, atol=1e-3)


@pytest.mark.parametrize("name", ["udp", "msra"])
def test_to_image_inverts_the_crop(name):
  """Image keypoints -> the crop's input pixels (the crop's own warp matrix) -> the
  codec's target -> to_image: back where they started (UDP to 0.1 px; MSRA, whose
  target sits on the nearest cell, to half a cell)."""
  input_size = (128, 96)
  codec = codecs.make_codec(name, input_size, (32, 24), sigma=2.0)
  box = (100.0, 40.0, 30.0, 50.0)
  center, scale = geometry.box_to_center_scale(box, 96 / 128)
  matrix = (geometry.udp_affine_matrix if decode.uses_udp(codec) else
            geometry.affine_matrix)(center, scale, 0.0, input_size)
  # 5+ cells from the heatmap's edges (the refinement's blur sees a symmetric peak)
  in_image = np.array([[110.0, 58.0], [118.3, 66.0], [121.5, 75.7]], np.float32)
  target, weights = codec.encode(geometry.transform_points(in_image, matrix), np.ones(3))
  assert np.all(weights > 0)
  keypoints, scores = decode.to_image(target[None], codec, center[None], scale[None])
  pixel = scale[0] / input_size[1]                              # image px per input px
  tolerance = 0.1 if name == "udp" else 0.5 * codec.scale[0] * pixel + 0.05
  np.testing.assert_allclose(keypoints[0], in_image, atol=tolerance)
  assert np.all(scores > 0.5)
  empty, empty_scores = decode.to_image(np.zeros((0, 32, 24, 3), np.float32), codec,
                                        np.zeros((0, 2)), np.zeros((0, 2)))
  assert empty.shape == (0, 3, 2) and empty_scores.shape == (0, 3)


# ------------------------------------------------------------------ the whole path


@pytest.fixture(scope="module")
def crops_of_frame(estimator):
  """(crops (6, 64, 64, 3), centers (6, 2), scales (6, 2)) of six boxes on the frame."""
  image = inference.load_image(str(FRAME))
  return estimator.crops(image, inference.as_boxes(boxes(6), image))


def test_evaluation_estimator_and_export_decode_alike(estimator, crops_of_frame):
  crops, centers, scales = crops_of_frame
  assert estimator.flip_test                       # the flip-averaging is on the path
  codec, config = estimator.codec, estimator.config
  # (a) evaluation: the crops as an evaluation dataset, data-parallel forward
  mesh = parallel.make_mesh()
  graphdef, state = nnx.split(estimator.model)
  dataset = [{"image": c, "center": m, "scale": s} for c, m, s in zip(crops, centers, scales)]
  evaluated, evaluated_scores, _ = evaluate.predict_dataset(
      config, graphdef, parallel.replicate(state, mesh), dataset, estimator.info, codec, mesh)
  # (b) the Estimator
  heatmaps = estimator.crop_heatmaps(crops)                           # (6, 16, 16, K)
  estimated, estimated_scores = estimator.decode(heatmaps, centers, scales)
  np.testing.assert_allclose(estimated, evaluated, atol=1e-3)
  np.testing.assert_allclose(estimated_scores, evaluated_scores, atol=1e-5)
  # (c) the jax.export artefact: its heatmaps decode to the same keypoints, and its own
  # keypoints are the codec's argmax cells of those heatmaps
  exported = serving.export_forward(estimator)
  out = jax.tree.map(np.asarray, jax.jit(
      exported.call, compiler_options=inference.FAST_COMPILE_CPU)(crops))
  np.testing.assert_allclose(out["heatmaps"], heatmaps, rtol=1e-5, atol=1e-6)
  served, served_scores = decode.to_image(out["heatmaps"], codec, centers, scales)
  np.testing.assert_allclose(served, evaluated, atol=1e-3)
  np.testing.assert_allclose(served_scores, evaluated_scores, atol=1e-5)
  xs, ys, maxima = codecs._heatmap_maximum(out["heatmaps"])  # pylint: disable=protected-access
  np.testing.assert_array_equal(out["keypoints"],
                                np.stack([xs, ys], -1).astype(np.float32) *
                                np.asarray(codec.scale, np.float32))
  np.testing.assert_array_equal(out["scores"], maxima)
