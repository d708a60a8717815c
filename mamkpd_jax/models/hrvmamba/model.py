"""HRVMamba: HRNet stem and layer1, three stages of DVSS HR modules, 1x1 heatmap head.

    images (N, H, W, 3) -> conv 3x3/2, BN, ReLU, conv 3x3/2, BN, ReLU     (N, H/4, W/4, 64)
      -> layer1: Bottlenecks                                            (N, H/4, W/4, 4 mid)
      -> transition1, stage2 (2 branches), transition2, stage3 (3), transition3, stage4 (4)
      -> branch 0 only (last module)                                    (N, H/4, W/4, c0)
      -> head.final_layer 1x1 conv (+bias)                              (N, H/4, W/4, K) f32

Input: RGB on the 0-255 scale, normalised inside as MamKPD (common.normalize_images).
H and W must be multiples of 32. Attribute names follow the authors' modules so a
checkpoint's module paths are ours (backbone. prefix dropped; convert.py).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from mamkpd_jax.models import common
from mamkpd_jax.models.hrvmamba import hrnet
from mamkpd_jax.models.hrvmamba.variants import INPUT_STRIDE, HRVMambaConfig


class HeatmapHead(nnx.Module):
  """mmpose HeatmapHead without deconvolutions: one 1x1 conv to K heatmaps."""

  def __init__(self, in_dim, num_keypoints, *, dtype, rngs):
    self.final_layer = nnx.Conv(in_dim, num_keypoints, (1, 1), dtype=dtype,
                                kernel_init=common.head_init, rngs=rngs)

  def __call__(self, x):
    return self.final_layer(x)


class HRVMamba(nnx.Module):
  """Top-down heatmap keypoint detector. Call `.eval()` for inference (BN statistics)."""

  def __init__(self, model_config: HRVMambaConfig, *, rngs: nnx.Rngs):
    cfg = model_config
    dtype = common.compute_dtype(cfg.dtype)
    self.config = cfg
    self.conv1 = common.conv(3, cfg.stem_dim, 3, dtype, rngs, stride=2)
    self.bn1 = common.batch_norm(cfg.stem_dim, dtype, rngs)
    self.conv2 = common.conv(cfg.stem_dim, cfg.stem_dim, 3, dtype, rngs, stride=2)
    self.bn2 = common.batch_norm(cfg.stem_dim, dtype, rngs)
    layer1_out = hrnet.BOTTLENECK_EXPANSION * cfg.layer1_width
    self.layer1 = nnx.List([
        hrnet.Bottleneck(cfg.stem_dim if b == 0 else layer1_out, cfg.layer1_width,
                         dtype=dtype, rngs=rngs) for b in range(cfg.num_bottlenecks)])
    rates = cfg.block_drop_path_rates()              # [stage][module] -> per-block rates
    w = cfg.widths
    self.transition1 = hrnet.make_transition([layer1_out], w[:2], dtype, rngs)
    self.stage2 = self._stage(w[:2], rates[0], last_stage=False, rngs=rngs)
    self.transition2 = hrnet.make_transition(w[:2], w[:3], dtype, rngs)
    self.stage3 = self._stage(w[:3], rates[1], last_stage=False, rngs=rngs)
    self.transition3 = hrnet.make_transition(w[:3], w[:4], dtype, rngs)
    self.stage4 = self._stage(w[:4], rates[2], last_stage=True, rngs=rngs)
    self.head = HeatmapHead(w[0], cfg.num_keypoints, dtype=dtype, rngs=rngs)

  def _stage(self, widths, module_rates, *, last_stage, rngs):
    """HR modules; only the network's very last module outputs branch 0 alone."""
    dtype = common.compute_dtype(self.config.dtype)
    return nnx.List([
        hrnet.HRModule(widths, multiscale_output=not (last_stage and m == len(module_rates) - 1),
                       drop_path_rates=rates, model_config=self.config, dtype=dtype,
                       rngs=rngs)
        for m, rates in enumerate(module_rates)])

  def __call__(self, images):
    """(N, H, W, 3) RGB 0-255 images (uint8 or float) -> (N, H/4, W/4, K) f32 heatmaps."""
    x = common.prepare_images(images, INPUT_STRIDE, self.config.dtype, "HRVMamba")
    x = jax.nn.relu(self.bn1(self.conv1(x)))           # (N, H/2, W/2, 64)
    x = jax.nn.relu(self.bn2(self.conv2(x)))           # (N, H/4, W/4, 64)
    for block in self.layer1:
      x = block(x)                                     # (N, H/4, W/4, 4 mid)
    features = [x]
    for transition, stage in ((self.transition1, self.stage2),
                              (self.transition2, self.stage3),
                              (self.transition3, self.stage4)):
      features = hrnet.apply_transition(transition, features)
      features = common.apply_sequence(stage, features)  # identical modules: one scan
    return self.head(features[0]).astype(jnp.float32)  # (N, H/4, W/4, K)
