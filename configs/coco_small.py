"""MamKPD-S on COCO-17, input 256x192 (paper Table 1: 6.3M params, 0.5 GFLOPs).

Model section only for now; data and training arrive with issues #4 and #5.

    python scripts/model_stats.py --config=configs/coco_small.py

Expected (measured 2026-11-22, CPU): 7.05M parameters, 2.38 GFLOPs (multiply-adds).
The paper's small row cannot be reproduced from its own text (no stem is < 25K params
and 0.2 GMACs less than Base); see docs/architecture.md.
"""

from mamkpd_jax import config_lib


def get_config():
  return config_lib.coco("small")
