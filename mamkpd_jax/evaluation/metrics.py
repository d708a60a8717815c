"""`evaluate_predictions`: image-space predictions of the evaluation instances -> metrics.

    COCO-format (coco, ap10k, custom): rescore -> OKS-NMS per image -> COCO results
        -> COCOeval AP/AR against the GT json; with GT boxes also bbox PCK@thr per
        instance, before NMS (each prediction against its own GT).
    MPII: rescore -> COCO results (no NMS) -> the PCKh table when every instance has a
        head size, and bbox PCK@thr always.

Plus a text table of the metrics and an atomic json writer. Numpy and pycocotools only.
"""

import json
import math
import os
import tempfile

from absl import logging
import numpy as np

from mamkpd_jax.data_pipelines.pipeline import ann_file, train_fraction
from mamkpd_jax.evaluation.coco_metric import coco_keypoint_metrics, coco_results
from mamkpd_jax.evaluation.pck import bbox_pck, mpii_pckh
from mamkpd_jax.evaluation.postprocess import check_array, nms_per_image, rescore

COCO_FORMAT_DATASETS = ("coco", "ap10k", "custom")
NO_HEAD_SIZE_MESSAGE = (
    "MPII: %d of %d evaluation instances have no head size (no head boxes in the "
    "annotations): add \"headbox\": [x1, y1, x2, y2] per entry or set "
    "config.data.headbox_file; reporting bbox-normalised PCK only")


def _column(instances, key, dtype):
  """(N, ...) stack of one field of the instance dicts."""
  if not instances:
    return np.zeros((0,), dtype)
  return np.stack([np.asarray(instance[key], dtype) for instance in instances])


def _head_sizes(instances):
  """(N,) head sizes; NaN where an instance has none."""
  sizes = [instance.get("head_size") for instance in instances]
  return np.array([np.nan if s is None else s for s in sizes], np.float64).reshape(-1)


def _checked_predictions(info, instances, keypoints, keypoint_scores, crop_scales):
  n, k = len(instances), info.num_keypoints
  keypoints = check_array("keypoints", keypoints, shape=(n, k, 2))
  keypoint_scores = check_array("keypoint_scores", keypoint_scores, shape=(n, k))
  crop_scales = check_array("crop_scales", crop_scales, shape=(n, 2))
  return keypoints, keypoint_scores, crop_scales


def _gt_pck(config, instances, keypoints):
  """{"PCK@thr": ...}: each instance's prediction against its own GT keypoints."""
  k = keypoints.shape[1]
  gt = _column(instances, "keypoints", np.float64).reshape(-1, k, 2)
  visible = _column(instances, "keypoints_visible", np.float64).reshape(-1, k)
  boxes = _column(instances, "bbox", np.float64).reshape(-1, 4)
  return bbox_pck(keypoints, gt, visible, boxes, config.eval.pck_threshold)


def mean_box_pose(instances):
  """(K, 2) the mean labelled keypoint position in box units, ((x - x0) / w, (y - y0) / h),
  over `instances` (the training set); 0.5 (the box centre) for a keypoint never
  labelled."""
  boxes = _column(instances, "bbox", np.float64).reshape(-1, 4)            # (N, 4)
  k = np.shape(instances[0]["keypoints"])[0]
  keypoints = _column(instances, "keypoints", np.float64).reshape(-1, k, 2)
  visible = _column(instances, "keypoints_visible", np.float64).reshape(-1, k) > 0
  in_box = (keypoints - boxes[:, None, :2]) / boxes[:, None, 2:]           # (N, K, 2)
  counts = visible.sum(axis=0)                                             # (K,)
  sums = (in_box * visible[..., None]).sum(axis=0)                         # (K, 2)
  return np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], 0.5)


def mean_pose_floor(config, mean_pose, instances):
  """{"PCK@thr": ...} of `mean_pose` (K, 2), box units, placed in every GT box of
  `instances`: what a model that ignores the image scores. A score near it has
  learned nothing."""
  boxes = _column(instances, "bbox", np.float64).reshape(-1, 4)
  keypoints = boxes[:, None, :2] + mean_pose[None] * boxes[:, None, 2:]    # (N, K, 2)
  return _gt_pck(config, instances, keypoints)


def _coco_format_metrics(config, info, instances, keypoints, results):
  """COCO AP/AR (and GT-box PCK) of a COCO-format dataset."""
  data = config.data
  # The evaluation split's COCO json (a custom label file's converted one).
  if train_fraction(data) > 0:      # held-out frames of train_ann: only those images
    image_ids = sorted({instance["image_id"] for instance in instances})
  else:                             # every image of the json, as mmpose
    image_ids = None
  metrics = coco_keypoint_metrics(ann_file(data, "val"), results, info.sigmas,
                                  image_ids=image_ids)
  if not data.det_file:
    metrics.update(_gt_pck(config, instances, keypoints))
  return metrics


def _mpii_metrics(config, instances, keypoints):
  """bbox PCK@thr, plus the PCKh table when every instance has a head size."""
  metrics = _gt_pck(config, instances, keypoints)
  head_sizes = _head_sizes(instances)
  missing = int(np.count_nonzero(~np.isfinite(head_sizes)))
  if missing:
    logging.warning(NO_HEAD_SIZE_MESSAGE, missing, len(instances))
    return metrics
  k = keypoints.shape[1]
  gt = _column(instances, "keypoints", np.float64).reshape(-1, k, 2)
  visible = _column(instances, "keypoints_visible", np.float64).reshape(-1, k)
  metrics.update(mpii_pckh(keypoints, gt, visible, head_sizes))
  return metrics


def evaluate_predictions(config, info, instances, keypoints, keypoint_scores, crop_scales):
  """Metrics and COCO-format results of the predictions for `instances`.

  Args:
    config: the run's ConfigDict (config.data.dataset, det_file, val_ann / train_ann,
      contiguous_split (pipeline.train_fraction), root; config.eval.keypoint_score_threshold,
      oks_nms_threshold, pck_threshold).
    info: the dataset's `metadata.DatasetInfo` (sigmas, num_keypoints).
    instances: the N evaluation instance dicts (`data_pipelines.sources`), in the
      order of the predictions.
    keypoints: (N, K, 2) predicted keypoints in image pixels.
    keypoint_scores: (N, K) their confidences.
    crop_scales: (N, 2) the padded crop box (w, h) of each instance; w x h is the
      pose area in OKS-NMS (as mmpose).

  Returns:
    (metrics, results). COCO-format datasets: "AP", "AP50", "AP75", "APm", "APl",
    "AR", "AR50", "AR75", "ARm", "ARl", and "PCK@<thr>" with GT boxes; results after
    OKS-NMS. MPII: "PCK@<thr>", and "Head", "Shoulder", "Elbow", "Wrist", "Hip",
    "Knee", "Ankle", "PCKh", "PCKh@0.1" when every instance has a head size; results
    without NMS. Metric values are Python floats in [0, 1] (COCO's -1: not measured).
  """
  dataset = config.data.dataset
  if dataset != "mpii" and dataset not in COCO_FORMAT_DATASETS:
    raise ValueError(f"config.data.dataset={dataset!r}: evaluation knows "
                     f"{('mpii',) + COCO_FORMAT_DATASETS}")
  keypoints, keypoint_scores, crop_scales = _checked_predictions(
      info, instances, keypoints, keypoint_scores, crop_scales)
  image_ids = _column(instances, "image_id", np.int64)
  scores = rescore(keypoint_scores, _column(instances, "bbox_score", np.float64),
                   config.eval.keypoint_score_threshold)
  if dataset == "mpii":
    kept = np.arange(len(instances))
  else:
    kept = nms_per_image(image_ids, keypoints, scores, crop_scales.prod(axis=1),
                         info.sigmas, config.eval.oks_nms_threshold)
  results = coco_results(image_ids[kept], _column(instances, "category_id", np.int64)[kept],
                         keypoints[kept], keypoint_scores[kept], scores[kept])
  if dataset == "mpii":
    return _mpii_metrics(config, instances, keypoints), results
  return _coco_format_metrics(config, info, instances, keypoints, results), results


def metrics_table(metrics: dict, title: str = "") -> str:
  """A fixed-width text table: one metric per line, values to 4 decimals."""
  width = max([len(str(name)) for name in metrics] + [6])
  lines = [title, "-" * max(len(title), width + 12)] if title else []
  lines += [f"{str(name):<{width}}  {float(value):>10.4f}" for name, value in metrics.items()]
  return "\n".join(lines)


def _json_value(value):
  """json.dump's fallback for numpy values (NaN and inf become null)."""
  if isinstance(value, np.ndarray):
    return [_finite_or_none(v) for v in value.reshape(-1).tolist()]
  if isinstance(value, (np.integer, np.bool_)):
    return value.item()
  if isinstance(value, np.floating):
    return _finite_or_none(float(value))
  raise TypeError(f"cannot write {type(value).__name__} to json: {value!r}")


def _finite_or_none(value):
  return value if not isinstance(value, float) or math.isfinite(value) else None


def write_metrics_json(path, metrics: dict, extra: dict):
  """Writes {**extra, "metrics": metrics} to `path` atomically (temp file, os.replace).

  Metric values become Python floats (NaN / inf as null); `extra` (e.g. step,
  checkpoint, config name) must be json-serialisable and may not hold "metrics".
  """
  if "metrics" in extra:
    raise ValueError("extra must not hold a 'metrics' key; pass metrics separately")
  payload = dict(extra, metrics={str(k): _finite_or_none(float(v)) for k, v in metrics.items()})
  write_json_atomic(path, payload)


def write_json_atomic(path, payload):
  """json of `payload` (numpy values allowed, NaN / inf as null) to `path` via a temp
  file and os.replace: a reader never sees half a file."""
  text = json.dumps(payload, indent=2, default=_json_value, allow_nan=False)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, temp = tempfile.mkstemp(dir=folder, prefix=".write-", suffix=".json.tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text + "\n")
    os.replace(temp, path)
  except BaseException:
    os.unlink(temp)
    raise
