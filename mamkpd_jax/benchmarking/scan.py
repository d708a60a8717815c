"""SS2D's scan alone: its shapes at a model's stages, random inputs, the jitted passes,
the bytes it must move and the rows that report them (scripts/benchmark_scan.py,
scripts/gpu_check.py).

Byte model of the scan (minimum traffic of a fused op; activations in their dtype,
outputs float32):
  forward:  per direction read u and delta (P channels each) and B, C (N each);
            write the merged y once (P channels, float32).
  backward: the forward's reads again (recomputation), read dy once, write du once,
            d(delta) per direction (float32), dB and dC per direction.
"""

import jax
import jax.numpy as jnp

from mamkpd_jax import kernels
from mamkpd_jax.benchmarking import roofline
from mamkpd_jax.kernels import tolerances
from mamkpd_jax.models import ModelConfig, model_config

K = kernels.NUM_DIRECTIONS
# cross_selective_scan's arguments, in order (the gradients come in this order).
CROSS_ARG_NAMES = ("x", "delta", "A", "B", "C", "D", "delta_bias")


def scan_stage_shape(variant, stage, batch, height, width):
  """(batch, H, W, d_inner, d_state) of the SS2D scans in `stage` (1-3) of `variant`."""
  config = ModelConfig.from_config(model_config(variant))
  stride = 4 * 2 ** (stage - 1)
  return (batch, height // stride, width // stride,
          config.d_inner(config.dims[stage - 1]), config.d_state)


def scan_inputs(shape, dtype):
  """Random `cross_selective_scan` arguments (x, delta, A, B, C, D, delta_bias)."""
  batch, height, width, per_group, d_state = shape
  keys = jax.random.split(jax.random.key(0), 5)
  act = lambda key, *s: jax.random.normal(key, s, jnp.float32).astype(dtype)
  channels = K * per_group
  return (act(keys[0], batch, height, width, per_group),
          act(keys[1], batch, height, width, K, per_group),
          -jnp.tile(jnp.arange(1, d_state + 1, dtype=jnp.float32), (channels, 1)),
          act(keys[2], batch, height, width, K, d_state),
          act(keys[3], batch, height, width, K, d_state),
          jnp.ones((channels,), jnp.float32),
          jnp.full((channels,), -4.0, jnp.float32))


def scan_min_bytes(shape, dtype, pass_name):
  """The byte model of the module docstring."""
  batch, height, width, p, n = shape
  tokens, act = batch * height * width, jnp.dtype(dtype).itemsize
  forward = tokens * (K * (2 * p + 2 * n) * act + 4 * p)
  if pass_name == "forward":
    return forward
  backward = forward - tokens * 4 * p + tokens * (4 * p + 4 * p + K * (4 * p + 2 * n * 4))
  return forward + backward


def interpreted(impl):
  """Whether scan `impl` runs its Pallas kernels in interpret mode here (on a CPU)."""
  entry = kernels.SCAN_REGISTRY.get(impl)
  return bool(entry and entry.takes_interpret) and jax.default_backend() == "cpu"


def scan_row(shape, dtype, pass_name, impl, seconds, peak):
  """One timing of the scan: ms, minimum GB, GB/s that implies, fraction of `peak`."""
  gbytes = scan_min_bytes(shape, dtype, pass_name) / 1e9
  gbps = gbytes / seconds
  return dict(batch=shape[0], height=shape[1], width=shape[2], d_inner=shape[3],
              d_state=shape[4], impl=impl, dtype=dtype, pass_name=pass_name,
              ms=round(seconds * 1e3, 4), min_gbytes=round(gbytes, 4), gbps=float(f"{gbps:.4g}"),
              fraction_of_peak=roofline.fraction_of_peak(gbps, peak),
              interpret=interpreted(impl))


def scan_fn(impl, pass_name):
  """jit of the fused SS2D scan ("forward") or of the gradient of every input."""
  scan = lambda *a: kernels.cross_selective_scan(*a, impl=impl)
  if pass_name == "forward":
    return jax.jit(scan)
  return jax.jit(jax.grad(lambda *a: jnp.sum(scan(*a)), argnums=tuple(range(7))))


def scan_values_and_grads_fn(impl):
  """jit of args -> (y, gradients of sum(w * y) for every argument), w fixed, random."""

  def values_and_grads(*args):
    scan = lambda *a: kernels.cross_selective_scan(*a, impl=impl)
    y = scan(*args)
    weights = jax.random.normal(jax.random.key(7), y.shape, jnp.float32)
    grads = jax.grad(lambda *a: jnp.sum(weights * scan(*a)), argnums=tuple(range(7)))(*args)
    return y, grads

  return jax.jit(values_and_grads)


def tolerance_ratios(got, want, dtype):
  """{"y": ratio, "d_x": ratio, ...} of (y, grads) `got` against `want` (the reference's)
  as fractions of the kernel tests' tolerances (kernels.tolerances): <= 1 passes."""
  (y, grads), (y_ref, grads_ref) = got, want
  ratios = {"y": tolerances.tolerance_ratio(y, y_ref, tolerances.OUTPUT_RTOL)}
  for name, grad, grad_ref in zip(CROSS_ARG_NAMES, grads, grads_ref):
    ratios[f"d_{name}"] = tolerances.tolerance_ratio(grad, grad_ref,
                                                     tolerances.grad_rtol(dtype))
  return ratios
