"""MamKPD model family in Flax NNX, one module per component of the paper's Figure 2."""

from mamkpd_jax.models.mamkpd import MamKPD, build_model
from mamkpd_jax.models.variants import PAPER_SIZES, VARIANTS, ModelConfig, model_config
