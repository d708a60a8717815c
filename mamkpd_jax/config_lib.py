"""Builders shared by the files in configs/ (which are loaded by path, not imported).

A config file calls one of these and overrides what differs; every field can also be
overridden on the command line (`--config.data.codec=msra`). The training section is
completed by the training issue (#5).
"""

import ml_collections

from mamkpd_jax.models import model_config

COCO_NUM_KEYPOINTS = 17
COCO_INPUT_HEIGHT, COCO_INPUT_WIDTH = 256, 192
SAMPLES = "data/samples"          # the bundled sample data (data/samples/NOTICE.md)


def data_config(dataset, root, train_ann, val_ann, train_images, val_images,
                input_height=COCO_INPUT_HEIGHT, input_width=COCO_INPUT_WIDTH):
  """`config.data`: where the annotations are, the crop, the codec and augmentation.

  Paths are relative to `root` (itself relative to the working directory unless
  absolute); an image folder is empty when the json's file_name already holds the path.
  """
  data = ml_collections.ConfigDict()
  data.dataset = dataset            # keypoint metadata: coco | mpii | ap10k | custom
  data.root = root
  data.train_ann = train_ann
  data.val_ann = val_ann
  data.train_images = train_images
  data.val_images = val_images
  data.contiguous_split = 0.0       # > 0: train_ann alone, split by frame order: this
                                    # fraction of frames trains, the rest evaluates
  data.det_file = ""                # person detections for evaluation; "" = GT boxes
  data.bbox_score_threshold = 0.0   # detections below it are dropped
  data.flip_pairs = ()              # custom only: ((left, right), ...) names or indices
  data.sigmas = ()                  # custom only: OKS sigma per keypoint
  data.input_height = input_height  # pixels; (height, width), e.g. (256, 192)
  data.input_width = input_width
  data.codec = "udp"                # heatmap codec: msra | udp | dark
  data.sigma = 2.0                  # heatmap Gaussian sigma (heatmap cells)
  data.on_bad = "error"             # bad annotations: "error" or "skip" (counted, logged)
  data.num_workers = 2              # Grain worker processes for training (0: in-process)
  data.flip_prob = 0.5              # augmentation, mmpose 1.x defaults (SPEC §3)
  data.half_body_prob = 0.3
  data.shift_prob = 0.3
  data.shift_factor = 0.16
  data.scale_factor = (0.5, 1.5)
  data.rotate_prob = 0.6
  data.rotate_factor = 80.0
  return data


def coco(variant):
  """MamKPD-`variant` on COCO-17 keypoints at 256x192 (paper Tables 1 and 2).

  Expects COCO 2017 where mmpose expects it: data/coco/annotations/
  person_keypoints_{train,val}2017.json, data/coco/{train,val}2017/*.jpg.
  """
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 64            # global: split over JAX processes, then devices
  config.model = model_config(variant, num_keypoints=COCO_NUM_KEYPOINTS)
  config.data = data_config(
      "coco", "data/coco", "annotations/person_keypoints_train2017.json",
      "annotations/person_keypoints_val2017.json", "train2017", "val2017")
  return config
