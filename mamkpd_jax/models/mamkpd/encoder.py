"""The three-stage Mamba encoder (paper §3.1, eq. 2): per stage CMM -> VSS blocks -> LN.

    stage i:  (N, H_i, W_i, C_{i-1}) -> CMM (/2; /4 for stage 1 without stem)
              -> depths[i] VSS blocks -> LayerNorm -> (N, H_i/2, W_i/2, dims[i])

Output strides are 4, 8, 16 whatever the stem: with a stem (/2) the first CMM halves
once more; without one it takes RGB directly and downsamples by 4.
"""

import numpy as np
from flax import nnx

from mamkpd_jax.models import common
from mamkpd_jax.models.mamkpd.cmm import CMM
from mamkpd_jax.models.mamkpd.vss_block import VSSBlock


class Stage(nnx.Module):
  """CMM, then a stack of VSS blocks, then LayerNorm."""

  def __init__(self, in_dim, dim, *, downsample, drop_path_rates, model_config, dtype,
               rngs):
    self.cmm = CMM(in_dim, dim, downsample=downsample, kernel_size=model_config.cmm_kernel,
                   dtype=dtype, rngs=rngs)
    self.blocks = nnx.List([
        VSSBlock(dim, model_config=model_config, drop_path_rate=rate, dtype=dtype,
                 rngs=rngs)
        for rate in drop_path_rates])
    self.norm = common.layer_norm(dim, dtype, rngs)

  def __call__(self, x):
    x = self.cmm(x)
    for block in self.blocks:
      x = block(x)
    return self.norm(x)


class Encoder(nnx.Module):
  """Three stages; stochastic depth rises linearly from 0 to drop_path_rate."""

  def __init__(self, in_dim, *, model_config, dtype, rngs):
    cfg = model_config
    rates = np.linspace(0.0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
    first_downsample = 2 if cfg.use_stem else 4
    stages, start = [], 0
    for i, (dim, depth) in enumerate(zip(cfg.dims, cfg.depths)):
      stages.append(Stage(in_dim, dim, downsample=first_downsample if i == 0 else 2,
                          drop_path_rates=rates[start:start + depth], model_config=cfg,
                          dtype=dtype, rngs=rngs))
      in_dim, start = dim, start + depth
    self.stages = nnx.List(stages)

  def __call__(self, x):
    for stage in self.stages:
      x = stage(x)
    return x                                   # (N, H/16, W/16, dims[-1])
