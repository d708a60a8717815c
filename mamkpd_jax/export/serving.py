"""Serving with `jax.export`: crops -> heatmaps (and argmax keypoints), parameters baked in.

`export_forward` serialises the estimator's forward; `save_exported` writes it beside its
model.json (export.metadata's schema, artefact kind "jax_export"); `load_exported` reads it
back without any model code.
"""

import os

import jax
import jax.numpy as jnp

from mamkpd_jax import kernels
from mamkpd_jax.evaluation import decode
from mamkpd_jax.export import metadata
from mamkpd_jax.inference.estimator import Estimator, with_model_changes
from mamkpd_jax.models import common

KIND = "jax_export"                    # model.json's artefact.kind
ARTEFACT_FILE = metadata.JAX_EXPORT_FILE


def serving_fn(estimator):
  """crops (B, H, W, 3) uint8 -> {"heatmaps" (B, h, w, K) flip-averaged as configured,
  "keypoints" (B, K, 2) input px at the argmax cell, "scores" (B, K)}: the Estimator's
  forward pass and evaluation.decode's argmax step; parameters are closed over
  (constants once exported). decode.to_image on "heatmaps" gives the refined keypoints."""
  cell_scale = estimator.codec.scale

  def serve(crops):
    heatmaps = estimator.forward_heatmaps(crops)                  # (B, h, w, K)
    keypoints, scores = decode.argmax_keypoints(heatmaps, cell_scale)
    return {"heatmaps": heatmaps, "keypoints": keypoints, "scores": scores}

  return serve


def export_forward(estimator, batch_size=None, platforms=None):
  """`serving_fn(estimator)` as a jax.export.Exported.

  batch_size None: a symbolic batch dimension "b" (any batch, recompiled per size by
  the caller's JAX; needs a pure-JAX scan, kernels.PURE_JAX_IMPLS); an int: that batch only.
  The CPU kernels are custom calls of this process: the artefact gets the same math in
  pure JAX, the chunked scan for "cpu_ffi" (what "auto" picks on a CPU) and the shifted-sum
  depth-wise convs (models.common.depthwise_conv_mode).
  platforms: e.g. ("cpu", "cuda"); default the current backend.
  """
  height, width = estimator.input_size
  scan_impl = estimator.model.config.scan_impl
  if kernels.portable_impl(scan_impl) != kernels.resolve_impl(scan_impl):
    portable = with_model_changes(estimator.model, scan_impl=kernels.portable_impl(scan_impl))
    estimator = Estimator(estimator.config, portable, estimator.info)
  if batch_size is None:
    batch = jax.export.symbolic_shape("b")[0]
  else:
    batch = int(batch_size)
  spec = jax.ShapeDtypeStruct((batch, height, width, 3), jnp.uint8)
  with common.depthwise_conv_mode("shifted"):
    return jax.export.export(jax.jit(serving_fn(estimator)), platforms=platforms)(spec)


def export_metadata(estimator, batch_size=None):
  """model.json's content (export.metadata's schema, artefact kind "jax_export") for the
  estimator's artefact; save_exported adds the platforms it was exported for."""
  return metadata.of_estimator(estimator, metadata.serving_artefact(
      KIND, ARTEFACT_FILE, batch_size, jax_version=jax.__version__))


def save_exported(exported, meta, directory):
  """Writes directory/model.jax_exported and directory/model.json; returns both paths.

  meta: export_metadata(...) of the exported estimator (checked before anything is
  written); the artefact's platforms are added to it.
  """
  meta = metadata.validate(meta, os.path.join(directory, metadata.FILE))
  if meta["artefact"]["kind"] != KIND:
    raise ValueError(f"save_exported: metadata describes a {meta['artefact']['kind']} "
                     f"artefact, not {KIND} (use export_metadata)")
  meta["artefact"] = {**meta["artefact"], "platforms": list(exported.platforms)}
  os.makedirs(directory, exist_ok=True)
  artefact = os.path.join(directory, ARTEFACT_FILE)
  with open(artefact, "wb") as f:
    f.write(exported.serialize())
  return artefact, metadata.write(meta, directory)


def load_metadata(path):
  """model.json beside a model.jax_exported (the folder or the artefact's path), in the
  current schema; older folders' files are read too (export.metadata)."""
  folder = path if os.path.isdir(path) else os.path.dirname(path)
  return metadata.read(os.path.join(folder, metadata.FILE))


def load_exported(path):
  """A serialised model.jax_exported (or its folder) -> jax.export.Exported.

  `exported.call(crops)` runs it: no model code needed.
  """
  if os.path.isdir(path):
    path = os.path.join(path, ARTEFACT_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"exported model not found: {path}")
  with open(path, "rb") as f:
    return jax.export.deserialize(bytearray(f.read()))
