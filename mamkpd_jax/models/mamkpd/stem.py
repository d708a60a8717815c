"""Stem (paper §3.1, Figure 2b): a 7x7 convolution and two 3x3 depth-wise convolutions.

    (N, H, W, 3) -> conv 7x7 /2 -> LN -> GELU -> dw 3x3 -> LN -> GELU -> dw 3x3 -> LN
                 -> (N, H/2, W/2, d_s)

The paper names the three convolutions and the /2 output; the norms and activations
between them are inferred (they cost 4*d_s parameters; docs/architecture.md).
"""

import jax
from flax import nnx

from mamkpd_jax.models import common


class Stem(nnx.Module):
  """Low-level feature extractor in front of the encoder."""

  def __init__(self, out_dim, *, dtype, rngs):
    self.conv1 = nnx.Conv(3, out_dim, (7, 7), strides=2, padding=((3, 3), (3, 3)),
                          dtype=dtype, kernel_init=common.conv_init, rngs=rngs)
    self.norm1 = common.layer_norm(out_dim, dtype, rngs)
    self.conv2 = common.depthwise_conv(out_dim, 3, dtype, rngs)
    self.norm2 = common.layer_norm(out_dim, dtype, rngs)
    self.conv3 = common.depthwise_conv(out_dim, 3, dtype, rngs)
    self.norm3 = common.layer_norm(out_dim, dtype, rngs)

  def __call__(self, images):
    x = jax.nn.gelu(self.norm1(self.conv1(images)))   # (N, H/2, W/2, d_s)
    x = jax.nn.gelu(self.norm2(self.conv2(x)))
    return self.norm3(self.conv3(x))
