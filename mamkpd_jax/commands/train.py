"""`mamkpd train` / `mamkpd eval` (and main.py): trains and evaluates a model (MamKPD or
HRVMamba); the work is in mamkpd_jax.training.train and mamkpd_jax.evaluation.evaluate.

    mamkpd train --config=configs/coco_large.py --workdir=DIR     # train + eval
    mamkpd eval --config=configs/coco_large.py --workdir=DIR      # = --mode=eval
    mamkpd train --config=configs/sample_coco.py --workdir=DIR \\
        --config.train.num_steps=50
    python main.py --config=configs/coco_large.py --workdir=DIR   # the same as mamkpd train

Re-running on the same workdir resumes from its latest checkpoint. Any config field can
be overridden: `--config.model.dtype=bfloat16`, `--config.init_from=OTHER_WORKDIR`.
Multi-host: `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` on every
host (or a cluster environment JAX detects, with `--num_processes`). A multi-host Cloud
TPU slice is joined with no flag; `--num_processes=1` says "one process, join nothing".

From Python: `run(config, workdir, mode=..., checkpoint=...)`; `main` only reads the
flags.
"""

import functools
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mamkpd_jax.evaluation import evaluate
from mamkpd_jax.training import checkpointing, parallel, train

FLAGS = flags.FLAGS
MODES = ("train_and_eval", "train", "eval")


@functools.cache
def define_flags():
  """The command's flags (mamkpd_jax.cli and main.py define them before parsing;
  importing this module defines none, so it mixes with the other commands)."""
  config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
  flags.DEFINE_enum("mode", "train_and_eval", list(MODES), "train_and_eval: train, "
                    "evaluating every eval_every_epochs; train: no evaluation; eval: "
                    "evaluate a checkpoint.")
  flags.DEFINE_string("checkpoint", "", "--mode=eval: a workdir, checkpoints folder or "
                      "step folder (default: --workdir's latest).")
  flags.DEFINE_string("coordinator_address", "", "Multi-host: HOST:PORT of process 0 "
                      "(jax.distributed.initialize).")
  flags.DEFINE_integer("num_processes", 0, "Multi-host: number of processes (0: one, or "
                       "every host of a Cloud TPU slice, found by JAX; 1: one, always).")
  flags.DEFINE_integer("process_id", -1, "Multi-host: this process's index.")
  flags.mark_flags_as_required(["config", "workdir"])


def run(config, workdir, mode="train_and_eval", checkpoint=""):
  """Trains (and evaluates) config's model in workdir, or evaluates a checkpoint
  (mode="eval"; checkpoint "" = workdir's latest)."""
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  if mode == "eval":
    return evaluate.evaluate(config, workdir, checkpoint)
  return train.train_and_evaluate(config, workdir,
                                  evaluate_during_training=mode == "train_and_eval")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                  FLAGS.process_id)
  try:
    run(FLAGS.config, FLAGS.workdir, FLAGS.mode, FLAGS.checkpoint)
  except (ValueError, FileNotFoundError, NotADirectoryError, train.NonFiniteError,
          checkpointing.CheckpointMismatchError) as error:
    logging.error("%s", error)
    sys.exit(f"{os.path.basename(sys.argv[0])}: {error}")
