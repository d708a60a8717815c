"""Parameters (total and per component) and GFLOPs of the model a config describes.

Builds the model from the config (MamKPD or HRVMamba, config.model.name), runs one
forward pass (batch 1) at the config's input size and prints a table; the FLOP
conventions are explained in mamkpd_jax/models/stats.py.

    python scripts/model_stats.py --config=configs/coco_base.py [--json]
    python scripts/model_stats.py --config=configs/coco_large.py --config.model.gate=True
    python scripts/model_stats.py --config=configs/coco_hrvmamba_tiny.py --json

With --json the last stdout line is one JSON object: variant, params (int), gflops
(multiply-adds, the paper's convention), xla_gflops (XLA's FLOPs; null for HRVMamba,
counted by hand), scan_gflops,
flops_convention, params_per_component, input_shape [H, W, 3], output_shape [h, w, K].
"""

import json

import jax
import jax.numpy as jnp
from absl import app, flags, logging
from flax import nnx
from ml_collections import config_flags

from mamkpd_jax.models import (PAPER_SIZES, build_model, hrvmamba, model_title,
                               parse_model_config, stats)

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/*.py file.",
                                          lock_config=True)
_JSON = flags.DEFINE_bool("json", False, "End stdout with one JSON object.")
flags.mark_flag_as_required("config")

CONVENTION = ("gflops counts one multiply-add as one FLOP (fvcore/mmcv, the paper's "
              "convention); xla_gflops is XLA's count (2 per multiply-add, 1 per "
              "elementwise op); both use the hand-counted selective-scan term")


def measure(config, model_config):
  """Builds `model_config`, runs it once on the config's input, returns the stats."""
  height, width = config.data.input_height, config.data.input_width
  model = build_model(model_config, seed=config.seed)
  model.eval()
  images = jax.random.normal(jax.random.key(config.seed), (1, height, width, 3))
  heatmaps = nnx.jit(lambda m, x: m(x))(model, images)       # (1, h, w, K)
  if not bool(jnp.isfinite(heatmaps).all()):
    raise RuntimeError(f"the forward pass of {model_title(model_config)} gave non-finite "
                       "heatmaps")
  counts = stats.param_counts(model)
  flops = stats.forward_flops(model, height, width)
  return {
      "model": model_config.name,
      "variant": model_config.variant,
      "params": counts["total"],
      "gflops": round(flops["gmacs"], 4),
      "xla_gflops": (None if flops["xla_gflops"] is None
                     else round(flops["xla_gflops"], 4)),
      "scan_gflops": round(flops["scan_gmacs"], 4),
      "flops_convention": CONVENTION,
      "params_per_component": counts,
      "gflops_per_component": {k: round(v, 4) for k, v in
                               flops.get("gmacs_per_component", {}).items()} or None,
      "input_shape": [height, width, 3],
      "output_shape": list(heatmaps.shape[1:]),
      "dtype": model_config.dtype,
      "scan_impl": model_config.scan_impl,
  }


def print_table(result):
  h, w, _ = result["input_shape"]
  family = "HRVMamba" if result["model"] == "hrvmamba" else "MamKPD"
  print(f"{family}-{result['variant']}: input {h}x{w}x3 -> heatmaps "
        f"{'x'.join(map(str, result['output_shape']))} ({result['dtype']})")
  for name, count in result["params_per_component"].items():
    print(f"  {name:<16} {count:>12,}")
  sizes = hrvmamba.PAPER_SIZES if result["model"] == "hrvmamba" else PAPER_SIZES
  paper = sizes.get(result["variant"])
  paper_note = f"  (authors: {paper[0] / 1e6:.2f}M, {paper[1]} GFLOPs)" if paper else ""
  xla = ("" if result["xla_gflops"] is None
         else f", XLA FLOPs {result['xla_gflops']:.2f}G")
  print(f"params {result['params'] / 1e6:.2f}M, GFLOPs {result['gflops']:.3f} "
        f"(multiply-adds; scan {result['scan_gflops']:.3f}){xla}{paper_note}")


def main(argv):
  del argv
  logging.info("JAX %s on %s", jax.__version__, jax.devices())
  config = _CONFIG.value
  try:
    model_config = parse_model_config(config.model)
  except ValueError as e:
    raise SystemExit(f"model_stats.py: {e}") from None
  result = measure(config, model_config)
  print_table(result)
  if _JSON.value:
    print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
