"""HRVMamba-small on COCO-17, input 384x288 (authors' README: AP 76.4; 7.45 GFLOPs, SPEC §3).

    python main.py --config=configs/coco_hrvmamba_small_384x288.py --workdir=/tmp/coco_hrvmamba_small_384x288
    python main.py --config=configs/coco_hrvmamba_small_384x288.py --workdir=/tmp/coco_hrvmamba_small_384x288 --mode=eval

As configs/coco_hrvmamba_small.py (the authors' recipe; their hrvmamba_small384288.pth
converts the same way) at 384x288 input: heatmaps 96x72, MSRA sigma 3 as mmpose's
384x288 HRNet/HRFormer configs, which the authors' follow (SPEC does not state it).

Expected result, the authors' (COCO val2017, person detections), not measured by us:
AP 76.4.
"""

from mamkpd_jax import config_lib


def get_config():
  config = config_lib.coco("small", family="hrvmamba")
  config.data.input_height, config.data.input_width = 384, 288
  config.data.sigma = 3.0
  return config
