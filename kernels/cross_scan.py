"""SS2D's cross-scan and cross-merge in pure JAX (VMamba's CrossScan / CrossMerge).

A (batch, H, W, D) map is read as four token sequences of length L = H*W:

    k=0  row-major          token h*W + w
    k=1  column-major       token w*H + h
    k=2  reverse of k=0
    k=3  reverse of k=1

`cross_merge` maps each direction's outputs back to row-major order and sums the four,
so `cross_merge(cross_scan(x)) == 4 * x`. The fused Pallas op (issue 3) visits these
orders inside the kernel; these functions are its reference.
"""

import jax.numpy as jnp

NUM_DIRECTIONS = 4


def cross_scan(x):
  """(batch, H, W, D) -> (batch, L, K=4, D), directions stacked on axis 2."""
  batch, height, width, dim = x.shape
  row_major = x.reshape(batch, height * width, dim)                         # (b, L, D)
  col_major = x.transpose(0, 2, 1, 3).reshape(batch, width * height, dim)   # (b, L, D)
  return jnp.stack([row_major, col_major, row_major[:, ::-1], col_major[:, ::-1]], axis=2)


def cross_merge(ys, height, width):
  """(batch, L, K=4, D) -> (batch, H, W, D): each direction back to row-major, summed."""
  batch, length, num_dirs, dim = ys.shape
  if num_dirs != NUM_DIRECTIONS or length != height * width:
    raise ValueError(f"cross_merge: expected (batch, {height * width}, 4, D); got {ys.shape}")
  row_major = ys[:, :, 0] + ys[:, ::-1, 2]                                  # (b, L, D)
  col_major = ys[:, :, 1] + ys[:, ::-1, 3]                                  # (b, L, D), w*H+h
  col_as_rows = col_major.reshape(batch, width, height, dim).transpose(0, 2, 1, 3)
  return row_major.reshape(batch, height, width, dim) + col_as_rows
