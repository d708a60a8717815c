"""Main entry point for MamKPD training and evaluation (kept thin, as Flax's examples).

    python main.py --config=configs/coco_large.py --workdir=DIR [--mode=train_and_eval]

Any config field can be overridden: `--config.model.dtype=bfloat16`.

Status: training and evaluation arrive with issue #5. Until then this parses the flags,
validates the config, builds the model, logs its size, and exits non-zero with a
message saying what is missing; it never pretends to train.
"""

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from mamkpd_jax.models import ModelConfig, build_model, stats

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/*.py file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_MODE = flags.DEFINE_enum("mode", "train_and_eval", ["train_and_eval", "train", "eval"],
                          "What to run.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(),
               jax.process_count(), jax.local_devices())
  try:
    model_config = ModelConfig.from_config(_CONFIG.value.model)
  except ValueError as e:
    raise SystemExit(f"main.py: {e}") from None
  model = build_model(model_config, seed=_CONFIG.value.seed)
  logging.info("MamKPD-%s: %s parameters", model_config.variant,
               f"{stats.param_counts(model)['total']:,}")
  sys.exit(f"main.py: --mode={_MODE.value} is not implemented yet: training and "
           f"evaluation arrive with issue #5 (nothing was written to {_WORKDIR.value}).")


if __name__ == "__main__":
  app.run(main)
