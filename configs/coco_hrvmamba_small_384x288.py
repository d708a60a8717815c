"""HRVMamba-small on COCO-17, input 384x288 (authors' README: AP 76.4; 7.45 GFLOPs,
docs/hrvmamba.md §3).

    python main.py --config=configs/coco_hrvmamba_small_384x288.py --workdir=/tmp/coco_hrvmamba_small_384x288
    python main.py --config=configs/coco_hrvmamba_small_384x288.py --workdir=/tmp/coco_hrvmamba_small_384x288 --mode=eval

As configs/coco_hrvmamba_small.py (the authors' recipe; their hrvmamba_small384288.pth
converts the same way) at 384x288 input: heatmaps 96x72, MSRA sigma 3 as mmpose's
384x288 HRNet/HRFormer configs, which the authors' follow.

Expected result: AP 76.4 on COCO val2017, person detections (authors; not measured by us).
"""

from mamkpd_jax import config_lib


def get_config():
  config = config_lib.coco("small", family="hrvmamba")
  config.data.input_height, config.data.input_width = 384, 288
  config.data.sigma = 3.0
  return config
