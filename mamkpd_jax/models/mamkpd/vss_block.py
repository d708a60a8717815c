"""VSS block (VMamba): pre-norm residual SS2D, optionally followed by a residual MLP.

    x = x + DropPath(SS2D(LN(x)))
    x = x + DropPath(MLP(LN(x)))          only when mlp_ratio > 0

MamKPD uses no MLP (mlp_ratio 0): with VMamba's mlp_ratio 4, MamKPD-B would exceed
13.9M parameters against the paper's 7.1M (docs/architecture.md).
"""

from flax import nnx

from mamkpd_jax.models import common
from mamkpd_jax.models.ss2d import SS2D


class VSSBlock(nnx.Module):
  """One Mamba block of a MamKPD stage, (N, H, W, dim) -> same."""

  def __init__(self, dim, *, model_config, drop_path_rate, dtype, rngs):
    cfg = model_config
    self.norm = common.layer_norm(dim, dtype, rngs)
    self.op = SS2D(dim, d_state=cfg.d_state, ssm_ratio=cfg.ssm_ratio,
                   dt_rank=cfg.dt_rank(dim), gate=cfg.gate, d_conv=cfg.d_conv,
                   scan_impl=cfg.scan_impl, dtype=dtype, rngs=rngs)
    self.drop_path = common.drop_path(drop_path_rate, rngs)
    if cfg.mlp_ratio > 0:
      self.norm2 = common.layer_norm(dim, dtype, rngs)
      self.mlp = common.Mlp(dim, int(dim * cfg.mlp_ratio), dtype=dtype, rngs=rngs)
    else:
      self.norm2 = self.mlp = None

  def __call__(self, x):
    x = x + self.drop_path(self.op(self.norm(x)))
    if self.mlp is not None:
      x = x + self.drop_path(self.mlp(self.norm2(x)))
    return x
