"""MamKPD-S on COCO-17, input 256x192 (paper Table 1: 6.3M params, 0.5 GFLOPs).

    python main.py --config=configs/coco_small.py --workdir=/tmp/coco_small
    python main.py --config=configs/coco_small.py --workdir=/tmp/coco_small --mode=eval

The first trains with the paper's recipe (210 epochs) and evaluates every 10 epochs;
re-running it resumes from the workdir. The second evaluates the latest checkpoint.
Metrics go to /tmp/coco_small/eval/metrics_step<N>.json.

Data: COCO 2017 in mmpose's layout (docs/datasets.md): data/coco/annotations/
person_keypoints_{train,val}2017.json, data/coco/{train,val}2017/. Evaluation uses GT
boxes; for mmpose's person detections (behind the peers' numbers in the paper's
table, e.g. HRNet-W32's 74.4 AP), add
--config.data.det_file=person_detection_results/COCO_val2017_detections_AP_H_56_person.json
(relative to data/coco, where mmpose keeps it).

Expected result: AP 75.2 on COCO val2017 (paper, Table 2; not measured by us).

Batch: config.batch_size (64) is global; the paper's is not stated. ViTPose's recipe
(config_lib.train_config("vitpose")): --config.train.optimizer=adamw
--config.train.learning_rate=5e-4 --config.train.weight_decay=0.1
--config.train.grad_clip_norm=1.0, with --config.per_device_batch_size=64.

    python scripts/model_stats.py --config=configs/coco_small.py

Ours: 7.05M parameters, 2.38 GFLOPs (multiply-adds). The paper's
small row cannot be reproduced from its own text (no stem is < 25K params and 0.2 GMACs
less than Base); see docs/architecture.md.
"""

from mamkpd_jax import config_lib


def get_config():
  return config_lib.coco("small")
