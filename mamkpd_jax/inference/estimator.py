"""The Estimator: images (and boxes) in, keypoints in image pixels out.

    estimator = Estimator.from_workdir("/tmp/sample_openfield")    # or a checkpoint
    estimator = Estimator.from_pretrained("weights/mamkpd_tiny_openfield")   # shipped
    result = estimator.predict(image)          # (H, W, 3) RGB uint8 or a path; whole image
    result = estimator.predict(image, boxes)   # boxes (M, 4) xywh image pixels
    result = estimator.predict(image, detector=detectors.StaticBackgroundDetector(frames))
    results = estimator.predict_batch(images, boxes_list)
    crops, heatmaps = estimator.heatmaps(image, boxes)   # for visualization.heatmap_overlay
    result.plot(); result.save("pose.png"); result.to_json(image_id=7)   # Prediction

Pre- and post-processing are the evaluation pipeline's (one source of truth): each box
becomes a crop through `transforms.BoxToCenterScale` (the config's aspect ratio, 1.25
padding, boxes not clipped, as mmpose does for detector boxes) and
`transforms.TopdownAffine` (the UDP warp when the codec is UDP); heatmaps -> keypoints is
`evaluation.decode` (flip-averaged heatmaps with config.eval.flip_test, the config's
codec, crop -> image), the path evaluation and the exports take. The instance score is
`evaluation.rescore(keypoint_scores, bbox score 1, eval.keypoint_score_threshold)`.

The forward pass is compiled once per batch bucket: the crops of a call are padded to the
smallest of BUCKETS that holds them (more than BUCKETS[-1] run in chunks of that size),
so calls with 2 and 5 boxes share one compiled program; `pad_to` pads a call to a
larger bucket, so that a video's short last batch reuses its full batches' program.

`export.serving.export_forward` serialises crops -> heatmaps (and argmax keypoints) with
`jax.export`, parameters baked in; `export.serving.load_exported` reads it back without
any model code.
"""

import dataclasses
import json
import os
import warnings

import jax
import ml_collections
import numpy as np
from flax import nnx

from mamkpd_jax import config_lib
from mamkpd_jax.export import pretrained
from mamkpd_jax.inference import detectors
from mamkpd_jax.inference.results import Prediction
from mamkpd_jax.inference.video import load_image
from mamkpd_jax.data_pipelines import pipeline, transforms
from mamkpd_jax.evaluation import decode as decode_lib
from mamkpd_jax.evaluation import rescore
from mamkpd_jax.models import abstract_model, build_model, parse_model_config

BUCKETS = (1, 8, 32, 128)     # crop batch sizes compiled; larger batches are chunked
# XLA:CPU at optimisation level 0: the tiny model's forward compiles in 4.5 s instead of
# 14 s and runs 1.7x slower (2 cores, 8 crops at 64x64 with flip test).
FAST_COMPILE_CPU = {"xla_backend_optimization_level": 0}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ------------------------------------------------------------------ config and model


def load_config_json(path):
  """A workdir's config.json (the resolved config of its run) as a ConfigDict."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config not found: {path} (pass a config explicitly)")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(config_lib.lists_to_tuples(json.load(f)))


def _checkpointing():
  """mamkpd_jax.training.checkpointing (Orbax), imported only where a training checkpoint is read:
  Estimator.from_pretrained runs without the training stack."""
  from mamkpd_jax.training import checkpointing   # pylint: disable=g-import-not-at-top
  return checkpointing


def _workdir_of(checkpoint_directory):
  """WORKDIR/checkpoints -> WORKDIR (else the folder itself)."""
  checkpointing = _checkpointing()
  if os.path.basename(checkpoint_directory) == checkpointing.CHECKPOINT_DIR:
    return os.path.dirname(checkpoint_directory)
  return checkpoint_directory


def with_data_root(config):
  """A copy of config whose relative data.root is found from here or the repository.

  Custom datasets take their keypoint names from the annotation json, so inference
  needs it too; a workdir's config may hold a root relative to where training ran.
  """
  config = config.copy_and_resolve_references()
  root = config.data.root
  if os.path.isabs(root) or os.path.isdir(root):
    return config
  in_repo = os.path.join(REPO_ROOT, root)
  if os.path.isdir(in_repo):
    with config.unlocked():
      config.data.root = in_repo
  return config


def with_model_changes(model, validate=True, **changes):
  """The same parameters and statistics in a model whose ModelConfig has `changes`
  (dtype, scan_impl: they change the computation, not the parameters). validate=False
  only for what config validation leaves out on purpose (a benchmark-only scan)."""
  model_config = dataclasses.replace(model.config, **changes)
  if validate:
    model_config.validate()
  return nnx.merge(nnx.split(abstract_model(model_config))[0], nnx.state(model))


def load_trained_model(config, checkpoint):
  """(model, meta): config's model with the parameters of checkpoint (any form)."""
  checkpointing = _checkpointing()
  directory, step = checkpointing.resolve_checkpoint(checkpoint)
  model = build_model(parse_model_config(config.model), seed=config.seed)
  meta = checkpointing.load_model_state(directory, step, model, config)
  return model, {**meta, "checkpoint": f"{directory}/{step}"}


# ------------------------------------------------------------------ images and crops


def as_boxes(boxes, image):
  """(M, 4) float32 xywh boxes; None -> the whole image [0, 0, W, H]."""
  if boxes is None:
    height, width = image.shape[:2]
    return np.array([[0, 0, width, height]], np.float32)
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4) if np.size(boxes) else \
      np.zeros((0, 4), np.float32)
  if np.any(boxes[:, 2:] <= 0) or not np.all(np.isfinite(boxes)):
    raise ValueError(f"boxes must be finite xywh with positive w and h, got {boxes.tolist()}")
  return boxes


def bucket_size(n):
  """The smallest bucket holding n crops (the largest for n beyond it)."""
  return next((b for b in BUCKETS if b >= n), BUCKETS[-1])


def _pad_rows(array, rows):
  """array (n, ...) padded with zero rows to (rows, ...)."""
  padding = np.zeros((rows - len(array),) + array.shape[1:], array.dtype)
  return np.concatenate([array, padding])


# ------------------------------------------------------------------ the estimator


class Estimator:
  """A trained model (MamKPD or HRVMamba) with its config's pre- and post-processing
  (module docstring).

  Attributes:
    config: the run's config (data: input size, codec; eval: flip test, rescoring).
    info: the keypoint layout (names, flip indices, skeleton).
    codec: the heatmap codec.
    traced_buckets: the crop batch sizes the forward pass was traced (and compiled) for,
      in order: each bucket once.
  """

  def __init__(self, config, model, info=None, compiler_options=None):
    """`model` is put in inference mode (BatchNorm running statistics).

    compiler_options: XLA options for the forward pass; on a CPU,
    FAST_COMPILE_CPU compiles ~3x faster and runs ~1.7x slower (tests, quick demos).
    """
    self.config = config
    self.info = info or pipeline.dataset_info(config)
    self.codec = pipeline.make_codec(config)
    self.input_size = pipeline.input_size(config)
    self.flip_test = bool(config.eval.flip_test)
    model.eval()
    self.model = model
    self._graphdef, self._state = nnx.split(model)
    self._crop_steps = self._make_crop_steps()
    self.traced_buckets = []
    self._forward = jax.jit(self._forward_impl, compiler_options=compiler_options)

  @classmethod
  def from_workdir(cls, checkpoint, config=None, compiler_options=None, **model_changes):
    """An Estimator from a workdir, its checkpoints/ folder or one step folder.

    Args:
      checkpoint: where the trained parameters are (the latest step unless a step folder).
      config: the run's config; default: the workdir's config.json.
      compiler_options: as for the constructor.
      **model_changes: ModelConfig fields that do not touch the parameters
        (dtype="bfloat16", scan_impl="pallas").
    """
    directory, _ = _checkpointing().resolve_checkpoint(checkpoint)
    if config is None:
      config = load_config_json(os.path.join(_workdir_of(directory), "config.json"))
    config = with_data_root(config)
    model, _ = load_trained_model(config, checkpoint)
    if model_changes:
      model = with_model_changes(model, **model_changes)
      with config.unlocked():
        config.model.update(model_changes)
    return cls(config, model, compiler_options=compiler_options)

  @classmethod
  def from_pretrained(cls, directory, compiler_options=None, **model_changes):
    """An Estimator from shipped weights: DIR/model.safetensors + DIR/model.json
    (mamkpd_jax.export.pretrained; mamkpd export --format=safetensors writes them).

    No Orbax checkpoint, optimiser or training code is read. A relative directory not
    found from here is looked up in the repository (weights/mamkpd_tiny_openfield).
    **model_changes: ModelConfig fields that do not touch the parameters (dtype,
    scan_impl).
    """
    directory = str(directory)
    if not os.path.isabs(directory) and not os.path.isdir(directory) and \
        os.path.isdir(os.path.join(REPO_ROOT, directory)):
      directory = os.path.join(REPO_ROOT, directory)
    meta = pretrained.load_metadata(directory)
    config = pretrained.config_of(meta)
    with config.unlocked():
      config.model.update(model_changes)
    model = pretrained.load_model(config.model,
                                  os.path.join(directory, pretrained.WEIGHTS_FILE))
    return cls(config, model, info=pretrained.info_of(meta),
               compiler_options=compiler_options)

  def _make_crop_steps(self):
    height, width = self.input_size
    return (transforms.BoxToCenterScale(width / height, clip_to_image=False),
            transforms.TopdownAffine(self.input_size, use_udp=decode_lib.uses_udp(self.codec)))

  def crops(self, image, boxes):
    """(crops (M, H, W, 3) uint8, centers (M, 2), scales (M, 2)) of boxes (M, 4) xywh."""
    num = len(boxes)
    height, width = self.input_size
    crops = np.zeros((num, height, width, 3), np.uint8)
    centers, scales = np.zeros((num, 2), np.float32), np.zeros((num, 2), np.float32)
    for i, box in enumerate(boxes):
      element = {"image": image, "bbox": box, "keypoints": np.zeros((0, 2), np.float32),
                 "keypoints_visible": np.zeros((0,), np.float32)}
      for step in self._crop_steps:
        element = step.map(element)
      crops[i], centers[i], scales[i] = element["image"], element["center"], element["scale"]
    return crops, centers, scales

  def forward_heatmaps(self, crops, state=None):
    """Traced: crops (B, H, W, 3) uint8 -> heatmaps (B, h, w, K), flip-averaged when
    config.eval.flip_test (decode.crop_heatmaps: what evaluation and the exports run).
    state: the model state to run; None: this estimator's (closed over, so constants
    once exported)."""
    model = nnx.merge(self._graphdef, self._state if state is None else state)
    return decode_lib.crop_heatmaps(model, crops, self.flip_test, self.info.flip_indices,
                                    self.codec.flip_shift)

  def _forward_impl(self, state, crops):
    self.traced_buckets.append(crops.shape[0])     # runs once per traced shape
    return self.forward_heatmaps(crops, state)

  def _heatmaps_of_chunk(self, crops, pad_to=1):
    """Up to BUCKETS[-1] crops, padded to the bucket of max(n, pad_to) -> (n, h, w, K)
    numpy."""
    n = len(crops)
    rows = bucket_size(max(n, pad_to))
    return np.asarray(self._forward(self._state, _pad_rows(crops, rows)))[:n]

  def crop_heatmaps(self, crops, pad_to=1):
    """Crops (N, H, W, 3) uint8 -> heatmaps (N, h, w, K) float32, flip-averaged when
    config.eval.flip_test; run in bucket-sized chunks, each padded to at least the
    bucket of pad_to crops (a short last batch of a video: no new compilation)."""
    crops = np.asarray(crops, np.uint8)
    if len(crops) == 0:
      h, w = self.codec.heatmap_size
      return np.zeros((0, h, w, self.info.num_keypoints), np.float32)
    chunk = BUCKETS[-1]
    return np.concatenate([self._heatmaps_of_chunk(crops[i:i + chunk], pad_to)
                           for i in range(0, len(crops), chunk)])

  def decode(self, heatmaps, centers, scales):
    """Heatmaps (N, h, w, K) of crops -> keypoints (N, K, 2) image px, scores (N, K)
    (decode.to_image)."""
    return decode_lib.to_image(heatmaps, self.codec, centers, scales)

  def heatmaps(self, image, boxes=None):
    """(crops (M, H, W, 3) uint8, heatmaps (M, h, w, K)) of one image, for display."""
    image = load_image(image)
    crops, _, _ = self.crops(image, as_boxes(boxes, image))
    return crops, self.crop_heatmaps(crops)

  def predict_batch(self, images, boxes_list=None, detector=None, pad_to=1):
    """Poses in several images; their crops run together. -> [Prediction] per image.

    Args:
      images: (H, W, 3) RGB uint8 arrays or paths (sizes may differ).
      boxes_list: per image (M_i, 4) xywh boxes or None (the whole image); None: all
        whole images (warned once: pass boxes or a detector).
      detector: instead of boxes, a detector (mamkpd_jax.inference.detectors) run on each image.
      pad_to: the crops run padded to at least the bucket of this many (crop_heatmaps):
        a video's batches, full or short, share one compiled program.
    """
    images = [load_image(image) for image in images]
    if detector is not None:
      if boxes_list is not None:
        raise ValueError("pass boxes or a detector, not both")
      boxes_list = [detectors.detect(detector, image).boxes for image in images]
    boxes_list = [None] * len(images) if boxes_list is None else list(boxes_list)
    if len(boxes_list) != len(images):
      raise ValueError(f"{len(images)} images but {len(boxes_list)} box lists")
    if any(boxes is None for boxes in boxes_list):
      _warn_whole_image_once()
    boxes_list = [as_boxes(b, image) for b, image in zip(boxes_list, images)]
    parts = [self.crops(image, boxes) for image, boxes in zip(images, boxes_list)]
    crops, centers, scales = (np.concatenate(p) for p in zip(*parts))
    keypoints, keypoint_scores = self.decode(self.crop_heatmaps(crops, pad_to), centers,
                                             scales)
    instance_scores = rescore(keypoint_scores, np.ones(len(keypoint_scores)),
                              self.config.eval.keypoint_score_threshold)
    bounds = np.cumsum([0] + [len(b) for b in boxes_list])
    return [Prediction(boxes, keypoints[a:b], keypoint_scores[a:b],
                       instance_scores[a:b].astype(np.float32), image=image, info=self.info)
            for image, boxes, a, b in zip(images, boxes_list, bounds[:-1], bounds[1:])]

  def predict(self, image, boxes=None, detector=None):
    """Poses in one image (a path or (H, W, 3) RGB), in `boxes` (M, 4) xywh, in the
    boxes of `detector`, or (neither given) in the whole image. -> Prediction."""
    boxes_list = [boxes] if boxes is not None or detector is None else None
    return self.predict_batch([image], boxes_list, detector)[0]


def load_estimator(checkpoint=None, weights=None, config=None, compiler_options=None,
                   **model_changes):
  """An Estimator from shipped weights (no training stack) or a training checkpoint
  (a workdir, its checkpoints/ folder or a step folder); exactly one of the two.
  config (a checkpoint's, instead of its workdir's config.json) is unused with weights.
  **model_changes: ModelConfig fields that do not touch the parameters (dtype,
  scan_impl)."""
  if bool(checkpoint) == bool(weights):
    raise ValueError("give a checkpoint (a training workdir) or weights (a folder with "
                     "model.safetensors + model.json), exactly one")
  if weights:
    return Estimator.from_pretrained(weights, compiler_options=compiler_options,
                                     **model_changes)
  _checkpointing().resolve_checkpoint(checkpoint)         # a clear error before loading
  return Estimator.from_workdir(checkpoint, config=config, compiler_options=compiler_options,
                                **model_changes)


_WARNED_WHOLE_IMAGE = []     # non-empty once the warning below was given


def _warn_whole_image_once():
  if not _WARNED_WHOLE_IMAGE:
    _WARNED_WHOLE_IMAGE.append(True)
    warnings.warn("predicting without boxes: the whole image is one box, which fails for "
                  "subjects that do not fill the frame; pass boxes=(M, 4) xywh or a "
                  "detector= (mamkpd_jax.inference.detectors: StaticBackgroundDetector for "
                  "one animal under a fixed camera, YoloxOnnxDetector, BoxFileDetector, a "
                  "callable)",
                  UserWarning, stacklevel=3)
