"""Pieces shared by the MamKPD components: initialisers, norms and dtype names.

Initialisation follows VMamba's `_init_weights` (../shared/SPEC.md §1): Dense kernels
truncated-normal std 0.02 with zero bias, LayerNorm (1, 0), convolutions PyTorch's
default kaiming-uniform(a=sqrt(5)) i.e. U(+-1/sqrt(fan_in)) (biases zero here).
"""

import jax.numpy as jnp
from flax import nnx

LAYER_NORM_EPS = 1e-5  # PyTorch's nn.LayerNorm default, as in VMamba

dense_init = nnx.initializers.truncated_normal(stddev=0.02)
# kaiming_uniform(a=sqrt(5)): bound = sqrt(6 / ((1 + 5) * fan_in)) = 1 / sqrt(fan_in).
conv_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def compute_dtype(name):
  """'float32' | 'bfloat16' -> the jnp dtype used for activations."""
  return jnp.dtype(name)


def layer_norm(num_features, dtype, rngs):
  """Channels-last LayerNorm, statistics in float32 whatever `dtype` is."""
  return nnx.LayerNorm(num_features, epsilon=LAYER_NORM_EPS, dtype=dtype, rngs=rngs)


def dense(in_features, out_features, dtype, rngs, use_bias=True):
  return nnx.Linear(in_features, out_features, use_bias=use_bias, dtype=dtype,
                    kernel_init=dense_init, rngs=rngs)


def depthwise_conv(channels, kernel_size, dtype, rngs, stride=1):
  """Depth-wise k x k conv with PyTorch's symmetric padding k // 2 (exact halving)."""
  pad = kernel_size // 2
  return nnx.Conv(channels, channels, (kernel_size, kernel_size), strides=stride,
                  padding=((pad, pad), (pad, pad)), feature_group_count=channels,
                  dtype=dtype, kernel_init=conv_init, rngs=rngs)


def drop_path(rate, rngs):
  """Stochastic depth: drops a sample's whole residual branch ((N, H, W, C) input)."""
  return nnx.Dropout(rate, broadcast_dims=(1, 2, 3), rngs=rngs)
