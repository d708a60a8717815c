"""MamKPD-L on MPII-16, input 256x256 (paper Table 3: PCKh@0.5 mean 91.3).

    python main.py --config=configs/mpii_large.py --workdir=/tmp/mpii_large \
        --config.data.headbox_file=annotations/mpii_gt_val.mat
    python main.py --config=configs/mpii_large.py --workdir=/tmp/mpii_large --mode=eval \
        --config.data.headbox_file=annotations/mpii_gt_val.mat

The first trains with the paper's recipe (210 epochs) and evaluates every 10 epochs;
re-running it resumes from the workdir. The second evaluates the latest checkpoint.
Metrics go to /tmp/mpii_large/eval/metrics_step<N>.json.

Data: MPII in mmpose's layout (docs/datasets.md): data/mpii/annotations/
mpii_{train,val}.json, data/mpii/images/. PCKh divides by each person's head size, from
MPII's official head boxes: mmpose's data/mpii/annotations/mpii_gt_val.mat, named by
data.headbox_file as above (box i belongs to entry i of mpii_val.json). Without it every
head size is NaN: there is no PCKh, only the box-normalised PCK@0.1, and the best
checkpoint (eval.best_metric "PCKh") falls back to that.

Augmentation as mmpose's MPII configs: flip, scale and rotation; no half-body, no shift.
The codec is UDP (mmpose's MPII configs use MSRA; --config.data.codec=msra).

Expected result: PCKh@0.5 mean 91.3 on MPII val (paper, Table 3; not measured by us).

Batch: config.batch_size (64) is global; the paper's is not stated. ViTPose's recipe
(config_lib.train_config("vitpose")): --config.train.optimizer=adamw
--config.train.learning_rate=5e-4 --config.train.weight_decay=0.1
--config.train.grad_clip_norm=1.0, with --config.per_device_batch_size=64.
"""

from mamkpd_jax import config_lib


def get_config():
  return config_lib.mpii("large")
