"""Builders shared by the files in configs/ (which are loaded by path, not imported).

A config file calls one of these (`coco`, `mpii`, `ap10k`: a whole config for a
variant) and overrides what differs; every field can also be overridden on the command
line (`--config.data.codec=msra`).

    config.seed, config.batch_size, config.per_device_batch_size, config.init_from
    config.model   models.{mamkpd,hrvmamba}.model_config; config.model.name = family
    config.data    data_config: annotations, crop, codec, augmentation
    config.train   train_config: optimiser recipe, schedule, logging, checkpoints
    config.eval    eval_config: flip test, rescoring, OKS-NMS, PCK threshold
"""

import importlib.util
import os

import ml_collections

from mamkpd_jax.models import hrvmamba, mamkpd

COCO_NUM_KEYPOINTS = 17
COCO_INPUT_HEIGHT, COCO_INPUT_WIDTH = 256, 192
MPII_NUM_KEYPOINTS = 16
AP10K_NUM_KEYPOINTS = 17
SQUARE_INPUT = 256                # MPII and AP-10K crops are 256x256 (as mmpose's configs)
SAMPLES = "data/samples"          # the bundled sample data (data/samples/NOTICE.md)


def lists_to_tuples(value):
  """Lists (as json stores tuples) back to tuples, recursively (a config read from json)."""
  if isinstance(value, dict):
    return {k: lists_to_tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(lists_to_tuples(v) for v in value)
  return value


def load_config_file(path):
  """`get_config()` of a configs/*.py file, loaded by path (as --config does)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file not found: {path}")
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f"mamkpd_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{path} defines no get_config()")
  return module.get_config()


# config.model.name -> its `model_config(variant, num_keypoints)`.
MODEL_CONFIGS = {"mamkpd": mamkpd.model_config, "hrvmamba": hrvmamba.model_config}


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
  data.headbox_file = ""            # MPII val: mpii_gt_val.mat head boxes for PCKh; "" =
                                    # the json's "headbox" fields, else no head sizes
  data.bbox_score_threshold = 0.0   # detections below it are dropped
  data.flip_pairs = ()              # custom only: ((left, right), ...) names or indices
  data.auto_flip_pairs = True       # custom, flip_pairs empty: pair names such as
                                    # left_*/right_*, *_l/*_r (logged); False: no flips
  data.sigmas = ()                  # custom only: OKS sigma per keypoint
  data.input_height = input_height  # pixels; (height, width), e.g. (256, 192)
  data.input_width = input_width
  data.codec = "udp"                # heatmap codec: msra | udp | dark
  data.sigma = 2.0                  # heatmap Gaussian sigma (heatmap cells)
  data.on_bad = "error"             # bad annotations: "error" or "skip" (counted, logged)
  data.num_workers = 2              # Grain worker processes for training (0: in-process)
  data.flip_prob = 0.5              # augmentation, mmpose 1.x defaults (docs/conventions.md)
  data.half_body_prob = 0.3
  data.shift_prob = 0.3
  data.shift_factor = 0.16
  data.scale_factor = (0.5, 1.5)
  data.rotate_prob = 0.6
  data.rotate_factor = 80.0
  return data


TRAIN_RECIPES = ("paper", "vitpose", "hrvmamba")


def train_config(recipe="paper"):
  """`config.train`: the optimiser recipe and the loop's cadence.

  recipe "paper" (MamKPD): Adam, lr 1e-3, x0.1 at epochs 170 and 200 of 210, linear
  warm-up over 500 steps from 0.001x, no weight decay, no clipping.
  recipe "vitpose" (ViTPose's, docs/training.md): AdamW lr 5e-4, betas (0.9, 0.999), weight
  decay 0.1 on weights only (not on norms or biases), gradient clipping at global norm 1.
  recipe "hrvmamba" (the HRVMamba authors' configs): AdamW lr 5e-4, weight decay 0.01,
  no clipping; the same 500-step warm-up and x0.1 at epochs 170 and 200 of 210.
  """
  if recipe not in TRAIN_RECIPES:
    raise ValueError(f"train recipe must be one of {TRAIN_RECIPES}, got {recipe!r}")
  train = ml_collections.ConfigDict()
  train.num_epochs = 210            # one epoch = len(train instances) // global batch
  train.num_steps = 0               # > 0: train this many steps instead (quick runs)
  train.optimizer = "adam" if recipe == "paper" else "adamw"   # adam | adamw
  train.learning_rate = 1e-3 if recipe == "paper" else 5e-4    # peak, after warm-up
  train.b1 = 0.9
  train.b2 = 0.999
  train.weight_decay = {"paper": 0.0, "vitpose": 0.1, "hrvmamba": 0.01}[recipe]
  #                                                 adamw: not norms/biases/A_logs/Ds
  train.grad_clip_norm = 1.0 if recipe == "vitpose" else 0.0   # 0: no clipping
  train.lr_decay_epochs = (170, 200)  # multiply the lr by lr_decay_factor at these
  train.lr_decay_factor = 0.1
  train.warmup_steps = 500          # linear warm-up from warmup_factor x lr
  train.warmup_factor = 0.001
  train.log_every_steps = 50        # progress line and TensorBoard scalars
  train.checkpoint_every_steps = 1000   # also at every evaluation and at the end
  train.keep_checkpoints = 3        # the latest k, plus the best by eval.best_metric
  train.eval_every_epochs = 10      # 0: evaluate only at the end
  return train


def eval_config(best_metric="AP"):
  """`config.eval`: top-down evaluation (docs/conventions.md, mmpose's defaults)."""
  evaluation = ml_collections.ConfigDict()
  evaluation.batch_size = 64        # global crops per forward pass (padded, one shape)
  evaluation.flip_test = True       # average with the flipped crop's heatmaps
  evaluation.keypoint_score_threshold = 0.2   # rescoring: mean of scores above it
  evaluation.oks_nms_threshold = 0.9          # per image; <= 0 or >= 1: no NMS
  evaluation.pck_threshold = 0.1    # PCK@thr, normalised by the box's longer side
  evaluation.best_metric = best_metric        # keeps the best checkpoint (higher wins)
  return evaluation


def _experiment(variant, num_keypoints, data, best_metric, family="mamkpd"):
  """The whole config: `family`-`variant` with K heatmaps and its recipe, on `data`.

  family "mamkpd": the MamKPD paper's recipe (UDP codec). family "hrvmamba": the HRVMamba
  authors' (train recipe "hrvmamba", MSRA codec sigma 2, flip test with heatmap shift).

  Batch: the paper trains on two GPUs and does not state its batch; config.batch_size is
  global (split over JAX processes, then devices). ViTPose's and mmpose's 64 per GPU:
  `--config.per_device_batch_size=64`. ViTPose's optimiser recipe: see train_config.
  """
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 64            # global: split over JAX processes, then devices
  config.per_device_batch_size = 0  # > 0: global batch = this x device count instead
  config.init_from = ""             # a checkpoint (or workdir) to fine-tune from
  if family not in MODEL_CONFIGS:
    raise ValueError(f"unknown model family {family!r}; known: {sorted(MODEL_CONFIGS)}")
  config.model = MODEL_CONFIGS[family](variant, num_keypoints=num_keypoints)
  config.data = data
  config.train = train_config("paper" if family == "mamkpd" else "hrvmamba")
  if family == "hrvmamba":
    data.codec = "msra"             # the authors' MSRAHeatmap, sigma 2; its flip test
    data.sigma = 2.0                # shifts the flipped heatmaps one cell
  config.eval = eval_config(best_metric)
  return config


def coco(variant, family="mamkpd"):
  """MamKPD-`variant` on COCO-17 keypoints at 256x192 (paper Tables 1 and 2).

  Expects COCO 2017 where mmpose expects it: data/coco/annotations/
  person_keypoints_{train,val}2017.json, data/coco/{train,val}2017/*.jpg.
  """
  data = data_config(
      "coco", "data/coco", "annotations/person_keypoints_train2017.json",
      "annotations/person_keypoints_val2017.json", "train2017", "val2017")
  return _experiment(variant, COCO_NUM_KEYPOINTS, data, "AP", family)


def mpii(variant, family="mamkpd"):
  """MamKPD-`variant` on MPII-16 at 256x256 (paper Table 3, PCKh@0.5).

  Expects mmpose's layout: data/mpii/annotations/mpii_{train,val}.json (and
  mpii_gt_val.mat, set data.headbox_file), data/mpii/images/*.jpg. Augmentation as
  mmpose's MPII configs (td-hm_hrnet-w32_8xb64-210e_mpii-256x256.py): flip and
  scale/rotate, no half-body, no shift. The codec stays UDP (mmpose's use MSRA).
  """
  data = data_config(
      "mpii", "data/mpii", "annotations/mpii_train.json", "annotations/mpii_val.json",
      "images", "images", input_height=SQUARE_INPUT, input_width=SQUARE_INPUT)
  data.half_body_prob = 0.0
  data.shift_prob = 0.0
  return _experiment(variant, MPII_NUM_KEYPOINTS, data, "PCKh", family)


def ap10k(variant, family="mamkpd"):
  """MamKPD-`variant` on AP-10K (17 animal keypoints, 54 species) at 256x256 (Table 4).

  Expects mmpose's layout: data/ap10k/annotations/ap10k-{train,val,test}-split1.json,
  data/ap10k/data/*.jpg. Evaluates on val-split1; the paper reports test-split1
  (`--config.data.val_ann=annotations/ap10k-test-split1.json`). Augmentation as mmpose's
  AP-10K configs: its 1.x defaults, half-body included. GT boxes, COCO-style AP.
  """
  data = data_config(
      "ap10k", "data/ap10k", "annotations/ap10k-train-split1.json",
      "annotations/ap10k-val-split1.json", "data", "data",
      input_height=SQUARE_INPUT, input_width=SQUARE_INPUT)
  return _experiment(variant, AP10K_NUM_KEYPOINTS, data, "AP", family)


def custom(variant):
  """MamKPD-`variant` on any COCO-format keypoint json, at 256x256 (configs/custom_coco.py).

  data.train_ann / data.val_ann may also name DeepLabCut, SLEAP, Ultralytics, Label
  Studio or NWB labels (data_pipelines/labels.py converts them to a cached COCO json;
  an Ultralytics set's own val split evaluates when data.val_ann is empty).
  Only data.root, data.train_ann and data.val_ann need setting: the keypoint count,
  names and skeleton come from the json's category (model.num_keypoints 0: from the
  json), flip pairs from names that pair up (data.auto_flip_pairs), images from the
  json's folder unless data.train_images / data.val_images name one, and an empty
  data.val_ann (or one naming train_ann) holds out the last 20% of frames. OKS sigmas
  0.05 each unless data.sigmas; no half-body (no upper/lower-body ids). Best
  checkpoint by PCK@0.1. Defaults point at the bundled open-field json.
  """
  data = data_config("custom", f"{SAMPLES}/dlc-openfield", "openfield_coco.json", "", "",
                     "", input_height=SQUARE_INPUT, input_width=SQUARE_INPUT)
  data.half_body_prob = 0.0
  return _experiment(variant, 0, data, "PCK@0.1")


OPENFIELD_NUM_KEYPOINTS = 4


def openfield(variant, family="mamkpd"):
  """MamKPD-`variant` on the bundled open-field mouse video (a custom COCO-format set).

  One video, so data.contiguous_split holds out its last 20% of frames instead of a
  val json. Flip pairs from metadata.OPENFIELD_FLIP_PAIRS; no official OKS sigmas (0.05
  each); no half-body (no upper/lower-body ids). Best checkpoint by PCK@0.1.
  """
  from mamkpd_jax.data_pipelines import metadata   # pylint: disable=g-import-not-at-top
  data = data_config("custom", f"{SAMPLES}/dlc-openfield", "openfield_coco.json",
                     "openfield_coco.json", "", "")
  data.contiguous_split = 0.8   # one video: first 80% of frames train, the rest held out
  data.flip_pairs = metadata.OPENFIELD_FLIP_PAIRS
  data.half_body_prob = 0.0
  return _experiment(variant, OPENFIELD_NUM_KEYPOINTS, data, "PCK@0.1", family)
