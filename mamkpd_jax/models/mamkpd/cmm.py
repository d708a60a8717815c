"""Context modeling module, CMM (paper §3.2, eq. 5, Figure 2c).

    inter-patch:  X_inter = LN(Embed(DWConv(X)))       DWConv downsamples by 2
    intra-patch:  X_cmm   = DWConv_1x1(Linear(X_inter))

    (N, H, W, C_in) -> (N, H/s, W/s, C_out),  s = 2 (or 4 for the first CMM without stem)

The patch embedding is "the additional DWConv" of the paper; with downsample 4 it takes
the second factor of 2 (a stem-less model must still reach stride 4 at stage 1). Kernel
sizes are inferred (3x3, `cmm_kernel`). The 1x1 depth-wise conv is a per-channel scale and
bias.
"""

from flax import nnx

from mamkpd_jax.models import common


class CMM(nnx.Module):
  """Downsampling inter-patch depth-wise convs, then an intra-patch channel mixer."""

  def __init__(self, in_dim, out_dim, *, downsample, kernel_size, dtype, rngs):
    if downsample not in (2, 4):
      raise ValueError(f"CMM downsample must be 2 or 4, got {downsample}")
    self.down_conv = common.depthwise_conv(in_dim, kernel_size, dtype, rngs, stride=2)
    self.embed_conv = common.depthwise_conv(in_dim, kernel_size, dtype, rngs,
                                            stride=downsample // 2)
    self.norm = common.layer_norm(in_dim, dtype, rngs)
    self.linear = common.dense(in_dim, out_dim, dtype, rngs)
    self.pw_conv = common.DepthwiseConv(out_dim, out_dim, (1, 1), feature_group_count=out_dim,
                                        dtype=dtype, kernel_init=common.conv_init,
                                        rngs=rngs)

  def __call__(self, x):
    x = self.norm(self.embed_conv(self.down_conv(x)))   # (N, H/s, W/s, C_in)
    return self.pw_conv(self.linear(x))                 # (N, H/s, W/s, C_out)
