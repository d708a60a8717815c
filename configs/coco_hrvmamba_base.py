"""HRVMamba-base on COCO-17, input 256x192 (authors' README: 47.10M params, 14.244 GFLOPs, AP 76.5).

    python main.py --config=configs/coco_hrvmamba_base.py --workdir=/tmp/coco_hrvmamba_base
    python main.py --config=configs/coco_hrvmamba_base.py --workdir=/tmp/coco_hrvmamba_base --mode=eval

The authors' recipe (td-hm_hrvmamba_base_8xb32-210e_coco-256x192.py): AdamW lr 5e-4,
weight decay 0.01, 500-step linear warm-up, x0.1 at epochs 170 and 200 of 210, MSRA
heatmaps (sigma 2), flip test with the heatmap shift; drop-path and dropout per variant
(tiny 0 / 0, small 0.1 / 0.1, base 0.2 / 0). Their global batch is 8 GPUs x 32 = 256:
--config.batch_size=256 (default here 64, with the same learning rate).

The authors' checkpoint converts (docs/training.md, "HRVMamba checkpoints"):

    mamkpd convert --input=hrvmamba_base256192.pth \
        --config=configs/coco_hrvmamba_base.py --output=/tmp/hrvmamba_base_converted
    python main.py --config=configs/coco_hrvmamba_base.py --mode=eval \
        --workdir=/tmp/hrvmamba_base_eval --checkpoint=/tmp/hrvmamba_base_converted

Person detections, as the authors evaluate:
--config.data.det_file=person_detection_results/COCO_val2017_detections_AP_H_56_person.json

Expected result: AP 76.5 on COCO val2017, person detections (authors; not measured by us).

    python scripts/model_stats.py --config=configs/coco_hrvmamba_base.py
"""

from mamkpd_jax import config_lib


def get_config():
  return config_lib.coco("base", family="hrvmamba")
