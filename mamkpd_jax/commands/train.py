"""`mamkpd train` / `mamkpd eval` (and main.py): trains and evaluates a model (MamKPD or
HRVMamba); the work is in mamkpd_jax.training.train and mamkpd_jax.evaluation.evaluate.

    mamkpd train --config=configs/coco_large.py --workdir=DIR     # train + eval
    mamkpd eval --config=configs/coco_large.py --workdir=DIR      # = --mode=eval
    mamkpd train --config=configs/sample_coco.py --workdir=DIR --config.train.num_steps=50
    python main.py --config=configs/coco_large.py --workdir=DIR   # the same as mamkpd train

Re-running on the same workdir resumes from its latest checkpoint. Any config field can
be overridden: `--config.model.dtype=bfloat16`, `--config.init_from=OTHER_WORKDIR`.
Multi-host: `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` on every
host (or a cluster environment JAX detects, with `--num_processes`).
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mamkpd_jax.evaluation import evaluate
from mamkpd_jax.training import checkpointing, parallel, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/*.py file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_MODE = flags.DEFINE_enum("mode", "train_and_eval", ["train_and_eval", "train", "eval"],
                          "train_and_eval: train, evaluating every eval_every_epochs; "
                          "train: no evaluation; eval: evaluate a checkpoint.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "", "--mode=eval: a workdir, checkpoints "
                                  "folder or step folder (default: --workdir's latest).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "Multi-host: HOST:PORT of "
                                   "process 0 (jax.distributed.initialize).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "Multi-host: this process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                  _PROCESS_ID.value)
  config, workdir = _CONFIG.value, _WORKDIR.value
  try:
    if _MODE.value == "eval":
      evaluate.evaluate(config, workdir, _CHECKPOINT.value)
    else:
      train.train_and_evaluate(config, workdir,
                               evaluate_during_training=_MODE.value == "train_and_eval")
  except (ValueError, FileNotFoundError, NotADirectoryError, train.NonFiniteError,
          checkpointing.CheckpointMismatchError) as error:
    logging.error("%s", error)
    sys.exit(f"{os.path.basename(sys.argv[0])}: {error}")

