"""`create_datasets(config)`: the top-down training iterator and evaluation dataset.

    annotations --sources--> instances (one per person/animal box)
      train: DecodeImage -> BoxToCenterScale -> RandomFlip -> RandomHalfBody
             -> RandomBBoxTransform -> TopdownAffine -> GenerateTarget
             -> {"image" (H, W, 3) uint8, "heatmaps" (h, w, K) f32, "keypoint_weights" (K,)}
             batched by a grain.DataLoader: worker processes, sharded per JAX process,
             deterministic for config.seed and data.num_workers (each worker batches
             its own share of records), iterator state checkpointable.
      eval:  DecodeImage -> BoxToCenterScale -> TopdownAffine
             -> {"image", "center", "scale", "bbox_score", "image_id", "instance_id",
                 "category_id"}: what maps predictions back to the image
             (geometry.crop_to_image), as an unbatched grain.MapDataset.

Images stay uint8 RGB: the model normalises its own input on the device (as mmpose's
data_preprocessor), so batches move 4x fewer bytes between processes; heatmaps are
(input / 4).
"""

import dataclasses
import hashlib
import os

import grain
import numpy as np
from absl import logging

from mamkpd_jax.data_pipelines import codecs, labels, metadata, sources, transforms
from mamkpd_jax.data_pipelines.geometry import HEATMAP_STRIDE

TRAIN_KEYS = ("image", "heatmaps", "keypoint_weights")
EVAL_KEYS = ("image", "center", "scale", "bbox_score", "image_id", "instance_id",
             "category_id")


@dataclasses.dataclass
class Datasets:
  """What `create_datasets` returns."""

  train: grain.DataLoader             # iterate: batches of TRAIN_KEYS
  eval: grain.MapDataset              # eval[i]: one instance with EVAL_KEYS
  eval_instances: list                # the source instances behind `eval`, same order
  info: metadata.DatasetInfo          # keypoint names, flip indices, sigmas, ...
  codec: object                       # encodes targets, decodes predictions
  num_train: int = 0                  # training instances (all processes together)
  train_instances: list = dataclasses.field(default_factory=list)   # their dicts


class InstanceSource(grain.sources.RandomAccessDataSource):
  """Random access over a list of instance dicts (copies, so transforms cannot alter it)."""

  def __init__(self, instances):
    self._instances = list(instances)
    ids = "\n".join(f"{i['image_path']}:{i['instance_id']}" for i in self._instances)
    self._digest = hashlib.sha1(ids.encode()).hexdigest()[:12]

  def __repr__(self):
    """Stable across runs: Grain compares it when restoring an iterator's position."""
    return f"InstanceSource({len(self._instances)} instances, sha1 {self._digest})"

  def __len__(self):
    return len(self._instances)

  def __getitem__(self, index):
    return {key: np.copy(value) if isinstance(value, np.ndarray) else value
            for key, value in self._instances[index].items()}


class SelectKeys(grain.transforms.Map):
  """Keeps only `keys` (all must be present): batches hold arrays, not paths."""

  def __init__(self, keys):
    self.keys = tuple(keys)

  def map(self, element):
    missing = [k for k in self.keys if k not in element]
    if missing:
      raise ValueError(f"pipeline element lacks {missing}; has {sorted(element)}")
    return {k: np.asarray(element[k]) for k in self.keys}


def resolve_path(data, relative):
  """A config path: absolute as given, else relative to data.root; a relative path that
  is not under data.root but exists from the working directory is taken from there (a
  label file or folder named on the command line without --config.data.root)."""
  if os.path.isabs(relative):
    return relative
  under_root = os.path.join(data.root, relative)
  if relative and not os.path.exists(under_root) and os.path.exists(relative):
    _info_once(f"{relative}: not under config.data.root={data.root!r}; using "
               f"{os.path.abspath(relative)} (relative to the working directory)")
    return os.path.abspath(relative)
  return under_root


def input_size(config):
  return config.data.input_height, config.data.input_width


def make_codec(config):
  height, width = input_size(config)
  return codecs.make_codec(config.data.codec, (height, width),
                           (height // HEATMAP_STRIDE, width // HEATMAP_STRIDE),
                           config.data.sigma)


# When data.val_ann is empty or names train_ann: the first 80% of its frames train.
DEFAULT_TRAIN_FRACTION = 0.8


def _no_val_file(data):
  """data.val_ann is empty or names train_ann."""
  return not data.val_ann or os.path.realpath(resolve_path(data, data.val_ann)) == \
      os.path.realpath(resolve_path(data, data.train_ann))


def own_val_split(data):
  """A custom train_ann whose file has its own validation split (an Ultralytics
  data.yaml's val:) evaluates on it when data.val_ann is empty or names train_ann."""
  return data.dataset == "custom" and data.contiguous_split <= 0 and _no_val_file(data) \
      and "val" in labels.file_splits(resolve_path(data, data.train_ann))


def train_fraction(data):
  """The fraction of train_ann's frames that trains when train_ann is split, else 0.

  data.contiguous_split > 0 states it; otherwise a COCO-format set whose val_ann is
  empty or names the training json holds out its last frames (DEFAULT_TRAIN_FRACTION),
  unless its label file has its own validation split (own_val_split).
  """
  if data.contiguous_split > 0:
    return float(data.contiguous_split)
  if data.dataset == "mpii":
    return 0.0
  if _no_val_file(data) and not own_val_split(data):
    return DEFAULT_TRAIN_FRACTION
  return 0.0


def split_fields(data, split):
  """The config.data fields (annotation file, image folder) that `split` reads: the
  train ones for "train", for a held-out split of train_ann (train_fraction > 0) and for
  train_ann's own validation split (own_val_split)."""
  if split == "train" or train_fraction(data) or own_val_split(data):
    return "train_ann", "train_images"
  return "val_ann", "val_images"


def _file_split(data, split):
  """The split of a label file with splits (Ultralytics) that `split` reads."""
  return "train" if split == "train" or train_fraction(data) else "val"


def annotation_source(data, split):
  """(COCO json path, image root or None) that `split` reads.

  A COCO-format json as configured; for a custom set, any other label file
  (labels.coco_json_path: DeepLabCut, SLEAP, Ultralytics, Label Studio, NWB) converted
  once to a cached COCO json, with the folder its image names are relative to.
  """
  path = resolve_path(data, data[split_fields(data, split)[0]])
  if data.dataset != "custom":
    return path, None
  return labels.coco_json_path(path, _file_split(data, split))


def ann_file(data, split):
  """The COCO json that `split` reads (annotation_source)."""
  return annotation_source(data, split)[0]


def image_folder(data, split):
  """The image folder of `split`: data.<split>_images, else the converted labels' image
  root, else the folder of its json."""
  images_field = split_fields(data, split)[1]
  if data[images_field]:
    return resolve_path(data, data[images_field])
  path, root = annotation_source(data, split)
  return root or os.path.dirname(path)


def resolve_custom_config(config):
  """`config`, with what a custom json states filled in (a copy; others unchanged).

  model.num_keypoints 0 becomes the json's K (another non-zero K is an error naming
  both numbers, in dataset_info); with data.flip_pairs empty and data.auto_flip_pairs,
  the names that pair up (metadata.find_flip_pairs) become data.flip_pairs. Both said
  in the log.
  """
  data = config.data
  if data.dataset != "custom":
    return config
  check_data_paths(data, "train")
  named = _named(data, "train")
  category, num_keypoints = sources.keypoint_category(annotation_source(data, "train")[0])
  config = config.copy_and_resolve_references()
  if config.model.num_keypoints == 0:
    config.model.num_keypoints = num_keypoints
    _info_once(f"{named}: {num_keypoints} keypoints (model.num_keypoints from the json)")
  if not data.flip_pairs and data.auto_flip_pairs:
    names = metadata.category_keypoint_names(category, num_keypoints)
    config.data.flip_pairs = metadata.find_flip_pairs(names)
    _info_once(f"{named}: flip pairs from the keypoint names: " + (
        f"{list(config.data.flip_pairs)}; turn off with --config.data.auto_flip_pairs=False"
        if config.data.flip_pairs else "none pair up (no flip augmentation, no flip test)"))
  return config


_LOGGED = set()       # messages already logged by _info_once


def _info_once(message):
  """Logged once per process: the config is resolved by several steps of a run."""
  if message not in _LOGGED:
    _LOGGED.add(message)
    logging.info("%s", message)


def dataset_info(config):
  """Keypoint metadata: a built-in table, or the custom json's category."""
  config = resolve_custom_config(config)
  data = config.data
  if data.dataset == "custom":
    category, num_keypoints = sources.keypoint_category(ann_file(data, "train"))
    info = metadata.from_coco_category(category, flip_pairs=tuple(data.flip_pairs) or None,
                                       sigmas=tuple(data.sigmas) or None,
                                       num_keypoints=num_keypoints)
  else:
    info = metadata.get(data.dataset)
  if config.model.num_keypoints != info.num_keypoints:
    raise ValueError(f"config.model.num_keypoints={config.model.num_keypoints} but the "
                     f"{info.name} keypoints number {info.num_keypoints}"
                     + (" in " + resolve_path(data, data.train_ann)
                        if data.dataset == "custom" else ""))
  return info


def _named(data, split):
  """How logs and errors name `split`'s annotations: the file, and a label file's
  converted json."""
  path = resolve_path(data, data[split_fields(data, split)[0]])
  json_path = ann_file(data, split)
  return path if json_path == path else f"{path} (as {json_path})"


def _data_fields(data, split):
  """[(config.data field, its value, its resolved path)] that `split` reads."""
  ann_field, images_field = split_fields(data, split)
  rows = [(ann_field, data[ann_field], resolve_path(data, data[ann_field]))]
  if data[images_field]:
    rows.append((images_field, data[images_field], image_folder(data, split)))
  return rows


def check_data_paths(data, split):
  """FileNotFoundError naming the missing file or folder, the config fields that lead
  to it, the flags that set them and the layout expected under data.root."""
  missing = [(field, path) for field, _, path in _data_fields(data, split)
             if not os.path.exists(path)]
  if not missing:
    return
  field, path = missing[0]
  what = "image folder" if field.endswith("_images") else "annotation file"
  rows = dict.fromkeys(row for split_ in ("train", "val") for row in _data_fields(data, split_)
                       if row[1])
  layout = "\n".join(f"    {path_}{'/' if f.endswith('_images') else ''}    "
                      f"(config.data.{f})" for f, _, path_ in rows)
  raise FileNotFoundError(
      f"{what} not found: {path}\n"
      f"  expected under config.data.root={data.root!r}:\n{layout}\n"
      f"  point the config at your copy with --config.data.root=/path/to/{data.dataset} "
      f"(or set --config.data.{field}=...; an absolute path is used as given)")


def load_instances(config, info, split):
  """Instances of `split` ('train' | 'val'); val uses det_file boxes when one is set.

  When train_fraction(data) > 0, train_ann alone is read and split by frame order. A
  missing annotation file or image folder is a FileNotFoundError naming the flags that
  set them (check_data_paths).
  """
  data = config.data
  check_data_paths(data, split)
  kwargs = dict(num_keypoints=info.num_keypoints, on_bad=data.on_bad)
  fraction = train_fraction(data)
  if fraction > 0:
    ann = ann_file(data, "train")
    with labels.naming_source(ann):
      instances = sources.load_coco_instances(ann, image_folder(data, "train"), **kwargs)
    train, held_out = sources.split_contiguous_frames(instances, fraction)
    return train if split == "train" else held_out
  ann = ann_file(data, split)
  images = image_folder(data, split)
  if data.dataset == "mpii":        # head boxes (mpii_gt_val.mat) match the val json only
    headboxes = resolve_path(data, data.headbox_file) if data.headbox_file else ""
    return sources.load_mpii_instances(
        ann, images, headbox_file=headboxes if split == "val" else "", **kwargs)
  with labels.naming_source(ann):
    if split == "val" and data.det_file:
      return sources.load_coco_detections(ann, resolve_path(data, data.det_file), images,
                                          score_threshold=data.bbox_score_threshold,
                                          **kwargs)
    return sources.load_coco_instances(ann, images, **kwargs)


def with_gt_boxes(config):
  """A copy of `config` whose evaluation instances use GT boxes (det_file cleared)."""
  config = config.copy_and_resolve_references()
  if config.data.det_file:
    logging.info("using GT boxes: ignoring config.data.det_file=%s", config.data.det_file)
    config.data.det_file = ""
  return config


def train_transforms(config, info, codec):
  data = config.data
  height, width = input_size(config)
  aspect = width / height
  steps = [transforms.DecodeImage(data.on_bad), transforms.DropUndecoded(),
           transforms.BoxToCenterScale(aspect)]
  if data.flip_prob > 0 and list(info.flip_indices) != list(range(info.num_keypoints)):
    steps.append(transforms.RandomFlip(info.flip_indices, prob=data.flip_prob))
  if data.half_body_prob > 0:
    if not (info.upper_body_ids and info.lower_body_ids):
      raise ValueError(f"config.data.half_body_prob={data.half_body_prob}: the {info.name} "
                       "keypoints have no upper/lower-body ids; set it to 0")
    steps.append(transforms.RandomHalfBody(info.upper_body_ids, info.lower_body_ids,
                                           aspect_ratio=aspect, prob=data.half_body_prob))
  steps += [
      transforms.RandomBBoxTransform(
          shift_factor=data.shift_factor, shift_prob=data.shift_prob,
          scale_factor=tuple(data.scale_factor), rotate_factor=data.rotate_factor,
          rotate_prob=data.rotate_prob),
      transforms.TopdownAffine((height, width), use_udp=data.codec == "udp"),
      transforms.GenerateTarget(codec),
      SelectKeys(TRAIN_KEYS),
  ]
  return steps


def eval_transforms(config):
  data = config.data
  height, width = input_size(config)
  # Evaluation must account for every instance: an unreadable image is an error.
  return [
      transforms.DecodeImage(),
      # mmpose clips GT boxes to the image but not detector boxes.
      transforms.BoxToCenterScale(width / height, clip_to_image=not data.det_file),
      transforms.TopdownAffine((height, width), use_udp=data.codec == "udp"),
      SelectKeys(EVAL_KEYS),
  ]


def per_process_batch_size(config):
  processes = grain.sharding.ShardByJaxProcess().shard_count
  if config.batch_size % processes:
    raise ValueError(f"config.batch_size={config.batch_size} is not divisible by the "
                     f"{processes} JAX processes")
  return config.batch_size // processes


def train_loader(config, source, operations):
  """An endless, shuffled, per-process-sharded DataLoader over `source`."""
  sampler = grain.samplers.IndexSampler(
      num_records=len(source),
      shard_options=grain.sharding.ShardByJaxProcess(drop_remainder=True),
      shuffle=True, num_epochs=None, seed=config.seed)
  batch = grain.transforms.Batch(per_process_batch_size(config), drop_remainder=True)
  return grain.DataLoader(data_source=source, sampler=sampler,
                          operations=[*operations, batch],
                          worker_count=config.data.num_workers)


def create_datasets(config):
  """The training DataLoader and the evaluation dataset of `config` (module docstring)."""
  config = resolve_custom_config(config)
  info = dataset_info(config)
  codec = make_codec(config)
  train_instances = load_instances(config, info, "train")
  eval_instances = load_instances(config, info, "val")
  if not train_instances:
    raise ValueError(f"no training instances in {_named(config.data, 'train')}")
  logging.info("%s: %d training, %d evaluation instances; codec %s, input %dx%d",
               info.name, len(train_instances), len(eval_instances), config.data.codec,
               *input_size(config))
  fraction = train_fraction(config.data)
  if fraction > 0:
    logging.info("evaluating on the last %.0f%% of the frames of %s (held out from "
                 "training: data.val_ann %s)", 100 * (1 - fraction),
                 _named(config.data, "train"),
                 "names it" if config.data.val_ann else "is empty")
  elif own_val_split(config.data):
    logging.info("evaluating on the 'val' split of %s (data.val_ann %s)",
                 _named(config.data, "val"), "names it" if config.data.val_ann else "is empty")
  train = train_loader(config, InstanceSource(train_instances),
                       train_transforms(config, info, codec))
  evaluation = grain.MapDataset.source(InstanceSource(eval_instances))
  for step in eval_transforms(config):
    evaluation = evaluation.map(step)
  return Datasets(train, evaluation, list(eval_instances), info, codec,
                  num_train=len(train_instances), train_instances=list(train_instances))
