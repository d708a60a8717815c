"""HRVMamba on the bundled open-field mouse video (4 keypoints), CPU-sized.

HRVMamba-tiny's branch widths (16, 32, 64, 128) and blocks, but one HR module per stage
and one DVSS block per branch (tiny has (1, 4, 2) modules of 2 blocks: 44 blocks, whose
training step takes 6 min to compile and 3.6 s per step at 64x64 on the 2-core CPU;
here 9 blocks) and a 64x64 input (a multiple of 32: branches at 16, 8, 4 and 2 pixels).
The same data and split as configs/sample_openfield.py (first 80% of the 116 frames
train, the last 20% are held out), the HRVMamba authors' recipe (AdamW, weight decay
0.01, MSRA codec sigma 2, flip test with heatmap shift) at a short schedule.

    python main.py --config=configs/sample_openfield_hrvmamba.py --workdir=/tmp/sample_openfield_hrvmamba
    python main.py --config=configs/sample_openfield_hrvmamba.py --workdir=/tmp/sample_openfield_hrvmamba --mode=eval

Expected result: held-out PCK@0.1 0.93 after 200 steps (mean-pose floor 0.208).
"""

from mamkpd_jax import config_lib


def get_config():
  config = config_lib.openfield("tiny", family="hrvmamba")
  config.model.num_modules = (1, 1, 1)   # HRVMamba-tiny has (1, 4, 2)
  config.model.num_blocks = 1            # HRVMamba-tiny has 2
  config.data.input_height = config.data.input_width = 64
  config.batch_size = 16
  config.train.learning_rate = 2e-3
  config.train.num_epochs = 40           # 92 training instances: 5 steps per epoch
  config.train.lr_decay_epochs = (32, 38)
  config.train.warmup_steps = 50
  config.train.log_every_steps = 25
  config.train.eval_every_epochs = 20
  config.train.checkpoint_every_steps = 250
  return config
