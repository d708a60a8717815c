"""SS2D's four token orders and their merge."""

import jax.numpy as jnp
import numpy as np
import pytest

import numpy_refs
from mamkpd_jax.kernels import cross_merge, cross_scan


def index_map(height, width):
  """(1, H, W, 1) map whose value is the row-major token index."""
  return jnp.arange(height * width, dtype=jnp.float32).reshape(1, height, width, 1)


def test_orders_of_a_2x3_map():
  visits = np.asarray(cross_scan(index_map(2, 3)))[0, :, :, 0]    # (L, K)
  np.testing.assert_array_equal(visits[:, 0], [0, 1, 2, 3, 4, 5])  # row-major
  np.testing.assert_array_equal(visits[:, 1], [0, 3, 1, 4, 2, 5])  # column-major
  np.testing.assert_array_equal(visits[:, 2], [5, 4, 3, 2, 1, 0])
  np.testing.assert_array_equal(visits[:, 3], [5, 2, 4, 1, 3, 0])


@pytest.mark.parametrize("height,width", [(1, 1), (4, 3), (16, 12), (5, 7)])
def test_each_direction_visits_every_token_once(height, width):
  visits = np.asarray(cross_scan(index_map(height, width)))[0, :, :, 0]
  for k, order in enumerate(numpy_refs.token_orders(height, width)):
    np.testing.assert_array_equal(visits[:, k], order)
    np.testing.assert_array_equal(np.sort(visits[:, k]), np.arange(height * width))


@pytest.mark.parametrize("height,width", [(4, 3), (16, 12), (5, 7)])
def test_merge_of_scan_is_four_times_identity(height, width):
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, height, width, 5)))
  np.testing.assert_allclose(cross_merge(cross_scan(x), height, width), 4 * x, rtol=1e-6)


def test_merge_is_the_adjoint_of_scan():
  """<scan(x), y> == <x, merge(y)>: merge sends each output back to its own token."""
  rng = np.random.default_rng(1)
  height, width = 5, 7
  x = jnp.asarray(rng.standard_normal((2, height, width, 3)))
  ys = jnp.asarray(rng.standard_normal((2, height * width, 4, 3)))
  lhs = jnp.sum(cross_scan(x) * ys)
  rhs = jnp.sum(x * cross_merge(ys, height, width))
  np.testing.assert_allclose(lhs, rhs, rtol=1e-5)


def test_merge_rejects_wrong_shape():
  with pytest.raises(ValueError, match="cross_merge"):
    cross_merge(jnp.zeros((1, 12, 4, 2)), 4, 4)
