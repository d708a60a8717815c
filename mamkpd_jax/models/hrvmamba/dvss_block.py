"""DVSS block (HRVMamba's `HRVmambaBlock`, docs/hrvmamba.md §5), channels-last (N, H, W, C).

    ESInB  y = LN(x; norm0); split channels [C//4 + C%4, C//4, C//4, C//4];
           depth-wise convs 3x3, 5x5, 7x7, 9x9 (padding 1..4); concat; shuffle(4)
           x = GELU(y) + x
    DSS2D  x = x + DropPath(SS2D(LN(x; norm)))      SS2D v05_noz with DCNv4 as mixer
    MLP    x = x + DropPath(MLP(LN(x; norm2)))      hidden 2C, exact GELU, dropout

GELU is the exact erf form (nn.GELU()); every LayerNorm has eps 1e-5.
"""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from mamkpd_jax.models import common
from mamkpd_jax.models.hrvmamba import dcn
from mamkpd_jax.models.ss2d import SS2D

ESINB_KERNELS = (3, 5, 7, 9)
SHUFFLE_GROUPS = 4


def esinb_split_sizes(channels):
  """Channels per depth-wise conv: the remainder goes to the first (3x3) group."""
  quarter = channels // 4
  return [quarter + channels % 4, quarter, quarter, quarter]


def channel_shuffle(x, groups=SHUFFLE_GROUPS):
  """(..., C) -> (..., C) with out[j * groups + g] = in[g * C / groups + j]."""
  *lead, channels = x.shape
  x = x.reshape(*lead, groups, channels // groups)
  return x.swapaxes(-1, -2).reshape(*lead, channels)


class DVSSBlock(nnx.Module):
  """ESInB multi-scale depth-wise convs, SS2D with DCNv4, MLP; (N, H, W, C) -> same."""

  def __init__(self, width, *, model_config, drop_path_rate, dtype, rngs):
    cfg = model_config
    self.split_points = tuple(np.cumsum(esinb_split_sizes(width))[:-1].tolist())  # hashable
    self.conv2d = nnx.List([
        common.depthwise_conv(size, kernel, dtype, rngs)      # padding kernel // 2
        for size, kernel in zip(esinb_split_sizes(width), ESINB_KERNELS)])
    self.norm0 = common.layer_norm(width, dtype, rngs)
    self.norm = common.layer_norm(width, dtype, rngs)
    self.op = SS2D(width, d_state=cfg.d_state, ssm_ratio=cfg.ssm_ratio,
                   dt_rank=cfg.dt_rank(width), gate=False, scan_impl=cfg.scan_impl,
                   mixer=dcn.mixer(width, cfg), drop_rate=cfg.drop_rate, dtype=dtype,
                   rngs=rngs)
    self.norm2 = common.layer_norm(width, dtype, rngs)
    self.mlp = common.Mlp(width, int(width * cfg.mlp_ratio), drop_rate=cfg.drop_rate,
                          dtype=dtype, rngs=rngs)
    self.drop_path = common.drop_path(drop_path_rate, rngs)

  def esinb(self, x):
    """Multi-scale depth-wise convs of LN(x), shuffled: (N, H, W, C) -> same."""
    groups = jnp.split(self.norm0(x), self.split_points, axis=-1)     # 4 x (N, H, W, s_i)
    y = jnp.concatenate([conv(g) for conv, g in zip(self.conv2d, groups)], axis=-1)
    return channel_shuffle(y)

  def __call__(self, x):
    x = common.gelu(self.esinb(x)) + x
    x = x + self.drop_path(self.op(self.norm(x)))
    return x + self.drop_path(self.mlp(self.norm2(x)))
