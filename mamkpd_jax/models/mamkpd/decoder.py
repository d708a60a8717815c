"""Heatmap decoder (paper §3.1): SimpleBaseline / ViTPose's two deconvolutions.

    (N, H/16, W/16, C) -> [ConvTranspose 4x4 /2 (no bias) -> BatchNorm -> ReLU] x 2
                       -> 1x1 conv -> (N, H/4, W/4, K)

Alignment: PyTorch's ConvTranspose2d(k=4, s=2, p=1) is a stride-2 input dilation then a
correlation with the spatially flipped kernel and padding k - 1 - p = 2 on each side.
`transpose_kernel=True` with explicit (2, 2) padding is exactly that, so the output
doubles the size and input cell i is centred on output 2i + 0.5, as in mmpose. Kernel
layout (4, 4, C_out, C_in) = PyTorch's (C_in, C_out, 4, 4) transposed (2, 3, 1, 0).
Initialisation as mmpose's HeatmapHead: deconv and final conv N(0, 0.001), BN (1, 0).
"""

import jax
from flax import nnx

from mamkpd_jax.models import common

DECONV_KERNEL = 4
DECONV_PADDING = ((2, 2), (2, 2))  # k - 1 - p with PyTorch's p = 1


def deconv(in_dim, out_dim, dtype, rngs):
  return nnx.ConvTranspose(in_dim, out_dim, (DECONV_KERNEL, DECONV_KERNEL), strides=2,
                           padding=DECONV_PADDING, transpose_kernel=True, use_bias=False,
                           dtype=dtype, kernel_init=common.head_init, rngs=rngs)


class HeatmapDecoder(nnx.Module):
  """Two x2 deconvolutions and a 1x1 conv to K heatmaps."""

  def __init__(self, in_dim, widths, num_keypoints, *, dtype, rngs):
    mid, out = widths
    self.deconv1 = deconv(in_dim, mid, dtype, rngs)
    self.bn1 = common.batch_norm(mid, dtype, rngs)
    self.deconv2 = deconv(mid, out, dtype, rngs)
    self.bn2 = common.batch_norm(out, dtype, rngs)
    self.final_layer = nnx.Conv(out, num_keypoints, (1, 1), dtype=dtype,
                                kernel_init=common.head_init, rngs=rngs)

  def __call__(self, x):
    x = jax.nn.relu(self.bn1(self.deconv1(x)))   # (N, H/8, W/8, mid)
    x = jax.nn.relu(self.bn2(self.deconv2(x)))   # (N, H/4, W/4, out)
    return self.final_layer(x)                   # (N, H/4, W/4, K)
