"""Lowering a function for TPU from this CPU host (no TPU needed).

`jax.export` with `platforms=["tpu"]` traces the function and lowers every Pallas TPU
kernel in it to a Mosaic module (a `tpu_custom_call`), applying Pallas's TPU lowering
rules: block shapes against the (8, 128) tiling, the primitives Mosaic supports,
dimension semantics. Mosaic's own layout passes run later, inside the TPU compiler, so
what they would reject is only found on a TPU (`scripts/gpu_check.py`).
"""

import jax

TPU_KERNEL_MARKER = "tpu_custom_call"


def lower_for_tpu(fn, *args):
  """StableHLO text of `jax.jit(fn)` exported for TPU."""
  return jax.export.export(jax.jit(fn), platforms=["tpu"])(*args).mlir_module()
