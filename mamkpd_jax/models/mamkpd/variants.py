"""MamKPD sizes (paper Table 1) and the typed model configuration.

`VARIANTS` is the one table of named sizes; `model_config(name)` turns a row into the
`config.model` ConfigDict that config files start from, and `ModelConfig.from_config`
validates such a ConfigDict (after command-line overrides) into the frozen dataclass the
model is built from. Every setting the paper leaves open is a field here; the choices
and the sizes they give are documented in docs/architecture.md.

Paper Table 1 (input 256x192, K=17):

    variant  stem  blocks   dims            params  GFLOPs
    small    no    2,4,6    96,192,384      6.3M    0.5
    base     yes   2,4,6    96,192,384      7.1M    3.0
    large    yes   2,4,6    128,256,512     12.4M   4.3
"""

import dataclasses
import math

import ml_collections

from mamkpd_jax.kernels import AUTO
from mamkpd_jax.models import common

# The paper's rows, plus a private tiny row that only tests use.
VARIANTS = {
    "small": dict(use_stem=False, depths=(2, 4, 6), dims=(96, 192, 384)),
    "base": dict(use_stem=True, depths=(2, 4, 6), dims=(96, 192, 384)),
    "large": dict(use_stem=True, depths=(2, 4, 6), dims=(128, 256, 512)),
    "tiny": dict(use_stem=True, depths=(1, 1, 1), dims=(16, 32, 64)),
}

# Paper Table 1 at 256x192, K=17: (parameters, GFLOPs as the paper counts them).
PAPER_SIZES = {
    "small": (6.3e6, 0.5),
    "base": (7.1e6, 3.0),
    "large": (12.4e6, 4.3),
}

COMPUTE_DTYPES = common.COMPUTE_DTYPES
# Encoder output stride: stem or first CMM /4, then /2 per later stage.
ENCODER_STRIDE = 16


@dataclasses.dataclass(frozen=True)
class ModelConfig(common.TypedConfig):
  """Every architectural choice of MamKPD, typed. See docs/architecture.md."""

  name = "mamkpd"                   # the family, config.model.name (not a field)
  variant: str                      # label only ("base", ...); the fields below decide
  num_keypoints: int                # K heatmaps
  use_stem: bool                    # 7x7 conv + two 3x3 depth-wise convs, /2
  stem_dim: int                     # d_s, the stem's output width
  depths: tuple[int, ...]           # VSS blocks per stage
  dims: tuple[int, ...]             # channels per stage
  d_state: int = 1                  # N, SSM state size per channel
  ssm_ratio: float = 2.0            # d_inner = ssm_ratio * dim
  gate: bool = False                # SS2D z gate (VMamba's default) or ungated ("noz")
  mlp_ratio: float = 0.0            # 0: VSS block without MLP
  d_conv: int = 3                   # SS2D depth-wise conv kernel
  cmm_kernel: int = 3               # CMM depth-wise conv kernels (inter-patch)
  decoder_dims: tuple[int, ...] = (192, 96)   # widths of the two deconvolutions
  drop_path_rate: float = 0.1       # stochastic depth, linear over all blocks
  scan_impl: str = AUTO             # "auto" (by backend) or a key of kernels.SCAN_IMPLS
  dtype: str = "float32"            # computation dtype; parameters stay float32

  def validate(self):
    """Raises ValueError naming the first impossible field."""
    fail = self.fail
    self.validate_shared()
    if len(self.dims) != 3 or len(self.depths) != 3:
      fail("dims", f"MamKPD has three stages: dims and depths need 3 entries each "
           f"(depths={self.depths!r})")
    if min(self.dims) < 1:
      fail("dims", "every stage needs >= 1 channel")
    if min(self.depths) < 1:
      fail("depths", "every stage needs >= 1 VSS block")
    if self.use_stem and self.stem_dim < 1:
      fail("stem_dim", "must be >= 1 when use_stem is True")
    if self.d_state < 1:
      fail("d_state", "must be >= 1")
    for dim in self.dims:
      if self.ssm_ratio <= 0 or not float(self.ssm_ratio * dim).is_integer():
        fail("ssm_ratio", f"ssm_ratio * dim must be a positive integer (dim {dim})")
    if self.mlp_ratio < 0:
      fail("mlp_ratio", "must be >= 0 (0 disables the MLP)")
    if self.d_conv < 1 or self.d_conv % 2 == 0:
      fail("d_conv", "must be an odd kernel size")
    if self.cmm_kernel < 1 or self.cmm_kernel % 2 == 0:
      fail("cmm_kernel", "must be an odd kernel size")
    if len(self.decoder_dims) != 2 or min(self.decoder_dims) < 1:
      fail("decoder_dims", "two positive widths: the paper's two deconvolutions take "
           "the stride-16 features to stride-4 heatmaps")

  def d_inner(self, dim):
    return int(self.ssm_ratio * dim)

  @staticmethod
  def dt_rank(dim):
    """VMamba's dt_rank="auto": ceil(dim / 16)."""
    return math.ceil(dim / 16)


def model_config(variant, num_keypoints=17):
  """`config.model` for a row of VARIANTS, with the documented inferred settings."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown MamKPD variant {variant!r}; known: {sorted(VARIANTS)}")
  row = VARIANTS[variant]
  dims = row["dims"]
  config = ml_collections.ConfigDict()
  config.name = ModelConfig.name
  config.variant = variant
  config.num_keypoints = num_keypoints
  config.use_stem = row["use_stem"]
  config.stem_dim = dims[0]
  config.depths = row["depths"]
  config.dims = dims
  config.update(common.field_defaults(ModelConfig))
  # Setting (a) of docs/architecture.md: decoder widths C3/2, C3/4.
  config.decoder_dims = (dims[-1] // 2, dims[-1] // 4)
  return config
