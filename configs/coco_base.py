"""MamKPD-B on COCO-17, input 256x192 (paper Table 1: 7.1M params, 3.0 GFLOPs).

Model section only for now; data and training arrive with issues #4 and #5.

    python scripts/model_stats.py --config=configs/coco_base.py

Expected (measured 2026-11-22, CPU): 7.08M parameters, 2.63 GFLOPs (multiply-adds).
"""

from mamkpd_jax import config_lib


def get_config():
  return config_lib.coco("base")
