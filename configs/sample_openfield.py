"""The bundled animal set: a mouse in an open field, 4 keypoints (DeepLabCut's example).

116 hand-labelled frames of one video (data/samples/dlc-openfield, NOTICE.md). Training
uses the first 80% of frames (92) and evaluation the last 20% (24 unseen frames), so the
score measures generalisation to new frames, not memory. The tiny MamKPD at 128x128 input
(a square crop: the mouse turns every way) trains on the 2-core CPU in minutes.

    python main.py --config=configs/sample_openfield.py --workdir=/tmp/sample_openfield
    python main.py --config=configs/sample_openfield.py --workdir=/tmp/sample_openfield \
        --mode=eval

Expected result: held-out PCK@0.1 0.74 to 0.80 after 250 steps (mean-pose floor 0.208).

PCK@0.1 is normalised by the box's longer side; the mean-pose floor is what placing the
training set's mean pose in each held-out box scores (a model that learned nothing).
The recorded runs, with machine and wall time: benchmarks/README.md. Predictions on four
held-out frames: WORKDIR/eval/predictions_step250.png.
"""

from mamkpd_jax import config_lib


def get_config():
  config = config_lib.openfield("tiny")
  config.data.input_height = config.data.input_width = 128
  config.batch_size = 16
  config.train.num_epochs = 50           # 92 training instances: 5 steps per epoch
  config.train.lr_decay_epochs = (40, 47)
  config.train.warmup_steps = 50
  config.train.log_every_steps = 25
  config.train.eval_every_epochs = 25
  config.train.checkpoint_every_steps = 125
  return config
