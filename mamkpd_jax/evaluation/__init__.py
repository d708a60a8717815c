"""Top-down keypoint evaluation: metrics in numpy and pycocotools, the decode path, the
eval loop.

`evaluate_predictions(config, info, instances, keypoints, keypoint_scores, crop_scales)`
turns image-space predictions into metrics (COCO AP/AR, bbox PCK, MPII PCKh) and a COCO
results list; its parts (rescoring, OKS-NMS, COCOeval, PCK) are importable on their own
and are what this package exports (no JAX, no model). `decode` is the one path from
crops to image keypoints (shared with the Estimator and the exports) and `evaluate` the
evaluation loop over a dataset; import those modules by name.
"""

from mamkpd_jax.evaluation.coco_metric import (COCO_METRIC_NAMES, coco_keypoint_metrics,
                                               coco_results)
from mamkpd_jax.evaluation.metrics import (evaluate_predictions, metrics_table,
                                           write_metrics_json)
from mamkpd_jax.evaluation.pck import bbox_pck, mpii_pckh, pck_accuracy
from mamkpd_jax.evaluation.postprocess import nms_per_image, oks_iou, oks_nms, rescore

__all__ = [
    "COCO_METRIC_NAMES",
    "bbox_pck",
    "coco_keypoint_metrics",
    "coco_results",
    "evaluate_predictions",
    "metrics_table",
    "mpii_pckh",
    "nms_per_image",
    "oks_iou",
    "oks_nms",
    "pck_accuracy",
    "rescore",
    "write_metrics_json",
]
