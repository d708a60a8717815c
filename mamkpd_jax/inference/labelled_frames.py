"""Another tool's labelled frames as inputs to predict on, and the predictions scored and
written back on them (`mamkpd predict --input=LABELS`, commands/predict.py).

    labelled = labelled_frames.read_labelled("labels.slp")   # frames, images, gt, boxes
    order = labelled_frames.keypoint_order(model_names, labelled.labels.skeleton.node_names,
                                           "labels.slp")
    pose, points = labelled_frames.matched_poses(labelled.boxes[i], prediction, order)
    labelled_frames.score(labelled, [points, ...])          # {"PCK@0.1": ...}
    labelled_frames.predicted_labels(labelled, [pose, ...]) # sio.Labels to write

The frames, their images and the labelled boxes are those of the COCO conversion that
training reads (data_pipelines.labels.labels_to_coco: one image per frame with user
instances, the keypoints' box 10% a side), so a label file scores here exactly as it
would as a validation set; the predictions go back on the labels' own videos, frames
and skeleton (inference.label_files.to_labels).
"""

import dataclasses
import os

import numpy as np

from mamkpd_jax.data_pipelines import labels as labels_lib
from mamkpd_jax.evaluation import pck
from mamkpd_jax.inference import detectors, label_files, video

PCK_THRESHOLD = 0.1      # of the labelled box's longer side (evaluation.pck.bbox_pck)


def labels_kind(path):
  """The label format (data_pipelines.labels.detect_format) when path is another tool's
  labels (a .slp, a DeepLabCut project or CollectedData file, ...), else None (an image,
  a folder of images, a video)."""
  if not os.path.exists(path) or path.lower().endswith(video.IMAGE_EXTENSIONS) or \
      os.path.isfile(path) and path.lower().endswith(video.VIDEO_EXTENSIONS):
    return None
  try:
    return labels_lib.detect_format(path)
  except labels_lib.LabelsError:          # a folder of images, ...
    return None


@dataclasses.dataclass
class LabelledFrames:
  """The labelled frames of a label file (F frames with user instances, M_i instances in
  frame i, K keypoints)."""

  labels: object              # sio.Labels (data_pipelines.labels.read_labels)
  frames: list                # F sio.LabeledFrame, in the converted images' order
  images: list                # F image paths (video frames extracted as PNGs)
  gt: list                    # F arrays (M_i, K, 3): labelled x, y, v, the labels' order
  boxes: list                 # F arrays (M_i, 4) xywh: labelled keypoints' box, 10% a side
  root: str                   # the folder the images' COCO file names are relative to


def _per_image(coco, field, width):
  """coco["annotations"][field] stacked per image of coco["images"]: F arrays (M_i, width)."""
  by_image = {}
  for annotation in coco["annotations"]:
    by_image.setdefault(annotation["image_id"], []).append(annotation[field])
  return [np.array(by_image.get(image["id"], []), np.float32).reshape(-1, width)
          for image in coco["images"]]


def read_labelled(path):
  """LabelledFrames of a label file or project (data_pipelines.labels: read_labels,
  labels_to_coco: one image per frame with labelled instances, in the labels' order);
  a ValueError naming the file for a COCO json or a conversion that lost frames."""
  if labels_kind(path) == "coco":
    raise ValueError(f"{path}: a COCO json; give its image folder as --input and the json "
                     "as --boxes, or evaluate with `mamkpd eval`")
  labels = labels_lib.read_labels(path)
  coco = labels_lib.labels_to_coco(labels, path)
  frames = [frame for frame in labels.labeled_frames if frame.user_instances]
  if len(frames) != len(coco["images"]):
    raise ValueError(f"{path}: {len(coco['images'])} converted images for {len(frames)} "
                     "labelled frames")
  root = coco["info"]["image_root"]
  num_keypoints = len(labels.skeleton.node_names)
  gt = [points.reshape(-1, num_keypoints, 3)
        for points in _per_image(coco, "keypoints", 3 * num_keypoints)]
  return LabelledFrames(labels, frames,
                        [os.path.join(root, image["file_name"]) for image in coco["images"]],
                        gt, _per_image(coco, "bbox", 4), root)


def keypoint_order(model_names, label_names, path):
  """Indices (K,) taking the model's keypoints to the labels' node order; a ValueError
  naming the file and both lists when they are not the same names."""
  if sorted(model_names) != sorted(label_names):
    raise ValueError(f"{path}: the labels' keypoints {list(label_names)} are not the "
                     f"model's {list(model_names)}")
  return np.array([list(model_names).index(name) for name in label_names])


def match_to_labels(label_boxes, prediction):
  """Index of the predicted pose of each labelled box (M,), -1 where none: the same
  boxes one to one; other boxes (--boxes, --detector) by the best IoU > 0
  (detectors.match_boxes)."""
  if len(prediction.boxes) == len(label_boxes) and np.allclose(prediction.boxes, label_boxes):
    return np.arange(len(label_boxes))
  matched = np.full(len(label_boxes), -1)
  for row, col in detectors.match_boxes(label_boxes, prediction.boxes, min_iou=0.0):
    matched[row] = col
  return matched


def matched_poses(label_boxes, prediction, order):
  """The predicted poses of one frame's labelled instances (label_boxes (M, 4)):
  ((keypoints (M', K, 2), keypoint scores (M', K), scores (M',)) of the M' matched ones,
  in the labels' keypoint order; points (M, K, 2) per labelled instance, NaN where no
  pose matched (PCK counts them as wrong))."""
  matched = match_to_labels(label_boxes, prediction)                       # (M,)
  keep = matched[matched >= 0]
  pose = (prediction.keypoints[keep][:, order], prediction.keypoint_scores[keep][:, order],
          prediction.scores[keep])
  points = np.full((len(matched), len(order), 2), np.nan, np.float32)       # (M, K, 2)
  points[matched >= 0] = pose[0]
  return pose, points


def score(labelled, points):
  """{"PCK@0.1"} of points (F arrays (M_i, K, 2), matched_poses) against the labelled
  keypoints, normalised by the labelled boxes (evaluation.pck.bbox_pck)."""
  gt = np.concatenate(labelled.gt)                                           # (N, K, 3)
  return pck.bbox_pck(np.concatenate(points), gt[..., :2], gt[..., 2] > 0,
                      np.concatenate(labelled.boxes), PCK_THRESHOLD)


def predicted_labels(labelled, poses):
  """sio.Labels of the predictions (poses: matched_poses' first value per frame; one
  PredictedInstance per matched labelled instance) on the labels' own videos, frames
  and skeleton (label_files.to_labels)."""
  frames = [label_files.FramePoses(frame.video, frame.frame_idx, keypoints, scores,
                                   instance_scores)
            for frame, (keypoints, scores, instance_scores) in zip(labelled.frames, poses)]
  return label_files.to_labels(frames, labelled.labels.skeleton)           # names, edges
