"""Where `mamkpd predict`, `track` and `export` take their model from: shipped weights
or a training checkpoint (flags shared by the three commands, defined once when a
command's define_flags asks)."""

import functools
from typing import NamedTuple, Optional

from absl import flags
import ml_collections
from ml_collections import config_flags


@functools.cache
def define_flags():
  """--checkpoint | --weights (exactly one) and --config."""
  flags.DEFINE_string("checkpoint", None, "A workdir, checkpoints/ folder or step folder.")
  flags.DEFINE_string("weights", None, "A folder of shipped weights (model.safetensors + "
                      "model.json), e.g. weights/mamkpd_tiny_openfield.")
  config_flags.DEFINE_config_file("config", None, "Optional configs/*.py file instead of "
                                  "the workdir's config.json.")
  flags.mark_flags_as_mutual_exclusive(["checkpoint", "weights"], required=True)


def define_input_output(input_help, output_help):
  """The model flags above plus the required --input and --output of predict and track."""
  define_flags()
  flags.DEFINE_string("input", None, input_help)
  flags.DEFINE_string("output", None, output_help)
  flags.mark_flags_as_required(["input", "output"])


class ModelSource(NamedTuple):
  """inference.load_estimator's first three arguments: exactly one of checkpoint and
  weights; config only with a checkpoint."""

  checkpoint: Optional[str]
  weights: Optional[str]
  config: Optional[ml_collections.ConfigDict]


def model_source(values=flags.FLAGS):
  """The parsed flags' ModelSource; read by a command's `main` (the edge) only."""
  return ModelSource(values.checkpoint, values.weights, values.config)
