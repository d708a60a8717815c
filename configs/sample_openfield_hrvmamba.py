"""HRVMamba-tiny on the bundled open-field mouse video (4 keypoints), CPU-sized.

The same data and split as configs/sample_openfield.py (first 80% of the 116 frames
train, the last 20% are held out), the HRVMamba authors' recipe (AdamW, weight decay
0.01, MSRA codec sigma 2, flip test with heatmap shift) at a shorter schedule, and a
128x128 input (multiple of 32: branches at 32, 16, 8 and 4 pixels).

    python main.py --config=configs/sample_openfield_hrvmamba.py --workdir=/tmp/sample_openfield_hrvmamba
    python main.py --config=configs/sample_openfield_hrvmamba.py --workdir=/tmp/sample_openfield_hrvmamba --mode=eval

Expected result: not yet measured. On the shared 2-core CPU (2026-12-01) training did
not reach step 25 within 16-43 minutes and grew to 10-16 GB while compiling (README,
"HRVMamba").
"""

from mamkpd_jax import config_lib


def get_config():
  config = config_lib.openfield("tiny", family="hrvmamba")
  config.data.input_height = config.data.input_width = 128
  config.batch_size = 16
  config.train.learning_rate = 2e-3
  config.train.num_epochs = 100          # 92 training instances: 5 steps per epoch
  config.train.lr_decay_epochs = (80, 95)
  config.train.warmup_steps = 50
  config.train.log_every_steps = 25
  config.train.eval_every_epochs = 20
  config.train.checkpoint_every_steps = 250
  return config
