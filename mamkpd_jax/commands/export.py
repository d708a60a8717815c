"""`mamkpd export`: a trained model (MamKPD or HRVMamba) as shippable weights
(--format=safetensors), for serving with `jax.export` (--format=jax, the default: no
model code needed to run it) or as ONNX (--format=onnx).

    mamkpd export --checkpoint=/tmp/sample_openfield --output=/tmp/exported
    mamkpd export --checkpoint=/tmp/coco_large --output=/tmp/exported \\
        --platforms=cpu,cuda --batch_size=32
    mamkpd export --checkpoint=/tmp/sample_openfield --output=/tmp/weights \\
        --format=safetensors
    mamkpd export --weights=weights/mamkpd_tiny_openfield --output=/tmp/onnx --format=onnx

The model comes from a training checkpoint (--checkpoint: a workdir, its checkpoints/
folder or a step folder; --config instead of the workdir's config.json) or from shipped
weights (--weights: a folder of model.safetensors + model.json); every format takes
either.

--format=safetensors writes OUTPUT/model.safetensors (parameters and batch statistics
by '/'-joined state path, no optimiser) and OUTPUT/model.json (family, variant, input
size, keypoints, skeleton, flip pairs, codec, normalisation, the model/data/eval config;
export.metadata's schema, artefact kind "weights"):
`inference.Estimator.from_pretrained(OUTPUT)` loads them without Orbax or the training
code (mamkpd_jax.export.pretrained). With --check the reloaded estimator's heatmaps are
compared with the checkpoint's on random crops.

--format=jax writes OUTPUT/model.jax_exported (`Exported.serialize()`, StableHLO with the parameters
as constants) and OUTPUT/model.json (export.metadata's schema, artefact kind "jax_export":
input size, keypoint names, flip indices, skeleton, codec, outputs). The exported function takes crops (B, H, W, 3) uint8 RGB, warped from
their boxes as the estimator does (mamkpd_jax.inference), and returns a dict:
"heatmaps" (B, h, w, K) float32 (flip-averaged when the config's eval.flip_test),
"keypoints" (B, K, 2) input pixels at each heatmap's argmax cell (no sub-cell
refinement: run the codec's decode on the heatmaps for that) and "scores" (B, K).

Batch: --batch_size=0 (default) exports a symbolic batch dimension: one artefact for
every batch size (the runtime compiles each size it sees). It needs a pure-JAX scan
(kernels.PURE_JAX_IMPLS; "auto" and "cpu_ffi", the CPU kernel, export as "chunked");
with --scan_impl=pallas give a fixed --batch_size. The function is traced on this
machine's backend, which picks some implementations (on a CPU, depthwise convolutions
are written as shifted sums and a Pallas scan is interpreted): --platforms=cpu,cuda
from a CPU gives an artefact that runs on a GPU correctly but not at GPU speed, so
export on the kind of machine that will serve. Load and run it anywhere with JAX (same
or newer version, a listed platform):

    from jax import export
    exported = export.deserialize(bytearray(open("model.jax_exported", "rb").read()))
    outputs = exported.call(crops)   # or mamkpd_jax.export.serving.load_exported(path)

Serialising needs the `flatbuffers` package (jax imports it for Exported.serialize).

--format=onnx writes OUTPUT/model.onnx instead (mamkpd_jax/export/onnx_export.py: the same
serving function converted by jax2onnx with scan_impl "onnx", metadata inside; needs
`pip install -e ".[onnx]" && pip install --no-deps jax2onnx`):

    mamkpd export --checkpoint=/tmp/sample_openfield --output=/tmp/onnx --format=onnx

--onnx_quantize=int8 (with --format=onnx) makes the wide matmuls int8 in ONNX Runtime
(opt-in: faster on a CPU with int8 dot products, slightly less exact; docs/export.md);
the file's metadata records it (artefact.onnx_quantize).

From Python, `export(estimator, output_dir, format=...)` does the same with an
Estimator in hand; `main` only reads the flags.
"""

import functools
import os
import sys

import jax
import numpy as np
from absl import app, flags, logging

from mamkpd_jax import inference, kernels
from mamkpd_jax.benchmarking import timing
from mamkpd_jax.commands import model_flags
from mamkpd_jax.export import onnx_export, pretrained, serving
from mamkpd_jax.training import checkpointing

FLAGS = flags.FLAGS
FORMATS = ("jax", "safetensors", "onnx")


@functools.cache
def define_flags():
  """Defines `mamkpd export`'s flags; the cli calls it before parsing (see cli.py)."""
  model_flags.define_flags()
  flags.adopt_module_key_flags(model_flags)     # --checkpoint | --weights, --config
  flags.DEFINE_string("output", None, "Folder for model.jax_exported (or "
                      "model.safetensors, model.onnx) and model.json.")
  flags.DEFINE_enum("format", "jax", list(FORMATS), "jax: a jax.export artefact; "
                    "safetensors: weights for Estimator.from_pretrained; onnx: model.onnx "
                    "for ONNX Runtime.")
  flags.DEFINE_integer("batch_size", 0, "Fixed batch size; 0: symbolic batch.")
  flags.DEFINE_list("platforms", [], "Target platforms (cpu, cuda, tpu); default: this "
                    "machine's.")
  flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Computation dtype (default: "
                    "the config's).")
  flags.DEFINE_string("scan_impl", None, "Selective-scan implementation (default: the "
                      "config's).")
  flags.DEFINE_bool("check", True, "Reload the artefact and compare it with the model on "
                    "random crops.")
  flags.DEFINE_string("onnx_quantize", None, "--format=onnx only: int8 quantises the wide "
                      "matmuls' weights and activations (opt-in, less exact; "
                      "docs/export.md). Default: float32.")
  flags.mark_flags_as_required(["output"])


def random_crops(estimator, batch):
  """(batch, H, W, 3) uint8 random crops of the estimator's input size (seed 0)."""
  return timing.random_crops(batch, *estimator.input_size)


def max_heatmap_difference(estimator, heatmaps_of, batch=2):
  """Max |heatmaps_of(crops) - estimator's heatmaps| on `batch` random crops."""
  crops = random_crops(estimator, batch)
  return float(np.abs(np.asarray(heatmaps_of(crops)) - estimator.crop_heatmaps(crops)).max())


# ------------------------------------------------------------------ one function per format


def provenance_of(checkpoint=None, weights=None):
  """model.json's "trained_from" for weights exported from a checkpoint or re-exported
  from shipped weights (whose own "trained_from" is kept)."""
  if checkpoint:
    directory, step = checkpointing.resolve_checkpoint(checkpoint)
    return {"checkpoint": f"{directory}/{step}", "step": step}
  if weights:
    source = weights if os.path.isdir(weights) else os.path.join(inference.REPO_ROOT, weights)
    return {**pretrained.load_metadata(source).get("trained_from", {}), "weights": weights}
  return None


def export_safetensors(estimator, output_dir, provenance=None, check=True):
  """OUTPUT/model.safetensors + model.json (export.pretrained); returns (paths, max
  heatmap difference of the reloaded estimator, or None without check)."""
  config = estimator.config.copy_and_resolve_references()
  if config.data.root.startswith(inference.REPO_ROOT + os.sep):    # no local paths shipped
    config.data.root = os.path.relpath(config.data.root, inference.REPO_ROOT)
  paths = pretrained.save_pretrained(config, estimator.info, estimator.model, output_dir,
                                     provenance=provenance)
  if not check:
    return paths, None
  reloaded = inference.Estimator.from_pretrained(output_dir)
  return paths, max_heatmap_difference(estimator, reloaded.crop_heatmaps)


def export_jax(estimator, output_dir, batch_size=None, platforms=None, check=True):
  """OUTPUT/model.jax_exported + model.json (export.serving); returns (paths, exported
  platforms, max heatmap difference of the reloaded artefact, or None)."""
  scan_impl = kernels.portable_impl(estimator.config.model.scan_impl)
  if batch_size is None and scan_impl not in kernels.PURE_JAX_IMPLS:
    raise ValueError(f"a symbolic batch needs a pure-JAX scan {kernels.PURE_JAX_IMPLS}, "
                     f"not {scan_impl!r}; give --batch_size")
  exported = serving.export_forward(estimator, batch_size, tuple(platforms or ()) or None)
  paths = serving.save_exported(exported, serving.export_metadata(estimator, batch_size),
                                output_dir)
  diff = None
  if check and jax.export.default_export_platform() in exported.platforms:
    reloaded = serving.load_exported(paths[0])
    diff = max_heatmap_difference(estimator, lambda crops: reloaded.call(crops)["heatmaps"],
                                  batch_size or 2)
  return paths, tuple(exported.platforms), diff


def export_onnx(estimator, output_dir, batch_size=None, check=True, quantize=None):
  """OUTPUT/model.onnx (export.onnx_export, metadata inside; quantize: None or "int8");
  returns (path, max heatmap difference in ONNX Runtime, or None)."""
  os.makedirs(output_dir, exist_ok=True)
  path = os.path.join(output_dir, "model.onnx")
  onnx_export.export_onnx(estimator, path, batch_size, quantize=quantize)
  if not check:
    return path, None
  session = onnx_export.onnx_session(path)
  return path, max_heatmap_difference(
      estimator, lambda crops: onnx_export.run_onnx(session, crops)["heatmaps"],
      batch_size or 2)


def export(estimator, output_dir, format="jax", batch_size=None, platforms=None,  # pylint: disable=redefined-builtin
           check=True, provenance=None, onnx_quantize=None):
  """The estimator exported into output_dir as `format` (FORMATS), with a line per file
  printed; returns the written paths.

  batch_size: None for a symbolic (dynamic) batch (jax, onnx); platforms: jax.export
  targets (default this machine's); check: reload and compare heatmaps on random crops;
  provenance: safetensors' model.json "trained_from"; onnx_quantize: None or "int8"
  (onnx only)."""
  _check_onnx_quantize(onnx_quantize, format)
  if format == "safetensors":
    (weights, meta), diff = export_safetensors(estimator, output_dir, provenance, check)
    print(f"wrote {weights} ({os.path.getsize(weights) / 1e6:.2f} MB) and {meta}")
    _print_difference("reloaded", diff)
    return weights, meta
  if format == "onnx":
    path, diff = export_onnx(estimator, output_dir, batch_size, check, onnx_quantize)
    print(f"wrote {path} (batch {batch_size or 'dynamic'}, "
          f"{onnx_quantize or 'float32'})")
    _print_difference("onnxruntime", diff)
    return (path,)
  if format != "jax":
    raise ValueError(f"unknown export format {format!r}; expected one of {FORMATS}")
  (artefact, meta), exported_platforms, diff = export_jax(estimator, output_dir, batch_size,
                                                          platforms, check)
  print(f"wrote {artefact} and {meta} (platforms {', '.join(exported_platforms)}, "
        f"batch {batch_size or 'symbolic'})")
  _print_difference("reloaded", diff)
  return artefact, meta


def _check_onnx_quantize(onnx_quantize, format):  # pylint: disable=redefined-builtin
  """A ValueError naming --onnx_quantize when it is unknown or the format is not onnx."""
  if onnx_quantize not in onnx_export.QUANTIZE:
    raise ValueError(f"--onnx_quantize must be one of "
                     f"{[q for q in onnx_export.QUANTIZE if q]}, got {onnx_quantize!r}")
  if onnx_quantize is not None and format != "onnx":
    raise ValueError(f"--onnx_quantize={onnx_quantize} needs --format=onnx, not {format!r}")


def _print_difference(what, diff):
  if diff is not None:
    print(f"{what}: max |heatmap difference| to the model {diff:.3g}")


# ------------------------------------------------------------------ the command


def run(model, output_dir, format="jax", batch_size=None, platforms=None,  # pylint: disable=redefined-builtin
        check=True, onnx_quantize=None, **model_changes):
  """The command's work from plain values: model = (checkpoint, weights, config) as
  model_flags.ModelSource; **model_changes: dtype, scan_impl."""
  _check_onnx_quantize(onnx_quantize, format)       # before the model loads
  estimator = inference.load_estimator(*model, **model_changes)
  provenance = provenance_of(model.checkpoint, model.weights) \
      if format == "safetensors" else None
  return export(estimator, output_dir, format, batch_size, platforms, check, provenance,
                onnx_quantize)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  changes = {k: v for k, v in (("dtype", FLAGS.dtype), ("scan_impl", FLAGS.scan_impl))
             if v is not None}
  try:
    run(model_flags.model_source(FLAGS), FLAGS.output, FLAGS.format,
        FLAGS.batch_size or None, tuple(FLAGS.platforms), FLAGS.check,
        FLAGS.onnx_quantize or None, **changes)
  except (ValueError, FileNotFoundError, FileExistsError, ImportError,
          checkpointing.CheckpointMismatchError) as error:
    logging.error("%s", error)
    sys.exit(f"export: {error}")
