"""HRVMamba-small on COCO-17, input 256x192 (authors' README: 8.03M params, 3.311 GFLOPs, AP 74.6).

    python main.py --config=configs/coco_hrvmamba_small.py --workdir=/tmp/coco_hrvmamba_small
    python main.py --config=configs/coco_hrvmamba_small.py --workdir=/tmp/coco_hrvmamba_small --mode=eval

The authors' recipe (td-hm_hrvmamba_small_8xb32-210e_coco-256x192.py): AdamW lr 5e-4,
weight decay 0.01, 500-step linear warm-up, x0.1 at epochs 170 and 200 of 210, MSRA
heatmaps (sigma 2), flip test with the heatmap shift; drop-path and dropout per variant
(tiny 0 / 0, small 0.1 / 0.1, base 0.2 / 0). Their global batch is 8 GPUs x 32 = 256:
--config.batch_size=256 (default here 64, with the same learning rate).

The authors' checkpoint converts (docs/training.md, "HRVMamba checkpoints"):

    mamkpd convert --input=hrvmamba_small256192.pth \
        --config=configs/coco_hrvmamba_small.py --output=/tmp/hrvmamba_small_converted
    python main.py --config=configs/coco_hrvmamba_small.py --mode=eval \
        --workdir=/tmp/hrvmamba_small_eval --checkpoint=/tmp/hrvmamba_small_converted

Person detections, as the authors evaluate:
--config.data.det_file=person_detection_results/COCO_val2017_detections_AP_H_56_person.json

Expected result: AP 74.6 on COCO val2017, person detections (authors; not measured by us).

    python scripts/model_stats.py --config=configs/coco_hrvmamba_small.py
"""

from mamkpd_jax import config_lib


def get_config():
  return config_lib.coco("small", family="hrvmamba")
