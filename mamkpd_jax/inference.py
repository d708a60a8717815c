"""Inference: images (and boxes) in, keypoints in image pixels out; export for serving.

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
`transforms.TopdownAffine` (the UDP warp when the codec is UDP); the heatmaps of the crop
and, with config.eval.flip_test, of its mirror image (flipped back with
`codecs.flip_heatmaps`) are averaged, decoded by the config's codec and mapped back to
the image by `geometry.crop_to_image`. The instance score is
`evaluation.rescore(keypoint_scores, bbox score 1, eval.keypoint_score_threshold)`.

The forward pass is compiled once per batch bucket: the crops of a call are padded to the
smallest of BUCKETS that holds them (more than BUCKETS[-1] run in chunks of that size),
so calls with 2 and 5 boxes share one compiled program.

`export_forward` serialises crops -> heatmaps (and argmax keypoints) with `jax.export`,
parameters baked in; `load_exported` reads it back without any model code.
"""

import dataclasses
import json
import os
import warnings
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from mamkpd_jax import config_lib, detectors, kernels, pretrained, visualization
from mamkpd_jax.data_pipelines import codecs, geometry, metadata, pipeline, transforms
from mamkpd_jax.evaluation import coco_results, rescore
from mamkpd_jax.models import (abstract_model, build_model, forward_with_flip,
                               parse_model_config)

BUCKETS = (1, 8, 32, 128)     # crop batch sizes compiled; larger batches are chunked
# XLA:CPU at optimisation level 0: the tiny model's forward compiles in 4.5 s instead of
# 14 s and runs 1.7x slower (2 cores, 8 crops at 64x64 with flip test).
FAST_COMPILE_CPU = {"xla_backend_optimization_level": 0}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


# ------------------------------------------------------------------ config and model


def load_config_json(path):
  """A workdir's config.json (the resolved config of its run) as a ConfigDict."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config not found: {path} (pass a config explicitly)")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(config_lib.lists_to_tuples(json.load(f)))


def _checkpointing():
  """mamkpd_jax.checkpointing (Orbax), imported only where a training checkpoint is read:
  Estimator.from_pretrained runs without the training stack."""
  from mamkpd_jax import checkpointing   # pylint: disable=g-import-not-at-top
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


def with_model_changes(model, **changes):
  """The same parameters and statistics in a model whose ModelConfig has `changes`
  (dtype, scan_impl: they change the computation, not the parameters)."""
  model_config = dataclasses.replace(model.config, **changes)
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


def load_image(image):
  """A path or an (H, W, 3) RGB array -> (H, W, 3) uint8 RGB."""
  if isinstance(image, (str, os.PathLike)):
    if not os.path.isfile(image):
      raise FileNotFoundError(f"image not found: {image}")
    return transforms.decode_image(str(image))
  array = np.asarray(image)
  if array.ndim != 3 or array.shape[-1] != 3 or 0 in array.shape:
    raise ValueError(f"image must be (H, W, 3) RGB, got shape {array.shape}")
  if array.dtype != np.uint8:
    array = np.clip(np.round(array), 0, 255).astype(np.uint8)
  return array


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
    (mamkpd_jax.pretrained; mamkpd export --format=safetensors writes them).

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
            transforms.TopdownAffine(self.input_size,
                                     use_udp=isinstance(self.codec, codecs.UDPHeatmap)))

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

  def _forward_impl(self, state, crops):
    """(B, H, W, 3) uint8 -> heatmaps (B, h, w, K) and the flipped crops' (not flipped
    back), or the heatmaps twice without flip test."""
    self.traced_buckets.append(crops.shape[0])     # runs once per traced shape
    model = nnx.merge(self._graphdef, state)
    if not self.flip_test:
      heatmaps = model(crops)
      return heatmaps, heatmaps
    return forward_with_flip(model, crops)

  def _heatmaps_of_chunk(self, crops):
    """Up to BUCKETS[-1] crops, padded to their bucket -> (n, h, w, K) numpy."""
    n = len(crops)
    heatmaps, flipped = self._forward(self._state, _pad_rows(crops, bucket_size(n)))
    heatmaps = np.asarray(heatmaps)[:n]
    if self.flip_test:
      flipped = codecs.flip_heatmaps(np.asarray(flipped)[:n], self.info.flip_indices,
                                     self.codec.flip_shift)
      heatmaps = 0.5 * (heatmaps + flipped)
    return heatmaps

  def crop_heatmaps(self, crops):
    """Crops (N, H, W, 3) uint8 -> heatmaps (N, h, w, K) float32, flip-averaged when
    config.eval.flip_test; run in bucket-sized chunks."""
    crops = np.asarray(crops, np.uint8)
    if len(crops) == 0:
      h, w = self.codec.heatmap_size
      return np.zeros((0, h, w, self.info.num_keypoints), np.float32)
    chunk = BUCKETS[-1]
    return np.concatenate([self._heatmaps_of_chunk(crops[i:i + chunk])
                           for i in range(0, len(crops), chunk)])

  def decode(self, heatmaps, centers, scales):
    """Heatmaps (N, h, w, K) of crops -> keypoints (N, K, 2) image px, scores (N, K)."""
    if len(heatmaps) == 0:
      k = self.info.num_keypoints
      return np.zeros((0, k, 2), np.float32), np.zeros((0, k), np.float32)
    in_crop, scores = self.codec.decode(heatmaps)                   # (N, K, 2), (N, K)
    in_image = geometry.crop_to_image(in_crop, centers, scales, self.input_size,
                                      use_udp=isinstance(self.codec, codecs.UDPHeatmap))
    return in_image, scores

  def heatmaps(self, image, boxes=None):
    """(crops (M, H, W, 3) uint8, heatmaps (M, h, w, K)) of one image, for display."""
    image = load_image(image)
    crops, _, _ = self.crops(image, as_boxes(boxes, image))
    return crops, self.crop_heatmaps(crops)

  def predict_batch(self, images, boxes_list=None, detector=None):
    """Poses in several images; their crops run together. -> [Prediction] per image.

    Args:
      images: (H, W, 3) RGB uint8 arrays or paths (sizes may differ).
      boxes_list: per image (M_i, 4) xywh boxes or None (the whole image); None: all
        whole images (warned once: pass boxes or a detector).
      detector: instead of boxes, a detector (mamkpd_jax.detectors) run on each image.
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
    keypoints, keypoint_scores = self.decode(self.crop_heatmaps(crops), centers, scales)
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


def load_estimator(checkpoint=None, weights=None, config=None, compiler_options=None):
  """An Estimator from shipped weights (no training stack) or a training checkpoint
  (a workdir, its checkpoints/ folder or a step folder); exactly one of the two."""
  if bool(checkpoint) == bool(weights):
    raise ValueError("give a checkpoint (a training workdir) or weights (a folder with "
                     "model.safetensors + model.json), exactly one")
  if weights:
    return Estimator.from_pretrained(weights, compiler_options=compiler_options)
  _checkpointing().resolve_checkpoint(checkpoint)         # a clear error before loading
  return Estimator.from_workdir(checkpoint, config=config, compiler_options=compiler_options)


_WARNED_WHOLE_IMAGE = []     # non-empty once the warning below was given


def _warn_whole_image_once():
  if not _WARNED_WHOLE_IMAGE:
    _WARNED_WHOLE_IMAGE.append(True)
    warnings.warn("predicting without boxes: the whole image is one box, which fails for "
                  "subjects that do not fill the frame; pass boxes=(M, 4) xywh or a "
                  "detector= (mamkpd_jax.detectors: StaticBackgroundDetector for one animal "
                  "under a fixed camera, YoloxOnnxDetector, BoxFileDetector, a callable)",
                  UserWarning, stacklevel=3)


# ------------------------------------------------------------------ export


def _flip_back(flipped, flip_indices, shift):
  """codecs.flip_heatmaps in jnp (inside the exported function): (B, h, w, K)."""
  maps = flipped[:, :, ::-1, :][..., np.asarray(flip_indices)]
  if shift:
    maps = jnp.concatenate([maps[:, :, :1], maps[:, :, :-1]], axis=2)
  return maps


def _argmax_keypoints(heatmaps, cell_scale):
  """(B, h, w, K) -> keypoints (B, K, 2) at the argmax cells x cell_scale, maxima (B, K).
  No sub-cell refinement (codec.decode on the heatmaps gives that)."""
  batch, height, width, channels = heatmaps.shape                    # batch may be symbolic
  flat = heatmaps.reshape(batch, height * width, channels)           # (B, h*w, K)
  index = jnp.argmax(flat, axis=1)                                   # (B, K)
  row = jax.lax.div(index, width)          # index >= 0; % and // trip jax2onnx's symbolic B
  cells = jnp.stack([index - row * width, row], axis=-1)             # (B, K, 2)
  return cells.astype(jnp.float32) * jnp.asarray(cell_scale, jnp.float32), flat.max(1)


def serving_fn(estimator):
  """crops (B, H, W, 3) uint8 -> {"heatmaps" (B, h, w, K) flip-averaged as configured,
  "keypoints" (B, K, 2) input px at the argmax cell, "scores" (B, K)}; parameters are
  closed over (constants once exported)."""
  graphdef, state = estimator._graphdef, estimator._state   # pylint: disable=protected-access
  info, codec = estimator.info, estimator.codec

  def serve(crops):
    model = nnx.merge(graphdef, state)
    if estimator.flip_test:
      heatmaps, flipped = forward_with_flip(model, crops)
      heatmaps = 0.5 * (heatmaps + _flip_back(flipped, info.flip_indices, codec.flip_shift))
    else:
      heatmaps = model(crops)
    keypoints, scores = _argmax_keypoints(heatmaps, codec.scale)
    return {"heatmaps": heatmaps, "keypoints": keypoints, "scores": scores}

  return serve


def export_forward(estimator, batch_size=None, platforms=None):
  """`serving_fn(estimator)` as a jax.export.Exported.

  batch_size None: a symbolic batch dimension "b" (any batch, recompiled per size by
  the caller's JAX; needs a pure-JAX scan, kernels.PURE_JAX_IMPLS); an int: that batch only.
  The CPU kernel ("cpu_ffi", what "auto" picks on a CPU) is exported as the chunked scan.
  platforms: e.g. ("cpu", "cuda"); default the current backend.
  """
  height, width = estimator.input_size
  scan_impl = estimator.model.config.scan_impl
  if kernels.portable_impl(scan_impl) != kernels.resolve_impl(scan_impl):
    # the CPU kernel is a custom call of this process: the artefact gets the same math
    # in pure JAX (kernels.portable_impl)
    portable = with_model_changes(estimator.model, scan_impl=kernels.portable_impl(scan_impl))
    estimator = Estimator(estimator.config, portable, estimator.info)
  if batch_size is None:
    batch = jax.export.symbolic_shape("b")[0]
  else:
    batch = int(batch_size)
  spec = jax.ShapeDtypeStruct((batch, height, width, 3), jnp.uint8)
  return jax.export.export(jax.jit(serving_fn(estimator)), platforms=platforms)(spec)


def export_metadata(estimator, batch_size=None):
  """What a server needs beside the artefact: input size, keypoints, codec, outputs."""
  config, codec = estimator.config, estimator.codec
  return {
      "input_size": list(estimator.input_size),            # (height, width)
      "input": "crops (B, H, W, 3) uint8 RGB 0-255, made as geometry.udp_affine_matrix "
               "(UDP codec) or geometry.affine_matrix of the box (1.25 padding)",
      "batch_size": batch_size if batch_size is not None else "symbolic",
      "heatmap_size": list(codec.heatmap_size),
      "keypoint_names": list(estimator.info.keypoint_names),
      "flip_indices": list(estimator.info.flip_indices),
      "skeleton": [list(link) for link in estimator.info.skeleton],
      "codec": config.data.codec,
      "codec_scale": [float(s) for s in codec.scale],        # input px per heatmap cell
      "flip_test": estimator.flip_test,
      "outputs": {"heatmaps": "(B, h, w, K) float32",
                  "keypoints": "(B, K, 2) float32 input px at the argmax cell "
                               "(no sub-cell refinement)",
                  "scores": "(B, K) float32 heatmap maxima"},
      "model": json.loads(config.model.to_json_best_effort()),
      "jax_version": jax.__version__,
  }


def save_exported(exported, metadata, directory):
  """Writes directory/model.jax_exported and directory/model.json; returns both paths."""
  os.makedirs(directory, exist_ok=True)
  artefact = os.path.join(directory, "model.jax_exported")
  with open(artefact, "wb") as f:
    f.write(exported.serialize())
  meta_path = os.path.join(directory, "model.json")
  with open(meta_path, "w", encoding="utf-8") as f:
    json.dump({**metadata, "platforms": list(exported.platforms)}, f, indent=1)
  return artefact, meta_path


def load_exported(path):
  """A serialised model.jax_exported (or its folder) -> jax.export.Exported.

  `exported.call(crops)` runs it: no model code needed.
  """
  if os.path.isdir(path):
    path = os.path.join(path, "model.jax_exported")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"exported model not found: {path}")
  with open(path, "rb") as f:
    return jax.export.deserialize(bytearray(f.read()))
