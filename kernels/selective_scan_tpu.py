"""The scan kernels' Mosaic TPU bodies: forward and backward, in the shared kernel layout.

Called by `selective_scan_pallas` when its plan's backend is "mosaic_tpu"; inputs and
outputs are in the kernel layout documented there (u, delta (b, Lp, G*Pp); B, C
(b, Lp, G, N); A^T (G, N, Pp); D, delta_bias (G, Pp); chunk states (b, G, chunks, N, Pp)),
so the custom VJP, the padding and the sums of partials are shared with the GPU kernels.
Design (kernels/README.md, "Mosaic TPU"):

* One `pl.pallas_call` program per (batch, 128-channel tile, group). Its blocks hold the
  whole sequence in VMEM with tokens on sublanes and channels on the 128 lanes:
  u, delta, y (Lp, 128); the state h is an (N, 128) float32 value carried by the token
  loop, which runs inside the kernel (chunks of CHUNK tokens, states saved at chunk
  starts for the backward).
* Cross-scan: the group (direction) is the innermost grid axis, "arbitrary", and y's
  block does not depend on it, so y (and du in the backward) stays in VMEM while the four
  directions add into it, and is written to HBM once: the merge is in the kernel.
* B and C are read per token as (N, 1) columns. Kept as (b, Lp, G, N) they would pad N
  to 128 lanes in VMEM, so the wrapper stores them tokens-on-lanes, (b, G, Lq/128, N, 128)
  float32; a token's column is its lane of one (N, 128) tile, picked by a one-hot lane
  sum. dB, dC come back the same way (one lane written per token).
* Every dynamic index is on a leading (untiled) axis or is a single 32-bit row on the
  sublane axis. bfloat16 u and delta are converted into float32 VMEM scratch when a
  program starts (the shared u once for all four directions), so the per-token row reads
  are float32.
* The per-token math is `scan_math`, shared with the GPU bodies.
"""

import functools

import jax
import jax.numpy as jnp
from absl import logging
from jax import lax
from jax.experimental import pallas as pl

from mamkpd_jax.kernels import backend, scan_math

F32 = jnp.float32
LANES = backend.TPU_LANES


# ----------------------------------------------------------------------------------
# Grid and blocks. Index maps are written in (batch i, group g, tile j) terms; the
# merged cross-scan orders its grid (i, j, g) so the directions are innermost.


def _grid(plan):
  if plan.merges_in_kernel:
    return (plan.batch, plan.tiles, plan.groups)
  return (plan.batch, plan.groups, plan.tiles)


def _spec(plan, block, index):
  """BlockSpec with `index(i, g, j)` adapted to this plan's grid order."""
  if plan.merges_in_kernel:
    return pl.BlockSpec(block, lambda i, j, g: index(i, g, j))
  return pl.BlockSpec(block, lambda i, g, j: index(i, g, j))


def _lane_blocks(plan):
  """Tiles of 128 tokens in the tokens-on-lanes layout of B, C, dB, dC."""
  return -(-plan.padded_length // LANES)


def _specs(plan):
  lp, n, tiles, q = plan.padded_length, plan.d_state, plan.tiles, _lane_blocks(plan)
  by_channel = _spec(plan, (None, lp, LANES), lambda i, g, j: (i, 0, g * tiles + j))
  shared = _spec(plan, (None, lp, LANES), lambda i, g, j: (i, 0, j))
  merged = plan.merges_in_kernel
  return dict(
      channel=by_channel,
      u=shared if plan.cross else by_channel,           # u, dy: one map if cross
      out=shared if merged else by_channel,             # y, du
      lanes=_spec(plan, (None, None, q, n, LANES), lambda i, g, j: (i, g, 0, 0, 0)),
      a=_spec(plan, (None, n, LANES), lambda i, g, j: (g, 0, j)),
      vector=_spec(plan, (None, 1, LANES), lambda i, g, j: (g, 0, j)),
      states=_spec(plan, (None, None, plan.num_chunks, n, LANES),
                   lambda i, g, j: (i, g, 0, 0, j)),
      partial_lanes=_spec(plan, (None, None, None, q, n, LANES),
                          lambda i, g, j: (i, g, j, 0, 0, 0)),
      batch_a=_spec(plan, (None, None, n, LANES), lambda i, g, j: (i, g, 0, j)),
      batch_vector=_spec(plan, (None, None, 1, LANES), lambda i, g, j: (i, g, 0, j)),
  )


# ----------------------------------------------------------------------------------
# In-kernel helpers.


def _group(plan):
  return pl.program_id(2 if plan.merges_in_kernel else 1)


def _token(step, group, plan):
  return scan_math.direction_token(step, group, plan.length, plan.height, plan.width)


def _as_float32(ref, scratch, plan, shared=False):
  """`ref` itself if float32; else its block converted into `scratch`, CHUNK rows at a
  time (bfloat16 packs CHUNK = 16 rows per tile, so each copy is whole tiles). A block
  `shared` by the four merged directions (u) is converted by the first only: scratch
  persists across the grid's steps, and the directions are the innermost axis."""
  if ref.dtype == F32:
    return ref
  size = backend.CHUNK

  def copy(k, carry):
    rows = pl.ds(pl.multiple_of(k * size, size), size)
    scratch[rows, :] = ref[rows, :].astype(F32)
    return carry

  def convert():
    lax.fori_loop(0, ref.shape[0] // size, copy, 0)

  if shared and plan.merges_in_kernel:
    pl.when(_group(plan) == 0)(convert)
  else:
    convert()
  return scratch


def _row(ref, token):
  return ref[pl.ds(token, 1), :]                           # (1, 128) float32


def _column(ref, token, lane):
  """Token's (N, 1) column of a tokens-on-lanes (Lq/128, N, 128) block."""
  tile = ref[lax.div(token, LANES)]                        # (N, 128)
  return jnp.sum(jnp.where(lane == lax.rem(token, LANES), tile, 0.0), axis=1, keepdims=True)


def _store_column(ref, token, lane, column):
  """ref's lane of `token` := column (N, 1); the tile's other lanes unchanged."""
  q = lax.div(token, LANES)
  ref[q] = jnp.where(lane == lax.rem(token, LANES), column, ref[q])


def _accumulate_row(ref, token, value, plan):
  """ref[token] = value, or += when the directions are merged (ref zeroed by the first)."""
  if plan.merges_in_kernel:
    ref[pl.ds(token, 1), :] += value
  else:
    ref[pl.ds(token, 1), :] = value


def _zero_when_first_direction(ref, plan):
  if plan.merges_in_kernel:
    @pl.when(_group(plan) == 0)
    def _():
      ref[...] = jnp.zeros_like(ref)


def _step_inputs(refs, token, bias, lane, plan):
  """One token: u, z = delta + bias, delta ((1, 128) rows); B_t, C_t ((N, 1) columns)."""
  u_ref, delta_ref, b_ref, c_ref = refs
  u = _row(u_ref, token)
  z = _row(delta_ref, token) + bias
  return (u, z, scan_math.step_delta(z, plan.delta_softplus), _column(b_ref, token, lane),
          _column(c_ref, token, lane))


# ----------------------------------------------------------------------------------
# Kernel bodies.


def _forward_body(u_ref, delta_ref, b_ref, c_ref, a_ref, d_ref, bias_ref, y_ref, *rest,
                  plan, save_states):
  """y for one (batch, tile, group); optionally h at each chunk start."""
  states_ref = rest[0] if save_states else None
  u_scratch, delta_scratch = rest[-2:]
  g = _group(plan)
  refs = (_as_float32(u_ref, u_scratch, plan, shared=True),
          _as_float32(delta_ref, delta_scratch, plan), b_ref, c_ref)
  a, skip, bias = a_ref[...], d_ref[...], bias_ref[...]    # (N, 128), (1, 128), (1, 128)
  lane = lax.broadcasted_iota(jnp.int32, a.shape, 1)
  _zero_when_first_direction(y_ref, plan)

  def step(s, h):                                          # h (N, 128)
    token = _token(s, g, plan)
    u, _, delta, b, c = _step_inputs(refs, token, bias, lane, plan)
    _, h = scan_math.state_step(h, a, delta, u, b)
    y = scan_math.output(jnp.sum(h * c, axis=0, keepdims=True), skip, u)
    _accumulate_row(y_ref, token, y, plan)
    return h

  def chunk_body(chunk, h):
    if save_states:
      states_ref[chunk] = h
    start = chunk * plan.chunk
    return lax.fori_loop(start, start + plan.chunk, step, h)

  lax.fori_loop(0, plan.num_chunks, chunk_body, jnp.zeros(a.shape, F32))


def _backward_body(u_ref, delta_ref, b_ref, c_ref, a_ref, d_ref, bias_ref, states_ref,
                   dy_ref, du_ref, ddelta_ref, db_ref, dc_ref, da_ref, dd_ref, dbias_ref,
                   u_scratch, delta_scratch, history_ref, *, plan):
  """Gradients for one (batch, tile, group), chunks in reverse order.

  Per chunk: a forward loop recomputes the state entering each step from the chunk's
  checkpoint into `history_ref` (VMEM, (CHUNK, N, 128)); a reverse loop then reloads
  each step's inputs, recomputes its decay and next state, and carries dL/dh back.
  """
  g = _group(plan)
  refs = (_as_float32(u_ref, u_scratch, plan, shared=True),
          _as_float32(delta_ref, delta_scratch, plan), b_ref, c_ref)
  a, skip, bias = a_ref[...], d_ref[...], bias_ref[...]
  lane = lax.broadcasted_iota(jnp.int32, a.shape, 1)
  _zero_when_first_direction(du_ref, plan)
  db_ref[...] = jnp.zeros_like(db_ref)                     # lanes past Lp stay 0
  dc_ref[...] = jnp.zeros_like(dc_ref)

  def recompute(k, h, start):                              # h entering step start + k
    history_ref[k] = h
    u, _, delta, b, _ = _step_inputs(refs, _token(start + k, g, plan), bias, lane, plan)
    return scan_math.state_step(h, a, delta, u, b)[1]

  def step_back(r, carry, start):
    grad_next, da, dd, dbias = carry           # grad_next: dL/dh from the next token
    k = plan.chunk - 1 - r
    token = _token(start + k, g, plan)
    u, z, delta, b, c = _step_inputs(refs, token, bias, lane, plan)
    dy = _row(dy_ref, token)
    h_prev = history_ref[k]
    decay, h_after = scan_math.state_step(h_prev, a, delta, u, b)
    grads = scan_math.step_gradients(dy, grad_next, h_prev, h_after, decay, a, delta, u,
                                     b, c)                 # (N, 128) terms
    _store_column(db_ref, token, lane, jnp.sum(grads.db_terms, axis=1, keepdims=True))
    _store_column(dc_ref, token, lane, jnp.sum(grads.dc_terms, axis=1, keepdims=True))
    du = scan_math.finish_du(jnp.sum(grads.du_terms, axis=0, keepdims=True), delta, skip, dy)
    ddelta = scan_math.finish_ddelta(jnp.sum(grads.ddelta_terms, axis=0, keepdims=True), z,
                                     plan.delta_softplus)
    _accumulate_row(du_ref, token, du, plan)
    ddelta_ref[pl.ds(token, 1), :] = ddelta
    return grads.carry, da + grads.da, dd + dy * u, dbias + ddelta

  def chunk_body(r, carry):
    chunk = plan.num_chunks - 1 - r
    start = chunk * plan.chunk
    lax.fori_loop(0, plan.chunk, functools.partial(recompute, start=start), states_ref[chunk])
    return lax.fori_loop(0, plan.chunk, functools.partial(step_back, start=start), carry)

  state, row = jnp.zeros(a.shape, F32), jnp.zeros(skip.shape, F32)
  _, da, dd, dbias = lax.fori_loop(0, plan.num_chunks, chunk_body, (state, state, row, row))
  da_ref[...] = da
  dd_ref[...] = dd
  dbias_ref[...] = dbias


# ----------------------------------------------------------------------------------
# Layout of B, C and of their gradients; VMEM budget; the calls.


def _to_lanes(plan, x):
  """B or C (b, Lp, G, N) -> (b, G, Lq/128, N, 128) float32, tokens on lanes."""
  b, lp, g, n = x.shape
  q = _lane_blocks(plan)
  x = jnp.pad(x.astype(F32), ((0, 0), (0, q * LANES - lp), (0, 0), (0, 0)))
  return x.reshape(b, q, LANES, g, n).transpose(0, 3, 1, 4, 2)


def _from_lanes(plan, x):
  """Per-tile dB or dC (b, G, tiles, Lq/128, N, 128) -> (b, Lp, G, tiles, N)."""
  b, g, tiles, q, n, _ = x.shape
  x = x.transpose(0, 3, 5, 1, 2, 4).reshape(b, q * LANES, g, tiles, n)
  return x[:, :plan.padded_length]


def _scratch(plan, inputs):
  """float32 copies of u's and delta's blocks, for those that arrive in another dtype
  (a float32 one gets a one-chunk placeholder, unused)."""
  from jax.experimental.pallas import tpu as pltpu
  rows = lambda x: plan.padded_length if x.dtype != F32 else backend.CHUNK
  return [pltpu.VMEM((rows(x), LANES), F32) for x in inputs[:2]]


def vmem_bytes(plan, dtypes, backward):
  """One program's VMEM: its double-buffered blocks plus scratch, in bytes.

  dtypes: those of u and delta. Small blocks (A, D, bias) are left out; an (N, 128)
  tile takes at least 8 sublanes.
  """
  row = plan.padded_length * LANES                         # elements of an (Lp, 128) block
  tile = max(plan.d_state, 8) * LANES                      # elements of an (N, 128) tile
  u_bytes, delta_bytes = (row * jnp.dtype(d).itemsize for d in dtypes)
  lanes = _lane_blocks(plan) * tile * 4                    # B, C, dB or dC
  blocks = u_bytes + delta_bytes + 2 * lanes + row * 4 + plan.num_chunks * tile * 4
  if backward:
    blocks += 3 * row * 4 + 2 * lanes                      # dy, du, d(delta); dB, dC
  scratch = sum(row * 4 for d in dtypes if jnp.dtype(d) != F32)
  return 2 * blocks + scratch + (plan.chunk * tile * 4 if backward else 0)


def _vmem_limit(plan, dtypes, backward):
  """Mosaic's VMEM limit for the kernel: 1.25 x `vmem_bytes` (at least 32 MiB), capped
  on a TPU by the chip's VMEM, with a warning when even that looks too small.

  The estimate is an upper bound (compiled for v4, a backward program used 19.7 MiB where
  it says 22.6, and 24.3 where it says 45.6: Mosaic single-buffers some blocks), so a
  large estimate warns instead of refusing; Mosaic's own error is "Ran out of memory in
  memory space vmem"."""
  need = vmem_bytes(plan, dtypes, backward)
  limit = max(32 << 20, int(need * 1.25))
  if jax.default_backend() != "tpu":                       # lowering from a host
    return limit
  from jax.experimental.pallas import tpu as pltpu
  capacity = pltpu.get_tpu_info().vmem_capacity_bytes
  if need > capacity:
    logging.warning(
        "scan_impl='pallas_tpu' keeps the whole sequence of 128 channels in VMEM: %d "
        "tokens may need up to %.0f MiB, this TPU (%s) has %.0f MiB. If Mosaic reports "
        "'Ran out of memory in memory space vmem', use a smaller input size or "
        "scan_impl='chunked'.", plan.length, need / 2**20, jax.devices()[0].device_kind,
        capacity / 2**20)
  return min(limit, capacity)


def _compiler_params(plan, dtypes, backward):
  from jax.experimental.pallas import tpu as pltpu
  semantics = (("parallel", "parallel", "arbitrary") if plan.merges_in_kernel
               else ("parallel",) * 3)
  return pltpu.CompilerParams(dimension_semantics=semantics,
                              vmem_limit_bytes=_vmem_limit(plan, dtypes, backward))


def _interpret(plan):
  from jax.experimental.pallas import tpu as pltpu
  return pltpu.InterpretParams() if plan.interpret else False


def _call(body, plan, in_specs, out_specs, out_shapes, scratch, dtypes, backward, *args):
  return pl.pallas_call(
      body, grid=_grid(plan), in_specs=in_specs, out_specs=out_specs, out_shape=out_shapes,
      scratch_shapes=scratch, compiler_params=_compiler_params(plan, dtypes, backward),
      interpret=_interpret(plan))(*args)


def _dtypes(inputs):
  return (inputs[0].dtype, inputs[1].dtype)                # u, delta


def _inputs_and_specs(plan, inputs):
  """Kernel-layout inputs with B, C moved to lanes and D, bias as (G, 1, Pp) rows."""
  u, delta, b, c, a, d, bias = inputs
  s = _specs(plan)
  rows = lambda v: v.reshape(v.shape[0], 1, v.shape[1])
  args = (u, delta, _to_lanes(plan, b), _to_lanes(plan, c), a, rows(d), rows(bias))
  specs = [s["u"], s["channel"], s["lanes"], s["lanes"], s["a"], s["vector"], s["vector"]]
  return args, specs, s


def forward(plan, inputs, out_shapes):
  """The forward kernel: (y [, states]) with the shapes `out_shapes` (see the caller)."""
  args, in_specs, s = _inputs_and_specs(plan, inputs)
  save_states = len(out_shapes) == 2
  out_specs = [s["out"]] + ([s["states"]] if save_states else [])
  body = functools.partial(_forward_body, plan=plan, save_states=save_states)
  return _call(body, plan, in_specs, out_specs, list(out_shapes),
               _scratch(plan, inputs), _dtypes(inputs), False, *args)


def backward(plan, inputs, states, dy, out_shapes):
  """The backward kernel: the per-program gradient pieces of `out_shapes`."""
  from jax.experimental.pallas import tpu as pltpu
  args, in_specs, s = _inputs_and_specs(plan, inputs)
  du, ddelta, db, dc, da, dd, dbias = out_shapes
  b, g, q, n = plan.batch, plan.groups, _lane_blocks(plan), plan.d_state
  partial = jax.ShapeDtypeStruct((b, g, plan.tiles, q, n, LANES), F32)
  vector = jax.ShapeDtypeStruct((b, g, 1, dd.shape[-1]), F32)
  out_specs = [s["out"], s["channel"], s["partial_lanes"], s["partial_lanes"], s["batch_a"],
               s["batch_vector"], s["batch_vector"]]
  scratch = _scratch(plan, inputs) + [
      pltpu.VMEM((plan.chunk, n, LANES), F32)]            # history
  outs = _call(functools.partial(_backward_body, plan=plan), plan,
               in_specs + [s["states"], s["u"]], out_specs,
               [du, ddelta, partial, partial, da, vector, vector], scratch,
               _dtypes(inputs), True, *args, states, dy)
  du, ddelta, db, dc, da, dd, dbias = outs
  return (du, ddelta, _from_lanes(plan, db), _from_lanes(plan, dc), da,
          dd.reshape(b, g, -1), dbias.reshape(b, g, -1))
