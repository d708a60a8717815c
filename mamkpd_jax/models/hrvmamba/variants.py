"""HRVMamba sizes (the authors' README) and the typed model configuration.

`VARIANTS` is the one table of named sizes; `model_config(name)` turns a row into the
`config.model` ConfigDict (name "hrvmamba") that config files start from, and
`HRVMambaConfig.from_config` validates it. Facts: docs/hrvmamba.md §2, §6.

Authors' README (input 256x192, K=17; COCO val2017 AP with person detections):

    variant  branch widths       layer1 mid  params  GFLOPs  AP
    tiny     16, 32, 64, 128     32          2M      1.1     69.5
    small    32, 64, 128, 256    64          8M      3.3     74.6
    base     80, 160, 320, 640   64          47M     14.2    76.5   (77.7 at 384x288)
"""

import dataclasses
import math

import ml_collections

from mamkpd_jax.kernels import AUTO
from mamkpd_jax.models import common

VARIANTS = {
    "tiny": dict(widths=(16, 32, 64, 128), layer1_width=32),
    "small": dict(widths=(32, 64, 128, 256), layer1_width=64),
    "base": dict(widths=(80, 160, 320, 640), layer1_width=64),
}

# Exact parameter counts at K=17 (docs/hrvmamba.md §2) and GFLOPs at 256x192 (docs/hrvmamba.md §3, multiply-adds).
PAPER_SIZES = {
    "tiny": (2_151_297, 1.0989),
    "small": (8_034_401, 3.3109),
    "base": (47_100_993, 14.2440),
}

# Per-variant regularisation of the authors' configs (docs/hrvmamba.md §6).
RECIPE = {
    "tiny": dict(drop_path_rate=0.0, drop_rate=0.0),
    "small": dict(drop_path_rate=0.1, drop_rate=0.1),
    "base": dict(drop_path_rate=0.2, drop_rate=0.0),
}

# Input height and width must be multiples of this: branch 3 runs at 1/32 and every
# fuse upsamples by exactly 2^k (docs/hrvmamba.md §6).
INPUT_STRIDE = 32
NUM_STAGES = 3            # stages 2, 3, 4 (stage 1 is layer1)


@dataclasses.dataclass(frozen=True)
class HRVMambaConfig(common.TypedConfig):
  """Every architectural choice of HRVMamba, typed (docs/hrvmamba.md §5, §6)."""

  name = "hrvmamba"                 # the family, config.model.name (not a field)
  variant: str                      # label only ("tiny", ...); the fields below decide
  num_keypoints: int                # K heatmaps
  widths: tuple[int, ...]           # channels of branches 0..3 (1/4 .. 1/32 resolution)
  layer1_width: int                 # Bottleneck mid channels (output 4x this)
  stem_dim: int = 64                # two 3x3/2 convs, 3 -> 64 -> 64
  num_bottlenecks: int = 2          # layer1
  num_modules: tuple[int, ...] = (1, 4, 2)   # HR modules of stages 2, 3, 4
  num_blocks: int = 2               # DVSS blocks per branch per module
  d_state: int = 1                  # N, SSM state size per channel
  ssm_ratio: float = 2.0            # d_inner = ssm_ratio * width
  mlp_ratio: float = 2.0            # DVSS MLP hidden = mlp_ratio * width
  drop_path_rate: float = 0.0       # stochastic depth, linear over the 14 block depths
  drop_rate: float = 0.0            # dropout after SS2D's out_proj and each MLP Linear
  scan_impl: str = AUTO             # "auto" (by backend) or a key of kernels.SCAN_IMPLS
  dtype: str = "float32"            # computation dtype; parameters stay float32

  def validate(self):
    """Raises ValueError naming the first impossible field."""
    fail = self.fail
    self.validate_shared()
    if len(self.widths) != NUM_STAGES + 1:
      fail("widths", "HRVMamba has four branches: four widths")
    for width in self.widths:
      if width < 4 or width % 4:
        fail("widths", "every width must be a positive multiple of 4 (ESInB's four "
             "depth-wise conv groups and the channel shuffle)")
      if self.d_inner(width) % self.dt_rank(width):
        fail("widths", f"d_inner {self.d_inner(width)} of width {width} must split into "
             f"{self.dt_rank(width)} DCNv4 groups")
    if len(self.num_modules) != NUM_STAGES or min(self.num_modules) < 1:
      fail("num_modules", "three stages of >= 1 HR module each")
    for field in ("layer1_width", "stem_dim", "num_bottlenecks", "num_blocks", "d_state"):
      if getattr(self, field) < 1:
        fail(field, "must be >= 1")
    if self.ssm_ratio <= 0 or any(not float(self.ssm_ratio * w).is_integer()
                                  for w in self.widths):
      fail("ssm_ratio", "ssm_ratio * width must be a positive integer")
    if self.mlp_ratio <= 0:
      fail("mlp_ratio", "must be > 0 (the DVSS block always has its MLP)")
    if not 0.0 <= self.drop_rate < 1.0:
      fail("drop_rate", "must be in [0, 1)")

  def d_inner(self, width):
    return int(self.ssm_ratio * width)

  @staticmethod
  def dt_rank(width):
    """R = ceil(width / 16): dt rank and number of DCNv4 groups (docs/hrvmamba.md §4)."""
    return math.ceil(width / 16)

  def block_drop_path_rates(self):
    """[stage][module] -> (rate of block 0, rate of block 1, ...), same on every branch.

    linspace(0, rate, total block depth) is cut into consecutive pieces along the
    module sequence (docs/hrvmamba.md §6): stage 2 gets rates[0:2], stage 3 rates[2:10], ...
    """
    depth = sum(self.num_modules) * self.num_blocks
    rates = [self.drop_path_rate * i / (depth - 1) if depth > 1 else 0.0
             for i in range(depth)]
    per_stage, start = [], 0
    for modules in self.num_modules:
      per_stage.append([tuple(rates[start + m * self.num_blocks:
                                    start + (m + 1) * self.num_blocks])
                        for m in range(modules)])
      start += modules * self.num_blocks
    return per_stage


def model_config(variant, num_keypoints=17):
  """`config.model` for a row of VARIANTS with the authors' regularisation."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown HRVMamba variant {variant!r}; known: {sorted(VARIANTS)}")
  config = ml_collections.ConfigDict()
  config.name = HRVMambaConfig.name
  config.variant = variant
  config.num_keypoints = num_keypoints
  config.update(VARIANTS[variant])
  config.update(common.field_defaults(HRVMambaConfig))
  config.update(RECIPE[variant])
  return config
