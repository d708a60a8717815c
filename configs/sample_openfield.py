"""The bundled animal set: a mouse in an open field, 4 keypoints (DeepLabCut's example).

116 hand-labelled frames of one video (data/samples/dlc-openfield, NOTICE.md). Training
uses the first 80% of frames (92) and evaluation the last 20% (24 unseen frames), so the
score measures generalisation to new frames, not memory. The tiny MamKPD at 128x128 input
(a square crop: the mouse turns every way) trains on the 2-core CPU in minutes.

    python main.py --config=configs/sample_openfield.py --workdir=/tmp/sample_openfield
    python main.py --config=configs/sample_openfield.py --workdir=/tmp/sample_openfield \
        --mode=eval

Expected result (measured 2026-12-01 on the shared 2-core CPU, JAX 0.10.2, the command
above): held-out PCK@0.1 (normalised by the box's longer side) 0.625 after 125 steps,
0.771 after all 250, printed beside the mean-pose floor 0.208 (the training set's mean
pose in each held-out box); AP 0.111; 317 s of CPU time (22 min 28 s of wall time at
load 12-21). Longer: --config.train.num_epochs=150 "--config.train.lr_decay_epochs=(120,140)"
gave 0.958 after 750 steps (2026-11-22, 11 min 15 s). The picture of predictions on four
held-out frames: WORKDIR/eval/predictions_step250.png.
Issue #13's chunked scan (the CPU default until cpu_ffi) was checked on the longer schedule
(2026-12-01, --workdir=/tmp/of_chunked, 750 steps): PCK@0.1 0.958 (92 of 96 held-out
keypoints, as with the reference scan), AP 0.580 (0.597 before); its wall time (44 min at
load 10-17) says nothing about speed.
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
