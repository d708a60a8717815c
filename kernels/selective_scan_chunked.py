"""The selective scan in pure JAX, laid out for XLA on CPUs: `scan_impl="chunked"`.

Same math as `selective_scan_ref` (docs/scan.md); what differs is the layout and the loop:

* **Time-major, channels last.** The scan runs over (L, batch, G, P) arrays (P = channels
  per group, the fastest axis), so one step reads one contiguous row per batch element
  and every elementwise op vectorises over channels. The state is (batch, G, N, P):
  channels stay minor even for d_state 1, where a trailing N axis of size 1 would leave
  XLA scalar loops. The transposes into and out of this layout fuse with the softplus and
  with the cross-merge, so they cost no extra pass.
* **Chunks of `CHUNK_SIZE` tokens.** An outer `lax.scan` over L/T chunks carries the
  state; the chunk body, a sequential `lax.scan` over its T tokens, is `jax.checkpoint`ed.
  Autodiff therefore keeps one state per chunk plus one chunk's per-token states during
  the backward: never a (batch, L, channels, N) tensor, forward or backward.
* **Vectorised per chunk, sequential only where it must be.** Each chunk forms its
  (T, batch, G, N, P) decays `exp(delta_t A)` and drives `delta_t u_t B_t` in a few
  fused passes over chunk-sized (cache-resident) arrays; the token loop only does
  `h = decay_t h + drive_t` and emits the states, and `y = sum_n C_t h_t` is again one
  pass over the chunk. So the loop's backward is elementwise too (no per-token
  reductions), and nothing of size L x channels x N exists outside one chunk.
* **The skip of the fused cross-scan** is `x * sum_k D_k`: each direction's `D_k u_k`,
  merged back to row-major order, is `D_k x`. The cross-scanned u (4x the map) then has
  one reader, the scan, and its move to the time-major layout is one fused pass.

Why not the "segment-sum" (Mamba-2 SSD) matrix form inside a chunk. There the T x T
decay matrix exp(S_t - S_s) is shared by all channels of a head, and the chunk becomes a
matmul. Here the decay exp(delta_t A[c, n]) differs per channel AND state, so the matrix
is per (channel, n): T exponentials per token, channel and state instead of one, applied
by an elementwise multiply-and-reduce, not a matmul. Measured on a 2-core CPU
(batch 4, L 3072, 768 channels, d_state 1, forward of the linear recurrence):
the T x T form took 1.9 s (T 4) to 3.4 s (T 16), a sequential scan 0.2 s; see
kernels/README.md for the numbers and commands.

**dt_proj inside the loop** (the fused cross-scan given a `LowRankDelta`): each chunk
forms its tokens' delta (T, b, 4, P) from their R dt channels and dt_proj's (4, P, R)
weight, adds the bias and applies softplus there, so the (b, L, 4, P) delta is never
written, read, reordered or softplus'd as a whole array, forward or backward. Its
forward is R fused multiply-adds; its backward a custom VJP (`_low_rank_projection`)
with the weight's cotangent as one contraction per chunk. Measured on the 2-core CPU
(kernels/README.md, "chunked").

Padding: L is padded with zeros to a multiple of the chunk, after every real token
(delta 0 keeps the state, drive 0 adds nothing), so padding reaches no real output and
no real gradient.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from mamkpd_jax.kernels.cross_scan import (NUM_DIRECTIONS, LowRankDelta, cross_merge,
                                           cross_scan, per_direction)

# Tokens per checkpointed chunk, chosen by measurement (kernels/README.md, "chunked").
CHUNK_SIZE = 32


def _scan_time_major(delta, u, B, C, A, *, chunk_size, chunk_delta=lambda d: d):
  """The recurrence over time-major inputs; returns sum_n C_t h_t (without D u).

  Args:
    delta: (L, batch, G, P) float32, after bias and softplus; or any (L, batch, G, X)
      per-token input that `chunk_delta` maps to the (T, batch, G, P) delta of a chunk.
    u: (L, batch, G, P) float32.
    B, C: (L, batch, G, N) float32.
    A: (G, N, P) float32.
    chunk_size: tokens per checkpointed chunk.
    chunk_delta: a chunk's (T, batch, G, X) delta input -> its (T, batch, G, P) float32
      delta.
  Returns:
    (L, batch, G, P) float32.
  """
  length, batch, groups, per_group = u.shape
  d_state = B.shape[-1]
  chunk = min(chunk_size, length)
  pad = (-length) % chunk
  num_chunks = (length + pad) // chunk

  def to_chunks(x):                           # (L, ...) -> (num_chunks, chunk, ...)
    x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    return x.reshape(num_chunks, chunk, *x.shape[1:])

  def token_step(h, token):                   # h (b, G, N, P)
    decay_t, drive_t = token                  # (b, G, N, P) x2
    h = decay_t * h + drive_t
    return h, h

  def chunk_step(h, chunk_inputs):
    # Everything but the recurrence itself is vectorised over the chunk's T tokens
    # (chunk-sized temporaries stay in cache); the sequential loop only multiplies and
    # adds, so its backward is elementwise too (no per-token reductions).
    delta_c, u_c, B_c, C_c = chunk_inputs     # (T, b, G, X), (T, b, G, P), (T, b, G, N) x2
    delta_c = chunk_delta(delta_c)                                      # (T, b, G, P)
    decay = jnp.exp(delta_c[:, :, :, None] * A)                         # (T, b, G, N, P)
    drive = (delta_c * u_c)[:, :, :, None] * B_c[..., None]             # (T, b, G, N, P)
    h, states = lax.scan(token_step, h, (decay, drive))                 # (T, b, G, N, P)
    return h, jnp.sum(C_c[..., None] * states, axis=3)                  # (T, b, G, P)

  h0 = jnp.zeros((batch, groups, d_state, per_group), jnp.float32)
  _, ys = lax.scan(jax.checkpoint(chunk_step), h0,
                   tuple(to_chunks(x) for x in (delta, u, B, C)))  # (nc, T, b, G, P)
  return ys.reshape(num_chunks * chunk, batch, groups, per_group)[:length]


@jax.custom_vjp
def _low_rank_projection(dts, weight_t):
  """dt_proj of a chunk: dts (T, b, K, R), weight_t (K, R, P) -> (T, b, K, P).

  Forward: R broadcast multiply-adds, not an einsum: XLA's CPU backend fuses them with
  the bias, softplus and everything downstream into one loop, while a (K, T*b, R) @
  (K, R, P) batched dot with R of 6-24 runs far below the matmul rate. Backward (custom,
  because autodiff of that sum gives R separate reductions for each cotangent): the
  weight's as one contraction over the chunk's tokens, dts' as a broadcast reduction
  over P. Measured on the 2-core CPU (kernels/README.md, "chunked").
  """
  acc = dts[..., 0:1] * weight_t[:, 0]
  for r in range(1, dts.shape[-1]):
    acc = acc + dts[..., r:r + 1] * weight_t[:, r]
  return acc


def _low_rank_projection_fwd(dts, weight_t):
  return _low_rank_projection(dts, weight_t), (dts, weight_t)


def _low_rank_projection_bwd(residuals, cotangent):           # cotangent (T, b, K, P)
  dts, weight_t = residuals
  d_dts = jnp.sum(cotangent[..., None, :] * weight_t, axis=-1)          # (T, b, K, R)
  d_weight_t = jnp.einsum("tbkr,tbkp->krp", dts, cotangent)             # (K, R, P)
  return d_dts, d_weight_t


_low_rank_projection.defvjp(_low_rank_projection_fwd, _low_rank_projection_bwd)


def _low_rank_delta(dts, weight_t, delta_bias, delta_softplus):
  """dt_proj, bias and softplus of a chunk: dts (T, b, K, R), weight_t (K, R, P),
  delta_bias (K, P) -> (T, b, K, P) float32."""
  delta = _low_rank_projection(dts, weight_t) + delta_bias
  return softplus(delta) if delta_softplus else delta


def softplus(x):
  """log(1 + e^x) as max(x, 0) + log1p(e^-|x|): the same function as `jax.nn.softplus`
  (and its gradient, sigmoid), in plain elementwise ops that XLA's CPU backend and ONNX
  Runtime vectorise. On a 2-core CPU it took 2.1 ms over 4.7M floats
  against 5.3 ms for `jax.nn.softplus` (a `logaddexp` with inf/nan guards); ONNX
  Runtime's Softplus node took 12% of MamKPD-B's time there (benchmarks/README.md)."""
  return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


def biased_delta(delta, delta_bias, delta_softplus):
  """delta + bias (then softplus), float32: the scan's step sizes (docs/scan.md)."""
  delta = delta.astype(jnp.float32) + delta_bias.astype(jnp.float32)
  return softplus(delta) if delta_softplus else delta


def selective_scan_time_major(scan, u, delta, A, B, C, D, delta_bias, delta_softplus):
  """The selective scan with its recurrence run by `scan` over time-major inputs.

  `scan(delta, u, B, C, A)` takes (L, b, G, P), (L, b, G, P), (L, b, G, N) x2 and
  A (G, N, P), all float32, and returns sum_n C_t h_t as (L, b, G, P) (`_scan_time_major`). Shapes and math as
  `selective_scan_reference`; returns (batch, L, channels) float32.
  """
  batch, length, channels = u.shape
  groups, d_state = B.shape[2], B.shape[3]
  per_group = channels // groups
  time_major = lambda x: jnp.swapaxes(x.astype(jnp.float32), 0, 1)   # (L, b, ...)
  grouped = lambda x: time_major(x).reshape(length, batch, groups, per_group)
  ys = scan(
      grouped(biased_delta(delta, delta_bias, delta_softplus)), grouped(u),
      time_major(B), time_major(C),
      A.astype(jnp.float32).reshape(groups, per_group, d_state).transpose(0, 2, 1))
  y = jnp.swapaxes(ys.reshape(length, batch, channels), 0, 1)        # (b, L, ch)
  return y + D.astype(jnp.float32) * u.astype(jnp.float32)


def cross_selective_scan_time_major(scan, x, delta, A, B, C, D, delta_bias,
                                    delta_softplus):
  """SS2D's four-direction scan (args as `cross_selective_scan_reference`) with the
  recurrence run by `scan` (as in `selective_scan_time_major`). A `LowRankDelta` delta
  needs a `scan` with a `chunk_delta` argument (`_scan_time_major`).

  The directions are the G = 4 groups; their token orders come from `cross_scan`'s
  `direction_tokens`, and XLA fuses those reversals and transposes with the move to the
  time-major layout, so no permuted copy is made beyond the scan's own inputs.
  """
  batch, height, width, per_group = x.shape
  d_state = B.shape[-1]
  k = NUM_DIRECTIONS
  time_major = lambda t: jnp.swapaxes(t.astype(jnp.float32), 0, 1)   # (L, b, K, X)
  delta_bias = delta_bias.reshape(k, per_group)
  if isinstance(delta, LowRankDelta):     # dt_proj + softplus per chunk (scans that take
    weight_t = jnp.swapaxes(delta.weight.astype(jnp.float32), 1, 2)   # chunk_delta:
    scan = functools.partial(scan, chunk_delta=functools.partial(     # `_scan_time_major`)
        _low_rank_delta, weight_t=weight_t, delta_bias=delta_bias.astype(jnp.float32),
        delta_softplus=delta_softplus))                       # (T, b, K, R) -> (T, b, K, P)
    delta_input = time_major(per_direction(delta.dts))                # (L, b, K, R)
  else:
    delta_input = time_major(biased_delta(per_direction(delta), delta_bias,
                                          delta_softplus))                  # (L, b, K, P)
  ys = scan(
      delta_input,
      time_major(cross_scan(x)), time_major(per_direction(B)), time_major(per_direction(C)),
      A.astype(jnp.float32).reshape(k, per_group, d_state).transpose(0, 2, 1))
  # The skip D u of direction k, merged back to row-major order, is D_k x: the four sum
  # to x * sum_k D_k, so the cross-scanned u (4x the map) has one reader, the scan.
  skip = x.astype(jnp.float32) * D.astype(jnp.float32).reshape(k, per_group).sum(0)
  return cross_merge(jnp.swapaxes(ys, 0, 1), height, width) + skip  # (b, H, W, P)


def selective_scan_chunked(u, delta, A, B, C, D, delta_bias, *, delta_softplus=True,
                           chunk_size=CHUNK_SIZE):
  """Selective scan (shapes and math as `selective_scan_reference`), chunked.

  Args:
    u, delta: (batch, L, channels), float32 or bfloat16.
    A: (channels, N); B, C: (batch, L, G, N); D, delta_bias: (channels,).
  Returns:
    (batch, L, channels) float32.
  """
  scan = functools.partial(_scan_time_major, chunk_size=chunk_size)
  return selective_scan_time_major(scan, u, delta, A, B, C, D, delta_bias, delta_softplus)


def cross_selective_scan_chunked(x, delta, A, B, C, D, delta_bias, *, delta_softplus=True,
                                 chunk_size=CHUNK_SIZE):
  """SS2D's four-direction scan (args as `cross_selective_scan_reference`), chunked."""
  scan = functools.partial(_scan_time_major, chunk_size=chunk_size)
  return cross_selective_scan_time_major(scan, x, delta, A, B, C, D, delta_bias,
                                         delta_softplus)
