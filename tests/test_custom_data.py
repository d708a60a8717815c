"""Custom COCO-format data in three flags: synthetic jsons of several shapes.

Each set is written to tmp_path: small black JPEGs of the stated size (1280x720 for the
12-keypoint animal set) and a json whose category says what configs/custom_coco.py must
read from it: the keypoint count and names, the skeleton, flip pairs from names.
"""

import json
import logging
import pathlib

import cv2
import numpy as np
import pytest
from absl import flags

from mamkpd_jax import config_lib
from mamkpd_jax.training import train, workdir_lib
from mamkpd_jax.data_pipelines import metadata, pipeline, sources
from mamkpd_jax.models import model_config

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def parsed_flags():
  """Grain reads absl flags; outside app.run they must be marked parsed."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def write_set(root, json_name, num_frames, num_keypoints, category, size=(1280, 720),
              image_dir="frames", first_id=1):
  """A COCO-format set: `num_frames` JPEGs under root/image_dir, one animal per frame.

  file_name is relative to the json's folder. Keypoints: a fixed pose shifted per frame.
  Returns the json's path.
  """
  width, height = size
  json_path = pathlib.Path(root) / json_name
  images_path = json_path.parent / image_dir
  images_path.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(num_keypoints)
  pose = rng.uniform(0, 200, (num_keypoints, 2))                 # (K, 2) within the box
  images, annotations = [], []
  for i in range(num_frames):
    image_id = first_id + i
    name = f"{image_dir}/frame{image_id:04d}.jpg"
    cv2.imwrite(str(json_path.parent / name), np.zeros((height, width, 3), np.uint8))
    x0, y0 = 100 + 10 * i, 50 + 5 * i
    points = pose + [x0, y0]
    triples = np.concatenate([points, np.full((num_keypoints, 1), 2)], axis=1)
    images.append({"id": image_id, "file_name": name, "width": width, "height": height})
    annotations.append({"id": 1000 + image_id, "image_id": image_id,
                        "category_id": category["id"], "iscrowd": 0, "area": 200.0 * 200,
                        "bbox": [x0, y0, 200, 200], "num_keypoints": num_keypoints,
                        "keypoints": triples.ravel().round(2).tolist()})
  json_path.write_text(json.dumps({"images": images, "annotations": annotations,
                                   "categories": [category]}))
  return json_path


UNNAMED_12 = {"id": 1, "name": "animal"}                          # no keypoint names
PAIRED = {"id": 3, "name": "critter", "supercategory": "animal",
          "keypoints": ["nose", "left_eye", "right_eye", "L_Ear", "R_Ear", "paw_l", "paw_r",
                        "leftHip", "rightHip", "tail"],
          "skeleton": [[1, 2], [1, 3], [8, 10], [9, 10]]}


def three_flag_config(root, train_ann, val_ann, **overrides):
  """configs/custom_coco.py with the three flags (and test-size overrides)."""
  config = config_lib.load_config_file(str(REPO / "configs/custom_coco.py"))
  config.data.root, config.data.train_ann, config.data.val_ann = str(root), train_ann, val_ann
  config.data.num_workers = 0
  config.batch_size = 4
  for dotted, value in overrides.items():
    section, field = dotted.split(".")
    config[section][field] = value
  return config


def test_twelve_unnamed_keypoints_held_out_from_the_one_json(tmp_path, caplog):
  write_set(tmp_path, "labels.json", 10, 12, UNNAMED_12)
  caplog.set_level(logging.INFO)
  config = three_flag_config(tmp_path, "labels.json", "")
  resolved = pipeline.resolve_custom_config(config)
  assert resolved.model.num_keypoints == 12 and config.model.num_keypoints == 0
  datasets = pipeline.create_datasets(config)
  info = datasets.info
  assert info.keypoint_names == tuple(f"kp{k}" for k in range(1, 13))
  assert info.flip_indices == tuple(range(12))                   # nothing of the example
  train_frames = {i["image_id"] for i in pipeline.load_instances(resolved, info, "train")}
  eval_frames = {i["image_id"] for i in datasets.eval_instances}
  assert train_frames == set(range(1, 9)) and eval_frames == {9, 10}   # last 20%
  assert all(i["image_path"] == str(tmp_path / "frames" / f"frame{i['image_id']:04d}.jpg")
             for i in datasets.eval_instances)
  assert datasets.eval[0]["image"].shape == (256, 256, 3)
  log = caplog.text
  assert "last 20% of the frames" in log and "data.val_ann is empty" in log
  assert "none pair up" in log


def test_names_that_pair_up_become_flip_pairs(tmp_path, caplog):
  write_set(tmp_path / "train", "train.json", 6, 10, PAIRED, size=(320, 240))
  write_set(tmp_path / "val", "val.json", 3, 10, PAIRED, size=(320, 240), first_id=50)
  caplog.set_level(logging.INFO)
  config = three_flag_config(tmp_path, "train/train.json", "val/val.json")
  datasets = pipeline.create_datasets(config)
  info = datasets.info
  assert info.num_keypoints == 10 and info.keypoint_names == tuple(PAIRED["keypoints"])
  assert info.skeleton == ((0, 1), (0, 2), (7, 9), (8, 9))
  assert info.flip_pairs == ((1, 2), (3, 4), (5, 6), (7, 8))
  assert "flip pairs from the keypoint names" in caplog.text and "'paw_l'" in caplog.text
  assert [i["image_id"] for i in datasets.eval_instances] == [50, 51, 52]   # val json
  assert datasets.num_train == 6
  assert datasets.eval_instances[0]["image_path"] == str(tmp_path / "val/frames/frame0050.jpg")
  off = pipeline.dataset_info(three_flag_config(
      tmp_path, "train/train.json", "val/val.json", **{"data.auto_flip_pairs": False}))
  assert off.flip_indices == tuple(range(10))


def test_val_ann_naming_the_training_json_holds_out_frames(tmp_path):
  write_set(tmp_path, "all.json", 5, 10, PAIRED, size=(320, 240))
  config = three_flag_config(tmp_path, "all.json", str(tmp_path / "all.json"))
  assert pipeline.train_fraction(config.data) == pipeline.DEFAULT_TRAIN_FRACTION
  datasets = pipeline.create_datasets(config)
  assert [i["image_id"] for i in datasets.eval_instances] == [5]
  assert datasets.num_train == 4


def test_image_folder_given_is_relative_to_root(tmp_path):
  write_set(tmp_path / "ann", "train.json", 5, 10, PAIRED, size=(320, 240))
  (tmp_path / "pictures").mkdir()
  (tmp_path / "ann/frames").rename(tmp_path / "pictures/frames")
  config = three_flag_config(tmp_path, "ann/train.json", "",
                             **{"data.train_images": "pictures"})
  datasets = pipeline.create_datasets(config)
  assert datasets.eval_instances[0]["image_path"] == \
      str(tmp_path / "pictures/frames/frame0005.jpg")
  with pytest.raises(sources.AnnotationError, match="image file not found"):
    pipeline.create_datasets(three_flag_config(tmp_path, "ann/train.json", ""))


def test_stated_keypoint_count_that_disagrees_names_both(tmp_path):
  write_set(tmp_path, "labels.json", 5, 12, UNNAMED_12, size=(320, 240))
  config = three_flag_config(tmp_path, "labels.json", "", **{"model.num_keypoints": 17})
  with pytest.raises(ValueError, match=r"num_keypoints=17 but .* number 12 in .*labels.json"):
    pipeline.create_datasets(config)
  assert pipeline.resolve_custom_config(three_flag_config(
      tmp_path, "labels.json", "", **{"model.num_keypoints": 12})).model.num_keypoints == 12


def test_categories_with_different_keypoints_are_an_error(tmp_path):
  path = write_set(tmp_path, "labels.json", 2, 10, PAIRED, size=(64, 48))
  data = json.loads(path.read_text())
  data["categories"].append({"id": 4, "name": "other", "keypoints": ["a", "b"]})
  path.write_text(json.dumps(data))
  with pytest.raises(sources.AnnotationError, match=r"categories \[3, 4\] list different"):
    sources.keypoint_category(str(path))


@pytest.mark.parametrize("names, pairs", [
    (["left_eye", "right_eye", "nose"], [("left_eye", "right_eye")]),
    (["r_knee", "l_knee"], [("l_knee", "r_knee")]),
    (["paw_R", "paw_L"], [("paw_L", "paw_R")]),
    (["leftear", "rightear", "snout"], [("leftear", "rightear")]),
    (["LeftHand", "RightHand"], [("LeftHand", "RightHand")]),
    (["wing.left", "wing.right"], [("wing.left", "wing.right")]),
    (["leg", "reg", "lip", "rip"], []),               # no separator after l / r
    (["left_eye", "nose"], []),                       # no partner
    (["kp1", "kp2"], []),
])
def test_find_flip_pairs(names, pairs):
  assert list(metadata.find_flip_pairs(names)) == pairs


def test_three_flags_train_and_evaluate(tmp_path):
  """The whole job on the unseen 12-keypoint set (tiny model, 64x64, two steps)."""
  write_set(tmp_path / "data", "labels.json", 10, 12, UNNAMED_12)
  config = three_flag_config(tmp_path / "data", "labels.json", "", **{
      "data.input_height": 64, "data.input_width": 64, "train.num_steps": 2,
      "train.warmup_steps": 1, "train.log_every_steps": 1, "eval.batch_size": 4})
  config.model = model_config("tiny", num_keypoints=0)
  workdir = tmp_path / "run"
  metrics = train.train_and_evaluate(config, str(workdir))
  assert 0 <= metrics["PCK@0.1"] <= 1 and "AP" in metrics
  metrics_path, _ = workdir_lib.Workdir(str(workdir), None, None).eval_paths(2)
  saved = json.loads(pathlib.Path(metrics_path).read_text())
  assert saved["num_instances"] == 2
  written = json.loads((workdir / "config.json").read_text())
  assert written["model"]["num_keypoints"] == 12 and written["data"]["flip_pairs"] == []
