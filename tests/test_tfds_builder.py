"""The tfds ArrayRecord builder on the bundled COCO sample: what it writes reads back as
exactly the instances of `sources.load_coco_instances`, with the image files' bytes;
rebuilding into the same folder reuses or refuses; bad input raises naming the file."""

import importlib
import json
import os
import pathlib
import pickle
import re
import shutil
import sys

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
grain = pytest.importorskip("grain")

from mamkpd_jax.data_pipelines import sources  # noqa: E402
from mamkpd_jax.data_pipelines import tfds_builder  # noqa: E402

COCO = pathlib.Path(__file__).resolve().parents[1] / "data" / "samples" / "coco"
COCO_JSON = COCO / "test_coco.json"
NUM_INSTANCES = 12          # data/samples/NOTICE.md: 14 person annotations, 12 with keypoints
ARRAY_FIELDS = ("bbox", "bbox_score", "keypoints", "keypoints_visible", "area")
INT_FIELDS = ("image_id", "instance_id", "category_id")


def _build(output_dir, ann_file=COCO_JSON, image_root=COCO, name="sample", **kwargs):
  return tfds_builder.build_coco_keypoints(str(ann_file), str(image_root), str(output_dir),
                                           name=name, **kwargs)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """(builder, the instances sources.py loads from the same file), built once."""
  builder = _build(tmp_path_factory.mktemp("tfds"))
  return builder, sources.load_coco_instances(str(COCO_JSON), str(COCO))


def _assert_same_instance(got, want):
  assert set(got) == set(want) | {"image_bytes"}
  assert got["image_path"] == want["image_path"]
  for field in INT_FIELDS:
    assert type(got[field]) is int and got[field] == want[field], field
  for field in ARRAY_FIELDS:
    assert got[field].dtype == np.float32, field
    np.testing.assert_array_equal(got[field], want[field], err_msg=field, strict=True)
  assert got["image_bytes"] == pathlib.Path(want["image_path"]).read_bytes()


def test_round_trip_equals_sources(built):
  builder, instances = built
  data = tfds_builder.ArrayRecordInstances(builder)
  assert len(instances) == NUM_INSTANCES
  assert len(data) == len(instances)
  for i, want in enumerate(instances):          # record i is instance i
    _assert_same_instance(data[i], want)
  assert builder.info.metadata["num_keypoints"] == 17


def test_reads_from_the_folder_too(built):
  builder, instances = built
  data = tfds_builder.ArrayRecordInstances(str(builder.data_dir))
  assert len(data) == len(instances)
  _assert_same_instance(data[5], instances[5])


@pytest.mark.parametrize("order", [
    "reversed",          # last to first
    "permuted",          # a random permutation
    "repeated",          # the same few indices again and again
])
def test_random_access_in_any_order(built, order):
  builder, instances = built
  data = tfds_builder.ArrayRecordInstances(builder)
  n = len(instances)
  indices = {"reversed": list(range(n))[::-1],
             "permuted": np.random.default_rng(0).permutation(n).tolist(),
             "repeated": [3, 0, 3, 11, 0, 3]}[order]
  for i in indices:
    _assert_same_instance(data[i], instances[i])
  _assert_same_instance(data[np.int64(-1)], instances[-1])   # numpy and negative indices
  with pytest.raises(IndexError, match="out of range"):
    data[n]


def test_grain_map_dataset(built):
  builder, instances = built
  dataset = grain.MapDataset.source(tfds_builder.ArrayRecordInstances(builder))
  assert len(dataset) == len(instances)
  _assert_same_instance(dataset[7], instances[7])
  shuffled = [x["instance_id"] for x in dataset.shuffle(seed=0)]
  assert sorted(shuffled) == sorted(x["instance_id"] for x in instances)
  batch = dataset.batch(4)[1]                       # instances 4..7, stacked by Grain
  np.testing.assert_array_equal(batch["keypoints"],
                                np.stack([x["keypoints"] for x in instances[4:8]]))


def test_batched_reads_and_pickle(built):
  builder, instances = built
  data = pickle.loads(pickle.dumps(tfds_builder.ArrayRecordInstances(builder)))
  for got, i in zip(data._getitems([9, 2, 9]), [9, 2, 9]):
    _assert_same_instance(got, instances[i])


def test_rebuilding_identical_input_reuses_the_dataset(tmp_path):
  first = _build(tmp_path)
  records = list(pathlib.Path(first.data_dir).glob("*.array_record*"))
  stamps = [os.stat(p).st_mtime_ns for p in records]
  second = _build(tmp_path)
  assert second.data_dir == first.data_dir
  assert [os.stat(p).st_mtime_ns for p in records] == stamps     # not rewritten
  assert len(tfds_builder.ArrayRecordInstances(second)) == NUM_INSTANCES


def _write_json(path, data):
  path.write_text(json.dumps(data))
  return path


def test_rebuilding_different_input_raises_naming_the_folder(tmp_path):
  first = _build(tmp_path / "out")
  data = json.loads(COCO_JSON.read_text())
  data["annotations"] = data["annotations"][1:]                 # one annotation fewer
  other = _write_json(tmp_path / "other.json", data)
  with pytest.raises(FileExistsError, match=re.escape(str(first.data_dir))):
    _build(tmp_path / "out", ann_file=other)
  with pytest.raises(FileExistsError, match="split 'val'"):
    _build(tmp_path / "out", split="val")                       # same input, new split
  assert len(tfds_builder.ArrayRecordInstances(first)) == NUM_INSTANCES    # untouched
  renamed = _build(tmp_path / "out", ann_file=other, name="other", split="val")
  assert len(tfds_builder.ArrayRecordInstances(renamed, split="val")) == \
      len(sources.load_coco_instances(str(other), str(COCO)))


def test_missing_annotation_file(tmp_path):
  missing = tmp_path / "nope.json"
  with pytest.raises(FileNotFoundError,
                     match=re.escape(f"annotation file not found: {missing}")):
    _build(tmp_path / "out", ann_file=missing)
  assert not (tmp_path / "out").exists()


def test_missing_image_raises_or_is_skipped(tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  for jpg in sorted(COCO.glob("*.jpg"))[1:]:                  # the first image is missing
    shutil.copy(jpg, images)
  with pytest.raises(sources.AnnotationError, match="image file not found"):
    _build(tmp_path / "out", image_root=images)
  builder = _build(tmp_path / "out", image_root=images, on_bad="skip")
  want = sources.load_coco_instances(str(COCO_JSON), str(images), on_bad="skip")
  data = tfds_builder.ArrayRecordInstances(builder)
  assert want.skipped and len(data) == len(want) < NUM_INSTANCES
  for i, instance in enumerate(want):
    _assert_same_instance(data[i], instance)


def test_no_instances_left(tmp_path):
  data = json.loads(COCO_JSON.read_text())
  for ann in data["annotations"]:
    ann["iscrowd"] = 1                                        # mmpose filters them all
  empty = _write_json(tmp_path / "crowd.json", data)
  with pytest.raises(sources.AnnotationError, match="no instances to pack"):
    _build(tmp_path / "out", ann_file=empty)


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden"])
def test_bad_name(tmp_path, name):
  with pytest.raises(ValueError, match="name must be"):
    _build(tmp_path, name=name)


def test_reading_what_is_not_a_dataset(tmp_path, built):
  with pytest.raises(FileNotFoundError,
                     match=re.escape(f"no prepared tfds dataset in {tmp_path}")):
    tfds_builder.ArrayRecordInstances(tmp_path)
  with pytest.raises(KeyError, match="no split 'val'"):
    tfds_builder.ArrayRecordInstances(built[0], split="val")


def test_import_without_tfds_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)   # import fails
  monkeypatch.delitem(sys.modules, tfds_builder.__name__)
  with pytest.raises(ImportError, match=r'pip install -e "\.\[tfds\]"'):
    importlib.import_module(tfds_builder.__name__)
