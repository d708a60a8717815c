"""Top-down post-processing before COCO evaluation: rescoring and OKS-NMS (numpy).

As mmpose 1.x `CocoMetric` (score_mode='bbox_keypoint', nms_mode='oks_nms') and
`mmpose/evaluation/functional/nms.py`, which follow HRNet's COCO evaluation:

    score_i = bbox_score_i x mean(keypoint_scores_i[keypoint_scores_i > thr])
    per image: sort by score (descending); keep the top pose; drop every other pose
    whose OKS with it is > nms_thr; repeat on what is left.

OKS here is mmpose's NMS OKS: every keypoint counts (no visibility), variances
(2 sigma)^2, scale = the mean of the two areas (area = padded crop box w x h).
"""

import numpy as np


def check_array(name, value, *, ndim=None, shape=None, last=None, dtype=np.float64):
  """`value` as a numpy array; ValueError naming `name` when its shape is wrong.

  The one input check of the evaluation package. `shape` may hold None for any size;
  `last` is the required size of the last axis; dtype None keeps the given dtype.
  """
  array = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
  if shape is not None:
    ndim = len(shape)
  if ndim is not None and array.ndim != ndim:
    raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
  if shape is not None and any(want is not None and got != want
                               for got, want in zip(array.shape, shape)):
    raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
  if last is not None and array.shape[-1] != last:
    raise ValueError(f"{name} must have size {last} in its last axis, got shape "
                     f"{array.shape}")
  return array


def rescore(keypoint_scores, bbox_scores, threshold=0.2):
  """mmpose's top-down instance score ('bbox_keypoint').

  score = bbox_score x mean of the keypoint scores strictly above `threshold`; when no
  keypoint score passes, the mean is 0 and so is the score (mmpose 1.x and HRNet:
  `mean_kpt_score = 0` unless a score passes; a score equal to the threshold does
  not pass).

  Args:
    keypoint_scores: (N, K) per-keypoint confidences.
    bbox_scores: (N,) box (detection) scores; 1 for GT boxes.
    threshold: keypoint scores > threshold enter the mean.

  Returns:
    (N,) float64 instance scores.
  """
  keypoint_scores = check_array("keypoint_scores", keypoint_scores, ndim=2)
  n = keypoint_scores.shape[0]
  bbox_scores = check_array("bbox_scores", bbox_scores, shape=(n,))
  passed = keypoint_scores > threshold                           # (N, K)
  count = passed.sum(axis=1)                                     # (N,)
  total = np.where(passed, keypoint_scores, 0.0).sum(axis=1)     # (N,)
  mean = np.divide(total, count, out=np.zeros(n), where=count > 0)
  return bbox_scores * mean


def oks_iou(keypoints, others, area, other_areas, sigmas):
  """mmpose's `oks_iou` without visibility: OKS of one pose against M others.

  oks_m = mean_k exp(-d_mk^2 / (2 sigma_k)^2 / ((area + area_m) / 2 + eps) / 2).

  Args:
    keypoints: (K, 2) the reference pose.
    others: (M, K, 2) the poses to compare with it.
    area: the reference pose's area.
    other_areas: (M,) areas of the others.
    sigmas: (K,) OKS sigmas.

  Returns:
    (M,) float32 OKS values (float32 as mmpose, so the NMS comparison matches).
  """
  keypoints = check_array("keypoints", keypoints, ndim=2, last=2)
  num_keypoints = keypoints.shape[0]
  others = check_array("others", others, ndim=3, last=2)
  if others.shape[1] != num_keypoints:
    raise ValueError(f"others has {others.shape[1]} keypoints, keypoints has "
                     f"{num_keypoints}")
  other_areas = check_array("other_areas", other_areas, shape=(others.shape[0],))
  sigmas = check_array("sigmas", sigmas, shape=(num_keypoints,))
  variances = (sigmas * 2) ** 2                                   # (K,)
  squared = ((others - keypoints) ** 2).sum(axis=-1)              # (M, K)
  scale = (area + other_areas)[:, None] / 2 + np.spacing(1)       # (M, 1)
  e = squared / variances / scale / 2                             # (M, K)
  return np.exp(-e).mean(axis=1).astype(np.float32)


def nms_disabled(threshold):
  """The config rule: an OKS-NMS threshold <= 0 or >= 1 means no NMS."""
  return not 0 < threshold < 1


def oks_nms(keypoints, scores, areas, sigmas, threshold=0.9):
  """Greedy OKS-NMS of the poses of ONE image, exactly as mmpose's `oks_nms`.

  Order: `scores.argsort()[::-1]` as mmpose (equal scores: the later index first).
  A pose is dropped when its OKS with a kept pose is > threshold (kept when <=).

  Args:
    keypoints: (N, K, 2) poses.
    scores: (N,) instance scores (after `rescore`).
    areas: (N,) pose areas (the padded crop box w x h).
    sigmas: (K,) OKS sigmas.
    threshold: OKS above which a lower-scored pose is suppressed; <= 0 or >= 1
      disables NMS.

  Returns:
    (M,) int64 kept indices, in descending score order; without NMS every index
    in its original order 0..N-1.
  """
  keypoints = check_array("keypoints", keypoints, ndim=3, last=2)
  n = keypoints.shape[0]
  scores = check_array("scores", scores, shape=(n,))
  areas = check_array("areas", areas, shape=(n,))
  if nms_disabled(threshold):
    return np.arange(n, dtype=np.int64)
  order = scores.argsort()[::-1]
  keep = []
  while order.size:
    top, rest = order[0], order[1:]
    keep.append(top)
    overlap = oks_iou(keypoints[top], keypoints[rest], areas[top], areas[rest], sigmas)
    order = rest[overlap <= threshold]
  return np.asarray(keep, dtype=np.int64)


def nms_per_image(image_ids, keypoints, scores, areas, sigmas, threshold=0.9):
  """`oks_nms` within each image.

  Args:
    image_ids: (N,) image of each pose.
    keypoints, scores, areas, sigmas, threshold: as `oks_nms`.

  Returns:
    (M,) int64 kept indices into the N poses, sorted ascending.
  """
  keypoints = check_array("keypoints", keypoints, ndim=3, last=2)
  n = keypoints.shape[0]
  image_ids = check_array("image_ids", image_ids, shape=(n,), dtype=None)
  scores = check_array("scores", scores, shape=(n,))
  areas = check_array("areas", areas, shape=(n,))
  kept = [np.zeros(0, np.int64)]
  for image_id in np.unique(image_ids):
    members = np.flatnonzero(image_ids == image_id)                # (n_image,)
    keep = oks_nms(keypoints[members], scores[members], areas[members], sigmas,
                   threshold)
    kept.append(members[keep])
  return np.sort(np.concatenate(kept))
