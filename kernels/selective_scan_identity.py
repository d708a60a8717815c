"""The benchmark-only "identity" scan: SS2D's scan taken out, so that timing a model
with it and without it gives the share of the model's time the scan takes.

Each direction's y = D*u, merged back in row-major order. What SS2D computes per token
for the scan is part of the model, not of the scan, so it stays: x_proj (dts, B, C) and
dt_proj (delta = dts @ weight, which the chunked scan forms inside its loop, so a
`LowRankDelta` arrives here unapplied) enter the result times zero. Without that, XLA
drops the unused matmuls (forward and backward) and the "model without its scan" would
lack them too: at MamKPD-B, batch 4, 256x192, about 780 M multiply-adds of x_proj and
680 M of dt_proj per inference.

Registered as benchmark-only (`selective_scan.SCAN_REGISTRY`): "auto" never picks it and
a config cannot name it.
"""

import jax.numpy as jnp

from mamkpd_jax.kernels.cross_scan import NUM_DIRECTIONS, as_delta, cross_merge, cross_scan


def cross_selective_scan_identity(x, delta, A, B, C, D, delta_bias, *,
                                  delta_softplus=True):
  """`cross_selective_scan`'s signature; (batch, H, W, P) float32 = merged D*u."""
  del A, delta_bias, delta_softplus
  height, width, per_group = x.shape[1:]
  delta = as_delta(delta)                          # (b, H, W, K, P), as the reference gets it
  kept = sum(jnp.sum(t.astype(jnp.float32), axis=(-2, -1)) for t in (B, C))   # (b, H, W)
  skip = D.reshape(NUM_DIRECTIONS, per_group) * cross_scan(x).astype(
      jnp.float32)                                                     # (b, L, K, P)
  unused_inputs = jnp.sum(delta.astype(jnp.float32), axis=-2) + kept[..., None]
  return cross_merge(skip, height, width) + 0.0 * unused_inputs      # (b, H, W, P)
