"""The selective scan with no loop at all, for ONNX export: `scan_impl="onnx"`.

Same math as `selective_scan_ref` (SPEC §1) and the same time-major layout as
`selective_scan_chunked` (whose layout wrappers it reuses); what differs is the
recurrence `h_t = a_t h_{t-1} + v_t` (a_t = exp(delta_t A), v_t = delta_t u_t B_t):

* **Log-depth doubling inside chunks of `CHUNK_SIZE` tokens** (Hillis-Steele). After
  the step with offset d, every token holds the pair (product of the last 2d decays,
  state from those 2d drives alone): `v_t += a_t v_{t-d}`, `a_t *= a_{t-d}`, with the
  shifted copy a Slice + Pad (zeros for v, ones for a). log2(T) steps give each token
  its in-chunk state h_local and the in-chunk decay product P_t.
* **Across chunks, the same on the chunk totals**, recursively (the last token of each
  chunk: L/T tokens, then L/T² ...), then `h_t = h_local_t + P_t h_in` with h_in the
  state entering the chunk.

No `lax.scan` and no `lax.associative_scan`, so jax2onnx emits no ONNX Loop and no
interior padding: only Slice, Pad, Mul, Add, Exp, Reshape and ReduceSum, about 7 ops a
doubling step. Every exponent is delta·A <= 0 (A < 0, delta >= 0 after softplus) and
decays are only multiplied, never divided, so nothing overflows; a product that
underflows to 0 is the true decay.

Why not the T x T segment-sum matrix (exp of cumulative-sum differences): the decay
differs per channel and state, so the matrix is per channel and applied by a multiply
and reduce, T exponentials and T multiply-adds per token (kernels/README.md, "chunked");
doubling costs log2(T) multiply-adds per token and one exponential. Measured in ONNX
Runtime in kernels/README.md ("onnx").

Autodiff works (everything is differentiable JAX), but it stores every doubling step's
(L, batch, channels, N) tensors: fine for the small tests, not meant for training; the
model trains with "chunked" or "pallas" and exports with "onnx".
"""

import functools

import jax.numpy as jnp

from mamkpd_jax.kernels.selective_scan_chunked import (cross_selective_scan_time_major,
                                                       selective_scan_time_major)

# Tokens per chunk of the doubling (log2 of it = doubling steps per token); measured in
# ONNX Runtime (kernels/README.md, "onnx").
CHUNK_SIZE = 8


def _shift(x, offset, fill):
  """x (n, T, ...) moved `offset` tokens later along axis 1, `fill` in the gap."""
  pad = [(0, 0), (offset, 0)] + [(0, 0)] * (x.ndim - 2)
  return jnp.pad(x[:, :x.shape[1] - offset], pad, constant_values=fill)


def _doubling(decay, drive):
  """Inclusive scan along axis 1 of (n, T, ...) arrays, from a zero state.

  Returns (product of decays up to t, state h_t) per token, both (n, T, ...).
  """
  offset = 1
  while offset < decay.shape[1]:
    drive = drive + decay * _shift(drive, offset, 0.0)
    decay = decay * _shift(decay, offset, 1.0)
    offset *= 2
  return decay, drive


def _linear_scan(decay, drive, chunk_size):
  """h_t = decay_t h_{t-1} + drive_t from h = 0, over axis 0 of (L, ...) arrays.

  Returns (L, ...): chunks of `chunk_size` by doubling, their totals recursively.
  """
  if chunk_size < 2:
    raise ValueError(f"selective_scan_onnx: chunk_size must be >= 2 (the chunk totals "
                     f"recurse on L / chunk_size tokens), got {chunk_size}")
  length = decay.shape[0]
  chunk = min(chunk_size, length)
  pad = (-length) % chunk
  num_chunks = (length + pad) // chunk

  def to_chunks(x):                        # (L, ...) -> (num_chunks, chunk, ...)
    x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))   # after every real token
    return x.reshape(num_chunks, chunk, *x.shape[1:])

  decay, states = _doubling(to_chunks(decay), to_chunks(drive))   # (nc, T, ...)
  if num_chunks > 1:
    ends = _linear_scan(decay[:, -1], states[:, -1], chunk_size)  # (nc, ...) h at ends
    entering = _shift(ends[None], 1, 0.0)[0]                      # state before chunk c
    states = states + decay * entering[:, None]
  return states.reshape(num_chunks * chunk, *states.shape[2:])[:length]


def _scan_doubling(delta, u, B, C, A, chunk_size=CHUNK_SIZE):
  """The recurrence over time-major inputs; returns sum_n C_t h_t (without D u).

  Args:
    delta: (L, batch, G, P) float32, after bias and softplus.
    u: (L, batch, G, P) float32.
    B, C: (L, batch, G, N) float32.
    A: (G, N, P) float32.
  Returns:
    (L, batch, G, P) float32.
  """
  decay = jnp.exp(delta[:, :, :, None] * A)                       # (L, b, G, N, P)
  drive = (delta * u)[:, :, :, None] * B[..., None]               # (L, b, G, N, P)
  states = _linear_scan(decay, drive, chunk_size)                 # (L, b, G, N, P)
  return jnp.sum(C[..., None] * states, axis=3)                   # (L, b, G, P)


def selective_scan_onnx(u, delta, A, B, C, D, delta_bias, *, delta_softplus=True,
                        chunk_size=CHUNK_SIZE):
  """Selective scan (shapes and math as `selective_scan_reference`), loop-free;
  (batch, L, channels) float32."""
  scan = functools.partial(_scan_doubling, chunk_size=chunk_size)
  return selective_scan_time_major(scan, u, delta, A, B, C, D, delta_bias, delta_softplus)


def cross_selective_scan_onnx(x, delta, A, B, C, D, delta_bias, *, delta_softplus=True,
                              chunk_size=CHUNK_SIZE):
  """SS2D's four-direction scan (args as `cross_selective_scan_reference`), loop-free."""
  scan = functools.partial(_scan_doubling, chunk_size=chunk_size)
  return cross_selective_scan_time_major(scan, x, delta, A, B, C, D, delta_bias,
                                         delta_softplus)
