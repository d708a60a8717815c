"""The bundled animal set: a mouse in an open field, 4 keypoints (DeepLabCut's example).

116 hand-labelled frames of one video (data/samples/dlc-openfield, NOTICE.md). Training
uses the first 80% of frames (92) and evaluation the last 20% (24 unseen frames), so the
score measures generalisation to new frames, not memory. The tiny MamKPD at 128x128 input
(a square crop: the mouse turns every way) trains on the 2-core CPU in minutes.

    python main.py --config=configs/sample_openfield.py --workdir=/tmp/sample_openfield
    python main.py --config=configs/sample_openfield.py --workdir=/tmp/sample_openfield \
        --mode=eval

Expected result (measured 2026-11-22 on a 2-core CPU, JAX 0.10.2, the command above):
PCK@0.1 (normalised by the box's longer side) 0.594 after 125 steps, 0.958 after all
750; AP 0.597; 11 min 15 s in all. Predicting the mean pose scores 0.22.
Re-run 2026-12-01 with the default scan "auto" (= "chunked" on a CPU), same command with
--workdir=/tmp/of_chunked: PCK@0.1 0.583 after 125 steps, 0.958 after 750 (92 of 96
held-out keypoints, as before); AP 0.580 (0.597 before). Wall time 44 min 11 s, but the
machine was shared (load average 10-17), so it says nothing about speed.
"""

from mamkpd_jax import config_lib


def get_config():
  config = config_lib.openfield("tiny")
  config.data.input_height = config.data.input_width = 128
  config.batch_size = 16
  config.train.num_epochs = 150          # 92 training instances: 5 steps per epoch
  config.train.lr_decay_epochs = (120, 140)
  config.train.warmup_steps = 50
  config.train.log_every_steps = 25
  config.train.eval_every_epochs = 25
  config.train.checkpoint_every_steps = 250
  return config
