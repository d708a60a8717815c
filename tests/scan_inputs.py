"""Random inputs for the scan tests, in the ranges SS2D produces (A < 0, delta near 0)."""

import jax.numpy as jnp
import numpy as np


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
