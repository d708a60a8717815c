"""Evaluation metrics: GT fed back scores perfectly, pycocotools agrees to the last bit,
and rescoring, OKS-NMS, PCK and PCKh match mmpose's rules on hand-computed cases."""

import copy
import json
import logging
import math
import os
import pathlib

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mamkpd_jax import config_lib
from mamkpd_jax.data_pipelines import geometry, metadata, pipeline
from mamkpd_jax.evaluation import (COCO_METRIC_NAMES, bbox_pck, coco_keypoint_metrics,
                                   coco_results, evaluate_predictions, metrics_table,
                                   mpii_pckh, nms_per_image, oks_iou, oks_nms, pck_accuracy,
                                   rescore, write_metrics_json)

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "samples"
COCO_JSON = DATA / "coco/test_coco.json"
MINI_VAL = DATA / "coco-mini/annotations/person_keypoints_val2017.json"
AP10K_JSON = DATA / "ap10k/test_ap10k.json"
COCO_SIGMAS = metadata.get("coco").sigmas
AP10K_SIGMAS = metadata.get("ap10k").sigmas


def load_config(name):
  config = config_lib.load_config_file(str(ROOT / "configs" / f"{name}.py"))
  config.data.root = str(ROOT / config.data.root)     # tests run from any folder
  return config


def gt_results(ann_file, score=1.0):
  """The json's evaluable annotations (not crowd, some keypoints) as predictions."""
  annotations = json.loads(pathlib.Path(ann_file).read_text())["annotations"]
  return [{"image_id": a["image_id"], "category_id": a["category_id"],
           "keypoints": list(a["keypoints"]), "score": score}
          for a in annotations if not a.get("iscrowd") and a.get("num_keypoints", 1) > 0]


def direct_cocoeval(ann_file, results, sigmas, image_ids=None):
  """pycocotools called directly, as its README shows: the reference numbers."""
  gt = COCO(str(ann_file))
  evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "keypoints")
  evaluator.params.kpt_oks_sigmas = np.array(sigmas)
  if image_ids is not None:
    evaluator.params.imgIds = sorted(image_ids)
  evaluator.evaluate()
  evaluator.accumulate()
  evaluator.summarize()
  return [float(s) for s in evaluator.stats]


def crop_scales(instances, aspect_ratio=0.75):
  """(N, 2) padded crop (w, h) of each instance, as the evaluation pipeline makes it."""
  return np.stack([geometry.box_to_center_scale(inst["bbox"], aspect_ratio)[1]
                   for inst in instances])


def gt_predictions(instances):
  """Each instance's GT keypoints as its prediction, every keypoint score 1."""
  keypoints = np.stack([inst["keypoints"] for inst in instances])
  return keypoints, np.ones(keypoints.shape[:2])


# ---------------------------------------------------------------------------------------
# COCO AP through pycocotools.


@pytest.mark.parametrize("ann_file, sigmas", [
    (COCO_JSON, COCO_SIGMAS),        # the json mmpose's own CocoMetric test uses
    (MINI_VAL, COCO_SIGMAS),         # 79 images, one crowd annotation
    (AP10K_JSON, AP10K_SIGMAS),      # 54 categories: each prediction keeps its own
])
def test_gt_fed_back_gives_ap_one(ann_file, sigmas):
  metrics = coco_keypoint_metrics(str(ann_file), gt_results(ann_file), sigmas)
  assert list(metrics) == list(COCO_METRIC_NAMES)
  assert metrics["AP"] == pytest.approx(1.0, abs=1e-12)
  assert metrics["AR"] == pytest.approx(1.0, abs=1e-12)
  assert all(isinstance(v, float) for v in metrics.values())


def test_ap10k_category_comes_from_the_instance():
  results = gt_results(AP10K_JSON)
  for result in results:            # every animal labelled as another species
    result["category_id"] = result["category_id"] % 54 + 1
  assert coco_keypoint_metrics(str(AP10K_JSON), results, AP10K_SIGMAS)["AP"] <= 0


def perturbed_results(ann_file, seed=0):
  """GT plus seeded noise on every keypoint, random scores, one false positive."""
  rng = np.random.default_rng(seed)
  results = gt_results(ann_file)
  for result in results:
    points = np.asarray(result["keypoints"], float).reshape(-1, 3)
    points[:, :2] += rng.normal(0, 6, size=(len(points), 2))
    result["keypoints"] = points.reshape(-1).tolist()
    result["score"] = float(rng.uniform(0.3, 1))
  results.append(dict(results[0], score=0.5, keypoints=[v + 40 for v in results[0]["keypoints"]]))
  return results


@pytest.mark.parametrize("ann_file, subset", [(COCO_JSON, False), (MINI_VAL, False),
                                              (MINI_VAL, True)])
def test_perturbed_predictions_match_direct_pycocotools(ann_file, subset):
  results = perturbed_results(ann_file)
  image_ids = sorted({r["image_id"] for r in results})[::2] if subset else None
  ours = coco_keypoint_metrics(str(ann_file), results, COCO_SIGMAS, image_ids=image_ids)
  reference = direct_cocoeval(ann_file, results, COCO_SIGMAS, image_ids)
  assert [ours[name] for name in COCO_METRIC_NAMES] == reference
  assert 0 < ours["AP"] < 1
  assert "area" not in results[0]        # the caller's results are not modified


def test_empty_results_give_zeros_and_a_warning(caplog):
  with caplog.at_level(logging.WARNING):
    metrics = coco_keypoint_metrics(str(COCO_JSON), [], COCO_SIGMAS)
  assert metrics == dict.fromkeys(COCO_METRIC_NAMES, 0.0)
  assert "no predictions" in caplog.text


def test_pycocotools_prints_go_to_the_log(capsys):
  coco_keypoint_metrics(str(COCO_JSON), gt_results(COCO_JSON), COCO_SIGMAS)
  assert capsys.readouterr().out == ""


def test_coco_results_are_plain_json():
  results = coco_results(np.array([7, 7]), np.array([1, 3]),
                         np.arange(8, dtype=np.float32).reshape(2, 2, 2),
                         np.array([[0.5, 0.25], [1.0, 0.0]], np.float32),
                         np.array([0.9, 0.1]))
  assert results[1] == {"image_id": 7, "category_id": 3,
                        "keypoints": [4.0, 5.0, 1.0, 6.0, 7.0, 0.0], "score": 0.1}
  assert isinstance(results[1]["score"], float) and type(results[0]["image_id"]) is int
  json.dumps(results)


# (case, call, words the ValueError must contain)
BAD_COCO_INPUTS = [
    ("image not in the json",
     lambda: coco_keypoint_metrics(str(COCO_JSON), [dict(gt_results(COCO_JSON)[0],
                                                         image_id=123)], COCO_SIGMAS),
     "image_id 123"),
    ("sigmas of another layout",
     lambda: coco_keypoint_metrics(str(COCO_JSON), gt_results(COCO_JSON), [0.1] * 4),
     "3 x 4"),
    ("empty subset", lambda: coco_keypoint_metrics(str(COCO_JSON), gt_results(COCO_JSON),
                                                   COCO_SIGMAS, image_ids=[]), "empty"),
    ("scores of the wrong length",
     lambda: coco_results([1], [1], np.zeros((1, 17, 2)), np.zeros((1, 17)), [1, 2]),
     "scores"),
    ("keypoint scores of the wrong shape",
     lambda: coco_results([1], [1], np.zeros((1, 17, 2)), np.zeros((1, 16)), [1]),
     "keypoint_scores"),
]


@pytest.mark.parametrize("case, call, words", BAD_COCO_INPUTS, ids=[c[0] for c in BAD_COCO_INPUTS])
def test_bad_coco_inputs_raise_clearly(case, call, words):
  with pytest.raises(ValueError, match=words):
    call()


# ---------------------------------------------------------------------------------------
# Rescoring and OKS-NMS.


# (case, keypoint scores, bbox score, expected instance score)
RESCORE_CASES = [
    ("mean of the scores > 0.2", [0.5, 0.3, 0.2, 0.1], 0.8, 0.8 * 0.4),
    ("a score equal to 0.2 does not pass", [0.2, 0.2, 0.6], 1.0, 0.6),
    ("none passes: 0, as mmpose", [0.2, 0.1, 0.0], 0.9, 0.0),
    ("all pass", [1.0, 0.5], 0.5, 0.375),
]


@pytest.mark.parametrize("case, scores, bbox_score, expected", RESCORE_CASES,
                         ids=[c[0] for c in RESCORE_CASES])
def test_rescore(case, scores, bbox_score, expected):
  assert rescore([scores], [bbox_score], 0.2) == pytest.approx([expected])


def test_oks_iou_by_hand():
  # one keypoint, sigma 0.1: e = d^2 / (2 sigma)^2 / mean area / 2 = 4 / 0.04 / 100 / 2
  oks = oks_iou([[0.0, 0.0]], [[[2.0, 0.0]], [[0.0, 0.0]]], 100.0, [100.0, 100.0], [0.1])
  assert oks.dtype == np.float32
  np.testing.assert_allclose(oks, [math.exp(-0.5), 1.0], rtol=1e-6)


def poses(*offsets, base_seed=0, num_keypoints=17):
  """Poses: one random person shifted by each (dx, dy)."""
  base = np.random.default_rng(base_seed).uniform(0, 100, (num_keypoints, 2))
  return np.stack([base + np.asarray(offset, float) for offset in offsets])


def test_oks_nms_keeps_the_higher_of_two_near_identical_poses():
  keypoints = poses((0, 0), (0.5, 0.5))
  areas = np.full(2, 100.0 * 100.0)
  np.testing.assert_array_equal(oks_nms(keypoints, [0.8, 0.9], areas, COCO_SIGMAS), [1])
  np.testing.assert_array_equal(oks_nms(keypoints, [0.9, 0.8], areas, COCO_SIGMAS), [0])


def test_oks_nms_keeps_far_apart_poses_in_score_order():
  keypoints = poses((0, 0), (300, 0), (0.2, 0.1))
  kept = oks_nms(keypoints, [0.5, 0.7, 0.6], np.full(3, 1e4), COCO_SIGMAS)
  np.testing.assert_array_equal(kept, [1, 2])          # 0 suppressed by 2


def test_oks_nms_threshold_boundary_keeps_oks_equal_to_it():
  keypoints, areas = poses((0, 0), (3, 2)), np.full(2, 1e4)
  oks = oks_iou(keypoints[0], keypoints[1:], areas[0], areas[1:], COCO_SIGMAS)[0]
  assert 0.1 < oks < 0.99
  at = float(oks)                                          # oks <= thr: kept
  below = float(np.nextafter(oks, np.float32(0)))          # oks > thr: suppressed
  np.testing.assert_array_equal(oks_nms(keypoints, [1, 0.5], areas, COCO_SIGMAS, at), [0, 1])
  np.testing.assert_array_equal(oks_nms(keypoints, [1, 0.5], areas, COCO_SIGMAS, below), [0])


@pytest.mark.parametrize("threshold", [0.0, -1.0, 1.0, 1.5])
def test_oks_nms_off_outside_zero_one_keeps_all_in_original_order(threshold):
  keypoints = poses((0, 0), (0, 0), (0, 0))
  kept = oks_nms(keypoints, [0.1, 0.9, 0.5], np.full(3, 1e4), COCO_SIGMAS, threshold)
  np.testing.assert_array_equal(kept, [0, 1, 2])


def test_oks_nms_is_greedy_on_random_crowds():
  """Kept poses overlap no better-scored kept pose; each dropped one overlaps one."""
  rng = np.random.default_rng(1)
  keypoints = poses(*rng.uniform(0, 60, (30, 2)))
  scores, areas, threshold = rng.uniform(size=30), rng.uniform(2e3, 2e4, 30), 0.5
  kept = list(oks_nms(keypoints, scores, areas, COCO_SIGMAS, threshold))
  assert kept == sorted(kept, key=lambda i: -scores[i])
  overlaps = lambda i, j: oks_iou(keypoints[i], keypoints[[j]], areas[i], areas[[j]],
                                  COCO_SIGMAS)[0] > threshold
  for position, i in enumerate(kept):
    assert not any(overlaps(j, i) for j in kept[:position])
  for i in set(range(30)) - set(kept):
    assert any(overlaps(j, i) for j in kept if scores[j] > scores[i])
  assert 1 < len(kept) < 30


def test_nms_per_image_never_suppresses_across_images():
  keypoints = poses((0, 0), (0, 0), (0.1, 0), (0, 0.1))
  image_ids = np.array([5, 9, 5, 9])                      # a duplicate pair per image
  kept = nms_per_image(image_ids, keypoints, [0.9, 0.3, 0.8, 0.4], np.full(4, 1e4),
                       COCO_SIGMAS, 0.9)
  np.testing.assert_array_equal(kept, [0, 3])


BAD_NMS_INPUTS = [
    ("scores", lambda: oks_nms(poses((0, 0), (1, 1)), [1.0], [1, 1], COCO_SIGMAS)),
    ("areas", lambda: oks_nms(poses((0, 0)), [1.0], [1, 1], COCO_SIGMAS)),
    ("sigmas", lambda: oks_nms(poses((0, 0), (1, 1)), [1, 2], [1, 1], COCO_SIGMAS[:5])),
    ("keypoints", lambda: oks_nms(np.zeros((2, 17, 3)), [1, 2], [1, 1], COCO_SIGMAS)),
    ("image_ids", lambda: nms_per_image([1], poses((0, 0), (1, 1)), [1, 2], [1, 1],
                                        COCO_SIGMAS)),
    ("bbox_scores", lambda: rescore(np.ones((3, 17)), [1.0, 1.0])),
]


@pytest.mark.parametrize("name, call", BAD_NMS_INPUTS, ids=[c[0] for c in BAD_NMS_INPUTS])
def test_bad_nms_inputs_name_the_argument(name, call):
  with pytest.raises(ValueError, match=name):
    call()


# ---------------------------------------------------------------------------------------
# PCK and PCKh.


def test_pck_accuracy_by_hand_with_mmpose_conventions():
  gt = np.zeros((3, 3, 2))
  pred = np.array([
      [[0.5, 0], [1.0, 0], [0, 3.0]],    # norm 10: 0.05, 0.1 (= thr: wrong, strict <), 0.3
      [[0, 0.2], [0, 0.1], [9.0, 0]],    # norm (1, 2): 0.1 (wrong), 0.05, 9 (masked)
      [[0, 0], [0, 0], [0, 0]],          # a 0 in its norm: not measured at all
  ])
  mask = np.array([[True, True, True], [True, True, False], [True, True, True]])
  norm = np.array([[10.0, 10.0], [1.0, 2.0], [0.0, 5.0]])
  acc, avg, count = pck_accuracy(pred, gt, mask, 0.1, norm)
  np.testing.assert_allclose(acc, [0.5, 0.5, 0.0])
  assert (avg, count) == (pytest.approx(1 / 3), 3)
  assert norm[2, 0] == 0                 # the caller's norm is not edited (mmpose edits it)


def test_pck_accuracy_minus_one_for_keypoints_never_measured():
  pred = gt = np.zeros((2, 3, 2))
  mask = np.array([[True, False, False], [True, False, True]])
  acc, avg, count = pck_accuracy(pred, gt, mask, 0.1, np.ones((2, 2)))
  np.testing.assert_array_equal(acc, [1.0, -1.0, 1.0])
  assert (avg, count) == (1.0, 2)
  acc, avg, count = pck_accuracy(pred, gt, np.zeros((2, 3), bool), 0.1, np.ones((2, 2)))
  np.testing.assert_array_equal(acc, [-1.0] * 3)
  assert (avg, count) == (0.0, 0)


def test_pck_accuracy_negative_norm_is_a_huge_norm_as_mmpose():
  acc, _, _ = pck_accuracy([[[50.0, 0]]], [[[0.0, 0]]], [[True]], 0.1, [[-1.0, 1.0]])
  np.testing.assert_array_equal(acc, [1.0])              # 50 / 1e6 < 0.1


def test_bbox_pck_normalises_by_the_longer_side():
  gt = np.zeros((1, 2, 2))
  pred = np.array([[[3.0, 0], [0, 5.0]]])                # 3 / 40 correct, 5 / 40 wrong
  result = bbox_pck(pred, gt, [[1, 1]], [[0, 0, 20, 40]], threshold=0.1)
  assert result == {"PCK@0.1": 0.5}                      # by the width 3 / 20 would fail
  assert bbox_pck(pred, gt, [[1, 0]], [[0, 0, 20, 40]], threshold=0.05) == {"PCK@0.05": 0.0}


def mpii_case():
  """Two people, head sizes 10 and 20; errors along x; l_ankle of person 1 not labelled.

  Person 0: r_ankle 5 (= 0.5 x 10: correct, <=), head_top 3. Person 1: r_ankle 15,
  head_top 1, l_ankle 99 (invisible). Pelvis and thorax 100 off in both (left out).
  """
  errors = np.zeros((2, 16))
  errors[:, [6, 7]] = 100
  errors[0, [0, 9]] = [5, 3]
  errors[1, [0, 9, 5]] = [15, 1, 99]
  visible = np.ones((2, 16))
  visible[1, 5] = 0
  gt = np.random.default_rng(0).uniform(0, 200, (2, 16, 2))
  pred = gt + np.stack([errors, np.zeros_like(errors)], axis=-1)
  return pred, gt, visible, np.array([10.0, 20.0])


def test_mpii_pckh_by_hand():
  table = mpii_pckh(*mpii_case())
  # visible counts: 2 per joint, l_ankle 1; pelvis, thorax left out -> weights sum 27
  assert table == pytest.approx({
      "Head": 1.0, "Shoulder": 1.0, "Elbow": 1.0, "Wrist": 1.0, "Hip": 1.0, "Knee": 1.0,
      "Ankle": 0.5 * (0.5 + 1.0),
      "PCKh": 26 / 27,        # only person 1's r_ankle misses
      "PCKh@0.1": 24 / 27,    # r_ankle misses twice; head_top: 3 > 1 misses, 1 <= 2 hits
  })


def test_mpii_pckh_rejects_missing_head_sizes_and_other_layouts():
  pred, gt, visible, head_sizes = mpii_case()
  with pytest.raises(ValueError, match="head_sizes"):
    mpii_pckh(pred, gt, visible, np.array([10.0, np.nan]))
  with pytest.raises(ValueError, match="head_sizes"):
    mpii_pckh(pred, gt, visible, head_sizes[:1])
  with pytest.raises(ValueError, match="16"):
    mpii_pckh(pred[:, :15], gt[:, :15], visible[:, :15], head_sizes)


@pytest.mark.parametrize("name, call", [
    ("gt", lambda: pck_accuracy(np.zeros((2, 3, 2)), np.zeros((2, 4, 2)), np.ones((2, 3)),
                                0.1, np.ones((2, 2)))),
    ("mask", lambda: pck_accuracy(np.zeros((2, 3, 2)), np.zeros((2, 3, 2)), np.ones((3,)),
                                  0.1, np.ones((2, 2)))),
    ("norm", lambda: pck_accuracy(np.zeros((2, 3, 2)), np.zeros((2, 3, 2)), np.ones((2, 3)),
                                  0.1, np.ones((2,)))),
    ("bboxes_xywh", lambda: bbox_pck(np.zeros((2, 3, 2)), np.zeros((2, 3, 2)),
                                     np.ones((2, 3)), np.ones((2, 2)))),
])
def test_bad_pck_inputs_name_the_argument(name, call):
  with pytest.raises(ValueError, match=name):
    call()


# ---------------------------------------------------------------------------------------
# evaluate_predictions on the bundled data.


def sample_coco():
  config = load_config("sample_coco")
  info = metadata.get("coco")
  return config, info, pipeline.load_instances(config, info, "val")


def test_evaluate_gt_predictions_on_the_coco_sample():
  config, info, instances = sample_coco()
  keypoints, scores = gt_predictions(instances)
  metrics, results = evaluate_predictions(config, info, instances, keypoints, scores,
                                          crop_scales(instances))
  assert metrics["AP"] == 1.0 and metrics["AR"] == 1.0 and metrics["PCK@0.1"] == 1.0
  assert len(results) == len(instances) == 68
  json.dumps(results)


def test_evaluate_removes_duplicates_by_oks_nms():
  config, info, instances = sample_coco()
  keypoints, scores = gt_predictions(instances)
  doubled = list(instances) * 2                  # each person predicted twice
  metrics, results = evaluate_predictions(
      config, info, doubled, np.concatenate([keypoints, keypoints + 0.5]),
      np.concatenate([scores, scores * 0.5]), crop_scales(doubled))
  assert len(results) == len(instances) and metrics["AP"] == 1.0
  assert {r["score"] for r in results} == {1.0}   # the better-scored copy survives
  config.eval.oks_nms_threshold = 1.0             # NMS off: duplicates stay
  _, results = evaluate_predictions(config, info, doubled, np.concatenate([keypoints] * 2),
                                    np.concatenate([scores] * 2), crop_scales(doubled))
  assert len(results) == 2 * len(instances)


def test_evaluate_held_out_frames_against_their_images_only():
  config = load_config("custom_coco")               # last 20% of open-field frames
  info = pipeline.dataset_info(config)
  instances = pipeline.load_instances(config, info, "val")
  keypoints, scores = gt_predictions(instances)
  metrics, _ = evaluate_predictions(config, info, instances, keypoints, scores,
                                    crop_scales(instances))
  assert metrics["AP"] == pytest.approx(1.0) and metrics["PCK@0.1"] == 1.0


def test_evaluate_with_detected_boxes_reports_ap_without_pck():
  config = config_lib.coco("tiny")
  config.data.root = str(DATA / "coco")
  config.data.val_ann, config.data.val_images = "test_coco.json", ""
  config.data.det_file = "test_coco_det_AP_H_56.json"
  info = metadata.get("coco")
  instances = pipeline.load_instances(config, info, "val")
  rng = np.random.default_rng(0)
  boxes = np.stack([inst["bbox"] for inst in instances])             # (N, 4)
  keypoints = boxes[:, None, :2] + rng.uniform(0, 1, (len(boxes), 17, 2)) * boxes[:, None, 2:]
  metrics, results = evaluate_predictions(config, info, instances, keypoints,
                                          rng.uniform(size=(len(boxes), 17)),
                                          crop_scales(instances))
  assert set(metrics) == set(COCO_METRIC_NAMES)
  assert 0 < len(results) <= len(instances)


def mpii_setup():
  config = config_lib.coco("tiny")
  config.data.dataset, config.data.root = "mpii", str(DATA / "mpii")
  config.data.val_ann, config.data.val_images = "test_mpii.json", ""
  config.model.num_keypoints = 16
  info = metadata.get("mpii")
  return config, info, pipeline.load_instances(config, info, "val")


def test_evaluate_mpii_without_head_boxes_says_so_once(caplog):
  config, info, instances = mpii_setup()
  keypoints, scores = gt_predictions(instances)
  with caplog.at_level(logging.WARNING):
    metrics, results = evaluate_predictions(config, info, instances, keypoints, scores,
                                            crop_scales(instances, 1.0))
  assert metrics == {"PCK@0.1": 1.0}
  assert caplog.text.count("no head size") == 1
  assert len(results) == len(instances)


def test_evaluate_mpii_with_head_sizes_reports_pckh():
  config, info, instances = mpii_setup()
  instances = [dict(inst, head_size=30.0) for inst in instances]
  keypoints, scores = gt_predictions(instances)
  metrics, _ = evaluate_predictions(config, info, instances, keypoints + 2.0, scores,
                                    crop_scales(instances, 1.0))
  assert metrics["PCKh"] == 1.0 and metrics["Head"] == 1.0      # 2.8 px <= 15 px
  assert metrics["PCKh@0.1"] == 1.0                             # 2.8 px <= 3 px


def test_evaluate_nothing_gives_zeros_not_a_crash():
  config, info, _ = sample_coco()
  metrics, results = evaluate_predictions(config, info, [], np.zeros((0, 17, 2)),
                                          np.zeros((0, 17)), np.zeros((0, 2)))
  assert results == [] and set(metrics.values()) == {0.0}


def test_evaluate_rejects_predictions_of_the_wrong_shape():
  config, info, instances = sample_coco()
  keypoints, scores = gt_predictions(instances)
  with pytest.raises(ValueError, match="crop_scales"):
    evaluate_predictions(config, info, instances, keypoints, scores, np.ones((3, 2)))
  with pytest.raises(ValueError, match="keypoints"):
    evaluate_predictions(config, info, instances, keypoints[:, :16], scores,
                         crop_scales(instances))


# ---------------------------------------------------------------------------------------
# Reporting.


def test_metrics_table_and_json(tmp_path):
  metrics = {"AP": np.float64(0.123456), "PCK@0.1": 1.0, "APm": -1.0}
  table = metrics_table(metrics, "val step 100")
  assert table.splitlines()[0] == "val step 100"
  rows = [line.split() for line in table.splitlines()[2:]]
  assert rows == [["AP", "0.1235"], ["PCK@0.1", "1.0000"], ["APm", "-1.0000"]]
  assert len({len(line) for line in table.splitlines()[1:]}) == 1     # fixed width
  path = tmp_path / "eval" / "metrics_100.json"
  write_metrics_json(str(path), metrics, {"step": np.int64(100), "split": "val"})
  written = json.loads(path.read_text())
  assert written == {"step": 100, "split": "val",
                     "metrics": {"AP": 0.123456, "PCK@0.1": 1.0, "APm": -1.0}}
  assert os.listdir(path.parent) == ["metrics_100.json"]     # no temp file left
  with pytest.raises(ValueError, match="metrics"):
    write_metrics_json(str(path), metrics, {"metrics": {}})


def _box_instance(box, keypoints, visible):
  return {"bbox": np.float32(box), "keypoints": np.float32(keypoints),
          "keypoints_visible": np.float32(visible)}


def test_mean_pose_floor_against_a_hand_computation():
  from mamkpd_jax.evaluation import metrics as metrics_lib
  # Training poses in box units: keypoint 0 at (0.2, 0.4) and (0.4, 0.6) -> mean (0.3, 0.5);
  # keypoint 1 labelled once at (1, 1); keypoint 2 never (-> the box centre).
  train = [_box_instance([0, 0, 10, 10], [[2, 4], [10, 10], [0, 0]], [1, 1, 0]),
           _box_instance([10, 20, 20, 10], [[18, 26], [0, 0], [0, 0]], [1, 0, 0])]
  mean = metrics_lib.mean_box_pose(train)
  np.testing.assert_allclose(mean, [[0.3, 0.5], [1.0, 1.0], [0.5, 0.5]])
  config = config_lib.coco("tiny")
  config.eval.pck_threshold = 0.1
  # Held-out box 100x50 at (0, 0): predictions (30, 25), (100, 50), (50, 25).
  held_out = [_box_instance([0, 0, 100, 50], [[35, 25], [100, 70], [50, 25]], [1, 1, 1])]
  floor = metrics_lib.mean_pose_floor(config, mean, held_out)
  # distances 5 (hit), 20 (miss), 0 (hit); threshold 0.1 x 100 = 10 -> 2 of 3.
  assert floor == {"PCK@0.1": pytest.approx(2 / 3)}
