"""Weights you can ship: DIR/model.safetensors + DIR/model.json, read without the
training stack (no checkpoint manager, optimiser or training loop).

    mamkpd export --checkpoint=WORKDIR --output=DIR --format=safetensors
    estimator = inference.Estimator.from_pretrained(DIR)

model.safetensors holds the model's parameters and BatchNorm running statistics
(nnx.Param, nnx.BatchStat), each named by its '/'-joined NNX state path
("decoder/bn1/mean", "encoder/layers/0/blocks/0/ss2d/A_logs"), as trained (float32);
nothing of the optimiser. model.json is export.metadata's schema (artefact kind
"weights"): what rebuilds the model and its pre- and post-processing (family, variant,
input size, keypoint layout, codec, normalisation, and the config subtrees the Estimator
reads: model, data, eval). Older folders (format_version 1) load as they are.

Loading builds the model's structure from config.model (models.abstract_model: no
initialisation for MamKPD), checks every tensor's presence and shape by name, and
fills it in; a missing, extra or misshapen tensor is a ValueError naming it.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
from flax import nnx

from mamkpd_jax.export import metadata
from mamkpd_jax.models import abstract_model, parse_model_config

KIND = "weights"                             # model.json's artefact.kind
WEIGHTS_FILE = metadata.WEIGHTS_FILE
METADATA_FILE = metadata.FILE
SAVED_TYPES = (nnx.Param, nnx.BatchStat)     # what a shipped model needs to run


# ------------------------------------------------------------------ names <-> nested state


def _flatten(tree, prefix=""):
  """A nested dict (nnx.to_pure_dict) -> {'/'-joined path: leaf}."""
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(_flatten(value, name + "/"))
    else:
      flat[name] = value
  return flat


def _unflatten_like(tree, tensors, prefix=""):
  """tree's nesting with each leaf replaced by tensors['/'-joined path]."""
  return {key: (_unflatten_like(value, tensors, f"{prefix}{key}/")
                if isinstance(value, dict) else tensors[f"{prefix}{key}"])
          for key, value in tree.items()}


def model_tensors(model):
  """{name: (...) float32 numpy} of the model's parameters and batch statistics."""
  state = nnx.state(model, nnx.Any(*SAVED_TYPES))
  return {name: np.asarray(value) for name, value in _flatten(nnx.to_pure_dict(state)).items()}


# ------------------------------------------------------------------ writing


def save_pretrained(config, info, model, directory, provenance=None):
  """Writes DIR/model.safetensors and DIR/model.json; returns both paths.

  provenance: optional json-ready dict stored as model.json's "trained_from"
  (checkpoint, step, ...). Existing files are never overwritten (FileExistsError).
  """
  weights_path = os.path.join(directory, WEIGHTS_FILE)
  meta_path = os.path.join(directory, METADATA_FILE)
  for path in (weights_path, meta_path):
    if os.path.exists(path):
      raise FileExistsError(f"{path} exists; export into a new folder (nothing is "
                            "overwritten)")
  meta = metadata.describe(config, info, {"kind": KIND, "file": WEIGHTS_FILE})
  if provenance:
    meta["trained_from"] = provenance
  os.makedirs(directory, exist_ok=True)
  safetensors.numpy.save_file(model_tensors(model), weights_path,
                              metadata={"format": metadata.FORMAT,
                                        "format_version": str(metadata.FORMAT_VERSION),
                                        "family": meta["family"], "variant": meta["variant"]})
  return weights_path, metadata.write(meta, directory)


# ------------------------------------------------------------------ reading


def load_metadata(directory):
  """DIR/model.json of a weights folder, in the current schema (export.metadata reads
  older versions too) -> dict."""
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"pretrained model folder not found: {directory}")
  path = os.path.join(directory, METADATA_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found (a pretrained folder holds {METADATA_FILE} "
                            f"and {WEIGHTS_FILE}: mamkpd export --format=safetensors)")
  meta = metadata.read(path)
  kind = meta["artefact"]["kind"]
  if kind != KIND:
    raise ValueError(f"{path}: describes a {kind} artefact, not {KIND} (a jax.export "
                     "folder is read by serving.load_exported)")
  return meta


config_of = metadata.config_of      # model.json -> ConfigDict (model, data, eval)
info_of = metadata.info_of          # model.json -> DatasetInfo


def read_tensors(path):
  """{name: numpy array} of a .safetensors file; clear errors for missing or bad files."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found (mamkpd export --format=safetensors "
                            "writes it)")
  try:
    return safetensors.numpy.load_file(path)
  except (safetensors.SafetensorError, OSError, ValueError) as error:
    raise ValueError(f"{path}: not a readable safetensors file ({error})") from error


def _checked(tensors, expected, path):
  """tensors cast to expected's dtypes; ValueError naming missing, extra, misshapen ones.

  expected: {name: jax.ShapeDtypeStruct or array} of the model being filled.
  """
  missing = sorted(set(expected) - set(tensors))
  extra = sorted(set(tensors) - set(expected))
  if missing or extra:
    raise ValueError(f"{path} does not match the model of its model.json: "
                     + "; ".join(part for part in (
                         f"missing tensors {missing[:5]}" + (" ..." if len(missing) > 5 else "")
                         if missing else "",
                         f"unexpected tensors {extra[:5]}" + (" ..." if len(extra) > 5 else "")
                         if extra else "") if part))
  checked = {}
  for name, want in expected.items():
    got = tensors[name]
    if tuple(got.shape) != tuple(want.shape):
      raise ValueError(f"{path}: tensor {name!r} has shape {tuple(got.shape)}, the model "
                       f"needs {tuple(want.shape)}")
    checked[name] = np.asarray(got, want.dtype)
  return checked


def _concrete(leaf):
  """Abstract RNG state (eval_shape) made concrete: a fixed key, zero counts.
  In inference mode nothing draws from it (no dropout, no drop path)."""
  if not isinstance(leaf, jax.ShapeDtypeStruct):
    return leaf
  if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    return jax.random.key(0)
  return jnp.zeros(leaf.shape, leaf.dtype)


def load_model(config_model, weights_path):
  """The model of config_model with the tensors of weights_path (module docstring)."""
  model = abstract_model(parse_model_config(config_model))
  graphdef, saved, rest = nnx.split(model, nnx.Any(*SAVED_TYPES), ...)
  structure = nnx.to_pure_dict(saved)
  tensors = _checked(read_tensors(weights_path), _flatten(structure), weights_path)
  nnx.replace_by_pure_dict(saved, _unflatten_like(structure, tensors))
  return nnx.merge(graphdef, saved, jax.tree.map(_concrete, rest))
