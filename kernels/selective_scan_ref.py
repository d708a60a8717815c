"""Pure-JAX reference of the Mamba selective scan: the oracle for the Pallas kernel.

Per batch b, channel c and state n (docs/scan.md; mamba's `selective_scan_ref`):

    delta_t = softplus(delta_t + delta_bias[c])
    h_t[n]  = exp(delta_t * A[c, n]) * h_{t-1}[n] + delta_t * u_t * B_t[g(c), n],  h_0 = 0
    y_t     = sum_n h_t[n] * C_t[g(c), n] + D[c] * u_t

with g(c) = c // (channels // G): consecutive blocks of channels share B and C.

Memory. The sequence is cut into chunks of `chunk_size` tokens. A `lax.scan` over the
chunks carries the state h (batch, channels, N); inside a chunk an associative scan
materialises (batch, chunk, channels, N) and nothing longer. The chunk body is wrapped
in `jax.checkpoint`, so the backward pass too keeps one state per chunk, not per token.
The state and all arithmetic are float32 (float64 if the caller enables x64 and passes
float64 `A`); u and delta may arrive in bfloat16.
"""

import jax
import jax.numpy as jnp
from jax import lax

DEFAULT_CHUNK_SIZE = 64


def _combine(earlier, later):
  """Composes two affine maps h -> a*h + b, `earlier` applied first."""
  a1, b1 = earlier
  a2, b2 = later
  return a1 * a2, a2 * b1 + b2


def _to_chunks(x, num_chunks, chunk_size):
  """(batch, L_padded, ...) -> (num_chunks, batch, chunk_size, ...)."""
  x = x.reshape(x.shape[0], num_chunks, chunk_size, *x.shape[2:])
  return jnp.moveaxis(x, 1, 0)


def _pad_length(x, pad):
  widths = [(0, 0)] * x.ndim
  widths[1] = (0, pad)
  return jnp.pad(x, widths)


def selective_scan_reference(u, delta, A, B, C, D, delta_bias, *,
                             delta_softplus=True, chunk_size=DEFAULT_CHUNK_SIZE):
  """Selective scan, chunked. Shapes are checked by `selective_scan`.

  Args:
    u: (batch, L, channels) input, float32 or bfloat16.
    delta: (batch, L, channels) step sizes before bias and softplus.
    A: (channels, N) state matrix (diagonal per channel), negative.
    B: (batch, L, G, N) input projection, shared by channels // G channels.
    C: (batch, L, G, N) output projection, grouped like B.
    D: (channels,) skip connection.
    delta_bias: (channels,) added to delta before the softplus.
    delta_softplus: apply softplus to delta + delta_bias.
    chunk_size: tokens per chunk (memory vs. sequential steps).

  Returns:
    y: (batch, L, channels) in the state dtype (float32).
  """
  batch, length, channels = u.shape
  groups, d_state = B.shape[2], B.shape[3]
  per_group = channels // groups
  dtype = jnp.promote_types(jnp.float32, A.dtype)  # the state dtype

  u = u.astype(dtype)
  delta = delta.astype(dtype) + delta_bias.astype(dtype)
  if delta_softplus:
    delta = jax.nn.softplus(delta)
  A = A.astype(dtype).reshape(groups, per_group, d_state)           # (G, P, N)
  B = B.astype(dtype)
  C = C.astype(dtype)

  chunk = min(chunk_size, length)
  pad = (-length) % chunk
  num_chunks = (length + pad) // chunk
  # Padded tokens come after the real ones, so they cannot change any real output.
  xs = tuple(_to_chunks(_pad_length(x, pad), num_chunks, chunk) for x in (u, delta, B, C))

  def chunk_step(h, chunk_inputs):
    u_c, delta_c, B_c, C_c = chunk_inputs         # (b, T, ch), (b, T, ch), (b, T, G, N) x2
    u_g = u_c.reshape(batch, chunk, groups, per_group)        # (b, T, G, P)
    delta_g = delta_c.reshape(batch, chunk, groups, per_group)
    decay = jnp.exp(delta_g[..., None] * A)                   # (b, T, G, P, N)
    drive = (delta_g * u_g)[..., None] * B_c[:, :, :, None, :]  # (b, T, G, P, N)
    decay_cum, h_local = lax.associative_scan(_combine, (decay, drive), axis=1)
    h_all = h_local + decay_cum * h[:, None]                  # (b, T, G, P, N)
    y = jnp.einsum("btgpn,btgn->btgp", h_all, C_c)            # (b, T, G, P)
    return h_all[:, -1], y.reshape(batch, chunk, channels)

  h0 = jnp.zeros((batch, groups, per_group, d_state), dtype)
  _, ys = lax.scan(jax.checkpoint(chunk_step), h0, xs)         # (nc, b, T, ch)
  y = jnp.moveaxis(ys, 0, 1).reshape(batch, num_chunks * chunk, channels)[:, :length]
  return y + D.astype(dtype) * u
