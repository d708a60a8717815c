"""COCO keypoint AP/AR: results in COCO's format, scored by pycocotools' COCOeval.

    results = coco_results(image_ids, category_ids, keypoints, keypoint_scores, scores)
    metrics = coco_keypoint_metrics("person_keypoints_val2017.json", results, sigmas)
    # {"AP": 0.75, "AP50": ..., "ARl": ...}, pycocotools' 0-1 values

As mmpose's `CocoMetric._do_python_keypoint_eval`: COCOeval(gt, dt, 'keypoints') with
the dataset's sigmas; each prediction keeps the category of its instance, so
multi-category files (AP-10K's 54 species) are evaluated per category, as COCOeval does.
pycocotools' printing goes to the debug log.
"""

import contextlib
import io
import os
from typing import Optional, Sequence, Union

from absl import logging
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mamkpd_jax.evaluation.postprocess import check_array

# COCOeval.stats[0..9], in order.
COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


@contextlib.contextmanager
def _quiet(what):
  """Captures pycocotools' prints; they go to the debug log."""
  buffer = io.StringIO()
  try:
    with contextlib.redirect_stdout(buffer):
      yield
  finally:
    if buffer.getvalue().strip():
      logging.debug("pycocotools (%s):\n%s", what, buffer.getvalue().rstrip())


def coco_results(image_ids, category_ids, keypoints, keypoint_scores, scores) -> list[dict]:
  """Predictions in the COCO results format, plain Python numbers (json-ready).

  Args:
    image_ids: (N,) int image of each prediction.
    category_ids: (N,) int category (from the prediction's instance).
    keypoints: (N, K, 2) predicted x, y in image pixels.
    keypoint_scores: (N, K) per-keypoint confidences (COCO's third value).
    scores: (N,) instance scores.

  Returns:
    [{"image_id", "category_id", "keypoints": [x, y, s] * K flat, "score"}, ...].
  """
  keypoints = check_array("keypoints", keypoints, ndim=3, last=2)
  n, k = keypoints.shape[:2]
  keypoint_scores = check_array("keypoint_scores", keypoint_scores, shape=(n, k))
  scores = check_array("scores", scores, shape=(n,))
  image_ids = check_array("image_ids", image_ids, shape=(n,), dtype=np.int64)
  category_ids = check_array("category_ids", category_ids, shape=(n,), dtype=np.int64)
  triples = np.concatenate([keypoints, keypoint_scores[..., None]], axis=-1)  # (N, K, 3)
  return [{"image_id": int(image_ids[i]), "category_id": int(category_ids[i]),
           "keypoints": triples[i].reshape(-1).tolist(), "score": float(scores[i])}
          for i in range(n)]


def load_coco(ann_file: str) -> COCO:
  """A pycocotools COCO index of `ann_file`, quietly."""
  with _quiet(f"loading {ann_file}"):
    return COCO(ann_file)


def _check_results(gt: COCO, results, num_keypoints):
  """ValueError for results that pycocotools would crash on or mis-evaluate."""
  known = set(gt.getImgIds())
  for i, result in enumerate(results):
    if result.get("image_id") not in known:
      raise ValueError(f"results[{i}]: image_id {result.get('image_id')!r} is not an "
                       "image of the ground-truth file")
    if len(result.get("keypoints", ())) != 3 * num_keypoints:
      raise ValueError(f"results[{i}]: {len(result.get('keypoints', ()))} keypoint values, "
                       f"expected 3 x {num_keypoints} (one sigma per keypoint)")


def _checked_image_ids(gt: COCO, image_ids):
  image_ids = sorted({int(i) for i in image_ids})
  if not image_ids:        # pycocotools reads an empty imgIds as "every image"
    raise ValueError("image_ids is empty; pass None to evaluate every image")
  unknown = sorted(set(image_ids) - set(gt.getImgIds()))
  if unknown:
    raise ValueError(f"image_ids {unknown[:10]} are not images of the ground-truth file")
  return image_ids


def coco_keypoint_metrics(ann_file_or_coco: Union[str, os.PathLike, COCO], results: list[dict],
                          sigmas: Sequence[float],
                          image_ids: Optional[Sequence[int]] = None) -> dict[str, float]:
  """COCO keypoint AP and AR of `results` against a COCO-format ground truth.

  Args:
    ann_file_or_coco: the GT json path, or its pycocotools COCO.
    results: `coco_results` output (not modified).
    sigmas: (K,) OKS sigmas of the dataset.
    image_ids: evaluate these images only (a subset of the json, e.g. held-out
      frames); None: every image of the json, as mmpose.

  Returns:
    {"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}: Python
    floats from COCOeval.stats (0-1; -1 where pycocotools has nothing to measure, e.g.
    APm with no medium-sized GT). Empty `results`: all 0, with a warning.
  """
  gt = (ann_file_or_coco if isinstance(ann_file_or_coco, COCO)
        else load_coco(os.fspath(ann_file_or_coco)))
  sigmas = check_array("sigmas", sigmas, ndim=1)
  _check_results(gt, results, len(sigmas))
  if not results:
    logging.warning("COCO keypoint evaluation: no predictions; every metric is 0")
    return dict.fromkeys(COCO_METRIC_NAMES, 0.0)
  with _quiet("COCOeval"):
    dt = gt.loadRes([dict(result) for result in results])   # loadRes edits its input
    coco_eval = COCOeval(gt, dt, "keypoints")
    coco_eval.params.kpt_oks_sigmas = sigmas
    if image_ids is not None:
      coco_eval.params.imgIds = _checked_image_ids(gt, image_ids)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
  return {name: float(value) for name, value in zip(COCO_METRIC_NAMES, coco_eval.stats)}
