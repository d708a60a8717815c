"""The selective scan with no loop at all, for ONNX export: `scan_impl="onnx"`.

Same math as `selective_scan_ref` (SPEC §1) and the same time-major layout as
`selective_scan_chunked` (whose layout wrappers it reuses); what differs is the
recurrence `h_t = a_t h_{t-1} + v_t` (a_t = exp(delta_t A), v_t = delta_t u_t B_t),
written out so that jax2onnx emits no ONNX Loop:

* **Chunks of `CHUNK_SIZE` tokens, the steps unrolled across chunks.** The sequence is
  cut into L/T chunks; step j of the recurrence runs for every chunk at once, on the
  (L/T, ...) slice of the chunks' j-th tokens. So the graph has T steps of one Mul and
  one Add each over 1/T of the data, not L steps.
* **Two passes.** The first runs the T steps from a zero state, keeping only each
  chunk's final state and decay product; the chunk-entering states then come from the
  same scan on those L/T totals (recursively: L/T², ...); the second pass runs the T
  steps again from the true entering states and emits `y_t = sum_n C_t h_t` per step.
  Nothing per token is kept but the output.

Only Slice, Pad, Mul, Add, Exp, Reshape, Concat (and ReduceSum when d_state > 1).
Every exponent is delta·A <= 0 (A < 0, delta >= 0 after softplus) and decays are only
multiplied, never divided, so nothing overflows; a product that underflows to 0 is the
true decay.

Why not the T x T segment-sum matrix (exp of cumulative-sum differences): the decay
differs per channel and state, so the matrix is per channel and applied by a multiply
and reduce, T exponentials and T multiply-adds per token (kernels/README.md, "chunked").
Why not log-depth doubling (this module's first design): each doubling level is a few
full-size passes (shift, multiply, add for both the state and the decay product), so
ONNX Runtime moved several times the data; measured in kernels/README.md ("onnx").

Autodiff works (everything is differentiable JAX), but it stores every unrolled step:
fine for the small tests, not meant for training; the model trains with "chunked" or
"pallas" and exports with "onnx".
"""

import functools

import jax.numpy as jnp

from mamkpd_jax.kernels.selective_scan_chunked import (cross_selective_scan_time_major,
                                                       selective_scan_time_major)

# Tokens per chunk (unrolled steps per pass); measured in ONNX Runtime
# (kernels/README.md, "onnx").
CHUNK_SIZE = 16


def _read_out(C, h):
  """sum_n C[..., n] h[..., n, :]: (n, b, G, N), (n, b, G, N, P) -> (n, b, G, P).

  At N = 1 a reshape and a multiply (a ReduceSum over one element is a full copy in
  ONNX Runtime)."""
  if h.shape[-2] == 1:
    return C.reshape(C.shape[:-1] + (1,)) * h.reshape(h.shape[:-2] + h.shape[-1:])
  return jnp.sum(C[..., None] * h, axis=-2)


def _linear_scan(decay, drive, chunk_size, C=None):
  """h_t = decay_t h_{t-1} + drive_t from h = 0, over axis 0 of (L, ...) arrays.

  Returns the states (L, ...), or `_read_out(C_t, h_t)` (L, b, G, P) when C
  (L, b, G, N) is given (module docstring: two unrolled passes, totals recursively).
  """
  if chunk_size < 2:
    raise ValueError(f"selective_scan_onnx: chunk_size must be >= 2 (the chunk totals "
                     f"recurse on L / chunk_size tokens), got {chunk_size}")
  length = decay.shape[0]
  chunk = min(chunk_size, length)
  pad = (-length) % chunk
  num_chunks = (length + pad) // chunk

  def steps(x):                 # (L, ...) -> T arrays (num_chunks, ...): token j of each chunk
    x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))   # after every real token
    x = x.reshape(num_chunks, chunk, *x.shape[1:])
    return [t.reshape(t.shape[:1] + t.shape[2:]) for t in jnp.split(x, chunk, axis=1)]

  decays, drives = steps(decay), steps(drive)
  if num_chunks > 1:            # pass 1: each chunk from zero -> its total decay and state
    product, state = decays[0], drives[0]
    for a, v in zip(decays[1:], drives[1:]):
      state = a * state + v
      product = product * a
    ends = _linear_scan(product, state, chunk_size)                # true chunk-end states
    h = jnp.pad(ends[:-1], [(1, 0)] + [(0, 0)] * (ends.ndim - 1))  # state entering chunk c
  else:
    h = jnp.zeros_like(drives[0])
  C_steps = None if C is None else steps(C)
  outputs = []                  # pass 2: from the true entering states
  for j, (a, v) in enumerate(zip(decays, drives)):
    h = a * h + v
    outputs.append(h if C is None else _read_out(C_steps[j], h))
  out = jnp.stack(outputs, axis=1)                                  # (nc, T, ...)
  return out.reshape(num_chunks * chunk, *out.shape[2:])[:length]


def _scan_unrolled(delta, u, B, C, A, chunk_size=CHUNK_SIZE):
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
  return _linear_scan(decay, drive, chunk_size, C)                # (L, b, G, P)


def selective_scan_onnx(u, delta, A, B, C, D, delta_bias, *, delta_softplus=True,
                        chunk_size=CHUNK_SIZE):
  """Selective scan (shapes and math as `selective_scan_reference`), loop-free;
  (batch, L, channels) float32."""
  scan = functools.partial(_scan_unrolled, chunk_size=chunk_size)
  return selective_scan_time_major(scan, u, delta, A, B, C, D, delta_bias, delta_softplus)


def cross_selective_scan_onnx(x, delta, A, B, C, D, delta_bias, *, delta_softplus=True,
                              chunk_size=CHUNK_SIZE):
  """SS2D's four-direction scan (args as `cross_selective_scan_reference`), loop-free."""
  scan = functools.partial(_scan_unrolled, chunk_size=chunk_size)
  return cross_selective_scan_time_major(scan, x, delta, A, B, C, D, delta_bias,
                                         delta_softplus)
