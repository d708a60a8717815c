"""The selective scan with no loop at all, for ONNX export: `scan_impl="onnx"`.

Same math as `selective_scan_ref` (docs/scan.md), on batch-major (b, L, ...) arrays as the
model holds them; what differs is the recurrence `h_t = a_t h_{t-1} + v_t`
(a_t = exp(delta_t A), v_t = delta_t u_t B_t), written out so that jax2onnx emits no
ONNX Loop:

* **Chunks of `CHUNK_SIZE` tokens, the steps unrolled across chunks.** The sequence is
  cut into L/T chunks; step j of the recurrence runs for every chunk at once, on the
  (b, L/T, 1, ...) slice of the chunks' j-th tokens (one Split per array). So the graph
  has T steps of one Mul and one Add each over 1/T of the data, not L steps.
* **Two passes.** The first runs the T steps from a zero state, keeping only each
  chunk's final state and decay product; the chunk-entering states then come from the
  same scan on those L/T totals (recursively: L/T², ...); the second pass runs the T
  steps again from the true entering states and emits `y_t = sum_n C_t h_t` per step.
  Nothing per token is kept but the output.
* **Reverse scans, not reversed data.** SS2D's four directions are two token orders
  (row-major, column-major), each scanned forward and backward. The cross scan stacks
  the two orders as a (b, L, 2, P) pair and scans it forward (directions 0, 1) and in
  reverse (2, 3): the reverse scan only runs its unrolled steps and chunk totals in the
  other order, so no flipped copy of any input exists.

Only layout nodes (Split, Slice, Pad, Concat, Reshape, Transpose), Mul, Add, Exp, the
softplus's few elementwise nodes, a Gemm per direction pair for a `LowRankDelta`'s
dt_proj and ReduceSum when d_state > 1.
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

import jax.numpy as jnp

from mamkpd_jax.kernels.cross_scan import NUM_DIRECTIONS, LowRankDelta
from mamkpd_jax.kernels.selective_scan_chunked import biased_delta

# Tokens per chunk (unrolled steps per pass); measured in ONNX Runtime
# (kernels/README.md, "onnx").
CHUNK_SIZE = 16


def _read_out(C, h):
  """sum_n C[..., n] h[..., n, :]: (b, n, G, N), (b, n, G, N, P) -> (b, n, G, P).

  At N = 1 a reshape and a multiply (a ReduceSum over one element is a full copy in
  ONNX Runtime)."""
  if h.shape[-2] == 1:
    return C.reshape(C.shape[:-1] + (1,)) * h.reshape(h.shape[:-2] + h.shape[-1:])
  return jnp.sum(C[..., None] * h, axis=-2)


def _pad_tokens(x, before, after):
  """Zero tokens on axis 1; no node at all when there are none."""
  if not before and not after:
    return x
  return jnp.pad(x, [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2))


def _linear_scan(decay, drive, chunk_size, C=None, reverse=False):
  """h_t = decay_t h_prev + drive_t from h = 0, over axis 1 of (b, L, ...) arrays.

  h_prev is token t-1's state, or token t+1's with `reverse` (the scan runs from the
  last token to the first, on the arrays as they are: nothing is reversed in memory,
  only the order of the unrolled steps and of the chunk totals).
  Returns the states (b, L, ...), or `_read_out(C_t, h_t)` (b, L, G, P) when C
  (b, L, G, N) is given (module docstring: two unrolled passes, totals recursively).
  """
  if chunk_size < 2:
    raise ValueError(f"selective_scan_onnx: chunk_size must be >= 2 (the chunk totals "
                     f"recurse on L / chunk_size tokens), got {chunk_size}")
  batch, length = decay.shape[:2]
  chunk = min(chunk_size, length)
  pad = (-length) % chunk
  num_chunks = (length + pad) // chunk

  def steps(x):      # (b, L, ...) -> T arrays (b, nc, 1, ...): token j of each chunk
    x = _pad_tokens(x, pad if reverse else 0, 0 if reverse else pad)  # after every real
    x = x.reshape(batch, num_chunks, chunk, *x.shape[2:])             # token, scan order
    tokens = jnp.split(x, chunk, axis=2)     # the size-1 axis stays (no Reshape per step)
    return tokens[::-1] if reverse else tokens

  decays, drives = steps(decay), steps(drive)
  if num_chunks > 1:            # pass 1: each chunk from zero -> its total decay and state
    product, state = decays[0], drives[0]
    for a, v in zip(decays[1:], drives[1:]):
      state = a * state + v
      product = product * a
    ends = _linear_scan(product, state, chunk_size, reverse=reverse)  # true chunk-end states
    # the state entering chunk c is the end state of the chunk before it in scan order
    h = (_pad_tokens(ends[:, 1:], 0, 1) if reverse else _pad_tokens(ends[:, :-1], 1, 0))
  else:
    h = jnp.zeros_like(drives[0])
  C_steps = None if C is None else steps(C)
  outputs = []                  # pass 2: from the true entering states
  for j, (a, v) in enumerate(zip(decays, drives)):
    h = a * h + v
    outputs.append(h if C is None else _read_out(C_steps[j], h))
  out = jnp.concatenate(outputs[::-1] if reverse else outputs, axis=2)  # (b, nc, T, ...)
  out = out.reshape(batch, num_chunks * chunk, *out.shape[3:])
  if pad:
    out = out[:, pad:] if reverse else out[:, :length]
  return out


def _scan_unrolled(delta, u, B, C, A, chunk_size, reverse=False):
  """The recurrence over batch-major inputs; returns sum_n C_t h_t (without D u).

  Args:
    delta: (b, L, G, P) float32, after bias and softplus.
    u: (b, L, G, P) float32.
    B, C: (b, L, G, N) float32.
    A: (G, N, P) float32.
    reverse: scan from the last token to the first.
  Returns:
    (b, L, G, P) float32.
  """
  # Size-1 axes by reshape, not indexing: jax2onnx turns x[..., None] into an Expand,
  # a full copy in ONNX Runtime.
  with_axis = lambda t, axis: t.reshape(t.shape[:axis] + (1,) + t.shape[axis:])
  decay = jnp.exp(with_axis(delta, 3) * A)                        # (b, L, G, N, P)
  drive = with_axis(delta * u, 3) * with_axis(B, 4)               # (b, L, G, N, P)
  return _linear_scan(decay, drive, chunk_size, C, reverse)       # (b, L, G, P)


def selective_scan_onnx(u, delta, A, B, C, D, delta_bias, *, delta_softplus=True,
                        chunk_size=CHUNK_SIZE):
  """Selective scan (shapes and math as `selective_scan_reference`), loop-free;
  (batch, L, channels) float32."""
  batch, length, channels = u.shape
  groups, d_state = B.shape[2], B.shape[3]
  per_group = channels // groups
  grouped = lambda x: x.reshape(batch, length, groups, per_group)
  ys = _scan_unrolled(
      grouped(biased_delta(delta, delta_bias, delta_softplus)), grouped(u.astype(jnp.float32)),
      B.astype(jnp.float32), C.astype(jnp.float32),
      A.astype(jnp.float32).reshape(groups, per_group, d_state).transpose(0, 2, 1),
      chunk_size)                                                    # (b, L, G, P)
  return ys.reshape(batch, length, channels) + D.astype(jnp.float32) * u.astype(jnp.float32)


def cross_selective_scan_onnx(x, delta, A, B, C, D, delta_bias, *, delta_softplus=True,
                              chunk_size=CHUNK_SIZE):
  """SS2D's four-direction scan (args as `cross_selective_scan_reference`), loop-free.

  Directions 0 and 2 visit the row-major tokens (2 from the last), 1 and 3 the
  column-major ones (3 from the last). Instead of four permuted copies of the map, the
  scan runs twice over the same (b, L, 2, P) pair [row-major, column-major]: forward for
  directions (0, 1), in reverse for (2, 3). So the only layout copies are one transpose
  of x, of the column-major directions' delta, B and C, and of the merged output.
  """
  batch, height, width, per_group = x.shape
  d_state = B.shape[-1]
  length = height * width
  rows = lambda t: t.reshape(batch, length, *t.shape[3:])                 # (b, L, ...)
  cols = lambda t: jnp.swapaxes(t, 1, 2).reshape(batch, length, *t.shape[3:])
  both = lambda r, c: jnp.stack([rows(r), cols(c)], axis=2)               # (b, L, 2, ...)
  pair = lambda t, k: both(t[:, :, :, k], t[:, :, :, k + 1])   # directions k and k + 1
  delta_bias = delta_bias.reshape(NUM_DIRECTIONS, per_group)

  def pair_delta(k):            # (b, L, 2, P) after bias and softplus, directions k, k + 1
    if isinstance(delta, LowRankDelta):       # reorder the R dt channels, not the product
      pair_delta = LowRankDelta(pair(delta.dts, k), delta.weight[k:k + 2]).materialize()
    else:
      pair_delta = pair(delta, k)
    return biased_delta(pair_delta, delta_bias[k:k + 2], delta_softplus)

  x = x.astype(jnp.float32)
  u = both(x, x)                                                          # (b, L, 2, P)
  B, C = B.astype(jnp.float32), C.astype(jnp.float32)
  A = A.astype(jnp.float32).reshape(NUM_DIRECTIONS, per_group, d_state).transpose(0, 2, 1)
  ys = sum(_scan_unrolled(pair_delta(k), u, pair(B, k), pair(C, k), A[k:k + 2],
                          chunk_size, reverse=k == 2)
           for k in (0, 2))                                               # (b, L, 2, P)
  merged = (ys[:, :, 0].reshape(batch, height, width, per_group) +
            jnp.swapaxes(ys[:, :, 1].reshape(batch, width, height, per_group), 1, 2))
  skip = x * D.astype(jnp.float32).reshape(
      NUM_DIRECTIONS, per_group).sum(0)
  return merged + skip                                                    # (b, H, W, P)
