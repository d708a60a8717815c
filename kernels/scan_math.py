"""The per-token math of the scan kernels, shared by the Triton and the Mosaic GPU bodies.

Both kernel bodies call these functions on register values; only the shapes differ:

* Triton: a state tile `h` is one (Np, TC) array (state x channels); `b`, `c` are
  (Np, 1) columns; sums "over the state" are `axis=0`, "over channels" `axis=1`.
* Mosaic GPU: a state is N separate (128,) rows (one channel per warpgroup lane); `b`,
  `c` are the row's scalars; sums over the state add the rows, sums over channels are
  `jnp.sum` of a row.

So every function here is elementwise with broadcasting, and leaves the reductions to
the caller. The fast Triton interpret suite therefore covers the math of both backends.
Math (docs/scan.md): h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t, y_t = C_t . h_t + D u_t.
"""

import typing

import jax.numpy as jnp
from jax import lax

SOFTPLUS_LINEAR_ABOVE = 20.0   # softplus(x) == x to float32 precision above this


def softplus(z):
  return jnp.where(z > SOFTPLUS_LINEAR_ABOVE, z, jnp.log(1.0 + jnp.exp(z)))


def step_delta(z, delta_softplus):
  """delta of one token from z = delta + delta_bias."""
  return softplus(z) if delta_softplus else z


def direction_token(step, direction, length, height, width):
  """Row-major token visited at `step` by SS2D direction `direction` (0..3).

  0 row-major, 1 column-major, 2 / 3 their reverses; padding steps (>= length) map to
  themselves, after every real token. height == 0: plain token order.
  """
  if height == 0:
    return step
  forward = jnp.where(direction >= 2, length - 1 - step, step)
  column_major = lax.rem(forward, height) * width + lax.div(forward, height)
  token = jnp.where(lax.rem(direction, 2) == 1, column_major, forward)
  return jnp.where(step < length, token, step)


def state_step(h, a, delta, u, b):
  """One token's state update: (decay = exp(delta A), h_t); h, a state-shaped."""
  decay = jnp.exp(delta * a)
  return decay, decay * h + (delta * u) * b


def output(state_sum, skip, u):
  """y_t from sum over the state of h_t * C_t."""
  return state_sum + skip * u


class StepGradients(typing.NamedTuple):
  """One token's backward pieces; the caller reduces the `*_terms` as named."""

  grad_h: typing.Any          # dL/dh_t (state-shaped)
  carry: typing.Any           # dL/dh_{t-1} through the recurrence: decay * grad_h
  da: typing.Any              # this token's dL/dA (state-shaped, accumulated)
  du_terms: typing.Any        # sum over the state -> du before `finish_du`
  ddelta_terms: typing.Any    # sum over the state -> d(delta) before `finish_ddelta`
  db_terms: typing.Any        # sum over channels -> dB_t
  dc_terms: typing.Any        # sum over channels -> dC_t


def step_gradients(dy, carry, h_prev, h_after, decay, a, delta, u, b, c):
  """Backward of one token given dL/dy_t and the carry from token t+1."""
  grad_h = dy * c + carry
  delta_u = delta * u
  return StepGradients(
      grad_h=grad_h, carry=decay * grad_h, da=grad_h * delta * decay * h_prev,
      du_terms=grad_h * b, ddelta_terms=grad_h * (a * decay * h_prev + u * b),
      db_terms=grad_h * delta_u, dc_terms=dy * h_after)


def finish_du(du_sum, delta, skip, dy):
  return du_sum * delta + skip * dy


def finish_ddelta(ddelta_sum, z, delta_softplus):
  """d(z) from d(delta): softplus' = sigmoid."""
  return ddelta_sum / (1.0 + jnp.exp(-z)) if delta_softplus else ddelta_sum
