"""The best COCO keypoint AP any network could reach with a codec and an input size.

Every evaluation instance (GT boxes) is cropped as the evaluation pipeline crops it
(box -> center/scale, clipped to the image), its GT keypoints are warped into the input
crop (rotation 0), encoded to target heatmaps, decoded again and mapped back to the
image; the results are scored with pycocotools' COCOeval against the annotation file,
with the dataset's OKS sigmas. What is lost is the codec's quantisation, its window
cut-offs and the keypoints that fall off the heatmap: a perfect network predicting the
targets exactly would score this. No images are read (keypoints only); no OKS-NMS (one
prediction per GT instance).

    python scripts/codec_upper_bound.py --config=configs/sample_coco.py --json
    python scripts/codec_upper_bound.py --config=configs/sample_coco.py --codecs=udp,msra,dark
    python scripts/codec_upper_bound.py --config=configs/sample_coco.py --codecs=none

`--codecs=none` feeds the GT keypoints back as predictions (mmpose's own check of its
COCO metric: AP 1.000). Instance score = box score (1 for GT boxes) x mean of the
keypoint scores above 0.2 (docs/conventions.md, COCO evaluation).

With --json the last stdout line is one JSON object: AP, AP50, AP75, APm, APl, AR of the
first codec, "codec" (its name) and "per_codec" {name: {AP, ..., AR, mean_error_px,
dropped_keypoints}} (see `upper_bound`). pycocotools' own prints go to stderr.
"""

import contextlib
import json
import sys

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mamkpd_jax.data_pipelines import codecs, geometry, pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/*.py file.",
                                          lock_config=True)
_JSON = flags.DEFINE_bool("json", False, "End stdout with one JSON object.")
_CODECS = flags.DEFINE_list("codecs", ["udp", "msra", "dark"],
                            "Codecs to measure, in order: udp, msra, dark, or none "
                            "(GT keypoints as predictions).")
flags.mark_flag_as_required("config")

GT_AS_PREDICTION = "none"
KEYPOINT_SCORE_THRESHOLD = 0.2    # docs/conventions.md: mean of the keypoint scores above this
METRICS = ("AP", "AP50", "AP75", "APm", "APl", "AR")
STATS_INDEX = {"AP": 0, "AP50": 1, "AP75": 2, "APm": 3, "APl": 4, "AR": 5}  # COCOeval.stats


# ---------------------------------------------------------------- instances and GT


def check_codec_names(names):
  known = sorted(codecs.CODECS) + [GT_AS_PREDICTION]
  unknown = [name for name in names if name not in known]
  if not names or unknown:
    raise ValueError(f"--codecs must list some of {known}, got {names}")
  return list(names)


def gt_annotation_file(config):
  """The COCO-format json the evaluation instances come from (and are scored against)."""
  data = config.data
  if data.dataset == "mpii":
    raise ValueError("config.data.dataset='mpii': COCO AP needs a COCO-format annotation "
                     "file (MPII is scored by PCKh)")
  return pipeline.ann_file(data, "val")


def load_gt(ann_file):
  with contextlib.redirect_stdout(sys.stderr):    # pycocotools prints progress
    return COCO(ann_file)


def crop_boxes(instances, gt, aspect_ratio):
  """center (N, 2), scale (N, 2) as the evaluation pipeline crops GT boxes (clipped)."""
  centers, scales = [], []
  for instance in instances:
    image = gt.imgs[instance["image_id"]]
    center, scale = geometry.box_to_center_scale(
        instance["bbox"], aspect_ratio, image_size=(image["height"], image["width"]))
    centers.append(center)
    scales.append(scale)
  return np.stack(centers), np.stack(scales)


# ---------------------------------------------------------------- predictions


def codec_round_trip(instances, centers, scales, codec, use_udp):
  """GT keypoints -> crop -> encode -> decode -> image.

  Returns keypoints (N, K, 2) in image pixels, scores (N, K) and the target weights
  (N, K) (0 for unlabelled keypoints and for those whose Gaussian misses the heatmap).
  """
  input_size = codec.input_size
  heatmaps, weights = [], []
  for instance, center, scale in zip(instances, centers, scales):
    if use_udp:
      matrix = geometry.udp_affine_matrix(center, scale, 0.0, input_size)
    else:
      matrix = geometry.affine_matrix(center, scale, 0.0, input_size)
    keypoints = geometry.transform_points(instance["keypoints"], matrix)     # (K, 2)
    target, weight = codec.encode(keypoints, instance["keypoints_visible"])  # (h, w, K)
    heatmaps.append(target)
    weights.append(weight)
  keypoints, scores = codec.decode(np.stack(heatmaps))             # (N, K, 2), (N, K)
  image_points = geometry.crop_to_image(keypoints, centers, scales, input_size,
                                        use_udp=use_udp)
  return image_points, scores, np.stack(weights)


def gt_as_predictions(instances):
  """The GT keypoints themselves, scored (and weighted) by their visibility."""
  keypoints = np.stack([instance["keypoints"] for instance in instances])    # (N, K, 2)
  visible = np.stack([instance["keypoints_visible"] for instance in instances])
  return keypoints, visible, visible


def localisation(instances, keypoints, weights):
  """Mean image-pixel error of the kept keypoints; count of labelled ones dropped."""
  truth = np.stack([instance["keypoints"] for instance in instances])        # (N, K, 2)
  labelled = np.stack([instance["keypoints_visible"] for instance in instances]) > 0
  kept = labelled & (weights > 0)                                            # (N, K)
  errors = np.linalg.norm(keypoints - truth, axis=-1)[kept]
  return {"mean_error_px": float(errors.mean()) if errors.size else 0.0,
          "dropped_keypoints": int((labelled & ~kept).sum())}


def instance_score(box_score, keypoint_scores):
  """docs/conventions.md: box score x mean of the keypoint scores above 0.2 (box score if none)."""
  confident = keypoint_scores[keypoint_scores > KEYPOINT_SCORE_THRESHOLD]
  return float(box_score) * (float(confident.mean()) if confident.size else 1.0)


def coco_results(instances, keypoints, scores):
  """COCO keypoint results [{image_id, category_id, keypoints [x, y, s]*K, score}]."""
  results = []
  for instance, points, point_scores in zip(instances, keypoints, scores):
    triples = np.concatenate([points, point_scores[:, None]], axis=1)       # (K, 3)
    results.append({
        "image_id": int(instance["image_id"]),
        "category_id": int(instance["category_id"]),
        "keypoints": [float(v) for v in triples.reshape(-1)],
        "score": instance_score(instance["bbox_score"], point_scores),
    })
  return results


# ---------------------------------------------------------------- evaluation


def coco_keypoint_ap(gt, results, sigmas, image_ids):
  """COCOeval(gt, results, 'keypoints') over `image_ids` -> {AP, AP50, ..., AR}."""
  if not results:
    raise ValueError("no evaluation instances to score")
  with contextlib.redirect_stdout(sys.stderr):
    detections = gt.loadRes(results)
    evaluator = COCOeval(gt, detections, "keypoints")
    evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
    evaluator.params.imgIds = sorted(image_ids)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return {name: float(evaluator.stats[index]) for name, index in STATS_INDEX.items()}


def predictions(name, instances, centers, scales, config):
  """Keypoints (N, K, 2) in image pixels, scores (N, K), weights (N, K) of codec `name`."""
  if name == GT_AS_PREDICTION:
    return gt_as_predictions(instances)
  height, width = pipeline.input_size(config)
  stride = pipeline.HEATMAP_STRIDE
  codec = codecs.make_codec(name, (height, width), (height // stride, width // stride),
                            config.data.sigma)
  return codec_round_trip(instances, centers, scales, codec, use_udp=name == "udp")


def upper_bound(config, codec_names):
  """{codec name: {AP, AP50, AP75, APm, APl, AR, mean_error_px, dropped_keypoints}}.

  mean_error_px: mean distance (image pixels) from the GT of the decoded labelled
  keypoints the codec kept; dropped_keypoints: labelled keypoints with target weight 0
  (their Gaussian misses the heatmap), which decode to nothing useful.
  """
  codec_names = check_codec_names(codec_names)
  config = pipeline.with_gt_boxes(config)
  info = pipeline.dataset_info(config)
  ann_file = gt_annotation_file(config)
  instances = pipeline.load_instances(config, info, "val")
  if not instances:
    raise ValueError(f"no evaluation instances with keypoints in {ann_file}")
  gt = load_gt(ann_file)
  height, width = pipeline.input_size(config)
  centers, scales = crop_boxes(instances, gt, width / height)                # (N, 2) each
  image_ids = {instance["image_id"] for instance in instances}
  if pipeline.train_fraction(config.data) <= 0:
    image_ids = set(gt.getImgIds())     # the whole val file, as mmpose's CocoMetric
  logging.info("%d instances on %d images of %s", len(instances), len(image_ids), ann_file)
  per_codec = {}
  for name in codec_names:
    keypoints, scores, weights = predictions(name, instances, centers, scales, config)
    results = coco_results(instances, keypoints, scores)
    per_codec[name] = {**coco_keypoint_ap(gt, results, info.sigmas, image_ids),
                       **localisation(instances, keypoints, weights)}
  return per_codec


# ---------------------------------------------------------------- report


def print_table(config, per_codec):
  height, width = pipeline.input_size(config)
  print(f"Codec upper bound: GT boxes, input {height}x{width}, sigma {config.data.sigma}, "
        f"heatmap /{pipeline.HEATMAP_STRIDE} ('none' = GT keypoints as predictions)")
  print(f"  {'codec':<6}" + "".join(f"{name:>8}" for name in METRICS)
        + f"{'err px':>8}{'dropped':>9}")
  for name, stats in per_codec.items():
    print(f"  {name:<6}" + "".join(f"{stats[metric]:>8.4f}" for metric in METRICS)
          + f"{stats['mean_error_px']:>8.3f}{stats['dropped_keypoints']:>9d}")


def report(per_codec):
  """The JSON object: the first codec's metrics at the top level, every codec below."""
  first = next(iter(per_codec))
  return {**{metric: per_codec[first][metric] for metric in METRICS}, "codec": first,
          "per_codec": per_codec}


def main(argv):
  del argv
  config = _CONFIG.value
  try:
    per_codec = upper_bound(config, _CODECS.value)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"codec_upper_bound.py: {e}") from None
  print_table(config, per_codec)
  if _JSON.value:
    print(json.dumps(report(per_codec)))


if __name__ == "__main__":
  app.run(main)
