"""SS2D's cross-scan and cross-merge in pure JAX (VMamba's CrossScan / CrossMerge).

A (batch, H, W, D) map is read as four token sequences of length L = H*W:

    k=0  row-major          token h*W + w
    k=1  column-major       token w*H + h
    k=2  reverse of k=0
    k=3  reverse of k=1

`cross_merge` maps each direction's outputs back to row-major order and sums the four,
so `cross_merge(cross_scan(x)) == 4 * x`. `cross_selective_scan_reference` composes
cross-scan -> selective scan -> cross-merge: the reference of the fused Pallas op.

`LowRankDelta` is SS2D's delta before its dt_proj (a rank-R product per direction):
the cross-scan ops accept it in place of delta; the chunked scan forms each token's
delta inside its loop, the other implementations call `as_delta` first.
"""

import typing

import jax
import jax.numpy as jnp

from mamkpd_jax.kernels.selective_scan_ref import selective_scan_reference

NUM_DIRECTIONS = 4


class LowRankDelta(typing.NamedTuple):
  """delta[b, h, w, k, p] = sum_r weight[k, p, r] * dts[b, h, w, k, r] (SS2D's dt_proj).

  dts (batch, H, W, 4, R) and weight (4, P, R), R = dt_rank (a few channels): the
  (batch, H, W, 4, P) delta need not be materialised by an implementation that forms it
  per token.
  """

  dts: jax.Array
  weight: jax.Array

  @property
  def shape(self):
    return (*self.dts.shape[:-1], self.weight.shape[1])           # (b, H, W, 4, P)

  def materialize(self):
    """(b, H, W, 4, P): the K per-direction maps as one block-diagonal (K*R, K*P) 2-D
    matmul (an ONNX Gemm; an einsum exports as ONNX Runtime's slow Einsum; the zero
    blocks add exactly nothing)."""
    *lead, k, rank = self.dts.shape
    per_group = self.weight.shape[1]
    blocks = jax.scipy.linalg.block_diag(*self.weight.transpose(0, 2, 1))  # (K*R, K*P)
    return (self.dts.reshape(-1, k * rank) @ blocks).reshape(*lead, k, per_group)

  def einsum(self):
    """(b, H, W, 4, P) as one einsum: dt_proj's own multiply-adds, as XLA's cost
    analysis counts them (`models/stats.py`); `materialize` is faster to run."""
    return jnp.einsum("bhwkr,kpr->bhwkp", self.dts, self.weight)


def as_delta(delta):
  """delta as an array: `LowRankDelta.materialize()`, or delta itself."""
  return delta.materialize() if isinstance(delta, LowRankDelta) else delta


def direction_tokens(x, direction):
  """(batch, H, W, D) -> (batch, L, D): the tokens in the order direction k visits them."""
  batch, height, width, dim = x.shape
  if direction % 2 == 0:
    tokens = x.reshape(batch, height * width, dim)                     # row-major
  else:
    tokens = x.transpose(0, 2, 1, 3).reshape(batch, width * height, dim)  # column-major
  return tokens[:, ::-1] if direction >= 2 else tokens


def cross_scan(x):
  """(batch, H, W, D) -> (batch, L, K=4, D), directions stacked on axis 2."""
  return jnp.stack([direction_tokens(x, k) for k in range(NUM_DIRECTIONS)], axis=2)


def cross_merge(ys, height, width):
  """(batch, L, K=4, D) -> (batch, H, W, D): each direction back to row-major, summed."""
  batch, length, num_dirs, dim = ys.shape
  if num_dirs != NUM_DIRECTIONS or length != height * width:
    raise ValueError(f"cross_merge: expected (batch, {height * width}, 4, D); got {ys.shape}")
  row_major = ys[:, :, 0] + ys[:, ::-1, 2]                                  # (b, L, D)
  col_major = ys[:, :, 1] + ys[:, ::-1, 3]                                  # (b, L, D), w*H+h
  col_as_rows = col_major.reshape(batch, width, height, dim).transpose(0, 2, 1, 3)
  return row_major.reshape(batch, height, width, dim) + col_as_rows


def per_direction(t):
  """(batch, H, W, K, X) -> (batch, L, K, X): direction k's slice in direction k's order."""
  return jnp.stack([direction_tokens(t[:, :, :, k], k) for k in range(NUM_DIRECTIONS)],
                   axis=2)


def cross_selective_scan_reference(x, delta, A, B, C, D, delta_bias, *,
                                   delta_softplus=True):
  """SS2D's scan of a map, unfused: cross-scan, one grouped selective scan, merge.

  Args:
    x: (batch, H, W, P) the map (u of every direction).
    delta: (batch, H, W, K, P) per-token step sizes of each direction (before bias), or
      a `LowRankDelta` of that shape.
    A: (K*P, N); B, C: (batch, H, W, K, N); D, delta_bias: (K*P,).
      Direction k owns channels k*P .. (k+1)*P - 1 (group k).
  Returns:
    (batch, H, W, P) float32, the four directions' outputs summed in row-major order.
  """
  delta = as_delta(delta)
  batch, height, width, per_group = x.shape
  length, channels = height * width, NUM_DIRECTIONS * per_group
  ys = selective_scan_reference(
      cross_scan(x).reshape(batch, length, channels),                 # u (b, L, K*P)
      per_direction(delta).reshape(batch, length, channels),
      A, per_direction(B), per_direction(C), D, delta_bias,
      delta_softplus=delta_softplus)                                  # (b, L, K*P)
  return cross_merge(ys.reshape(batch, length, NUM_DIRECTIONS, per_group), height, width)
