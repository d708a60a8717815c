"""CLEAR-MOT counts of a tracker's output against ground truth: ID switches and MOTA.

Bernardin & Stiefelhagen, "Evaluating Multiple Object Tracking Performance: The CLEAR
MOT Metrics", EURASIP J. Image and Video Processing 2008. Per frame, ground-truth
objects are matched to hypotheses (tracker outputs) by box IoU >= iou_threshold with
an optimal (Hungarian) assignment maximising the total IoU; a ground-truth object
matched to a different hypothesis id than at its last match is an ID switch (a frame
without a match in between does not reset that memory, so losing an object and
re-acquiring it under the same id is no switch). Unmatched ground truth is a miss,
an unmatched hypothesis a false positive, and

    MOTA = 1 - (misses + false positives + ID switches) / ground-truth objects.

The paper's first step (keep a correspondence from the previous frame while it still
overlaps) is left out, as in the py-motmetrics default: every frame is matched afresh,
so a track drifting onto another object counts as the switch it is.

    counts = clear_mot(gt_frames, hypothesis_frames)   # one {id: box} per frame
    counts["id_switches"], counts["mota"]
"""

import numpy as np

from mamkpd_jax.inference import detectors


def _as_frame(frame, what, index):
  """{id: (4,) xywh box} of one frame from a mapping or a sequence of (id, box)."""
  pairs = frame.items() if isinstance(frame, dict) else frame
  result = {}
  for pair in pairs:
    if len(pair) != 2:
      raise ValueError(f"{what} frame {index}: expected (id, box) pairs, got {pair!r}")
    object_id, box = pair
    box = np.asarray(box, np.float64).reshape(-1)
    if box.shape != (4,) or not np.all(np.isfinite(box)) or np.any(box[2:] < 0):
      raise ValueError(f"{what} frame {index}, id {object_id}: a box is (x, y, w, h) with "
                       f"finite values and w, h >= 0, got {box.tolist()}")
    if object_id in result:
      raise ValueError(f"{what} frame {index}: id {object_id} appears twice")
    result[object_id] = box
  return result


def match_frame(gt, hypotheses, iou_threshold=0.5):
  """[(gt id, hypothesis id)] of one frame: the assignment of {id: box} gt to
  hypotheses maximising the summed IoU over pairs with IoU >= iou_threshold."""
  gt_ids, hyp_ids = list(gt), list(hypotheses)
  pairs = detectors.match_boxes([gt[i] for i in gt_ids], [hypotheses[i] for i in hyp_ids],
                                iou_threshold)
  return [(gt_ids[r], hyp_ids[c]) for r, c in pairs]


def clear_mot(gt_frames, hypothesis_frames, iou_threshold=0.5):
  """CLEAR-MOT counts of hypothesis_frames against gt_frames (module docstring).

  Args:
    gt_frames: per frame, {object id: (4,) xywh box} (or a list of (id, box) pairs).
    hypothesis_frames: the same for the tracker's output (ids = track ids); as many
      frames as gt_frames.
    iou_threshold: a pair matches at IoU >= this (0.5 in CLEAR-MOT's box form).

  Returns:
    {"id_switches", "matches", "misses", "false_positives", "objects" (ground-truth
    objects over all frames), "mota", "switch_frames": [(frame, gt id, old id, new id)],
    "matched_ids": {gt id: sorted hypothesis ids it was matched to}}.
  """
  if len(gt_frames) != len(hypothesis_frames):
    raise ValueError(f"{len(gt_frames)} ground-truth frames but {len(hypothesis_frames)} "
                     "hypothesis frames")
  last = {}                        # gt id -> hypothesis id of its last match
  counts = dict(id_switches=0, matches=0, misses=0, false_positives=0, objects=0)
  switches, matched_ids = [], {}
  for t, (gt, hyp) in enumerate(zip(gt_frames, hypothesis_frames)):
    gt, hyp = _as_frame(gt, "ground-truth", t), _as_frame(hyp, "hypothesis", t)
    pairs = match_frame(gt, hyp, iou_threshold)
    for gt_id, hyp_id in pairs:
      if gt_id in last and last[gt_id] != hyp_id:
        counts["id_switches"] += 1
        switches.append((t, gt_id, last[gt_id], hyp_id))
      last[gt_id] = hyp_id
      matched_ids.setdefault(gt_id, set()).add(hyp_id)
    counts["matches"] += len(pairs)
    counts["misses"] += len(gt) - len(pairs)
    counts["false_positives"] += len(hyp) - len(pairs)
    counts["objects"] += len(gt)
  counts["mota"] = mota(counts)
  counts["switch_frames"] = switches
  counts["matched_ids"] = {k: sorted(v) for k, v in matched_ids.items()}
  return counts


def mota(counts):
  """MOTA of counts {"misses", "false_positives", "id_switches", "objects"} (those of
  clear_mot, or their sums over several sequences); NaN without objects."""
  errors = counts["misses"] + counts["false_positives"] + counts["id_switches"]
  return 1.0 - errors / counts["objects"] if counts["objects"] else float("nan")


def id_switches(gt_frames, hypothesis_frames, iou_threshold=0.5):
  """The number of ID switches (clear_mot's "id_switches")."""
  return clear_mot(gt_frames, hypothesis_frames, iou_threshold)["id_switches"]
