"""Where `mamkpd predict` and `mamkpd track` take their model from: shipped weights or a
training checkpoint (flags shared by both commands, defined once)."""

from absl import flags
from ml_collections import config_flags

from mamkpd_jax import inference

CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A workdir, checkpoints/ folder or "
                                 "step folder.")
WEIGHTS = flags.DEFINE_string("weights", None, "A folder of shipped weights "
                              "(model.safetensors + model.json), e.g. "
                              "weights/mamkpd_tiny_openfield.")
CONFIG = config_flags.DEFINE_config_file("config", None, "Optional configs/*.py file "
                                         "instead of the workdir's config.json.")
flags.mark_flags_as_mutual_exclusive(["checkpoint", "weights"], required=True)


def load_estimator(compiler_options=None):
  """The Estimator the flags name (inference.load_estimator)."""
  return inference.load_estimator(CHECKPOINT.value, WEIGHTS.value, CONFIG.value,
                                  compiler_options)
