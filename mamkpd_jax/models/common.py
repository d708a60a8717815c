"""Pieces shared by the MamKPD components: initialisers, norms and dtype names.

Initialisation follows VMamba's `_init_weights` (../shared/SPEC.md §1): Dense kernels
truncated-normal std 0.02 with zero bias, LayerNorm (1, 0), convolutions PyTorch's
default kaiming-uniform(a=sqrt(5)) i.e. U(+-1/sqrt(fan_in)) (biases zero here).
"""

import jax
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


class DepthwiseConv(nnx.Conv):
  """nnx.Conv with feature_group_count == channels; on CPU computed as shifted adds.

  XLA:CPU runs grouped convolutions ~7x slower than the same sum written as k*k shifted
  multiply-adds (forward and backward; measured at (16, 64, 48, 64), 3x3), which made
  CPU training of the small test models conv-bound. Same parameters (`kernel`
  (k, k, 1, C), `bias`), same results; GPUs keep the cuDNN convolution.
  """

  def __call__(self, inputs):
    if jax.default_backend() != "cpu":
      return super().__call__(inputs)
    return self.shifted_sum(inputs)

  def shifted_sum(self, inputs):
    """The convolution as k*k strided multiply-adds (symmetric padding only)."""
    kernel_h, kernel_w = self.kernel_size
    if isinstance(self.padding, str):                 # 'SAME' for the 1x1 case
      if self.padding != "SAME" or kernel_h % 2 == 0 or kernel_w % 2 == 0:
        raise ValueError(f"DepthwiseConv: unsupported padding {self.padding!r}")
      pad_h, pad_w = kernel_h // 2, kernel_w // 2
    else:
      (pad_h, pad_h_hi), (pad_w, pad_w_hi) = self.padding
      if (pad_h, pad_w) != (pad_h_hi, pad_w_hi):
        raise ValueError(f"DepthwiseConv: padding must be symmetric, got {self.padding}")
    stride_h, stride_w = ((self.strides,) * 2 if isinstance(self.strides, int)
                          else tuple(self.strides))
    dtype = self.dtype or jnp.result_type(inputs, self.kernel[...])
    x, kernel = inputs.astype(dtype), self.kernel[...].astype(dtype)
    x = jnp.pad(x, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))      # (N, H', W', C)
    out_h = (x.shape[1] - kernel_h) // stride_h + 1
    out_w = (x.shape[2] - kernel_w) // stride_w + 1
    out = 0
    for i in range(kernel_h):
      for j in range(kernel_w):
        window = x[:, i:i + stride_h * (out_h - 1) + 1:stride_h,
                   j:j + stride_w * (out_w - 1) + 1:stride_w, :]           # (N, oh, ow, C)
        out = out + window * kernel[i, j, 0]
    if self.bias is not None:
      out = out + self.bias[...].astype(dtype)
    return out


def depthwise_conv(channels, kernel_size, dtype, rngs, stride=1):
  """Depth-wise k x k conv with PyTorch's symmetric padding k // 2 (exact halving)."""
  pad = kernel_size // 2
  return DepthwiseConv(channels, channels, (kernel_size, kernel_size), strides=stride,
                       padding=((pad, pad), (pad, pad)), feature_group_count=channels,
                       dtype=dtype, kernel_init=conv_init, rngs=rngs)


def drop_path(rate, rngs):
  """Stochastic depth: drops a sample's whole residual branch ((N, H, W, C) input)."""
  return nnx.Dropout(rate, broadcast_dims=(1, 2, 3), rngs=rngs)
