"""Prediction: the poses found in one image, the one results type of predict and track.

`Estimator.predict` makes them; `tracking.PoseTracker` returns them with `track_ids`
set; `to_json` writes COCO results (plus "bbox" and "track_id"), which the tracker's
json records are.
"""

import dataclasses
from typing import Optional

import numpy as np

from mamkpd_jax.data_pipelines import metadata
from mamkpd_jax.evaluation import coco_results
from mamkpd_jax.inference import visualization
from mamkpd_jax.inference.video import load_image


UNTRACKED = -1     # Prediction.track_ids of instances no tracker has named


@dataclasses.dataclass
class Prediction:
  """The poses found in one image (M instances, K keypoints), numpy float32, and what
  drawing and saving them needs (ultralytics-style results object).

      prediction.plot()                      # (H, W, 3) uint8 RGB, poses drawn
      prediction.save("pose.png")            # that picture, PNG or JPEG by extension
      prediction.to_json(image_id=7)         # COCO results: one dict per instance
  """

  boxes: np.ndarray             # (M, 4) xywh image pixels, as given (or the whole image)
  keypoints: np.ndarray         # (M, K, 2) x, y in image pixels
  keypoint_scores: np.ndarray   # (M, K) heatmap maxima
  scores: np.ndarray            # (M,) instance scores (rescoring, bbox score 1)
  track_ids: Optional[np.ndarray] = None    # (M,) int; None -> all UNTRACKED
  image: Optional[np.ndarray] = dataclasses.field(default=None, repr=False)  # (H, W, 3)
  info: Optional[metadata.DatasetInfo] = dataclasses.field(default=None, repr=False)

  def __post_init__(self):
    if self.track_ids is None:
      self.track_ids = np.full(len(self.boxes), UNTRACKED, np.int64)
    self.track_ids = np.asarray(self.track_ids, np.int64)
    if self.track_ids.shape != (len(self.boxes),):
      raise ValueError(f"track_ids must be ({len(self.boxes)},) for {len(self.boxes)} "
                       f"boxes, got shape {self.track_ids.shape}")

  def plot(self, image=None, threshold=0.3, draw_boxes=True):
    """The poses drawn (visualization.draw_prediction) on `image` (default: the image
    predicted on) -> (H, W, 3) uint8 RGB. Keypoints scoring under threshold are left out."""
    image = self.image if image is None else load_image(image)
    if image is None:
      raise ValueError("Prediction.plot: no image (pass image=, or predict on an image)")
    if self.info is None:
      raise ValueError("Prediction.plot: no keypoint layout (info); predictions made by "
                       "Estimator.predict carry it")
    return visualization.draw_prediction(image, self, self.info, threshold, draw_boxes)

  def save(self, path, image=None, threshold=0.3):
    """Writes self.plot() to path (PNG, JPEG, ... by extension); returns path."""
    return visualization.save_image(path, self.plot(image, threshold))

  def to_json(self, image_id=0, category_id=1):
    """The instances in the COCO results format (evaluation.coco_results), plus "bbox"
    (xywh) and, for tracked instances, "track_id": a json-ready list of dicts."""
    num = len(self.boxes)
    results = coco_results(np.full(num, image_id), np.full(num, category_id),
                           self.keypoints, self.keypoint_scores, self.scores)
    for result, box, track_id in zip(results, self.boxes, self.track_ids):
      result["bbox"] = [float(v) for v in box]
      if track_id != UNTRACKED:
        result["track_id"] = int(track_id)
    return results
