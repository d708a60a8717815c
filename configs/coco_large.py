"""MamKPD-L on COCO-17, input 256x192 (paper Table 1: 12.4M params, 4.3 GFLOPs).

Model section only for now; data and training arrive with issues #4 and #5.

    python scripts/model_stats.py --config=configs/coco_large.py

Expected (measured 2026-11-22, CPU): 12.47M parameters, 4.47 GFLOPs (multiply-adds).
"""

from mamkpd_jax import config_lib


def get_config():
  return config_lib.coco("large")
