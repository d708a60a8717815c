"""PCK metrics (numpy): mmpose's `keypoint_pck_accuracy`, bbox PCK and MPII's PCKh.

Every value is a fraction in [0, 1] (mmpose's MPII table prints percentages, x100).
mmpose's conventions for what cannot be measured: a masked keypoint, or any keypoint of
an instance whose normaliser has a 0 entry, gets distance -1 and is left out; a
keypoint with no valid entry gets accuracy -1 and is left out of the average.
"""

import numpy as np

from mamkpd_jax.evaluation.postprocess import check_array

# MPII-16 joint indices (docs/conventions.md): r_ankle, r_knee, r_hip, l_hip, l_knee, l_ankle,
# pelvis, thorax, upper_neck, head_top, r_wrist, r_elbow, r_shoulder, l_shoulder,
# l_elbow, l_wrist.
MPII_NUM_JOINTS = 16
MPII_PARTS = (                     # (name, joints averaged), as mmpose's MpiiPCKAccuracy
    ("Head", (9,)),
    ("Shoulder", (13, 12)),
    ("Elbow", (14, 11)),
    ("Wrist", (15, 10)),
    ("Hip", (3, 2)),
    ("Knee", (4, 1)),
    ("Ankle", (5, 0)),
)
MPII_EXCLUDED = (6, 7)             # pelvis, thorax: not in the mean
MPII_LOW_THRESHOLD = 0.1           # the table's PCKh@0.1


def _check_pose_inputs(pred, gt, mask):
  """(pred (N, K, 2), gt (N, K, 2), mask (N, K) bool), shapes checked."""
  pred = check_array("pred", pred, ndim=3, last=2)
  gt = check_array("gt", gt, shape=pred.shape)
  mask = check_array("mask", mask, shape=pred.shape[:2], dtype=None).astype(bool)
  return pred, gt, mask


def normalized_distances(pred, gt, mask, norm):
  """mmpose's `_calc_distances`: (N, K) |(pred - gt) / norm|, -1 where not measurable.

  Not measurable: mask False, or a row of `norm` with a 0 entry; a negative norm
  entry becomes 1e6 (mmpose). `norm` is not modified (mmpose edits it in place).
  """
  pred, gt, mask = _check_pose_inputs(pred, gt, mask)
  norm = check_array("norm", norm, shape=(pred.shape[0], 2)).copy()
  mask = mask & ~(norm == 0).any(axis=1, keepdims=True)           # (N, K)
  norm[norm <= 0] = 1e6
  distances = np.linalg.norm((pred - gt) / norm[:, None, :], axis=-1)   # (N, K)
  return np.where(mask, distances, -1.0)


def pck_accuracy(pred, gt, mask, threshold, norm):
  """mmpose's `keypoint_pck_accuracy`: a keypoint is correct when distance < threshold.

  Args:
    pred: (N, K, 2) predicted keypoints.
    gt: (N, K, 2) ground truth.
    mask: (N, K) bool, True where the GT keypoint counts.
    threshold: on the normalised distance.
    norm: (N, 2) normaliser of x and y per instance.

  Returns:
    (acc (K,) fraction correct per keypoint, -1 where none is valid;
     avg_acc: mean of the acc >= 0 entries, 0 when there are none;
     count: how many keypoints have acc >= 0).
  """
  distances = normalized_distances(pred, gt, mask, norm)          # (N, K)
  valid = distances != -1
  correct = (valid & (distances < threshold)).sum(axis=0)         # (K,)
  num_valid = valid.sum(axis=0)                                   # (K,)
  acc = np.where(num_valid > 0, correct / np.maximum(num_valid, 1), -1.0)
  measured = acc[acc >= 0]
  avg_acc = float(measured.mean()) if measured.size else 0.0
  return acc, avg_acc, int(measured.size)


def pck_key(threshold):
  """The metric name of bbox PCK at `threshold`, e.g. "PCK@0.1"."""
  return f"PCK@{threshold:g}"


def bbox_pck(pred, gt, visible, bboxes_xywh, threshold=0.1):
  """PCK normalised by the box's longer side (mmpose PCKAccuracy, norm_item='bbox').

  Args:
    pred: (N, K, 2) predictions; gt: (N, K, 2); visible: (N, K) labelled keypoints.
    bboxes_xywh: (N, 4) GT boxes; norm = max(w, h) for both axes.
    threshold: fraction of the longer side.

  Returns:
    {"PCK@<threshold>": fraction in [0, 1]}.
  """
  pred, gt, mask = _check_pose_inputs(pred, gt, np.asarray(visible) > 0)
  boxes = check_array("bboxes_xywh", bboxes_xywh, shape=(pred.shape[0], 4))
  side = boxes[:, 2:].max(axis=1)                                  # (N,)
  _, avg_acc, _ = pck_accuracy(pred, gt, mask, threshold, np.stack([side, side], axis=1))
  return {pck_key(threshold): avg_acc}


def _joint_pckh(pred, gt, mask, head_sizes, threshold):
  """(N, K) hits: dist <= threshold x head size (official MPII eval), for visible joints."""
  distances = np.linalg.norm(pred - gt, axis=-1)                  # (N, K)
  return mask & (distances <= threshold * head_sizes[:, None])


def _weighted_mean(per_joint, joint_count):
  """Mean over joints weighted by joint counts, pelvis and thorax left out; -1 if empty."""
  weights = joint_count.astype(np.float64).copy()
  weights[list(MPII_EXCLUDED)] = 0
  if weights.sum() == 0:
    return -1.0
  return float(np.sum(np.where(weights > 0, per_joint, 0.0) * weights) / weights.sum())


def mpii_pckh(pred, gt, visible, head_sizes, threshold=0.5):
  """MPII's PCKh table, as mmpose's `MpiiPCKAccuracy` and the official evaluation.

  A visible joint is correct when its distance <= threshold x head size (the
  official `<=`; mmpose 1.x's `keypoint_pck_accuracy` uses `<`, equal but at the
  boundary). Predictions and GT are both our 0-based pixels, so no +1 offset is
  added (mmpose adds 1 to its predictions to meet the 1-based mat-file GT).

  Args:
    pred: (N, 16, 2) predictions; gt: (N, 16, 2); visible: (N, 16) labelled joints.
    head_sizes: (N,) head size in pixels (0.6 x head-box diagonal), finite and > 0.
    threshold: fraction of the head size.

  Returns:
    Fractions in [0, 1]: "Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"
    (the mean of the left and right joint, as mmpose), "PCKh" (the mean over joints
    weighted by their visible counts, pelvis and thorax left out) and "PCKh@0.1" (the
    same at threshold 0.1). A joint with no visible entry has no PCKh: a part is the
    mean of its measured joints, and -1 when none is measured.
  """
  pred, gt, mask = _check_pose_inputs(pred, gt, np.asarray(visible) > 0)
  if pred.shape[1] != MPII_NUM_JOINTS:
    raise ValueError(f"pred has {pred.shape[1]} joints; MPII has {MPII_NUM_JOINTS}")
  head_sizes = check_array("head_sizes", head_sizes, shape=(pred.shape[0],))
  if not np.all(np.isfinite(head_sizes) & (head_sizes > 0)):
    raise ValueError("head_sizes must be finite and > 0")
  joint_count = mask.sum(axis=0)                                  # (K,)
  per_joint = {}
  for name, thr in (("PCKh", threshold), ("PCKh@0.1", MPII_LOW_THRESHOLD)):
    hits = _joint_pckh(pred, gt, mask, head_sizes, thr).sum(axis=0)   # (K,)
    per_joint[name] = np.where(joint_count > 0, hits / np.maximum(joint_count, 1), -1.0)
  table = {}
  for name, joints in MPII_PARTS:
    measured = [per_joint["PCKh"][j] for j in joints if joint_count[j] > 0]
    table[name] = float(np.mean(measured)) if measured else -1.0
  for name, values in per_joint.items():
    table[name] = _weighted_mean(values, joint_count)
  return table
