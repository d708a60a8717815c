"""common.DepthwiseConv: its CPU shifted-sum path equals nnx.Conv's grouped convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mamkpd_jax.models import common


@pytest.mark.parametrize("kernel_size,stride", [(3, 1), (3, 2), (1, 1), (5, 2)])
def test_shifted_sum_matches_grouped_conv(kernel_size, stride):
  channels = 6
  conv = common.depthwise_conv(channels, kernel_size, jnp.float32, nnx.Rngs(0), stride=stride)
  conv.bias[...] = jax.random.normal(jax.random.key(1), (channels,))
  x = jax.random.normal(jax.random.key(2), (2, 11, 8, channels))      # odd sizes too
  expected = nnx.Conv.__call__(conv, x)                                # the grouped conv
  np.testing.assert_allclose(conv.shifted_sum(x), expected, rtol=1e-5, atol=1e-5)
  grad = jax.grad(lambda x: conv.shifted_sum(x).sum())(x)
  grad_ref = jax.grad(lambda x: nnx.Conv.__call__(conv, x).sum())(x)
  np.testing.assert_allclose(grad, grad_ref, rtol=1e-5, atol=1e-5)


def test_pointwise_same_padding():
  conv = common.DepthwiseConv(4, 4, (1, 1), feature_group_count=4, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (1, 5, 3, 4))
  np.testing.assert_allclose(conv.shifted_sum(x), nnx.Conv.__call__(conv, x), rtol=1e-6)
