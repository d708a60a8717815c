"""MamKPD (stem, three-stage Mamba encoder, deconvolution decoder), one module per
component of the paper's Figure 2."""

from mamkpd_jax.models.mamkpd.model import MamKPD
from mamkpd_jax.models.mamkpd.variants import (ENCODER_STRIDE, PAPER_SIZES, VARIANTS,
                                               ModelConfig, model_config)
