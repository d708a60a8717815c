"""MamKPD-L on AP-10K (17 animal keypoints, 54 species), input 256x256 (paper Table 4).

    python main.py --config=configs/ap10k_large.py --workdir=/tmp/ap10k_large
    python main.py --config=configs/ap10k_large.py --workdir=/tmp/ap10k_large --mode=eval \
        --config.data.val_ann=annotations/ap10k-test-split1.json

The first trains with the paper's recipe (210 epochs), evaluating on val-split1 every 10
epochs; re-running it resumes from the workdir. The second evaluates the latest
checkpoint on test-split1, the split the paper reports. Metrics go to
/tmp/ap10k_large/eval/metrics_step<N>.json.

Data: AP-10K in mmpose's layout (docs/datasets.md): data/ap10k/annotations/
ap10k-{train,val,test}-split1.json, data/ap10k/data/. GT boxes, COCO-style AP with
AP-10K's sigmas. Augmentation as mmpose's AP-10K configs (its defaults, half-body
included); the codec is UDP (mmpose's use MSRA; --config.data.codec=msra).

Expected result: AP 72.8 on AP-10K test (paper, Table 4; not measured by us).

Batch: config.batch_size (64) is global; the paper's is not stated. ViTPose's recipe
(config_lib.train_config("vitpose")): --config.train.optimizer=adamw
--config.train.learning_rate=5e-4 --config.train.weight_decay=0.1
--config.train.grad_clip_norm=1.0, with --config.per_device_batch_size=64.
"""

from mamkpd_jax import config_lib


def get_config():
  return config_lib.ap10k("large")
