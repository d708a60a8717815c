"""common.DepthwiseConv: its three forms (the compiled CPU kernel, the pure-JAX shifted sum
and the grouped lax.conv) give nnx.Conv's grouped convolution, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mamkpd_jax.kernels import cpu_kernels, depthwise_conv
from mamkpd_jax.models import common

needs_kernels = pytest.mark.skipif(not cpu_kernels.available(),
                                   reason="no C++ compiler for the CPU kernels")


def _conv(channels, kernel_size, stride, bias=True):
  conv = common.depthwise_conv(channels, kernel_size, jnp.float32, nnx.Rngs(0),
                               stride=stride, use_bias=bias)
  if bias:
    conv.bias[...] = jax.random.normal(jax.random.key(1), (channels,))
  return conv


def _in_mode(conv, mode):
  def call(x):
    with common.depthwise_conv_mode(mode):
      return conv(x)
  return call


CASES = [(3, 1, True), (3, 2, True), (1, 1, True), (5, 2, True), (3, 1, False),
         (7, 3, True)]


@pytest.mark.parametrize("mode", ["shifted", pytest.param("auto", marks=needs_kernels)])
@pytest.mark.parametrize("kernel_size,stride,bias", CASES)
def test_forms_match_grouped_conv(mode, kernel_size, stride, bias):
  channels = 19                                                         # not a vector width
  conv = _conv(channels, kernel_size, stride, bias)
  x = jax.random.normal(jax.random.key(2), (2, 11, 8, channels))      # odd sizes too
  expected = nnx.Conv.__call__(conv, x)                                # the grouped conv
  got = jax.jit(_in_mode(conv, mode))(x)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  grad = jax.grad(lambda x: (_in_mode(conv, mode)(x) ** 2).sum())(x)
  grad_ref = jax.grad(lambda x: (nnx.Conv.__call__(conv, x) ** 2).sum())(x)
  np.testing.assert_allclose(grad, grad_ref, rtol=1e-4, atol=1e-4)


@needs_kernels
def test_auto_on_a_cpu_is_the_compiled_kernel():
  conv = _conv(16, 3, 1)
  x = jnp.ones((1, 6, 5, 16))
  # a new function per trace: jax.jit's cache does not know the mode
  with common.depthwise_conv_mode("auto"):
    assert depthwise_conv.TARGET in jax.jit(lambda x: conv(x)).lower(x).as_text()
  with common.depthwise_conv_mode("shifted"):
    assert depthwise_conv.TARGET not in jax.jit(lambda x: conv(x)).lower(x).as_text()


@needs_kernels
def test_kernel_parameter_gradients_match():
  conv = _conv(5, 3, 2)
  x = jax.random.normal(jax.random.key(3), (2, 7, 9, 5))

  def loss(kernel, bias, mode):
    with common.depthwise_conv_mode(mode):
      return (depthwise_conv.depthwise_conv_cpu(x, kernel, bias, (2, 2), (1, 1)) ** 2
              ).sum() if mode == "auto" else (
                  depthwise_conv.shifted_sum(x, kernel, bias, (2, 2), (1, 1)) ** 2).sum()

  got = jax.grad(loss, argnums=(0, 1))(conv.kernel[...], conv.bias[...], "auto")
  want = jax.grad(loss, argnums=(0, 1))(conv.kernel[...], conv.bias[...], "shifted")
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@needs_kernels
def test_few_channels_take_the_shifted_sum():
  few = depthwise_conv.MIN_KERNEL_CHANNELS - 1
  conv = _conv(few, 3, 1)
  x = jnp.ones((1, 6, 5, few))
  assert depthwise_conv.TARGET not in jax.jit(lambda x: conv(x)).lower(x).as_text()


def test_bfloat16_takes_the_shifted_sum():
  conv = common.depthwise_conv(4, 3, jnp.bfloat16, nnx.Rngs(0))
  x = jnp.ones((1, 5, 5, 4), jnp.bfloat16)
  assert depthwise_conv.TARGET not in jax.jit(conv).lower(x).as_text()
  assert conv(x).dtype == jnp.bfloat16


def test_pointwise_same_padding():
  conv = common.DepthwiseConv(4, 4, (1, 1), feature_group_count=4, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (1, 5, 3, 4))
  np.testing.assert_allclose(conv(x), nnx.Conv.__call__(conv, x), rtol=1e-6)


def test_bad_input_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown depth-wise conv mode 'fast'"):
    with common.depthwise_conv_mode("fast"):
      pass
  with pytest.raises(ValueError, match=r"x must be \(N, H, W, C\)"):
    depthwise_conv.shifted_sum(jnp.ones((5, 5, 4)), jnp.ones((3, 3, 1, 4)), None, (1, 1),
                               (1, 1))
  with pytest.raises(ValueError, match="float32 only"):
    depthwise_conv.depthwise_conv_cpu(jnp.ones((1, 5, 5, 4), jnp.bfloat16),
                                      jnp.ones((3, 3, 1, 4), jnp.bfloat16), None, (1, 1),
                                      (1, 1))
