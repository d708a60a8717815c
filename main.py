"""Trains and evaluates MamKPD: the same as `mamkpd train` (mamkpd_jax/commands/train.py
has the flags and the work).

    python main.py --config=configs/coco_large.py --workdir=DIR            # train + eval
    python main.py --config=configs/coco_large.py --workdir=DIR --mode=eval
    python main.py --config=configs/sample_coco.py --workdir=DIR --config.train.num_steps=50

Re-running on the same workdir resumes from its latest checkpoint. Any config field can
be overridden: `--config.model.dtype=bfloat16`, `--config.init_from=OTHER_WORKDIR`.
"""

from absl import app, flags

from mamkpd_jax import cli
from mamkpd_jax.commands import train as command

if __name__ == "__main__":
  command.define_flags()
  flags.adopt_module_key_flags(command)     # --help lists the command's flags
  cli.quiet_backend_probing()
  app.run(command.main)
