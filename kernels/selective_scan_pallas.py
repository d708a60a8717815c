"""The selective scan as Pallas kernels, forward and backward, with SS2D's cross-scan fused.

Same math as `selective_scan_ref` (see its docstring). This module holds what the three
kernel backends share (plan, kernel layout, padding, custom VJP, sums of partials) and
the Triton kernel bodies; the Mosaic GPU bodies are in `selective_scan_mosaic`, the
Mosaic TPU bodies in `selective_scan_tpu`, the per-token math of all three in
`scan_math`. Design (kernels/README.md):

* Layout. Token-major: each step reads one contiguous row of a channel tile.
  Kernel view: u, delta (b, Lp, G*Pp); B, C (b, Lp, G, Np); A transposed (G, Np, Pp);
  D, delta_bias (G, Pp); Lp, Pp, Np padded (L to the chunk, channels per group to the
  tile, N to a power of two). Padding is zero, and padded tokens come after every real
  token in every visiting order, so they never touch a real output or gradient.
* Grid (batch, group, channel tile). A program owns TC channels of one group and
  carries their state h (Np, TC) in registers through a `fori_loop` over chunks of
  CHUNK tokens; each chunk issues its loads first, then runs its steps unrolled.
* Cross-scan fused (`cross_selective_scan_pallas`). The four SS2D directions are the
  four groups. Direction k visits the row-major map in its own order (`_token`), so u
  is read straight from the (b, H*W, P) map shared by all directions, and delta, B, C
  are computed per token in row-major order (x_proj is per token): no permuted copies.
  Each direction writes its outputs at their row-major positions; the merge is one
  sum over the direction axis, fused by XLA into the kernel's consumer.
* Backward (`jax.custom_vjp`). The forward saves h at the start of every chunk. The
  backward kernel walks the chunks in reverse: it recomputes the chunk's CHUNK states
  from the checkpoint (static unroll, no division by exp(delta*A)), then sweeps back
  carrying dL/dh. dB, dC (reductions over channels) come out as per-tile partials, dA,
  dD, d(delta_bias) as per-batch partials; XLA sums them.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from mamkpd_jax.kernels import (backend, batch_parallel, scan_math, selective_scan_mosaic,
                                selective_scan_tpu)

F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class _Plan:
  """Static shapes and options of one kernel call (hashable: a jit/custom_vjp constant)."""

  batch: int
  length: int            # L, real tokens
  groups: int            # G (4 directions for the cross-scan)
  per_group: int         # P, channels per group
  d_state: int           # N
  height: int            # > 0: the cross-scan of an (H, W) map; 0: plain token order
  width: int
  delta_softplus: bool
  interpret: bool
  kernel_backend: str    # a name of `backend.BACKENDS`: which kernel bodies run

  @property
  def chunk(self):
    return backend.CHUNK

  @property
  def padded_length(self):
    return -(-self.length // self.chunk) * self.chunk

  @property
  def num_chunks(self):
    return self.padded_length // self.chunk

  @property
  def padded_d_state(self):
    return backend.padded_d_state(self.kernel_backend, self.d_state)

  @property
  def tile(self):
    return backend.channel_tile(self.kernel_backend, self.per_group, self.padded_d_state)

  @property
  def padded_per_group(self):
    return -(-self.per_group // self.tile) * self.tile

  @property
  def tiles(self):
    return self.padded_per_group // self.tile

  @property
  def cross(self):
    return self.height > 0

  @property
  def merges_in_kernel(self):
    """Mosaic GPU and TPU sum the four directions into y (and du) themselves; Triton
    leaves it to XLA."""
    return self.cross and self.kernel_backend in backend.MERGING_BACKENDS

  @property
  def output_groups(self):
    """Group blocks in y and du: 1 when the kernel merges the directions."""
    return 1 if self.merges_in_kernel else self.groups


# ----------------------------------------------------------------------------------
# In-kernel helpers.


def _token(step, group, plan):
  return scan_math.direction_token(step, group, plan.length, plan.height, plan.width)


def _step_inputs(refs, token, bias, plan):
  """Loads one token's row: u, z (delta + bias), delta, B and C as columns."""
  u_ref, delta_ref, b_ref, c_ref = refs
  u = u_ref[pl.ds(token, 1), :].astype(F32)                  # (1, TC)
  z = delta_ref[pl.ds(token, 1), :].astype(F32) + bias       # (1, TC)
  delta = scan_math.step_delta(z, plan.delta_softplus)
  b_col = b_ref[pl.ds(token, 1), :][0].astype(F32)[:, None]  # (Np, 1)
  c_col = c_ref[pl.ds(token, 1), :][0].astype(F32)[:, None]  # (Np, 1)
  return u, z, delta, b_col, c_col


# ----------------------------------------------------------------------------------
# Kernels. Refs are the blocks of one program: tokens x (one channel tile).


def _forward_kernel(u_ref, delta_ref, b_ref, c_ref, a_ref, d_ref, bias_ref, y_ref,
                    *states_ref, plan):
  """y for one (batch, group, channel tile); optionally h at each chunk start."""
  group = pl.program_id(1)
  a_t = a_ref[...]                                           # (Np, TC)
  skip = d_ref[...][None, :]                                 # (1, TC)
  bias = bias_ref[...][None, :]

  def chunk_body(chunk, h):                                  # h (Np, TC)
    if states_ref:
      states_ref[0][pl.ds(chunk, 1), :, :] = h[None]
    tokens = [_token(chunk * plan.chunk + j, group, plan) for j in range(plan.chunk)]
    rows = [_step_inputs((u_ref, delta_ref, b_ref, c_ref), t, bias, plan) for t in tokens]
    for token, (u, _, delta, b_col, c_col) in zip(tokens, rows):
      _, h = scan_math.state_step(h, a_t, delta, u, b_col)
      y = scan_math.output(jnp.sum(h * c_col, axis=0)[None, :], skip, u)   # (1, TC)
      y_ref[pl.ds(token, 1), :] = y
    return h

  h0 = jnp.zeros((plan.padded_d_state, plan.tile), F32)
  lax.fori_loop(0, plan.num_chunks, chunk_body, h0)


def _backward_kernel(u_ref, delta_ref, b_ref, c_ref, a_ref, d_ref, bias_ref, states_ref,
                     dy_ref, du_ref, ddelta_ref, db_ref, dc_ref, da_ref, dd_ref, dbias_ref,
                     *, plan):
  """Gradients for one (batch, group, channel tile), chunks in reverse order."""
  group = pl.program_id(1)
  a_t = a_ref[...]                                           # (Np, TC)
  skip = d_ref[...][None, :]
  bias = bias_ref[...][None, :]
  size = plan.chunk

  def chunk_body(i, carry):
    g_next, da, dd, dbias = carry        # dL/dh_t flowing from step t+1: a_{t+1} * G_{t+1}
    chunk = plan.num_chunks - 1 - i
    h = states_ref[pl.ds(chunk, 1), :, :][0]                 # state before the chunk
    tokens = [_token(chunk * size + j, group, plan) for j in range(size)]
    rows = [_step_inputs((u_ref, delta_ref, b_ref, c_ref), t, bias, plan) for t in tokens]
    dys = [dy_ref[pl.ds(t, 1), :].astype(F32) for t in tokens]
    # Recompute the chunk's states: h_prev[j] enters step j, decay[j] = exp(delta_j A).
    h_prev, decay = [], []
    for u, _, delta, b_col, _ in rows:
      h_prev.append(h)
      step_decay, h = scan_math.state_step(h, a_t, delta, u, b_col)
      decay.append(step_decay)
    h_after = h_prev[1:] + [h]
    for j in reversed(range(size)):
      u, z, delta, b_col, c_col = rows[j]
      grads = scan_math.step_gradients(dys[j], g_next, h_prev[j], h_after[j], decay[j],
                                       a_t, delta, u, b_col, c_col)   # (Np, TC) terms
      dc_ref[pl.ds(tokens[j], 1), :] = jnp.sum(grads.dc_terms, axis=1)[None, :]
      db_ref[pl.ds(tokens[j], 1), :] = jnp.sum(grads.db_terms, axis=1)[None, :]
      du = scan_math.finish_du(jnp.sum(grads.du_terms, axis=0)[None, :], delta, skip, dys[j])
      ddelta = scan_math.finish_ddelta(jnp.sum(grads.ddelta_terms, axis=0)[None, :], z,
                                       plan.delta_softplus)
      du_ref[pl.ds(tokens[j], 1), :] = du
      ddelta_ref[pl.ds(tokens[j], 1), :] = ddelta
      da = da + grads.da
      dd = dd + dys[j] * u
      dbias = dbias + ddelta
      g_next = grads.carry
    return g_next, da, dd, dbias

  state = jnp.zeros((plan.padded_d_state, plan.tile), F32)
  row = jnp.zeros((1, plan.tile), F32)
  _, da, dd, dbias = lax.fori_loop(0, plan.num_chunks, chunk_body, (state, state, row, row))
  da_ref[...] = da
  dd_ref[...] = dd[0]
  dbias_ref[...] = dbias[0]


# ----------------------------------------------------------------------------------
# pallas_call wrappers (kernel layout in, kernel layout out).


def _specs(plan):
  """BlockSpecs over the grid (batch i, group g, tile j)."""
  lp, tc, np_, tiles = plan.padded_length, plan.tile, plan.padded_d_state, plan.tiles
  by_channel = pl.BlockSpec((None, lp, tc), lambda i, g, j: (i, 0, g * tiles + j))
  # u and dy of the cross-scan: one map shared by all four directions.
  shared = pl.BlockSpec((None, lp, tc), lambda i, g, j: (i, 0, j))
  return dict(
      channel=by_channel,
      u=shared if plan.cross else by_channel,
      state_vector=pl.BlockSpec((None, lp, None, np_), lambda i, g, j: (i, 0, g, 0)),
      a=pl.BlockSpec((None, np_, tc), lambda i, g, j: (g, 0, j)),
      vector=pl.BlockSpec((None, tc), lambda i, g, j: (g, j)),
      states=pl.BlockSpec((None, None, plan.num_chunks, np_, tc),
                          lambda i, g, j: (i, g, 0, 0, j)),
      partial_state_vector=pl.BlockSpec((None, lp, None, None, np_),
                                        lambda i, g, j: (i, 0, g, j, 0)),
      batch_a=pl.BlockSpec((None, None, np_, tc), lambda i, g, j: (i, g, 0, j)),
      batch_vector=pl.BlockSpec((None, None, tc), lambda i, g, j: (i, g, j)),
  )


def _call(kernel, plan, in_specs, out_specs, out_shapes, *args):
  return pl.pallas_call(
      functools.partial(kernel, plan=plan),
      grid=(plan.batch, plan.groups, plan.tiles),
      in_specs=in_specs, out_specs=out_specs, out_shape=out_shapes,
      compiler_params=backend.triton_compiler_params(plan.padded_d_state, plan.tile),
      interpret=plan.interpret)(*args)


def _input_specs(plan):
  s = _specs(plan)
  return [s["u"], s["channel"], s["state_vector"], s["state_vector"], s["a"], s["vector"],
          s["vector"]]


_BATCHED_INPUTS = (True, True, True, True, False, False, False)  # u, delta, B, C; A, D, bias
# The backends whose bodies live in their own module (Triton's are above).
_BODIES = {backend.MOSAIC_GPU: selective_scan_mosaic, backend.MOSAIC_TPU: selective_scan_tpu}


def _forward(plan, inputs, save_states):
  """inputs in kernel layout -> y (b, Lp, G'*Pp) [, states (b, G, chunks, Np, Pp)].

  G' = `plan.output_groups`. Over a batch-sharded input each device runs the kernel on
  its own images (`batch_parallel`: XLA would otherwise gather the batch).
  """
  return batch_parallel.batch_parallel(_forward_local, inputs, _BATCHED_INPUTS,
                                       (plan, save_states))


def _backward(plan, inputs, states, dy):
  """Per-program gradient pieces in kernel layout (see `_core_bwd` for the sums); batch
  parallel as `_forward`."""
  return batch_parallel.batch_parallel(_backward_local, (*inputs, states, dy),
                                       _BATCHED_INPUTS + (True, True), (plan,))


def _forward_local(*args):
  """`_forward` on the images at hand: (*inputs, plan, save_states), plan's batch set
  to theirs."""
  *inputs, plan, save_states = args
  plan = dataclasses.replace(plan, batch=inputs[0].shape[0])
  s = _specs(plan)
  b, lp, g, pp, np_ = (plan.batch, plan.padded_length, plan.groups,
                       plan.padded_per_group, plan.padded_d_state)
  out_specs = [s["channel"]]
  out_shapes = [jax.ShapeDtypeStruct((b, lp, plan.output_groups * pp), F32)]
  if save_states:
    out_specs.append(s["states"])
    out_shapes.append(jax.ShapeDtypeStruct((b, g, plan.num_chunks, np_, pp), F32))
  if plan.kernel_backend in _BODIES:
    return _BODIES[plan.kernel_backend].forward(plan, inputs, out_shapes)
  return _call(_forward_kernel, plan, _input_specs(plan), out_specs, out_shapes, *inputs)


def _backward_local(*args):
  """`_backward` on the images at hand: (*inputs, states, dy, plan)."""
  *inputs, states, dy, plan = args
  plan = dataclasses.replace(plan, batch=dy.shape[0])
  s = _specs(plan)
  b, lp, g, pp, np_ = (plan.batch, plan.padded_length, plan.groups,
                       plan.padded_per_group, plan.padded_d_state)
  in_specs = _input_specs(plan) + [s["states"], s["u"]]
  out_specs = [s["channel"], s["channel"], s["partial_state_vector"],
               s["partial_state_vector"], s["batch_a"], s["batch_vector"], s["batch_vector"]]
  out_shapes = [
      jax.ShapeDtypeStruct((b, lp, plan.output_groups * pp), F32),  # du (per group)
      jax.ShapeDtypeStruct((b, lp, g * pp), F32),                 # d(delta)
      jax.ShapeDtypeStruct((b, lp, g, plan.tiles, np_), F32),     # dB per tile
      jax.ShapeDtypeStruct((b, lp, g, plan.tiles, np_), F32),     # dC per tile
      jax.ShapeDtypeStruct((b, g, np_, pp), F32),                 # dA^T per batch
      jax.ShapeDtypeStruct((b, g, pp), F32),                      # dD per batch
      jax.ShapeDtypeStruct((b, g, pp), F32),                      # d(delta_bias) per batch
  ]
  if plan.kernel_backend in _BODIES:
    return _BODIES[plan.kernel_backend].backward(plan, inputs, states, dy, out_shapes)
  return _call(_backward_kernel, plan, in_specs, out_specs, out_shapes,
               *inputs, states, dy)


# ----------------------------------------------------------------------------------
# The differentiable core, in kernel layout. Cross mode returns the merged map.


def _merge(plan, y):
  if not plan.cross or plan.merges_in_kernel:
    return y
  b, lp, g, pp = plan.batch, plan.padded_length, plan.groups, plan.padded_per_group
  return y.reshape(b, lp, g, pp).sum(axis=2)                      # (b, Lp, Pp)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _core(plan, *inputs):
  return _merge(plan, _forward(plan, inputs, save_states=False)[0])


def _core_fwd(plan, *inputs):
  y, states = _forward(plan, inputs, save_states=True)
  return _merge(plan, y), (inputs, states)


def _core_bwd(plan, residuals, dy):
  inputs, states = residuals
  u = inputs[0]
  du, ddelta, db, dc, da, dd, dbias = _backward(plan, inputs, states, dy)
  b, lp, g, pp = plan.batch, plan.padded_length, plan.groups, plan.padded_per_group
  if plan.cross and not plan.merges_in_kernel:  # u shared by the directions: sum theirs
    du = du.reshape(b, lp, g, pp).sum(axis=2)
  return (du.astype(u.dtype), ddelta.astype(inputs[1].dtype),
          db.sum(axis=3).astype(inputs[2].dtype), dc.sum(axis=3).astype(inputs[3].dtype),
          da.sum(axis=0), dd.sum(axis=0), dbias.sum(axis=0))


_core.defvjp(_core_fwd, _core_bwd)


# ----------------------------------------------------------------------------------
# Layout conversion (plain JAX, differentiated by JAX).


def _pad_axis(x, axis, size):
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, size - x.shape[axis])
  return jnp.pad(x, widths)


def _channels_in(plan, x):
  """(b, L, G*P) -> (b, Lp, G*Pp)."""
  b, g, p, pp = plan.batch, plan.groups, plan.per_group, plan.padded_per_group
  x = _pad_axis(x.reshape(b, plan.length, g, p), 3, pp)
  return _pad_axis(x, 1, plan.padded_length).reshape(b, plan.padded_length, g * pp)


def _state_vectors_in(plan, x):
  """B or C (b, L, G, N) -> (b, Lp, G, Np)."""
  return _pad_axis(_pad_axis(x, 3, plan.padded_d_state), 1, plan.padded_length)


def _vectors_in(plan, x):
  """D or delta_bias (G*P,) -> (G, Pp) float32."""
  return _pad_axis(x.astype(F32).reshape(plan.groups, plan.per_group), 1,
                   plan.padded_per_group)


def _a_in(plan, a):
  """A (G*P, N) -> A^T (G, Np, Pp) float32; padded entries are 0 (decay 1, no input)."""
  a = a.astype(F32).reshape(plan.groups, plan.per_group, plan.d_state).transpose(0, 2, 1)
  return _pad_axis(_pad_axis(a, 1, plan.padded_d_state), 2, plan.padded_per_group)


def _kernel_inputs(plan, u, delta, A, B, C, D, delta_bias):
  return (u, _channels_in(plan, delta), _state_vectors_in(plan, B),
          _state_vectors_in(plan, C), _a_in(plan, A), _vectors_in(plan, D),
          _vectors_in(plan, delta_bias))


def _check_d_state(d_state):
  if not 1 <= d_state <= backend.MAX_D_STATE:
    raise ValueError(f"impl='pallas' supports d_state 1 to {backend.MAX_D_STATE}; "
                     f"got {d_state} (use impl='reference')")


def _kernel_backend(name):
  """None -> this accelerator's backend (`backend.default_backend`); a named one must be
  available here."""
  if name is None:
    return backend.default_backend()
  backend.check_backend(name)
  return name


def selective_scan_pallas(u, delta, A, B, C, D, delta_bias, *, delta_softplus=True,
                          interpret=None, kernel_backend=None):
  """Pallas selective scan; shapes as `selective_scan_reference`, checked by the caller.

  interpret: None runs the kernel interpreted when the default backend is the CPU.
  kernel_backend: "triton", "mosaic_gpu" or "mosaic_tpu"; None: `backend.default_backend()`
    (on a TPU its kernel, elsewhere the default GPU backend).
  """
  batch, length, channels = u.shape
  groups, d_state = B.shape[2:]
  _check_d_state(d_state)
  plan = _Plan(batch, length, groups, channels // groups, d_state, 0, 0,
               bool(delta_softplus), backend.resolve_interpret(interpret),
               _kernel_backend(kernel_backend))
  y = _core(plan, *_kernel_inputs(plan, _channels_in(plan, u), delta, A, B, C, D,
                                  delta_bias))
  y = y.reshape(batch, plan.padded_length, groups, plan.padded_per_group)
  return y[:, :length, :, :plan.per_group].reshape(batch, length, channels)


def cross_selective_scan_pallas(x, delta, A, B, C, D, delta_bias, *, delta_softplus=True,
                                interpret=None, kernel_backend=None):
  """SS2D's cross-scan -> selective scan -> cross-merge in one kernel call.

  Args as `cross_selective_scan_reference`: x (b, H, W, P); delta (b, H, W, K, P);
  B, C (b, H, W, K, N); A (K*P, N); D, delta_bias (K*P,). Returns (b, H, W, P) float32.
  interpret, kernel_backend: as `selective_scan_pallas`.
  """
  batch, height, width, per_group = x.shape
  groups, d_state = B.shape[3:]
  _check_d_state(d_state)
  length = height * width
  plan = _Plan(batch, length, groups, per_group, d_state, height, width,
               bool(delta_softplus), backend.resolve_interpret(interpret),
               _kernel_backend(kernel_backend))
  u = _pad_axis(_pad_axis(x.reshape(batch, length, per_group), 2, plan.padded_per_group),
                1, plan.padded_length)                                 # (b, Lp, Pp)
  merged = _core(plan, *_kernel_inputs(
      plan, u, delta.reshape(batch, length, groups * per_group), A,
      B.reshape(batch, length, groups, d_state), C.reshape(batch, length, groups, d_state),
      D, delta_bias))                                                  # (b, Lp, Pp)
  return merged[:, :length, :per_group].reshape(batch, height, width, per_group)
