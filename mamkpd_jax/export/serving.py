"""Serving with `jax.export`: crops -> heatmaps (and argmax keypoints), parameters baked in.

`export_forward` serialises the estimator's forward; `load_exported` reads it back without
any model code.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mamkpd_jax import kernels
from mamkpd_jax.inference.estimator import Estimator, with_model_changes
from mamkpd_jax.models import forward_with_flip


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
