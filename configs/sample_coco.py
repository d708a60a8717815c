"""The bundled COCO-MINI sample: train on its train images, evaluate on its val images.

86 training instances and 68 evaluation instances with keypoints (data/samples/
coco-mini, copied unmodified from COCO 2017; licences in data/samples/NOTICE.md), GT
boxes, 256x192, UDP codec. The model is the small test-size MamKPD so that a CPU run
finishes in minutes; it shows the pipeline working, not the paper's accuracy. The data
is in the repository: nothing to download.

    python main.py --config=configs/sample_coco.py --workdir=/tmp/sample_coco
    python main.py --config=configs/sample_coco.py --workdir=/tmp/sample_coco --mode=eval

The first trains and evaluates (re-running it resumes from the workdir), the second
evaluates the latest checkpoint; metrics go to /tmp/sample_coco/eval/
metrics_step<N>.json.

Expected result: AP 0.0005 after 150 steps: the job working end to end, not accuracy.

configs/sample_openfield.py shows real learning.

    python scripts/codec_upper_bound.py --config=configs/sample_coco.py --json
    python scripts/visualize_pipeline.py --config=configs/sample_coco.py --output=crops.png
"""

from mamkpd_jax import config_lib


def get_config():
  config = config_lib.coco("tiny")
  config.batch_size = 16
  config.data.root = f"{config_lib.SAMPLES}/coco-mini"
  config.train.num_epochs = 30        # 86 instances: 5 steps per epoch, 150 steps
  config.train.lr_decay_epochs = (24, 28)
  config.train.warmup_steps = 20
  config.train.log_every_steps = 10
  config.train.eval_every_epochs = 10
  config.train.checkpoint_every_steps = 50
  config.eval.batch_size = 32
  return config
