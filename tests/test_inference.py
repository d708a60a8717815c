"""mamkpd_jax.inference and visualization on the tiny open-field model at 64x64.

The estimator is checked against the evaluation path (evaluate.predict_dataset on the
same instances), which builds its crops through Grain and runs them data-parallel (both
decode with evaluation.decode; test_decode feeds both the same crops).
`write_workdir` (written once per session by conftest's `trained_workdir`, which the
export, ONNX, predict and pretrained tests read too) makes a real workdir: config.json and an Orbax checkpoint written by train.train_and_evaluate, with
its train step stubbed out so that no backward pass is compiled (test_train.py trains
for real): the checkpoint holds the initial parameters.
"""

import contextlib
import dataclasses
import io
import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from flax import nnx
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mamkpd_jax import config_lib, inference
from mamkpd_jax.evaluation import evaluate
from mamkpd_jax.inference import visualization
from mamkpd_jax.training import parallel, train
from mamkpd_jax.data_pipelines import geometry, pipeline
from mamkpd_jax.evaluation import rescore

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO / "data/samples/dlc-openfield"
FRAME = DATA / "labeled-data/m4s1/img0100.png"          # a held-out frame (last 20%)
FRAME_BOX = (61.5407, 384.2046, 128.5116, 44.2728)     # its labelled box (xywh)
TINY = {
    "data.root": str(DATA), "data.input_height": 64, "data.input_width": 64,
    "data.num_workers": 0, "batch_size": 4, "train.warmup_steps": 2,
    "train.log_every_steps": 1, "train.checkpoint_every_steps": 2,
    "train.keep_checkpoints": 3, "train.eval_every_epochs": 0, "eval.batch_size": 8,
    "train.num_steps": 2,
}
K = 4


def tiny_config():
  config = config_lib.load_config_file(str(REPO / "configs/sample_openfield.py"))
  for dotted, value in TINY.items():
    section, field = dotted.split(".") if "." in dotted else (None, dotted)
    (config[section] if section else config)[field] = value
  return config


def _no_update(model_graphdef, opt_graphdef):
  """A train step that keeps the state (train.make_train_step's signature)."""
  del model_graphdef, opt_graphdef

  def step(state, batch):
    del batch
    zero = jnp.zeros((), jnp.float32)
    return state, {"loss": zero, "grad_norm": zero}

  return step


def write_workdir(path):
  """A workdir of tiny_config() with a checkpoint at step 2 (module docstring)."""
  if not flags.FLAGS.is_parsed():        # Grain reads absl flags
    flags.FLAGS.mark_as_parsed()
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(train, "make_train_step", _no_update)
    train.train_and_evaluate(tiny_config(), str(path), evaluate_during_training=False)
  return str(path)


@pytest.fixture(scope="module")
def workdir(trained_workdir):
  return trained_workdir


@pytest.fixture(scope="module")
def estimator(workdir):
  """From the workdir alone: its config.json rebuilds the model, codec and keypoints.
  Compiled at XLA level 0 (fast); predict_dataset's forward pass keeps the default."""
  return inference.Estimator.from_workdir(workdir,
                                          compiler_options=inference.FAST_COMPILE_CPU)


def crop_window(box, aspect_ratio=1.0):
  """(x0, y0, x1, y1) of the padded, aspect-fixed crop of box: where keypoints can land."""
  center, scale = geometry.box_to_center_scale(box, aspect_ratio)
  return (*(center - scale / 2), *(center + scale / 2))


def boxes(n):
  """n distinct boxes around the frame's mouse."""
  return np.array([FRAME_BOX] * n) + np.arange(n)[:, None] * np.array([4.0, 2.0, 0, 0])


def test_config_json_round_trips(estimator, workdir):
  config = tiny_config()
  assert estimator.config.model.to_dict() == config.model.to_dict()
  assert estimator.input_size == (64, 64)
  assert estimator.info.keypoint_names == ("snout", "leftear", "rightear", "tailbase")
  assert estimator.info.flip_indices == (0, 2, 1, 3)
  assert type(estimator.codec).__name__ == "UDPHeatmap" and estimator.flip_test


def test_predict_whole_image_without_boxes(estimator):
  image = inference.load_image(str(FRAME))
  result = estimator.predict(image)
  height, width = image.shape[:2]
  np.testing.assert_array_equal(result.boxes, [[0, 0, width, height]])
  assert result.keypoints.shape == (1, K, 2) and result.keypoint_scores.shape == (1, K)
  assert result.scores.shape == (1,) and np.all(np.isfinite(result.keypoints))
  # An untrained model's peaks are anywhere in the crop, and the crop of the whole image
  # (1.25 padding, square input) reaches past the image: keypoints lie in that window.
  x0, y0, x1, y1 = crop_window((0, 0, width, height))
  xs, ys = result.keypoints[..., 0], result.keypoints[..., 1]
  assert np.all((xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1))
  np.testing.assert_allclose(result.scores, rescore(result.keypoint_scores, np.ones(1)))


def test_predict_with_boxes_and_from_a_path(estimator):
  result = estimator.predict(str(FRAME), boxes(2))
  np.testing.assert_allclose(result.boxes, boxes(2))
  assert result.keypoints.shape == (2, K, 2) and result.scores.shape == (2,)
  for pose, box in zip(result.keypoints, boxes(2)):
    x0, y0, x1, y1 = crop_window(box)
    assert np.all((pose[:, 0] >= x0) & (pose[:, 0] <= x1))
    assert np.all((pose[:, 1] >= y0) & (pose[:, 1] <= y1))
  empty = estimator.predict(str(FRAME), np.zeros((0, 4)))
  assert empty.keypoints.shape == (0, K, 2) and empty.scores.shape == (0,)


def test_same_bucket_does_not_recompile(estimator):
  image = inference.load_image(str(FRAME))
  estimator.predict(image, boxes(2))                              # bucket 8
  estimator.predict(image, boxes(5))                              # bucket 8 again
  estimator.predict_batch([image, image], [boxes(3), boxes(4)])   # 7 crops: bucket 8
  estimator.predict(image, boxes(1))                              # bucket 1
  estimator.predict(image)                                        # bucket 1 again
  traced = estimator.traced_buckets
  assert {1, 8} <= set(traced) and len(traced) == len(set(traced)), traced
  assert inference.bucket_size(1) == 1 and inference.bucket_size(2) == 8
  assert inference.bucket_size(33) == 128 and inference.bucket_size(129) == 128


def test_pad_to_runs_a_short_batch_in_the_full_batch_s_program(estimator, monkeypatch):
  image = inference.load_image(str(FRAME))
  estimator.predict(image, boxes(2))                              # bucket 8 traced
  alone = estimator.predict(image, boxes(1))                      # bucket 1
  traced, forward, ran = len(estimator.traced_buckets), estimator._forward, []
  monkeypatch.setattr(estimator, "_forward",
                      lambda state, crops: ran.append(len(crops)) or forward(state, crops))
  padded = estimator.predict_batch([image], [boxes(1)], pad_to=8)[0]
  assert ran == [8] and len(estimator.traced_buckets) == traced   # bucket 8, no new trace
  np.testing.assert_allclose(padded.keypoints, alone.keypoints, atol=1e-3)
  np.testing.assert_allclose(padded.keypoint_scores, alone.keypoint_scores, atol=1e-5)
  crop = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), np.uint8)
  np.testing.assert_allclose(estimator.crop_heatmaps(crop, pad_to=8),      # bucket 8
                             estimator.crop_heatmaps(crop), atol=1e-6)     # bucket 1
  assert ran[1:] == [8, 1]


def test_more_crops_than_the_largest_bucket_run_in_chunks(estimator, monkeypatch):
  monkeypatch.setattr("mamkpd_jax.inference.estimator.BUCKETS", (1, 8))
  crops = np.random.default_rng(0).integers(0, 256, (10, 64, 64, 3), np.uint8)
  traced_before = len(estimator.traced_buckets)
  chunked = estimator.crop_heatmaps(crops)             # 8 + 2 (padded to 8)
  assert set(estimator.traced_buckets[traced_before:]) <= {1, 8}
  assert chunked.shape == (10, 16, 16, K)
  np.testing.assert_allclose(chunked[8:], estimator.crop_heatmaps(crops[8:]), atol=1e-6)


def test_keypoints_match_the_evaluation_pipeline(estimator):
  """predict (crops by transforms on arrays, buckets) == predict_dataset (Grain dataset,
  data-parallel forward) on the held-out instances with their GT boxes."""
  config = estimator.config
  datasets = pipeline.create_datasets(config)
  count = 6
  mesh = parallel.make_mesh()
  graphdef, state = nnx.split(estimator.model)
  want, want_scores, _ = evaluate.predict_dataset(
      config, graphdef, parallel.replicate(state, mesh), datasets.eval[:count],
      datasets.info, datasets.codec, mesh)
  instances = datasets.eval_instances[:count]
  images = [inference.load_image(i["image_path"]) for i in instances]
  # The evaluation pipeline clips GT boxes to the image (mmpose); predict takes boxes as given.
  clipped = [geometry.clip_box(i["bbox"], image.shape[:2])[None]
             for i, image in zip(instances, images)]
  got = estimator.predict_batch(images, clipped)
  np.testing.assert_allclose(np.concatenate([g.keypoints for g in got]), want, atol=1e-3)
  np.testing.assert_allclose(np.concatenate([g.keypoint_scores for g in got]), want_scores,
                             atol=1e-5)


def test_from_a_step_folder_and_clear_errors(workdir, estimator, tmp_path):
  same = inference.Estimator.from_workdir(f"{workdir}/checkpoints/2", dtype="bfloat16")
  assert same.model.config.dtype == "bfloat16" == same.config.model.dtype
  kernel = lambda e: np.asarray(e.model.decoder.final_layer.kernel[...])
  np.testing.assert_array_equal(kernel(same), kernel(estimator))
  with pytest.raises(FileNotFoundError, match="no checkpoints"):
    inference.Estimator.from_workdir(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="image not found: .*nothing.png"):
    inference.load_image(str(tmp_path / "nothing.png"))
  config = inference.load_config_json(f"{workdir}/config.json")
  assert isinstance(config.model.dims, tuple) and config.data.flip_pairs == (
      ("leftear", "rightear"),)


# ------------------------------------------------------------------ visualization


def test_sides_and_colours():
  names = ["left_eye", "L_Eye", "leftear", "r_ankle", "R_Hip", "right_wrist", "nose", "tail"]
  assert [visualization.side(n) for n in names] == ["left"] * 3 + ["right"] * 3 + \
      ["center"] * 2
  colors = visualization.keypoint_colors(names)
  assert len({colors[0], colors[3], colors[6]}) == 3


def test_drawings_and_overlays(estimator, tmp_path):
  image = inference.load_image(str(FRAME))
  result = estimator.predict(image, boxes(1))
  drawn = visualization.draw_prediction(image, result, estimator.info, threshold=0.0)
  assert drawn.shape == image.shape and drawn.dtype == np.uint8
  assert np.any(drawn != image)                     # something was drawn
  assert np.all(visualization.draw_keypoints(image, result.keypoints,
                                             result.keypoint_scores, threshold=1e9) == image)
  crops, heatmaps = estimator.heatmaps(image, boxes(1))
  overlay = visualization.heatmap_overlay(crops[0], heatmaps[0])
  assert overlay.shape == crops[0].shape and overlay.dtype == np.uint8
  grid = visualization.heatmap_grid(crops[0], heatmaps[0], estimator.info.keypoint_names)
  assert grid.shape == (64, 64 * (K + 1), 3)
  path = visualization.save_image(str(tmp_path / "out" / "drawn.png"), drawn)
  np.testing.assert_array_equal(inference.load_image(path), drawn)


# ------------------------------------------------------------------ results objects


def _coco_gt_of(prediction, image, image_id, path):
  """A one-image COCO ground truth whose annotations are the prediction's poses."""
  height, width = image.shape[:2]
  annotations = [{"id": i + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                  "bbox": [float(v) for v in box], "area": float(box[2] * box[3]),
                  "num_keypoints": K,
                  "keypoints": np.concatenate([pose, np.full((K, 1), 2.0)], 1).ravel().tolist()}
                 for i, (pose, box) in enumerate(zip(prediction.keypoints, prediction.boxes))]
  gt = {"images": [{"id": image_id, "file_name": FRAME.name, "height": height,
                    "width": width}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "mouse", "keypoints": ["a", "b", "c", "d"],
                        "skeleton": []}]}
  path.write_text(json.dumps(gt))
  return str(path)


def test_prediction_to_json_is_coco_results(estimator, tmp_path):
  """pycocotools reads to_json's list, and scores it AP 1 against the same poses."""
  image = inference.load_image(str(FRAME))
  result = estimator.predict(image, boxes(2))
  np.testing.assert_array_equal(result.track_ids, [inference.UNTRACKED] * 2)
  results = result.to_json(image_id=7, category_id=1)
  assert len(results) == 2 and "track_id" not in results[0]
  np.testing.assert_allclose(np.reshape(results[1]["keypoints"], (K, 3))[:, :2],
                             result.keypoints[1], rtol=1e-6)
  np.testing.assert_allclose(results[1]["bbox"], boxes(2)[1], rtol=1e-6)
  with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(_coco_gt_of(result, image, 7, tmp_path / "gt.json"))
    evaluation = COCOeval(gt, gt.loadRes(results), "keypoints")
    evaluation.params.kpt_oks_sigmas = np.full(K, 0.1)
    evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
  assert evaluation.stats[0] == pytest.approx(1.0)
  tracked = dataclasses.replace(result, track_ids=np.array([3, inference.UNTRACKED]))
  assert [r.get("track_id") for r in tracked.to_json()] == [3, None]
  with pytest.raises(ValueError, match="track_ids must be"):
    dataclasses.replace(result, track_ids=np.array([1, 2, 3]))


def test_prediction_plot_draws_at_the_keypoints_and_saves(estimator, tmp_path):
  image = inference.load_image(str(FRAME))
  result = estimator.predict(image, boxes(1))
  drawn = result.plot(threshold=0.0, draw_boxes=False)
  assert drawn.shape == image.shape and drawn.dtype == np.uint8
  changed = np.argwhere(np.any(drawn != image, axis=-1))[:, ::-1]        # (n, 2) x, y
  keypoints = result.keypoints[0]
  inside = np.all((keypoints >= 0) & (keypoints < image.shape[1::-1]), axis=1)
  for x, y in np.round(keypoints[inside]).astype(int):
    assert np.any(drawn[y, x] != image[y, x]), (x, y)       # a marker at every keypoint
  margin = 8                                                # marker radius + antialiasing
  assert np.all(changed >= keypoints.min(0) - margin)       # and nothing far from them
  assert np.all(changed <= keypoints.max(0) + margin)
  np.testing.assert_array_equal(result.plot(threshold=2.0, draw_boxes=False), image)
  path = result.save(str(tmp_path / "pose.png"), threshold=0.0)
  np.testing.assert_array_equal(inference.load_image(path), result.plot(threshold=0.0))
  bare = inference.Prediction(result.boxes, result.keypoints, result.keypoint_scores,
                              result.scores)
  with pytest.raises(ValueError, match="no image"):
    bare.plot()
  with pytest.raises(ValueError, match="no keypoint layout"):
    bare.plot(image)
