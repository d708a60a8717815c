"""The one metadata schema of every model file we write: a weights folder's model.json,
a jax.export folder's model.json and an ONNX file's metadata_props["mamkpd"].

A model file's metadata says what the artefact is and everything needed to feed it and
read its outputs, without model code:

    {"format": "mamkpd-jax-model", "format_version": 2,
     "artefact": {"kind": "weights" | "jax_export" | "onnx", ...kind's extras},
     "family", "variant", "input_size" [H, W], "heatmap_size" [h, w], "flip_test",
     "dataset", "keypoint_names", "skeleton", "flip_indices", "flip_pairs", "sigmas",
     "upper_body_ids", "lower_body_ids",
     "codec": {"name", "sigma", "scale" [sx, sy] input px per heatmap cell},
     "normalisation": {"input", "mean", "std"},
     "config": {"model", "data", "eval"},    # the config subtrees the Estimator reads
     "trained_from": {...}}                  # optional provenance

The artefact's extras: weights {"file"}; jax_export {"file", "batch_size" (an int or
"symbolic"), "platforms", "input", "outputs", "jax_version"}; onnx {the same, less
"platforms", plus "onnx_opset", "jax2onnx_version"}.

`read` and `validate` accept the older files too and return them in this schema:
format_version 1 ("mamkpd-jax-pretrained", weights folders such as
weights/mamkpd_tiny_openfield) and the unversioned jax.export / ONNX metadata (no
"format" field; its config holds the model section only). Any other content is a
ValueError naming the file and the field.
"""

import json
import os

import ml_collections
import numpy as np

from mamkpd_jax import config_lib
from mamkpd_jax.data_pipelines import codecs, pipeline
from mamkpd_jax.data_pipelines import metadata as dataset_metadata
from mamkpd_jax.models import common

FORMAT = "mamkpd-jax-model"
FORMAT_VERSION = 2
PRETRAINED_V1 = "mamkpd-jax-pretrained"      # format_version 1: weights folders only
FILE = "model.json"                          # beside a weights or jax.export artefact
WEIGHTS_FILE = "model.safetensors"           # a weights folder's parameters
JAX_EXPORT_FILE = "model.jax_exported"       # a jax.export folder's artefact
KINDS = ("weights", "jax_export", "onnx")
CONFIG_SECTIONS = ("model", "data", "eval")  # the config subtrees the Estimator reads
OUTPUTS = {"heatmaps": "(B, h, w, K) float32",
           "keypoints": "(B, K, 2) float32 input px at the argmax cell "
                        "(no sub-cell refinement)",
           "scores": "(B, K) float32 heatmap maxima"}
SERVING_INPUT = ("crops (B, H, W, 3) uint8 RGB 0-255, made as geometry.udp_affine_matrix "
                 "(UDP codec) or geometry.affine_matrix of the box (1.25 padding)")


# ------------------------------------------------------------------ writing


def describe(config, info, artefact):
  """The metadata of a model of `config` with keypoint layout `info` (DatasetInfo).

  artefact: {"kind": one of KINDS, ...its extras} (module docstring).
  """
  config = config.copy_and_resolve_references()
  codec = pipeline.make_codec(config)
  return validate({
      "format": FORMAT,
      "format_version": FORMAT_VERSION,
      "artefact": dict(artefact),
      "family": config.model.name,
      "variant": config.model.variant,
      "input_size": list(pipeline.input_size(config)),              # (height, width)
      "heatmap_size": list(codec.heatmap_size),
      "flip_test": bool(config.eval.flip_test),
      "dataset": info.name,
      "keypoint_names": list(info.keypoint_names),
      "skeleton": [list(link) for link in info.skeleton],
      "flip_indices": list(info.flip_indices),
      "flip_pairs": _flip_pairs(info),
      "sigmas": [float(s) for s in info.sigmas],
      "upper_body_ids": list(info.upper_body_ids),
      "lower_body_ids": list(info.lower_body_ids),
      "codec": {"name": config.data.codec, "sigma": float(config.data.sigma),
                "scale": [float(s) for s in codec.scale]},
      "normalisation": {"input": "RGB 0-255", "mean": list(common.PIXEL_MEAN),
                        "std": list(common.PIXEL_STD)},
      "config": {section: json.loads(config[section].to_json_best_effort())
                 for section in CONFIG_SECTIONS},
  }, "metadata being written")


def of_estimator(estimator, artefact):
  """describe() of an inference.Estimator, however it was loaded."""
  return describe(estimator.config, estimator.info, artefact)


def serving_artefact(kind, file, batch_size, **extras):
  """The artefact section of a serving file (jax_export, onnx): crops in, OUTPUTS out."""
  return {"kind": kind, "file": file,
          "batch_size": "symbolic" if batch_size is None else int(batch_size),
          "input": SERVING_INPUT, "outputs": dict(OUTPUTS), **extras}


def write(meta, directory):
  """directory/model.json of `meta` (validated first); returns its path."""
  path = os.path.join(directory, FILE)
  meta = validate(meta, path)
  os.makedirs(directory, exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
  return path


# ------------------------------------------------------------------ reading


def read(path):
  """A model.json (or the folder holding one) -> its metadata in this schema."""
  if os.path.isdir(path):
    path = os.path.join(path, FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found")
  with open(path, encoding="utf-8") as f:
    return loads(f.read(), path)


def loads(text, source):
  """JSON text (a model.json, an ONNX file's metadata_props) -> its metadata in this
  schema; source names it in errors."""
  try:
    meta = json.loads(text)
  except json.JSONDecodeError as error:
    raise ValueError(f"{source}: not valid json ({error})") from error
  return validate(meta, source)


def validate(meta, source):
  """meta (any supported version) -> a new dict in this schema, checked field by field.

  source names the file in errors ("weights/x/model.json: field 'input_size' ...").
  """
  if not isinstance(meta, dict):
    raise ValueError(f"{source}: expected a json object, got {type(meta).__name__}")
  meta = upgrade(meta, source)
  kind = _field(meta, source, "artefact", dict).get("kind")
  if kind not in KINDS:
    raise ValueError(f"{source}: field 'artefact.kind' must be one of {KINDS}, got {kind!r}")
  for name in ("family", "variant"):
    _field(meta, source, name, str)
  for name in ("input_size", "heatmap_size"):
    size = _field(meta, source, name, list)
    if len(size) != 2 or not all(_is_int(s) and s > 0 for s in size):
      raise ValueError(f"{source}: field {name!r} must be [height, width] positive "
                       f"ints, got {size!r}")
  _field(meta, source, "flip_test", bool)
  codec = _field(meta, source, "codec", dict)
  if not isinstance(codec.get("name"), str):
    raise ValueError(f"{source}: field 'codec.name' must be a string, got "
                     f"{codec.get('name')!r}")
  config = _field(meta, source, "config", dict)
  needed = CONFIG_SECTIONS if kind == "weights" else ("model",)   # the Estimator's needs
  for section in needed:
    if not isinstance(config.get(section), dict):
      raise ValueError(f"{source}: field 'config.{section}' is missing (a {kind} file "
                       f"needs config.{{{', '.join(needed)}}})")
  _field(meta, source, "keypoint_names", list)
  _field(meta, source, "flip_indices", list)
  if kind == "weights":
    _field(meta, source, "sigmas", list)
  try:
    info = info_of(meta)         # DatasetInfo checks names, flips, skeleton, sigmas
  except (TypeError, ValueError) as error:
    raise ValueError(f"{source}: keypoint layout (fields 'keypoint_names', "
                     f"'flip_indices', 'skeleton', 'sigmas'): {error}") from error
  meta.setdefault("flip_pairs", _flip_pairs(info))
  return meta


def upgrade(meta, source):
  """meta of any supported version -> a new dict of this version (not yet validated)."""
  fmt, version = meta.get("format"), meta.get("format_version")
  if fmt == FORMAT:
    if not _is_int(version) or version < 2:
      raise ValueError(f"{source}: field 'format_version' must be an int >= 2 for "
                       f"{FORMAT!r}, got {version!r}")
    if version > FORMAT_VERSION:
      raise ValueError(f"{source}: format_version {version} is newer than this code's "
                       f"{FORMAT_VERSION}; update mamkpd-jax")
    return dict(meta)
  if fmt == PRETRAINED_V1:
    if version != 1:
      raise ValueError(f"{source}: {PRETRAINED_V1!r} files have format_version 1, got "
                       f"{version!r}")
    return _from_pretrained_v1(meta)
  if fmt is None and all(key in meta for key in ("keypoint_names", "model", "input_size")):
    return _from_serving_v0(meta)
  raise ValueError(f"{source}: field 'format' is {fmt!r}, not {FORMAT!r}: not a "
                   "mamkpd-jax model file")


def _from_pretrained_v1(meta):
  """A weights folder's model.json of format_version 1: the same fields, less the
  artefact section, the flip test (in config.eval) and the codec's scale."""
  new = {key: value for key, value in meta.items() if key != "format_version"}
  config = meta.get("config")
  new.update(format=FORMAT, format_version=FORMAT_VERSION,
             artefact={"kind": "weights", "file": WEIGHTS_FILE})
  if isinstance(config, dict) and isinstance(config.get("eval"), dict):
    new.setdefault("flip_test", bool(config["eval"].get("flip_test", False)))
  codec = meta.get("codec")
  if isinstance(codec, dict) and codec.get("name") in codecs.CODECS and _sizes(meta):
    scale = codecs.make_codec(codec["name"], *_sizes(meta), codec.get("sigma", 2.0)).scale
    new["codec"] = {**codec, "scale": [float(s) for s in scale]}
  return new


def _from_serving_v0(meta):
  """The unversioned metadata of jax.export folders and ONNX files: flat extras,
  "codec" a name beside "codec_scale", the model config alone."""
  onnx = "onnx_opset" in meta
  extras = ("batch_size", "input", "outputs", "jax_version") + (
      ("onnx_opset", "jax2onnx_version") if onnx else ("platforms",))
  artefact = {"kind": "onnx" if onnx else "jax_export",
              "file": "model.onnx" if onnx else JAX_EXPORT_FILE,
              **{key: meta[key] for key in extras if key in meta}}
  model = meta["model"]
  new = {"format": FORMAT, "format_version": FORMAT_VERSION, "artefact": artefact,
         "family": model.get("name") if isinstance(model, dict) else None,
         "variant": model.get("variant") if isinstance(model, dict) else None,
         "config": {"model": model}}
  for key in ("input_size", "heatmap_size", "flip_test", "keypoint_names", "skeleton",
              "flip_indices"):
    if key in meta:
      new[key] = meta[key]
  new["codec"] = {"name": meta.get("codec")}
  if "codec_scale" in meta:
    new["codec"]["scale"] = meta["codec_scale"]
  return new


# ------------------------------------------------------------------ what readers need


def config_of(meta):
  """A weights file's metadata -> a ConfigDict with its model, data and eval sections."""
  return ml_collections.ConfigDict(config_lib.lists_to_tuples(meta["config"]))


def info_of(meta):
  """Metadata -> the keypoint layout (data_pipelines.metadata.DatasetInfo), validated.
  Older serving files hold no OKS sigmas: theirs are placeholders (1.0), not for OKS."""
  names = meta.get("keypoint_names")
  sigmas = meta.get("sigmas")
  if sigmas is None and isinstance(names, list):
    sigmas = [1.0] * len(names)
  return dataset_metadata.DatasetInfo(
      name=meta.get("dataset") or "pretrained", keypoint_names=tuple(names),
      flip_indices=tuple(meta.get("flip_indices")),
      sigmas=np.asarray(sigmas, np.float32),
      skeleton=tuple(tuple(link) for link in meta.get("skeleton") or ()),
      upper_body_ids=tuple(meta.get("upper_body_ids") or ()),
      lower_body_ids=tuple(meta.get("lower_body_ids") or ()))


# ------------------------------------------------------------------ helpers


def _field(meta, source, name, kind):
  """meta[name], which must be a `kind`; else a ValueError naming source and field."""
  if name not in meta:
    raise ValueError(f"{source}: field {name!r} is missing")
  value = meta[name]
  if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
    raise ValueError(f"{source}: field {name!r} must be a {kind.__name__}, got {value!r}")
  return value


def _is_int(value):
  return isinstance(value, int) and not isinstance(value, bool)


def _flip_pairs(info):
  """[[left name, right name], ...] of a DatasetInfo's flip pairs."""
  return [[info.keypoint_names[a], info.keypoint_names[b]] for a, b in info.flip_pairs]


def _sizes(meta):
  """(input_size, heatmap_size) as (h, w) tuples when both are pairs, else None."""
  sizes = meta.get("input_size"), meta.get("heatmap_size")
  ok = all(isinstance(s, list) and len(s) == 2 and all(_is_int(v) and v > 0 for v in s)
           for s in sizes)
  return tuple(tuple(s) for s in sizes) if ok else None

