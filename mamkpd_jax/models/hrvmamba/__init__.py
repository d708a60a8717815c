"""HRVMamba (PoseVMamba, arXiv 2410.03174): DVSS blocks (multi-scale depth-wise convs,
SS2D with a DCNv4 local mixer, MLP) in an HRNet-style multi-branch network.
Facts and their sources: docs/hrvmamba.md."""

from mamkpd_jax.models.hrvmamba.model import HRVMamba
from mamkpd_jax.models.hrvmamba.variants import (INPUT_STRIDE, PAPER_SIZES, VARIANTS,
                                                 HRVMambaConfig, model_config)
