"""Random inputs for the scan tests, in the ranges SS2D produces (A < 0, delta near 0),
and the case tables every scan kernel is tested over against the reference."""

import jax
import jax.numpy as jnp
import numpy as np

# (batch, L, channels, G, N, dtype). Triton tiles hold 64 channels (32 when N > 4) per
# group; Mosaic GPU and TPU tiles 128, so every case pads channels there.
CASES = [
    (2, 1, 8, 1, 1, jnp.float32),        # one token: a single, padded chunk
    (1, 7, 12, 4, 3, jnp.float32),       # L < chunk; 3 channels a group; N padded 3 -> 4
    (2, 48, 8, 4, 16, jnp.float32),      # 3 whole chunks, d_state 16
    (1, 768, 96, 1, 1, jnp.float32),     # 48 chunks; 96 channels: 2 tiles, second padded
    (1, 768, 40, 4, 3, jnp.float32),     # 4 groups of 10 channels, many chunks
    (2, 50, 100, 4, 16, jnp.float32),    # 25 channels a group: padded to a 32 tile
    (2, 48, 8, 4, 1, jnp.bfloat16),      # bfloat16 u, delta, B, C; MamKPD's N = 1
    (1, 100, 72, 1, 16, jnp.bfloat16),   # bfloat16, 3 tiles of 32 (last padded), N 16
]

# (batch, H, W, P, N): the fused SS2D op against cross-scan -> scan -> merge.
CROSS_CASES = [
    (2, 5, 7, 6, 3),      # odd map, L = 35 padded to 48, channels padded 6 -> 8
    (1, 16, 12, 32, 1),   # the tiny model's stage 1 at 64x48 input
    (1, 4, 4, 70, 16),    # square map, 3 tiles of 32, N 16
]


def values_and_grads(fn, inputs, seed=7):
  """fn(**inputs) and the gradient of sum(w * fn) for every input (w fixed, random)."""
  args = [inputs[n] for n in inputs]
  y = fn(*args)
  weights = jnp.asarray(np.random.default_rng(seed).standard_normal(y.shape), jnp.float32)
  grads = jax.grad(lambda *a: jnp.sum(weights * fn(*a)), argnums=tuple(range(len(args))))(*args)
  return y, dict(zip(inputs, grads))


def _normal(rng):
  return lambda *shape: rng.standard_normal(shape).astype(np.float32)


def scan_inputs(seed, batch, length, channels, groups, d_state, dtype=jnp.float32):
  """`selective_scan` kwargs; u, delta, B, C in `dtype`, A, D, delta_bias float32."""
  normal = _normal(np.random.default_rng(seed))
  return dict(
      u=jnp.asarray(normal(batch, length, channels), dtype),
      delta=jnp.asarray(0.5 * normal(batch, length, channels), dtype),
      A=jnp.asarray(-np.exp(0.5 * normal(channels, d_state))),
      B=jnp.asarray(normal(batch, length, groups, d_state), dtype),
      C=jnp.asarray(normal(batch, length, groups, d_state), dtype),
      D=jnp.asarray(normal(channels)),
      delta_bias=jnp.asarray(0.5 * normal(channels)),
  )


def cross_inputs(seed, batch, height, width, per_group, d_state, dtype=jnp.float32):
  """`cross_selective_scan` kwargs for a (batch, H, W, P) map and 4 directions."""
  normal = _normal(np.random.default_rng(seed))
  channels = 4 * per_group
  return dict(
      x=jnp.asarray(normal(batch, height, width, per_group), dtype),
      delta=jnp.asarray(0.5 * normal(batch, height, width, 4, per_group), dtype),
      A=jnp.asarray(-np.exp(0.5 * normal(channels, d_state))),
      B=jnp.asarray(normal(batch, height, width, 4, d_state), dtype),
      C=jnp.asarray(normal(batch, height, width, 4, d_state), dtype),
      D=jnp.asarray(normal(channels)),
      delta_bias=jnp.asarray(0.5 * normal(channels)),
  )
