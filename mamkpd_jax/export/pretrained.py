"""Weights you can ship: DIR/model.safetensors + DIR/model.json, read without the
training stack (no checkpoint manager, optimiser or training loop).

    mamkpd export --checkpoint=WORKDIR --output=DIR --format=safetensors
    estimator = inference.Estimator.from_pretrained(DIR)

model.safetensors holds the model's parameters and BatchNorm running statistics
(nnx.Param, nnx.BatchStat), each named by its '/'-joined NNX state path
("decoder/bn1/mean", "encoder/layers/0/blocks/0/ss2d/A_logs"), as trained (float32);
nothing of the optimiser. model.json holds what rebuilds the model and its pre- and
post-processing: the family (config.model.name), variant, input size, keypoint layout
(names, skeleton, flip pairs, OKS sigmas), codec, input normalisation, and the config
subtrees the Estimator reads (model, data, eval), from which everything is rebuilt.

Loading builds the model's structure from config.model (models.abstract_model: no
initialisation for MamKPD), checks every tensor's presence and shape by name, and
fills it in; a missing, extra or misshapen tensor is a ValueError naming it.
"""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import safetensors
import safetensors.numpy
from flax import nnx

from mamkpd_jax import config_lib
from mamkpd_jax.data_pipelines import metadata, pipeline
from mamkpd_jax.models import abstract_model, common, parse_model_config

FORMAT = "mamkpd-jax-pretrained"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "model.json"
SAVED_TYPES = (nnx.Param, nnx.BatchStat)     # what a shipped model needs to run
CONFIG_SECTIONS = ("model", "data", "eval")   # the config subtrees the Estimator reads


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


def metadata_of(config, info):
  """model.json's content for a config (its model, data, eval) and keypoint layout."""
  config = config.copy_and_resolve_references()
  codec = pipeline.make_codec(config)
  return {
      "format": FORMAT,
      "format_version": FORMAT_VERSION,
      "family": config.model.name,
      "variant": config.model.variant,
      "input_size": list(pipeline.input_size(config)),              # (height, width)
      "heatmap_size": list(codec.heatmap_size),
      "dataset": info.name,
      "keypoint_names": list(info.keypoint_names),
      "skeleton": [list(link) for link in info.skeleton],
      "flip_indices": list(info.flip_indices),
      "flip_pairs": [[info.keypoint_names[a], info.keypoint_names[b]]
                     for a, b in info.flip_pairs],
      "sigmas": [float(s) for s in info.sigmas],
      "upper_body_ids": list(info.upper_body_ids),
      "lower_body_ids": list(info.lower_body_ids),
      "codec": {"name": config.data.codec, "sigma": config.data.sigma},
      "normalisation": {"input": "RGB 0-255", "mean": list(common.PIXEL_MEAN),
                        "std": list(common.PIXEL_STD)},
      "config": {section: json.loads(config[section].to_json_best_effort())
                 for section in CONFIG_SECTIONS},
  }


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
  os.makedirs(directory, exist_ok=True)
  meta = metadata_of(config, info)
  if provenance:
    meta["trained_from"] = provenance
  tensors = model_tensors(model)
  safetensors.numpy.save_file(tensors, weights_path,
                              metadata={"format": FORMAT, "family": meta["family"],
                                        "variant": meta["variant"]})
  with open(meta_path, "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
  return weights_path, meta_path


# ------------------------------------------------------------------ reading


def load_metadata(directory):
  """DIR/model.json, checked to be this format -> dict."""
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"pretrained model folder not found: {directory}")
  path = os.path.join(directory, METADATA_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found (a pretrained folder holds {METADATA_FILE} "
                            f"and {WEIGHTS_FILE}: mamkpd export --format=safetensors)")
  try:
    with open(path, encoding="utf-8") as f:
      meta = json.load(f)
  except json.JSONDecodeError as error:
    raise ValueError(f"{path}: not valid json ({error})") from error
  if not isinstance(meta, dict) or meta.get("format") != FORMAT:
    raise ValueError(f"{path}: not a {FORMAT} file (format "
                     f"{meta.get('format') if isinstance(meta, dict) else None!r}); "
                     "a jax.export model.json is read by serving.load_exported")
  if meta.get("format_version", 0) > FORMAT_VERSION:
    raise ValueError(f"{path}: format_version {meta['format_version']} is newer than this "
                     f"code's {FORMAT_VERSION}; update mamkpd-jax")
  missing = [key for key in ("config", "keypoint_names", "flip_indices", "sigmas")
             if key not in meta]
  if missing or any(section not in meta["config"] for section in CONFIG_SECTIONS):
    raise ValueError(f"{path}: missing {missing or 'config sections'}; expected "
                     f"config.{{{', '.join(CONFIG_SECTIONS)}}}")
  return meta


def config_of(meta):
  """model.json -> a ConfigDict with the model, data and eval sections."""
  return ml_collections.ConfigDict(config_lib.lists_to_tuples(meta["config"]))


def info_of(meta):
  """model.json -> the keypoint layout (metadata.DatasetInfo), validated."""
  return metadata.DatasetInfo(
      name=meta.get("dataset", "pretrained"), keypoint_names=tuple(meta["keypoint_names"]),
      flip_indices=tuple(meta["flip_indices"]), sigmas=np.asarray(meta["sigmas"], np.float32),
      skeleton=tuple(tuple(link) for link in meta.get("skeleton", ())),
      upper_body_ids=tuple(meta.get("upper_body_ids", ())),
      lower_body_ids=tuple(meta.get("lower_body_ids", ())))


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
