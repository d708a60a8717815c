"""Builders shared by the files in configs/ (which are loaded by path, not imported).

A config file calls one of these and overrides what differs; every field can also be
overridden on the command line (`--config.model.dtype=bfloat16`). The data and training
sections are completed by the data-pipeline (#4) and training (#5) issues.
"""

import ml_collections

from mamkpd_jax.models import model_config

COCO_NUM_KEYPOINTS = 17
COCO_INPUT_HEIGHT, COCO_INPUT_WIDTH = 256, 192


def coco(variant):
  """MamKPD-`variant` on COCO-17 keypoints at 256x192 (paper Tables 1 and 2)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model = model_config(variant, num_keypoints=COCO_NUM_KEYPOINTS)
  config.data = ml_collections.ConfigDict()
  config.data.input_height = COCO_INPUT_HEIGHT  # pixels; (height, width) = (256, 192)
  config.data.input_width = COCO_INPUT_WIDTH
  return config
