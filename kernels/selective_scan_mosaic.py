"""The scan kernels' Mosaic GPU bodies: forward and backward, same layout as Triton's.

Called by `selective_scan_pallas` when its plan's backend is "mosaic_gpu"; inputs and
outputs are in the kernel layout documented there (u, delta (b, Lp, G*Pp); B, C
(b, Lp, G, N); A^T (G, N, Pp); D, delta_bias (G, Pp)), so the custom VJP, the padding
and the sums of partials are shared with the Triton backend. Design (kernels/README.md):

* One `plgpu.kernel` program (one warpgroup, 128 lanes) per (batch, group, 128-channel
  tile); lane c owns channel c, and the state is N separate (128,) rows carried by
  `fori_loop`s over chunks of CHUNK tokens and, inside, over single tokens (not
  unrolled: unrolled chunks made lowering take minutes at N = 16). Per token: u, delta
  are one (128,) row each, B_t and C_t N scalars each.
* Cross-scan: one program per (batch, tile) walks the four directions in turn and sums
  them into y and du itself (`_store`), so no (b, L, 4, P) tensor is written.
* Loads and stores go between GMEM and registers directly (no TMA), so no 16-byte TMA
  rule applies to B and C, and N is not padded. The backward's recomputed chunk states
  sit in shared memory, (CHUNK, N, 128) float32.
* The per-token math is `scan_math`, shared with the Triton bodies; reductions over
  the state add rows, reductions over channels are `jnp.sum` of a row (a scalar).
"""

import functools

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from mamkpd_jax.kernels import backend, scan_math

F32 = jnp.float32


def _grid_names(plan):
  """Merged cross-scan: a program walks all four directions of its tile itself."""
  return ("batch", "tile") if plan.merges_in_kernel else ("batch", "group", "tile")


def _grid(plan):
  return ((plan.batch, plan.tiles) if plan.merges_in_kernel
          else (plan.batch, plan.groups, plan.tiles))


def _for_each_group(plan, scan_group):
  """Runs scan_group(g) for this program's group, or for every direction in turn."""
  if not plan.merges_in_kernel:
    scan_group(lax.axis_index("group"))
    return
  def body(g, carry):
    scan_group(g)
    return carry
  lax.fori_loop(0, plan.groups, body, 0)


def _columns(plan, g, j):
  """This tile's channel columns, per layout, for group g."""
  lanes = plan.tile
  in_group = pl.ds(j * lanes, lanes)                           # A, D, delta_bias, states
  channels = pl.ds(g * plan.padded_per_group + j * lanes, lanes)  # delta, d(delta)
  u_columns = in_group if plan.cross else channels             # u, dy: shared map if cross
  out_columns = in_group if plan.merges_in_kernel else channels  # y, du
  return in_group, channels, u_columns, out_columns


def _store(ref, index, value, g, plan):
  """ref[index] = value; merged: the first direction writes, the others add.

  No race: every element of y (du) is read and written only by the lane that owns its
  channel, in the program that owns the tile, one direction after the other.
  """
  if not plan.merges_in_kernel:
    ref[index] = value
    return

  @pl.when(g == 0)
  def _():
    ref[index] = value

  @pl.when(g > 0)
  def _():
    ref[index] = ref[index] + value


def _token(step, group, plan):
  return scan_math.direction_token(step, group, plan.length, plan.height, plan.width)


def _step_inputs(refs, i, g, token, columns, bias, plan):
  """One token: u, z = delta + bias, delta ((128,) rows); B_t, C_t (N scalars each)."""
  u_ref, delta_ref, b_ref, c_ref = refs
  u_columns, channels = columns
  u = u_ref[i, token, u_columns].astype(F32)
  z = delta_ref[i, token, channels].astype(F32) + bias
  b = [b_ref[i, token, g, n].astype(F32) for n in range(plan.d_state)]
  c = [c_ref[i, token, g, n].astype(F32) for n in range(plan.d_state)]
  return u, z, scan_math.step_delta(z, plan.delta_softplus), b, c


def _forward_body(u_ref, delta_ref, b_ref, c_ref, a_ref, d_ref, bias_ref, y_ref,
                  *states_ref, plan):
  """y for one (batch, tile) and its group(s); optionally h at each chunk start."""
  i, j = lax.axis_index("batch"), lax.axis_index("tile")
  refs = (u_ref, delta_ref, b_ref, c_ref)

  def scan_group(g):
    in_group, channels, u_columns, out_columns = _columns(plan, g, j)
    a_rows = [a_ref[g, n, in_group] for n in range(plan.d_state)]   # N x (128,)
    skip, bias = d_ref[g, in_group], bias_ref[g, in_group]

    def step_body(step, h):                                    # h: N x (128,)
      token = _token(step, g, plan)
      u, _, delta, b, c = _step_inputs(refs, i, g, token, (u_columns, channels), bias, plan)
      h = tuple(scan_math.state_step(h[n], a_rows[n], delta, u, b[n])[1]
                for n in range(plan.d_state))
      read_out = sum(h[n] * c[n] for n in range(plan.d_state))
      _store(y_ref, (i, token, out_columns), scan_math.output(read_out, skip, u), g, plan)
      return h

    def chunk_body(chunk, h):
      if states_ref:
        for n in range(plan.d_state):
          states_ref[0][i, g, chunk, n, in_group] = h[n]
      start = chunk * plan.chunk
      return lax.fori_loop(start, start + plan.chunk, step_body, h)

    h0 = tuple(jnp.zeros((plan.tile,), F32) for _ in range(plan.d_state))
    lax.fori_loop(0, plan.num_chunks, chunk_body, h0)

  _for_each_group(plan, scan_group)


def _backward_body(u_ref, delta_ref, b_ref, c_ref, a_ref, d_ref, bias_ref, states_ref,
                   dy_ref, du_ref, ddelta_ref, db_ref, dc_ref, da_ref, dd_ref, dbias_ref,
                   history_ref, *, plan):
  """Gradients for one (batch, tile) and its group(s), chunks in reverse order.

  Per chunk: a forward loop recomputes the state entering each step from the chunk's
  checkpoint into `history_ref` (SMEM, (CHUNK, N, 128)); a reverse loop then reloads
  each step's inputs, recomputes its decay and next state, and carries dL/dh back.
  """
  i, j = lax.axis_index("batch"), lax.axis_index("tile")
  refs = (u_ref, delta_ref, b_ref, c_ref)

  def scan_group(g):
    in_group, channels, u_columns, out_columns = _columns(plan, g, j)
    a_rows = [a_ref[g, n, in_group] for n in range(plan.d_state)]
    skip, bias = d_ref[g, in_group], bias_ref[g, in_group]
    columns = (u_columns, channels)

    def recompute(k, h, start):                                # h entering step start + k
      for n in range(plan.d_state):
        history_ref[k, n, :] = h[n]
      u, _, delta, b, _ = _step_inputs(refs, i, g, _token(start + k, g, plan), columns,
                                       bias, plan)
      return tuple(scan_math.state_step(h[n], a_rows[n], delta, u, b[n])[1]
                   for n in range(plan.d_state))

    def step_back(r, carry, start):
      grad_next, da, dd, dbias = carry         # grad_next: dL/dh from the next token
      k = plan.chunk - 1 - r
      token = _token(start + k, g, plan)
      u, z, delta, b, c = _step_inputs(refs, i, g, token, columns, bias, plan)
      dy = dy_ref[i, token, u_columns].astype(F32)
      du_sum, ddelta_sum, grad_next, da = 0.0, 0.0, list(grad_next), list(da)
      for n in range(plan.d_state):
        h_prev = history_ref[k, n, :]
        decay, h_after = scan_math.state_step(h_prev, a_rows[n], delta, u, b[n])
        grads = scan_math.step_gradients(dy, grad_next[n], h_prev, h_after, decay,
                                         a_rows[n], delta, u, b[n], c[n])
        db_ref[i, token, g, j, n] = jnp.sum(grads.db_terms)
        dc_ref[i, token, g, j, n] = jnp.sum(grads.dc_terms)
        du_sum, ddelta_sum = du_sum + grads.du_terms, ddelta_sum + grads.ddelta_terms
        da[n], grad_next[n] = da[n] + grads.da, grads.carry
      ddelta = scan_math.finish_ddelta(ddelta_sum, z, plan.delta_softplus)
      _store(du_ref, (i, token, out_columns), scan_math.finish_du(du_sum, delta, skip, dy),
             g, plan)
      ddelta_ref[i, token, channels] = ddelta
      return tuple(grad_next), tuple(da), dd + dy * u, dbias + ddelta

    def chunk_body(r, carry):
      chunk = plan.num_chunks - 1 - r
      start = chunk * plan.chunk
      h = tuple(states_ref[i, g, chunk, n, in_group] for n in range(plan.d_state))
      lax.fori_loop(0, plan.chunk, functools.partial(recompute, start=start), h)
      return lax.fori_loop(0, plan.chunk, functools.partial(step_back, start=start), carry)

    rows = tuple(jnp.zeros((plan.tile,), F32) for _ in range(plan.d_state))
    row = jnp.zeros((plan.tile,), F32)
    _, da, dd, dbias = lax.fori_loop(0, plan.num_chunks, chunk_body, (rows, rows, row, row))
    for n in range(plan.d_state):
      da_ref[i, g, n, in_group] = da[n]
    dd_ref[i, g, in_group] = dd
    dbias_ref[i, g, in_group] = dbias

  _for_each_group(plan, scan_group)


def _call(body, plan, out_shapes, *args, scratch_types=()):
  from jax.experimental.pallas import mosaic_gpu as plgpu
  return plgpu.kernel(
      functools.partial(body, plan=plan), out_type=out_shapes,
      scratch_types=scratch_types,
      grid=_grid(plan), grid_names=_grid_names(plan),
      compiler_params=backend.mosaic_gpu_compiler_params(),
      interpret=backend.mosaic_gpu_interpret(plan.interpret))(*args)


def forward(plan, inputs, out_shapes):
  """The forward kernel: (y [, states]) with the shapes `out_shapes` (see the caller)."""
  return _call(_forward_body, plan, tuple(out_shapes), *inputs)


def backward(plan, inputs, states, dy, out_shapes):
  """The backward kernel: the per-program gradient pieces of `out_shapes`."""
  from jax.experimental.pallas import mosaic_gpu as plgpu
  history = plgpu.SMEM((plan.chunk, plan.d_state, plan.tile), F32)
  return _call(_backward_body, plan, tuple(out_shapes), *inputs, states, dy,
               scratch_types=[history])
