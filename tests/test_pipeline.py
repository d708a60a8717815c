"""create_datasets: batches, determinism, resume, evaluation mapping, configs, bad input."""

import pathlib

import numpy as np
import pytest
from absl import flags

from mamkpd_jax import config_lib
from mamkpd_jax.data_pipelines import geometry, pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def parsed_flags():
  """Grain reads absl flags; outside app.run they must be marked parsed."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def load_config(name, **data_overrides):
  config = config_lib.load_config_file(str(REPO / "configs" / f"{name}.py"))
  config.data.root = str(REPO / config.data.root)
  config.data.num_workers = 0
  config.batch_size = 4
  for key, value in data_overrides.items():
    config.data[key] = value
  return config


def first_batches(loader, count=2):
  iterator = iter(loader)
  return [next(iterator) for _ in range(count)]


def test_training_batches_have_model_shapes():
  datasets = pipeline.create_datasets(load_config("sample_coco"))
  batch = first_batches(datasets.train, 1)[0]
  assert batch["image"].shape == (4, 256, 192, 3) and batch["image"].dtype == np.uint8
  assert batch["heatmaps"].shape == (4, 64, 48, 17) and batch["heatmaps"].dtype == np.float32
  assert batch["keypoint_weights"].shape == (4, 17)
  assert 0 < batch["heatmaps"].max() <= 1.0
  assert batch["image"].max() > 100          # RGB 0-255 crops; the model normalises them


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_same_batches(workers):
  """Deterministic for a seed and worker count (Grain batches within each worker)."""
  batches = [first_batches(pipeline.create_datasets(
      load_config("sample_coco", num_workers=workers)).train) for _ in range(2)]
  for got, want in zip(*batches):
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  other_seed = load_config("sample_coco", num_workers=workers)
  other_seed.seed = 1
  shuffled = first_batches(pipeline.create_datasets(other_seed).train, 1)[0]
  assert not np.array_equal(shuffled["image"], batches[0][0]["image"])


def test_iterator_state_resumes_exactly():
  loader = pipeline.create_datasets(load_config("sample_coco")).train
  iterator = iter(loader)
  next(iterator)
  state = iterator.get_state()
  expected = next(iterator)
  resumed = iter(loader)
  resumed.set_state(state)
  got = next(resumed)
  for key in expected:
    np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


@pytest.mark.parametrize("codec", ["udp", "msra"])
def test_eval_element_maps_back_to_the_image(codec):
  """center/scale of an eval element take its GT keypoints to the crop and back."""
  datasets = pipeline.create_datasets(load_config("sample_coco", codec=codec))
  assert len(datasets.eval) == len(datasets.eval_instances) == 68
  element, instance = datasets.eval[3], datasets.eval_instances[3]
  assert element["image"].shape == (256, 192, 3)
  assert element["image_id"] == instance["image_id"]
  use_udp = codec == "udp"
  matrix = (geometry.udp_affine_matrix if use_udp else geometry.affine_matrix)(
      element["center"], element["scale"], 0.0, (256, 192))
  in_crop = geometry.transform_points(instance["keypoints"], matrix)
  back = geometry.crop_to_image(in_crop, element["center"], element["scale"], (256, 192),
                                use_udp=use_udp)
  visible = instance["keypoints_visible"] > 0
  np.testing.assert_allclose(back[visible], instance["keypoints"][visible], atol=1e-2)


def test_custom_dataset_with_contiguous_split():
  datasets = pipeline.create_datasets(load_config("custom_coco"))
  assert datasets.info.num_keypoints == 4
  assert list(datasets.info.flip_indices) == [0, 2, 1, 3]          # leftear <-> rightear
  train_ids = {i["image_id"] for i in pipeline.load_instances(
      load_config("custom_coco"), datasets.info, "train")}
  eval_ids = {i["image_id"] for i in datasets.eval_instances}
  assert len(train_ids) == 92 and len(eval_ids) == 24 and not train_ids & eval_ids
  assert max(train_ids) < min(eval_ids)                            # frames, in order
  assert first_batches(datasets.train, 1)[0]["heatmaps"].shape == (4, 64, 64, 4)


def test_keypoint_count_mismatch_is_named():
  config = load_config("sample_coco")
  config.model.num_keypoints = 16
  with pytest.raises(ValueError, match="config.model.num_keypoints=16"):
    pipeline.create_datasets(config)


def test_half_body_without_body_ids_is_named():
  with pytest.raises(ValueError, match="half_body_prob"):
    pipeline.create_datasets(load_config("custom_coco", half_body_prob=0.3))


def test_missing_annotation_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere.json"):
    pipeline.create_datasets(load_config("sample_coco", train_ann=str(tmp_path / "nowhere.json")))


def corrupt_sample(tmp_path):
  """The mmpose COCO sample with one image replaced by garbage bytes (sources accept it:
  the file exists; only decoding finds it unreadable)."""
  sample = REPO / "data" / "samples" / "coco"
  for path in sample.iterdir():
    (tmp_path / path.name).write_bytes(path.read_bytes())
  (tmp_path / "000000000785.jpg").write_bytes(b"not a jpeg" * 100)
  return dict(root=str(tmp_path), train_ann="test_coco.json", val_ann="test_coco.json",
              train_images="", val_images="")


def test_corrupt_image_is_a_clear_error(tmp_path):
  config = load_config("sample_coco", **corrupt_sample(tmp_path))
  iterator = iter(pipeline.create_datasets(config).train)
  with pytest.raises(ValueError, match="000000000785.jpg.*not a readable image"):
    for _ in range(10):
      next(iterator)


def test_corrupt_image_skipped_when_asked(tmp_path):
  config = load_config("sample_coco", on_bad="skip", **corrupt_sample(tmp_path))
  iterator = iter(pipeline.create_datasets(config).train)
  for _ in range(10):                             # 12 instances, 1 image (1 person) bad
    assert next(iterator)["image"].shape == (4, 256, 192, 3)
