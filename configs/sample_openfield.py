"""The bundled animal set: a mouse in an open field, 4 keypoints (DeepLabCut's example).

116 hand-labelled frames of one video (data/samples/dlc-openfield, NOTICE.md). Training
uses the first 80% of frames (92) and evaluation the last 20% (24 unseen frames), so the
score measures generalisation to new frames, not memory. MamKPD-tiny at 64x64 input (a
square crop: the mouse turns every way) with AdamW at learning rate 2e-3 trains 1000
steps on a 2-core CPU in about two minutes.

Why these settings: at 128x128 and learning rate 1e-3, tiny put snout and both ears on
one point, the head's centre (their heatmaps correlate 0.999), and held-out PCK@0.1
stayed at 0.74-0.83 whatever the sigma, augmentation, batch or input size; a 64x64 step
costs a fifth as much, and with the higher rate and 1000 steps the ears separate
(benchmarks/README.md, "The first command").

    python main.py --config=configs/sample_openfield.py --workdir=/tmp/sample_openfield
    python main.py --config=configs/sample_openfield.py --workdir=/tmp/sample_openfield \
        --mode=eval

Expected result: held-out PCK@0.1 0.95 to 0.97 after 1000 steps (mean-pose floor 0.208).

PCK@0.1 is normalised by the box's longer side; the mean-pose floor is what placing the
training set's mean pose in each held-out box scores (a model that learned nothing).
The recorded runs, with machine and wall time: benchmarks/README.md. Predictions on four
held-out frames: WORKDIR/eval/predictions_step1000.png.
"""

from mamkpd_jax import config_lib


def get_config():
  config = config_lib.openfield("tiny")
  config.data.input_height = config.data.input_width = 64
  config.batch_size = 16
  config.train.learning_rate = 2e-3
  config.train.num_epochs = 200          # 92 training instances: 5 steps per epoch
  config.train.lr_decay_epochs = (160, 190)
  config.train.warmup_steps = 50
  config.train.log_every_steps = 100
  config.train.eval_every_epochs = 50
  config.train.checkpoint_every_steps = 500
  return config
