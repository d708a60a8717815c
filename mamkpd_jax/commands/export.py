"""`mamkpd export` (scripts/export.py): a trained model (MamKPD or HRVMamba) as shippable
weights (--format=safetensors) or for serving with `jax.export` (--format=jax, the
default: no model code needed to run it).

    mamkpd export --checkpoint=/tmp/sample_openfield --output=/tmp/exported
    mamkpd export --checkpoint=/tmp/coco_large --output=/tmp/exported \
        --platforms=cpu,cuda --batch_size=32
    mamkpd export --checkpoint=/tmp/sample_openfield --output=/tmp/weights \
        --format=safetensors

--format=safetensors writes OUTPUT/model.safetensors (parameters and batch statistics
by '/'-joined state path, no optimiser) and OUTPUT/model.json (family, variant, input
size, keypoints, skeleton, flip pairs, codec, normalisation, the model/data/eval config):
`inference.Estimator.from_pretrained(OUTPUT)` loads them without Orbax or the training
code (mamkpd_jax.export.pretrained). With --check the reloaded estimator's heatmaps are
compared with the checkpoint's on random crops.

--format=jax writes OUTPUT/model.jax_exported (`Exported.serialize()`, StableHLO with the parameters
as constants) and OUTPUT/model.json (input size, keypoint names, flip indices, skeleton,
codec, outputs). The exported function takes crops (B, H, W, 3) uint8 RGB, warped from
their boxes as the estimator does (mamkpd_jax.inference), and returns a dict:
"heatmaps" (B, h, w, K) float32 (flip-averaged when the config's eval.flip_test),
"keypoints" (B, K, 2) input pixels at each heatmap's argmax cell (no sub-cell
refinement: run the codec's decode on the heatmaps for that) and "scores" (B, K).

Batch: --batch_size=0 (default) exports a symbolic batch dimension: one artefact for
every batch size (the runtime compiles each size it sees). It needs a pure-JAX scan
("reference" or "chunked"; "auto" and "cpu_ffi", the CPU kernel, export as "chunked");
with --scan_impl=pallas give a fixed --batch_size. The function is traced on this
machine's backend, which picks some implementations (on a CPU, depthwise convolutions
are written as shifted sums and a Pallas scan is interpreted): --platforms=cpu,cuda
from a CPU gives an artefact that runs on a GPU correctly but not at GPU speed, so
export on the kind of machine that will serve. Load and run it anywhere with JAX (same
or newer version, a listed platform):

    from jax import export
    exported = export.deserialize(bytearray(open("model.jax_exported", "rb").read()))
    outputs = exported.call(crops)         # or mamkpd_jax.serving.load_exported(path)

Serialising needs the `flatbuffers` package (jax imports it for Exported.serialize).

--format=onnx writes OUTPUT/model.onnx instead (mamkpd_jax/export/onnx_export.py: the same
serving function converted by jax2onnx with scan_impl "onnx", metadata inside; needs
`pip install -e ".[onnx]" && pip install --no-deps jax2onnx`, README "Export to ONNX"):

    mamkpd export --checkpoint=/tmp/sample_openfield --output=/tmp/onnx --format=onnx
"""

import os
import sys

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from mamkpd_jax import inference, kernels
from mamkpd_jax.export import onnx_export, pretrained, serving
from mamkpd_jax.training import checkpointing

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A workdir, checkpoints/ folder or "
                                  "step folder.")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Optional configs/*.py file "
                                          "instead of the workdir's config.json.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for model.jax_exported (or "
                              "model.safetensors) and model.json.")
_FORMAT = flags.DEFINE_enum("format", "jax", ["jax", "safetensors", "onnx"], "jax: a "
                            "jax.export artefact; safetensors: weights for "
                            "Estimator.from_pretrained; onnx: model.onnx for ONNX Runtime.")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Fixed batch size; 0: symbolic batch.")
_PLATFORMS = flags.DEFINE_list("platforms", [], "Target platforms (cpu, cuda, tpu); "
                               "default: this machine's.")
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Computation dtype "
                           "(default: the config's).")
_SCAN_IMPL = flags.DEFINE_string("scan_impl", None, "Selective-scan implementation "
                                 "(default: the config's).")
_CHECK = flags.DEFINE_bool("check", True, "Reload the artefact and compare it with the "
                           "model on random crops.")
flags.mark_flags_as_required(["checkpoint", "output"])


def check_roundtrip(estimator, path, batch):
  """Max |exported - estimator| heatmap difference on `batch` random crops."""
  crops = random_crops(estimator, batch)
  exported = serving.load_exported(path)
  got = np.asarray(exported.call(crops)["heatmaps"])
  return float(np.abs(got - estimator.crop_heatmaps(crops)).max())


def random_crops(estimator, batch):
  height, width = estimator.input_size
  return np.random.default_rng(0).integers(0, 256, (batch, height, width, 3), np.uint8)


def export_safetensors(estimator, checkpoint, output):
  """OUTPUT/model.safetensors + model.json; returns their paths."""
  checkpoint_directory, step = checkpointing.resolve_checkpoint(checkpoint)
  config = estimator.config.copy_and_resolve_references()
  if config.data.root.startswith(inference.REPO_ROOT + os.sep):    # no local paths shipped
    config.data.root = os.path.relpath(config.data.root, inference.REPO_ROOT)
  return pretrained.save_pretrained(
      config, estimator.info, estimator.model, output,
      provenance={"checkpoint": f"{checkpoint_directory}/{step}", "step": step})


def check_pretrained(estimator, directory, batch=2):
  """Max |from_pretrained - estimator| heatmap difference on `batch` random crops."""
  crops = random_crops(estimator, batch)
  reloaded = inference.Estimator.from_pretrained(directory)
  return float(np.abs(reloaded.crop_heatmaps(crops) - estimator.crop_heatmaps(crops)).max())


def export_onnx_format(estimator, batch):
  """--format=onnx: OUTPUT/model.onnx, checked in ONNX Runtime against the estimator."""
  os.makedirs(_OUTPUT.value, exist_ok=True)
  path = os.path.join(_OUTPUT.value, "model.onnx")
  onnx_export.export_onnx(estimator, path, batch)
  print(f"wrote {path} (batch {batch or 'dynamic'})")
  if _CHECK.value:
    crops = random_crops(estimator, batch or 2)
    got = onnx_export.run_onnx(onnx_export.onnx_session(path), crops)["heatmaps"]
    diff = float(np.abs(got - estimator.crop_heatmaps(crops)).max())
    print(f"onnxruntime: max |heatmap difference| to the model {diff:.3g}")


def run():
  changes = {k: v for k, v in (("dtype", _DTYPE.value), ("scan_impl", _SCAN_IMPL.value))
             if v is not None}
  estimator = inference.Estimator.from_workdir(_CHECKPOINT.value, config=_CONFIG.value,
                                               **changes)
  if _FORMAT.value == "safetensors":
    weights, meta = export_safetensors(estimator, _CHECKPOINT.value, _OUTPUT.value)
    print(f"wrote {weights} ({os.path.getsize(weights) / 1e6:.2f} MB) and {meta}")
    if _CHECK.value:
      diff = check_pretrained(estimator, _OUTPUT.value)
      print(f"reloaded: max |heatmap difference| to the model {diff:.3g}")
    return
  batch = _BATCH.value or None
  if _FORMAT.value == "onnx":
    return export_onnx_format(estimator, batch)
  scan_impl = kernels.portable_impl(estimator.config.model.scan_impl)
  if batch is None and scan_impl not in kernels.PURE_JAX_IMPLS:
    raise ValueError(f"a symbolic batch needs a pure-JAX scan {kernels.PURE_JAX_IMPLS}, "
                     f"not {scan_impl!r}; give --batch_size")
  exported = serving.export_forward(estimator, batch, tuple(_PLATFORMS.value) or None)
  artefact, meta = serving.save_exported(
      exported, serving.export_metadata(estimator, batch), _OUTPUT.value)
  print(f"wrote {artefact} and {meta} (platforms {', '.join(exported.platforms)}, "
        f"batch {batch or 'symbolic'})")
  if _CHECK.value and jax.export.default_export_platform() in exported.platforms:
    diff = check_roundtrip(estimator, artefact, batch or 2)
    print(f"reloaded: max |heatmap difference| to the model {diff:.3g}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    run()
  except (ValueError, FileNotFoundError, FileExistsError, ImportError,
          checkpointing.CheckpointMismatchError) as error:
    logging.error("%s", error)
    sys.exit(f"export: {error}")
