"""MamKPD: stem -> three-stage Mamba encoder -> heatmap decoder (paper Figure 2a).

    images (N, H, W, 3) -> Stem (/2, optional) -> Encoder (/16) -> Decoder (x4)
                        -> heatmaps (N, H/4, W/4, K), float32

Input: RGB images on the 0-255 scale (uint8 or float), which the model normalises
itself with the ImageNet statistics (mmpose's data_preprocessor, on the device): the
input pipeline ships uint8 crops (4x less host traffic than float32) and no caller can
forget the normalisation. H and W must be multiples of 16. Parameters are float32;
activations use `model_config.dtype`; the scan state is always float32.
"""

import jax.numpy as jnp
from flax import nnx

from mamkpd_jax.models import common
from mamkpd_jax.models.mamkpd.decoder import HeatmapDecoder
from mamkpd_jax.models.mamkpd.encoder import Encoder
from mamkpd_jax.models.mamkpd.stem import Stem
from mamkpd_jax.models.mamkpd.variants import ENCODER_STRIDE, ModelConfig


class MamKPD(nnx.Module):
  """Top-down heatmap keypoint detector. Call `.eval()` for inference (BN statistics)."""

  def __init__(self, model_config: ModelConfig, *, rngs: nnx.Rngs):
    cfg = model_config
    dtype = common.compute_dtype(cfg.dtype)
    self.config = cfg
    self.stem = Stem(cfg.stem_dim, dtype=dtype, rngs=rngs) if cfg.use_stem else None
    self.encoder = Encoder(cfg.stem_dim if cfg.use_stem else 3, model_config=cfg,
                           dtype=dtype, rngs=rngs)
    self.decoder = HeatmapDecoder(cfg.dims[-1], cfg.decoder_dims, cfg.num_keypoints,
                                  dtype=dtype, rngs=rngs)

  def __call__(self, images):
    """(N, H, W, 3) RGB 0-255 images (uint8 or float) -> (N, H/4, W/4, K) f32 heatmaps."""
    x = common.prepare_images(images, ENCODER_STRIDE, self.config.dtype, "MamKPD")
    if self.stem is not None:
      x = self.stem(x)                     # (N, H/2, W/2, d_s)
    x = self.encoder(x)                    # (N, H/16, W/16, C3)
    return self.decoder(x).astype(jnp.float32)
