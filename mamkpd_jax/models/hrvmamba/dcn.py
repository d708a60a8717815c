"""DCNv4 as HRVMamba's SS2D local mixer (docs/hrvmamba.md §1, §4): the module around the op.

    v (N, H, W, 2C)
      -> t = v, or a 3x3 depth-wise conv of v (offset_mask_dw; widths C % 80 == 0, Base)
      -> M = offset_mask(t)          Dense 2C -> P, P = 8 * ceil(27 R / 8), zero-initialised
      -> kernels.dcnv4(v, M, groups=R)   3x3 deformable sampling, raw (unnormalised) masks
      -> (N, H, W, 2C)

No value or output projection: the module the authors ran was built with
without_pointwise=True (docs/hrvmamba.md §1). With zero offset_mask weights the output is 0 until
training moves them, as upstream.

The sampling runs as `kernels.dcnv4`'s impl "auto" (the compiled CPU kernel on a CPU, pure
JAX elsewhere), except where code is traced for export: under any
`common.depthwise_conv_mode` other than "auto" (jax.export artefacts, ONNX) it is pure
JAX, so no custom call lands in an artefact. `dcnv4_impl(impl)` sets it explicitly while
tracing (benchmarks and tests compare the two). Both are read when a function is traced:
a function already traced under one setting keeps it (jit's cache does not see them).
"""

import dataclasses
import math

import jax
from flax import nnx

from mamkpd_jax import kernels
from mamkpd_jax.kernels.dcnv4 import IMPLS as DCNV4_IMPLS
from mamkpd_jax.models import common
from mamkpd_jax.models.hrvmamba import variants

KERNEL_POINTS = 9        # 3x3
LANE_MULTIPLE = 8        # upstream rounds the offset/mask width up "for tensor cores"


def offset_mask_width(groups):
  """P: 3 lanes (dx, dy, mask) per point and group, rounded up to a multiple of 8."""
  return LANE_MULTIPLE * math.ceil(3 * KERNEL_POINTS * groups / LANE_MULTIPLE)


@dataclasses.dataclass(frozen=True)
class CallSite:
  """Where HRVMamba calls DCNv4: one branch's map and widths (docs/hrvmamba.md §10)."""

  index: int           # HR branch 0..3 (1/4 .. 1/32 of the input)
  height: int
  width: int
  channels: int        # d_inner = 2 * branch width = G * D
  groups: int          # G = ceil(width / 16)
  lanes: int           # P, offset_mask width (3*K*G rounded up to 8)
  calls: int           # DCNv4 calls on this branch per forward pass

  def inputs(self, batch, dtype):
    """value (N, H, W, G*D), offset_mask (N, H, W, P) as ShapeDtypeStructs."""
    value = jax.ShapeDtypeStruct((batch, self.height, self.width, self.channels), dtype)
    offset_mask = jax.ShapeDtypeStruct((batch, self.height, self.width, self.lanes), dtype)
    return value, offset_mask


def call_sites(variant, input_height=256, input_width=192):
  """HRVMamba `variant`'s DCNv4 call sites (variants.VARIANTS), from the model config."""
  if variant not in variants.VARIANTS:
    raise ValueError(f"unknown HRVMamba variant {variant!r}; known: "
                     f"{sorted(variants.VARIANTS)}")
  if input_height % variants.INPUT_STRIDE or input_width % variants.INPUT_STRIDE:
    raise ValueError(f"input {input_height}x{input_width}: both sides must be multiples "
                     f"of {variants.INPUT_STRIDE}")
  cfg = variants.HRVMambaConfig.from_config(variants.model_config(variant))
  sites = []
  for index, width in enumerate(cfg.widths):
    stride = 4 * 2**index
    groups = cfg.dt_rank(width)
    modules = sum(m for stage, m in enumerate(cfg.num_modules) if stage + 2 > index)
    sites.append(CallSite(index, input_height // stride, input_width // stride,
                          cfg.d_inner(width), groups, offset_mask_width(groups),
                          cfg.num_blocks * modules))
  return sites


def has_offset_dw_conv(width):
  """Upstream passes dw_kernel_size=3 exactly when the block width is a multiple of 80."""
  return width % 80 == 0


class DCNv4Mixer(nnx.Module):
  """Offsets and masks from the input itself, then DCNv4 sampling of the input."""

  impl = "auto"      # kernels.dcnv4's impl; set by dcnv4_impl() while tracing

  def __init__(self, channels, *, groups, dw_conv, dtype, rngs):
    self.groups = groups
    self.offset_mask_dw = (common.depthwise_conv(channels, 3, dtype, rngs) if dw_conv
                           else None)
    self.offset_mask = nnx.Linear(channels, offset_mask_width(groups), dtype=dtype,
                                  kernel_init=nnx.initializers.zeros,
                                  bias_init=nnx.initializers.zeros, rngs=rngs)

  def __call__(self, value):
    """(N, H, W, channels) -> (N, H, W, channels) in the compute dtype."""
    offset_mask = self.offset_mask(common.apply(self.offset_mask_dw, value))   # (N, H, W, P)
    return kernels.dcnv4(value, offset_mask, groups=self.groups, impl=sampling_impl())


def sampling_impl():
  """kernels.dcnv4's impl for code traced now: the one set by dcnv4_impl(), else "auto",
  or "jax" while exporting (module docstring)."""
  if DCNv4Mixer.impl != "auto":
    return DCNv4Mixer.impl
  return "auto" if common.compiled_kernels_allowed() else "jax"


def dcnv4_impl(impl):
  """Within: every DCNv4Mixer traces with kernels.dcnv4 impl `impl` (kernels.dcnv4.IMPLS)."""
  return common.class_setting(DCNv4Mixer, "impl", impl, DCNV4_IMPLS, "DCNv4 impl")


def mixer(width, model_config):
  """SS2D's `mixer` argument for a block of `width` channels."""
  def build(channels, dtype, rngs):
    return DCNv4Mixer(channels, groups=model_config.dt_rank(width),
                      dw_conv=has_offset_dw_conv(width), dtype=dtype, rngs=rngs)
  return build
