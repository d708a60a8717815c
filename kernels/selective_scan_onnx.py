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
  (row-major, column-major), each scanned forward and backward: a reverse scan only
  runs its unrolled steps and chunk totals in the other order, so no flipped copy of
  any input exists.
* **Column-major scans on the row-major map, not a transposed copy.** A column-major
  direction is chunked along the columns (`_column_scan`: T rows of one column per
  chunk), so its steps are Splits of the (b, H, W, ...) arrays as they lie and only
  the chunk totals (1/T of the data) are reordered. ONNX Runtime runs a transpose that
  moves two axes (what a transposed copy became once merged with the convolution's
  NCHW -> NHWC transpose) element by element: those copies took 8% of MamKPD-B's time.

Only layout nodes (Split, Slice, Pad, Concat, Reshape, Transpose of chunk totals), Mul,
Add, Exp, the softplus's few elementwise nodes, a Gemm per direction for a
`LowRankDelta`'s dt_proj and ReduceSum when d_state > 1.
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
  """sum_n C[..., n] h[..., n, :]: (..., G, N), (..., G, N, P) -> (..., G, P).

  At N = 1 the state has no N axis (`_scan_unrolled`): h (..., G, P), C (..., G, 1),
  one Mul (a ReduceSum over one element is a full copy in ONNX Runtime, and a Reshape
  per step is five shape nodes with a dynamic batch)."""
  if h.ndim == C.ndim:
    return C * h
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


def _scan_unrolled(delta, u, B, C, A, chunk_size, reverse=False, scan=_linear_scan):
  """The recurrence over batch-major inputs; returns sum_n C_t h_t (without D u).

  Args:
    delta: (b, L, G, P) float32, after bias and softplus; or (b, H, W, G, P) for the
      (b, H, W, ...) scans (`_rows_scan`, `_column_scan`), and so for every array.
    u: (b, L, G, P) float32.
    B, C: (b, L, G, N) float32.
    A: (G, N, P) float32.
    reverse: scan from the last token to the first.
    scan: `_linear_scan` (over axis 1), `_rows_scan` or `_column_scan`.
  Returns:
    (b, L, G, P) float32.
  """
  if B.shape[-1] == 1:          # d_state 1: no N axis in the state (B, C broadcast)
    decay = jnp.exp(delta * A.reshape(A.shape[0], A.shape[-1]))       # (..., G, P)
    return scan(decay, delta * u * B, chunk_size, C, reverse)         # (..., G, P)
  # Size-1 axes by reshape, not indexing: jax2onnx turns x[..., None] into an Expand,
  # a full copy in ONNX Runtime.
  n_axis = lambda t: t.reshape(t.shape[:-1] + (1,) + t.shape[-1:])    # (..., G, 1, P)
  p_axis = lambda t: t.reshape(t.shape + (1,))                        # (..., G, N, 1)
  decay = jnp.exp(n_axis(delta) * A)                                  # (..., G, N, P)
  drive = n_axis(delta * u) * p_axis(B)                               # (..., G, N, P)
  return scan(decay, drive, chunk_size, C, reverse)                   # (..., G, P)


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


def _column_scan(decay, drive, chunk_size, C=None, reverse=False):
  """`_linear_scan` in column-major token order, on row-major (b, H, W, ...) arrays.

  Token (h, w) is number w H + h of the sequence: each column is scanned top to bottom
  (bottom to top with `reverse`) and the state runs on into the next column. The
  chunks are pieces of columns (T rows of one column), so step j of every chunk is the
  (b, H/T, 1, W, ...) slice of rows j, j + T, ...: a Split of the arrays as they lie,
  no transposed copy. Columns are padded to a multiple of T with identity steps
  (decay 1, drive 0: the state passes through unchanged), so the padding may sit
  between columns. Only the (b, H/T, W, ...) chunk totals are reordered, into scan
  order, for the recursive scan that gives each chunk's entering state.
  Returns (b, H, W, ...) states, or (b, H, W, G, P) read-outs when C is given.
  """
  if chunk_size < 2:
    raise ValueError(f"selective_scan_onnx: chunk_size must be >= 2 (the chunk totals "
                     f"recurse on L / chunk_size tokens), got {chunk_size}")
  batch, height, width = decay.shape[:3]
  chunk = min(chunk_size, height)
  pad = (-height) % chunk
  num_chunks = (height + pad) // chunk              # chunks per column

  def steps(x, fill):  # (b, H, W, ...) -> T arrays (b, H/T, 1, W, ...), scan order
    if pad:
      widths = [(0, 0), (pad, 0) if reverse else (0, pad)] + [(0, 0)] * (x.ndim - 2)
      x = jnp.pad(x, widths, constant_values=fill)
    x = x.reshape(batch, num_chunks, chunk, width, *x.shape[3:])
    tokens = jnp.split(x, chunk, axis=2)
    return tokens[::-1] if reverse else tokens

  def scan_order(t):   # (b, H/T, 1, W, ...) -> (b, W H/T, ...): chunks in token order
    t = jnp.swapaxes(t.reshape(batch, num_chunks, width, *t.shape[4:]), 1, 2)
    return t.reshape(batch, width * num_chunks, *t.shape[3:])

  def chunk_order(t):  # the inverse of scan_order
    t = jnp.swapaxes(t.reshape(batch, width, num_chunks, *t.shape[2:]), 1, 2)
    return t.reshape(batch, num_chunks, 1, width, *t.shape[3:])

  decays, drives = steps(decay, 1.0), steps(drive, 0.0)
  product, state = decays[0], drives[0]            # pass 1: each chunk from zero
  for a, v in zip(decays[1:], drives[1:]):
    state = a * state + v
    product = product * a
  if num_chunks * width > 1:
    ends = _linear_scan(scan_order(product), scan_order(state), chunk_size,
                        reverse=reverse)             # (b, W H/T, ...) chunk-end states
    h = chunk_order(_pad_tokens(ends[:, 1:], 0, 1) if reverse
                    else _pad_tokens(ends[:, :-1], 1, 0))
  else:
    h = jnp.zeros_like(drives[0])
  C_steps = None if C is None else steps(C, 0.0)
  outputs = []                                     # pass 2: from the entering states
  for j, (a, v) in enumerate(zip(decays, drives)):
    h = a * h + v
    outputs.append(h if C is None else _read_out(C_steps[j], h))
  out = jnp.concatenate(outputs[::-1] if reverse else outputs, axis=2)  # (b, H/T, T, W, ..)
  out = out.reshape(batch, num_chunks * chunk, width, *out.shape[4:])
  if pad:
    out = out[:, pad:] if reverse else out[:, :height]
  return out


def _rows_scan(decay, drive, chunk_size, C=None, reverse=False):
  """`_linear_scan` in row-major token order on (b, H, W, ...) arrays."""
  batch, height, width = decay.shape[:3]
  flat = lambda t: None if t is None else t.reshape(batch, height * width, *t.shape[3:])
  out = _linear_scan(flat(decay), flat(drive), chunk_size, flat(C), reverse)
  return out.reshape(batch, height, width, *out.shape[2:])


def cross_selective_scan_onnx(x, delta, A, B, C, D, delta_bias, *, delta_softplus=True,
                              chunk_size=CHUNK_SIZE):
  """SS2D's four-direction scan (args as `cross_selective_scan_reference`), loop-free.

  Directions 0 and 2 visit the row-major tokens (2 from the last), 1 and 3 the
  column-major ones (3 from the last). Every direction is scanned on the row-major
  (b, H, W, ...) arrays as they lie: the row-major ones as one flat sequence, the
  column-major ones by `_column_scan` (chunks are pieces of columns). So no input,
  output or delta is ever transposed or stacked (ONNX Runtime's transposes that move
  two axes copy element by element), and each direction's dt_proj is its own Gemm.
  """
  batch, height, width, per_group = x.shape
  d_state = B.shape[-1]
  delta_bias = delta_bias.reshape(NUM_DIRECTIONS, per_group)
  A = A.astype(jnp.float32).reshape(NUM_DIRECTIONS, per_group, d_state).transpose(0, 2, 1)
  B, C = B.astype(jnp.float32), C.astype(jnp.float32)
  x = x.astype(jnp.float32)
  u = x.reshape(batch, height, width, 1, per_group)                      # (b, H, W, 1, P)
  pick = lambda t, k: t[:, :, :, k:k + 1]                                # (b, H, W, 1, ..)

  def direction_delta(k):       # (b, H, W, 1, P) after bias and softplus
    if isinstance(delta, LowRankDelta):
      direction = LowRankDelta(pick(delta.dts, k), delta.weight[k:k + 1]).materialize()
    else:
      direction = pick(delta, k)
    return biased_delta(direction, delta_bias[k:k + 1], delta_softplus)

  scans = (_rows_scan, _column_scan)
  ys = sum(_scan_unrolled(direction_delta(k), u, pick(B, k), pick(C, k), A[k:k + 1],
                          chunk_size, reverse=k >= 2, scan=scans[k % 2])
           for k in range(NUM_DIRECTIONS))                               # (b, H, W, 1, P)
  skip = x * D.astype(jnp.float32).reshape(NUM_DIRECTIONS, per_group).sum(0)
  return ys.reshape(batch, height, width, per_group) + skip              # (b, H, W, P)
