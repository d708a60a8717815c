"""COCO-format keypoint datasets packed into ArrayRecord with tensorflow-datasets.

One record per top-down instance of `sources.load_coco_instances` (ground truth, with
mmpose's filtering), holding the image file's original encoded bytes (JPEG/PNG, never
decoded, so no TensorFlow is needed) and the instance's annotation:

    image_bytes        object ()   the encoded file, byte for byte
    file_name          object ()   utf-8 path relative to the image folder
    image_id           int64 ()
    instance_id        int64 ()
    bbox               float32 (4,) x, y, w, h in image pixels
    bbox_score         float32 ()
    keypoints          float32 (K, 2) x, y in image pixels
    keypoints_visible  float32 (K,)
    category_id        int64 ()
    area               float32 ()

Records keep the order of `load_coco_instances` (images in file order, annotations in
file order within an image), so record i is instance i. The dataset lies in
`<output_dir>/coco_keypoints/<name>/<version>/`; `ArrayRecordInstances` reads it back
with random access as instance dicts (`sources.py`'s format plus "image_bytes"), and
`grain.MapDataset.source(...)` can index it.

The folder's `metadata.json` records a fingerprint of what was packed (the annotation
file's sha256, K, on_bad, and each image's name and size): building the same input into
the same folder again reuses the dataset; building different input there raises
`FileExistsError` naming the folder.

Needs the optional extra, no TensorFlow: pip install -e ".[tfds]" (tensorflow-datasets,
array-record, importlib_resources).
"""

import dataclasses
import hashlib
import json
import os
from typing import Iterator, Optional, Union

from absl import logging
import numpy as np

try:
  import array_record  # noqa: F401  (tfds' ArrayRecord writer and reader)
  # tfds 4.9.10 uses it on every Python but declares it only below 3.9
  # (tensorflow/datasets#11212).
  import importlib_resources  # noqa: F401
  import tensorflow_datasets as tfds
except ImportError as _error:
  raise ImportError(
      "mamkpd_jax.data_pipelines.tfds_builder needs tensorflow-datasets, array-record and "
      f'importlib_resources ({_error}): pip install -e ".[tfds]"') from _error

from mamkpd_jax.data_pipelines import sources

BUILDER_NAME = "coco_keypoints"
DATASET_VERSION = "1.0.0"
# Bump when the fingerprint's definition or the record layout changes.
FINGERPRINT_FORMAT = 1
_READ_CHUNK = 1 << 20


@dataclasses.dataclass
class CocoKeypointsConfig(tfds.core.BuilderConfig):
  """One packed annotation file: its name, K and where it came from."""
  num_keypoints: int = 0
  split: str = "train"
  ann_file: str = ""
  image_root: str = ""
  fingerprint: str = ""


class CocoKeypoints(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes given instance dicts (from `sources.load_coco_instances`) as records."""

  name = BUILDER_NAME
  VERSION = tfds.core.Version(DATASET_VERSION)
  RELEASE_NOTES = {DATASET_VERSION: "Encoded image bytes and the top-down instance fields."}

  def __init__(self, *, instances: Optional[list] = None, **kwargs):
    self._instances = instances
    super().__init__(file_format="array_record", **kwargs)

  def _info(self) -> "tfds.core.DatasetInfo":
    config = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self, description=config.description,
        features=_features(config.num_keypoints),
        metadata=tfds.core.MetadataDict(
            fingerprint=config.fingerprint, ann_file=config.ann_file,
            image_root=config.image_root, num_keypoints=config.num_keypoints),
        disable_shuffling=True)            # record i stays instance i

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download: the files are local
    if self._instances is None:
      raise ValueError("CocoKeypoints writes the instances it is given; build it with "
                       "build_coco_keypoints(...)")
    return {self.builder_config.split: self._generate_examples(self._instances)}

  def _generate_examples(self, instances) -> Iterator[tuple[int, dict]]:
    image_root = self.builder_config.image_root
    path, data = None, None
    for index, instance in enumerate(instances):
      if instance["image_path"] != path:   # an image's instances are consecutive
        path, data = instance["image_path"], _read_bytes(instance["image_path"])
      yield index, _record(instance, data, image_root)


def _features(num_keypoints: int) -> "tfds.features.FeaturesDict":
  k = num_keypoints
  tensor = tfds.features.Tensor
  return tfds.features.FeaturesDict({
      "image_bytes": tensor(shape=(), dtype=np.object_),
      "file_name": tensor(shape=(), dtype=np.object_),
      "image_id": tensor(shape=(), dtype=np.int64),
      "instance_id": tensor(shape=(), dtype=np.int64),
      "bbox": tensor(shape=(4,), dtype=np.float32),
      "bbox_score": tensor(shape=(), dtype=np.float32),
      "keypoints": tensor(shape=(k, 2), dtype=np.float32),
      "keypoints_visible": tensor(shape=(k,), dtype=np.float32),
      "category_id": tensor(shape=(), dtype=np.int64),
      "area": tensor(shape=(), dtype=np.float32),
  })


def _read_bytes(path: str) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as error:
    raise FileNotFoundError(f"cannot read image file {path}: {error}") from error


def _record(instance: dict, image_bytes: bytes, image_root: str) -> dict:
  """The record of one instance dict (`sources.py` format)."""
  return {
      "image_bytes": image_bytes,
      "file_name": os.path.relpath(instance["image_path"], image_root).encode("utf-8"),
      "image_id": instance["image_id"],
      "instance_id": instance["instance_id"],
      "bbox": instance["bbox"],
      "bbox_score": instance["bbox_score"],
      "keypoints": instance["keypoints"],
      "keypoints_visible": instance["keypoints_visible"],
      "category_id": instance["category_id"],
      "area": instance["area"],
  }


# ---------------------------------------------------------------------------------------
# Building.


def _file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_READ_CHUNK), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _fingerprint(ann_file, image_root, instances, num_keypoints, on_bad) -> str:
  """sha256 of what is packed: annotation file content, K, on_bad, image names and sizes."""
  images = sorted({os.path.relpath(inst["image_path"], image_root): inst["image_path"]
                   for inst in instances}.items())
  content = {
      "format": FINGERPRINT_FORMAT, "version": DATASET_VERSION, "ann_file_sha256":
      _file_sha256(ann_file), "num_keypoints": num_keypoints, "on_bad": on_bad,
      "images": [(name, os.path.getsize(path)) for name, path in images],
  }
  return hashlib.sha256(json.dumps(content).encode("utf-8")).hexdigest()


def _num_keypoints(ann_file: str, instances: list) -> int:
  if not instances:
    raise sources.AnnotationError(f"{ann_file}: no instances to pack (all filtered or "
                                  f"skipped: {dict(getattr(instances, 'filtered', {}))})")
  counts = {len(inst["keypoints"]) for inst in instances}
  if len(counts) != 1:
    raise sources.AnnotationError(f"{ann_file}: instances with {sorted(counts)} keypoints; "
                                  "one dataset needs exactly one K (pass num_keypoints)")
  return counts.pop()


def _stored_fingerprint(data_dir: str) -> Optional[str]:
  """The fingerprint in a prepared dataset folder's metadata.json, or None."""
  path = os.path.join(data_dir, "metadata.json")
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f).get("fingerprint")


def _check_name(name: str):
  if not name or not all(c.isalnum() or c in "_-." for c in name) or name.startswith("."):
    raise ValueError(f"name must be a non-empty folder name of letters, digits, '_', '-' "
                     f"or '.', got {name!r}")


def build_coco_keypoints(ann_file: str, image_root: str, output_dir: str, *, name: str,
                         num_keypoints: Optional[int] = None, on_bad: str = "error",
                         split: str = "train") -> CocoKeypoints:
  """Packs a COCO-format keypoint file's GT instances into ArrayRecord; the prepared builder.

  Args:
    ann_file: COCO-format keypoints json.
    image_root: folder that each image's `file_name` is relative to.
    output_dir: tfds data folder; the dataset goes to
      `<output_dir>/coco_keypoints/<name>/1.0.0/` (`builder.data_dir`).
    name: the dataset's name (a folder name), e.g. "coco_train2017".
    num_keypoints, on_bad: as in `sources.load_coco_instances`.
    split: the split the instances are written to.

  Raises:
    FileNotFoundError / sources.AnnotationError: bad input, naming the file.
    FileExistsError: that folder holds a dataset built from different input.
  """
  _check_name(name)
  instances = sources.load_coco_instances(ann_file, image_root, num_keypoints=num_keypoints,
                                          on_bad=on_bad)
  image_root = os.path.abspath(image_root)
  k = _num_keypoints(ann_file, instances)
  config = CocoKeypointsConfig(
      name=name, description=f"{ann_file}: {len(instances)} instances, K={k}",
      num_keypoints=k, split=split, ann_file=os.path.abspath(ann_file),
      image_root=image_root,
      fingerprint=_fingerprint(ann_file, image_root, instances, k, on_bad))
  builder = CocoKeypoints(data_dir=output_dir, config=config, instances=instances)
  if os.path.isdir(builder.data_dir):
    return _reuse(builder, config)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      compute_stats=tfds.download.ComputeStatsMode.SKIP))
  logging.info("Wrote %d instances of %s to %s", len(instances), ann_file, builder.data_dir)
  return builder


def _reuse(builder: CocoKeypoints, config: CocoKeypointsConfig) -> CocoKeypoints:
  """The already prepared `builder` if it holds the same input, else FileExistsError."""
  stored = _stored_fingerprint(builder.data_dir)
  if stored != config.fingerprint or config.split not in builder.info.splits:
    raise FileExistsError(
        f"{builder.data_dir} already holds a dataset built from different input "
        f"(stored fingerprint {stored}, now {config.fingerprint}; split "
        f"{config.split!r} in {list(builder.info.splits)}); delete the folder or choose "
        "another name or output_dir")
  logging.info("Reusing the identical dataset in %s", builder.data_dir)
  return builder


# ---------------------------------------------------------------------------------------
# Reading.


def _dataset_dir(builder_or_dir) -> str:
  """The prepared dataset folder (the one holding dataset_info.json)."""
  if isinstance(builder_or_dir, tfds.core.DatasetBuilder):
    return os.fspath(builder_or_dir.data_dir)
  path = os.fspath(builder_or_dir)
  if not os.path.isfile(os.path.join(path, "dataset_info.json")):
    raise FileNotFoundError(f"no prepared tfds dataset in {path} (no dataset_info.json); "
                            "pass the builder or its builder.data_dir, "
                            f"<output_dir>/{BUILDER_NAME}/<name>/{DATASET_VERSION}")
  return path


class ArrayRecordInstances:
  """Random access to a packed split as instance dicts (`sources.py`'s format).

  Each dict also carries "image_bytes" (the encoded file); "image_path" is
  image_root/file_name as it was when the dataset was built, for messages only (the
  images need not exist here). Picklable (Grain workers reopen the files).
  """

  def __init__(self, builder_or_dir: Union["tfds.core.DatasetBuilder", str, os.PathLike],
               split: str = "train"):
    self.data_dir = _dataset_dir(builder_or_dir)
    self.split = split
    self._open()

  def _open(self):
    builder = tfds.builder_from_directory(self.data_dir)
    if self.split not in builder.info.splits:
      raise KeyError(f"{self.data_dir} has no split {self.split!r}; it has "
                     f"{list(builder.info.splits)}")
    with open(os.path.join(self.data_dir, "metadata.json"), encoding="utf-8") as f:
      self.image_root = json.load(f)["image_root"]
    self._source = builder.as_data_source(split=self.split)

  def __getstate__(self):
    return {"data_dir": self.data_dir, "split": self.split}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._open()

  def __len__(self) -> int:
    return len(self._source)

  def _checked(self, index) -> int:
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} instances of "
                       f"{self.data_dir} [{self.split}]")
    return index % len(self)

  def __getitem__(self, index: int) -> dict:
    return self._instance(self._source[self._checked(index)])

  def _getitems(self, indices) -> list[dict]:
    """Batched reads (Grain's protocol): ArrayRecord reads the records in parallel."""
    records = self._source.__getitems__([self._checked(i) for i in indices])
    return [self._instance(record) for record in records]

  def _instance(self, record: dict) -> dict:
    file_name = bytes(record["file_name"]).decode("utf-8")
    return {
        "image_path": os.path.normpath(os.path.join(self.image_root, file_name)),
        "image_bytes": bytes(record["image_bytes"]),
        "image_id": int(record["image_id"]),
        "instance_id": int(record["instance_id"]),
        "bbox": np.asarray(record["bbox"], dtype=np.float32),
        "bbox_score": np.asarray(record["bbox_score"], dtype=np.float32),
        "keypoints": np.asarray(record["keypoints"], dtype=np.float32),
        "keypoints_visible": np.asarray(record["keypoints_visible"], dtype=np.float32),
        "category_id": int(record["category_id"]),
        "area": np.asarray(record["area"], dtype=np.float32),
    }

  def __repr__(self) -> str:
    return f"ArrayRecordInstances({self.data_dir!r}, split={self.split!r}, n={len(self)})"
