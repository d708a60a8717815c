"""Other tools' label files (data_pipelines/labels.py) against independent references.

The references: the bundled openfield_coco.json (made from DeepLabCut's csv by the rules
in docs/datasets.md), the known facts of the bundled DeepLabCut and Lightning Pose sets
(counted from their csv files, data/samples/NOTICE.md), and sleap-io's own writers for
the round trips (.slp, .pkg.slp, Ultralytics, Label Studio, NWB). Plus bad input, and
the three-flag config training from a DLC project, an .slp pair and an Ultralytics set.
"""

import json
import pathlib
import shutil

import numpy as np
import pytest
from absl import flags

sio = pytest.importorskip("sleap_io")

from mamkpd_jax import config_lib  # pylint: disable=g-import-not-at-top
from mamkpd_jax.data_pipelines import labels, pipeline, sources
from mamkpd_jax.evaluation import metrics as evaluation_metrics
from mamkpd_jax.models import model_config
from mamkpd_jax.training import train

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data/samples"
OPENFIELD = SAMPLES / "dlc-openfield"
OPENFIELD_CSV = OPENFIELD / "labeled-data/m4s1/CollectedData_Pranav.csv"
REACHING = SAMPLES / "dlc-reaching"
MIRROR_CSV = SAMPLES / "lp-mirror-mouse/CollectedData.csv"


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
  """Each test converts into its own cache ($XDG_CACHE_HOME), never beside the data."""
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  return tmp_path / "cache"


@pytest.fixture(autouse=True)
def parsed_flags():
  """Grain reads absl flags; outside app.run they must be marked parsed."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope="module")
def openfield_labels():
  return labels.read_labels(str(OPENFIELD))


def converted(path, split=None):
  json_path, root = labels.coco_json_path(str(path), split)
  return json.loads(pathlib.Path(json_path).read_text()), root


def keypoints_by_frame(coco):
  """{image base name: (K, 3) keypoints} of a COCO dict with one animal per frame."""
  names = {image["id"]: pathlib.Path(image["file_name"]).name for image in coco["images"]}
  return {names[a["image_id"]]: np.reshape(a["keypoints"], (-1, 3))
          for a in coco["annotations"]}


def by_name(coco, names):
  """(N, K, 3) keypoints in the order of `names` (a file may order its nodes otherwise)."""
  order = [coco["categories"][0]["keypoints"].index(n) for n in names]
  return np.stack([np.reshape(a["keypoints"], (-1, 3))[order] for a in coco["annotations"]])


# ---------------------------------------------------------------------------------------
# The bundled sets.


def test_dlc_project_reproduces_the_bundled_coco_json(caplog):
  reference = json.loads((OPENFIELD / "openfield_coco.json").read_text())
  with caplog.at_level("INFO"):
    coco, root = converted(OPENFIELD)
  assert root == str(OPENFIELD)                        # the project locates its images
  assert [i["file_name"] for i in coco["images"]] == \
      [i["file_name"] for i in reference["images"]]
  for ours, theirs in zip(coco["annotations"], reference["annotations"], strict=True):
    assert ours["keypoints"] == theirs["keypoints"]
    np.testing.assert_allclose(ours["bbox"], theirs["bbox"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours["area"], theirs["area"], rtol=1e-12)
    assert ours["num_keypoints"] == theirs["num_keypoints"] and ours["iscrowd"] == 0
  category = coco["categories"][0]
  assert category["keypoints"] == ["snout", "leftear", "rightear", "tailbase"]
  assert category["skeleton"] == []
  assert "DeepLabCut project, 116 frames, 116 instances, 4 keypoints" in caplog.text


@pytest.mark.parametrize("path", [OPENFIELD_CSV, OPENFIELD_CSV.with_suffix(".h5"),
                                  OPENFIELD / "config.yaml"])
def test_dlc_csv_h5_and_config_read_as_the_project(path, openfield_labels):
  coco, root = converted(path)
  reference = labels.labels_to_coco(openfield_labels, str(OPENFIELD))
  assert root == str(OPENFIELD)                        # config.yaml found above the csv
  assert coco["images"] == reference["images"]
  assert coco["annotations"] == reference["annotations"]


def test_reaching_facts_without_most_images():
  """55 frames x 5 bodyparts, 233 of 275 labelled; only 6 of the 55 images bundled."""
  assert len(list((REACHING / "labeled-data/reachingvideo1").glob("*.png"))) == 6
  coco, _ = converted(REACHING)
  names = ["Hand", "Finger1", "Tongue", "Joystick1", "Joystick2"]
  assert coco["categories"][0]["keypoints"] == names
  assert coco["categories"][0]["skeleton"] == [[1, 2], [4, 5]]
  assert len(coco["images"]) == len(coco["annotations"]) == 55
  flags_ = np.stack([np.reshape(a["keypoints"], (-1, 3))[:, 2] for a in coco["annotations"]])
  assert int((flags_ == 2).sum()) == 233
  assert dict(zip(names, (flags_ == 0).sum(axis=0).tolist())) == \
      {"Hand": 1, "Finger1": 1, "Tongue": 40, "Joystick1": 0, "Joystick2": 0}
  missing = np.stack([np.reshape(a["keypoints"], (-1, 3)) for a in coco["annotations"]])
  assert np.all(missing[flags_ == 0][:, :2] == 0)      # missing: v=0, x=y=0


def test_box_rule_by_hand():
  """Tight box of the labelled points, 10% of its side out on each side, clipped."""
  coco, _ = converted(REACHING)
  image = coco["images"][0]
  points = np.reshape(coco["annotations"][0]["keypoints"], (-1, 3))
  points = points[points[:, 2] > 0, :2]
  low, high = points.min(0), points.max(0)
  low, high = low - 0.1 * (high - low), high + 0.1 * (high - low)
  low = np.maximum(low, 0)
  high = np.minimum(high, [image["width"], image["height"]])
  np.testing.assert_allclose(coco["annotations"][0]["bbox"], [*low, *(high - low)])


def test_lightning_pose_csv():
  coco, root = converted(MIRROR_CSV)
  assert root == str(MIRROR_CSV.parent)
  assert coco["images"][0]["file_name"] == "labeled-data/img01.png"
  assert len(coco["annotations"]) == 90 and len(coco["categories"][0]["keypoints"]) == 17
  labelled = sum(a["num_keypoints"] for a in coco["annotations"])
  assert labelled == 1396


def test_converted_json_passes_the_strict_reader_and_names_the_source(tmp_path):
  json_path, root = labels.coco_json_path(str(OPENFIELD))
  assert pathlib.Path(json_path).is_relative_to(tmp_path / "cache")
  instances = sources.load_coco_instances(json_path, root)
  assert len(instances) == 116
  # An image gone from the project: the strict reader's error names the label file too.
  project = tmp_path / "project"
  shutil.copytree(OPENFIELD, project, ignore=shutil.ignore_patterns("videos", "*.json"))
  (project / "labeled-data/m4s1/img0003.png").unlink()
  json_path, root = labels.coco_json_path(str(project))
  with pytest.raises(sources.AnnotationError, match=f"{project}.*image file not found"):
    with labels.naming_source(json_path):
      sources.load_coco_instances(json_path, root)


def test_cache_is_reused_and_keyed_by_the_file(tmp_path):
  csv = tmp_path / "CollectedData.csv"
  shutil.copy(MIRROR_CSV, csv)
  (tmp_path / "labeled-data").symlink_to(MIRROR_CSV.parent / "labeled-data")
  first, _ = labels.coco_json_path(str(csv))
  assert labels.coco_json_path(str(csv))[0] == first
  csv.write_text(csv.read_text().replace("77.25", "78.25", 1))   # edited: converted again
  second, _ = labels.coco_json_path(str(csv))
  assert second != first
  assert json.loads(pathlib.Path(second).read_text())["annotations"][0]["keypoints"][0] \
      == 78.25
  assert sorted(p.name for p in tmp_path.iterdir()) == ["CollectedData.csv", "cache",
                                                         "labeled-data"]


# ---------------------------------------------------------------------------------------
# Round trips through sleap-io's writers.


def subset(labels_, count):
  """The first `count` frames of `labels_` (one video, one skeleton)."""
  return sio.Labels(labeled_frames=labels_.labeled_frames[:count], videos=labels_.videos,
                    skeletons=labels_.skeletons)


@pytest.mark.parametrize("name", ["labels.slp", "labels.pkg.slp"])
def test_slp_round_trip(name, openfield_labels, tmp_path, cache_home):
  path = tmp_path / name
  embed = "user" if name.endswith(".pkg.slp") else False
  sio.save_slp(subset(openfield_labels, 12), str(path), embed=embed)
  coco, root = converted(path)
  reference = keypoints_by_frame(labels.labels_to_coco(openfield_labels, str(OPENFIELD)))
  ours = [np.reshape(a["keypoints"], (-1, 3)) for a in coco["annotations"]]
  assert len(ours) == 12
  for index, points in enumerate(ours):
    np.testing.assert_array_equal(points, reference[f"img{index:04d}.png"])
  if embed:     # frames inside the .slp: written as PNGs to the cache, not beside it
    assert pathlib.Path(root).is_relative_to(cache_home)
    assert sources.read_image_size(str(pathlib.Path(root) / coco["images"][0]["file_name"])) \
        == (640, 480)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", name]
  else:
    assert root == str(OPENFIELD / "labeled-data/m4s1")


def test_ultralytics_round_trip_keeps_its_split(openfield_labels, tmp_path):
  dataset = tmp_path / "yolo"
  sio.save_ultralytics(subset(openfield_labels, 10), str(dataset), verbose=False)
  reference = by_name(labels.labels_to_coco(openfield_labels, str(OPENFIELD)),
                      ["snout", "leftear", "rightear", "tailbase"])[:10]
  train_coco, train_root = converted(dataset / "data.yaml", "train")
  val_coco, _ = converted(dataset, "val")
  assert train_root == str(dataset / "train/images")
  assert (len(train_coco["images"]), len(val_coco["images"])) == (8, 2)
  names = ["snout", "leftear", "rightear", "tailbase"]
  ours = np.concatenate([by_name(train_coco, names), by_name(val_coco, names)])
  # Normalised coordinates in the text files: each frame matches one source frame.
  for points in ours:
    error = np.abs(reference - points).max(axis=(1, 2))
    assert error.min() < 1e-3
  assert labels.file_splits(str(dataset / "data.yaml")) == ("train", "val")


def test_label_studio_round_trip(openfield_labels, tmp_path):
  path = tmp_path / "export.json"
  sio.save_labelstudio(subset(openfield_labels, 8), str(path))
  assert labels.detect_format(str(path)) == "labelstudio"
  coco, _ = converted(path)
  names = ["snout", "leftear", "rightear", "tailbase"]
  reference = by_name(labels.labels_to_coco(openfield_labels, str(OPENFIELD)), names)[:8]
  np.testing.assert_allclose(by_name(coco, names), reference, atol=1e-9)


def test_nwb_round_trip_or_a_clear_error(openfield_labels, tmp_path):
  """sleap-io 0.9.5 writes image-list NWB it cannot read back: an error naming the file."""
  path = tmp_path / "labels.nwb"
  sio.save_nwb(subset(openfield_labels, 5), str(path))
  try:
    coco, _ = converted(path)
  except labels.LabelsError as error:
    assert str(path) in str(error) and "NWB" in str(error)
  else:
    names = ["snout", "leftear", "rightear", "tailbase"]
    reference = by_name(labels.labels_to_coco(openfield_labels, str(OPENFIELD)), names)[:5]
    np.testing.assert_allclose(by_name(coco, names), reference, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Several animals per frame.


def two_animals(labels_, count, shift=(50.0, 20.0)):
  """`count` frames with the mouse and a copy shifted by `shift` pixels (two tracks)."""
  tracks = [sio.Track(name="mouse1"), sio.Track(name="mouse2")]
  frames = []
  for frame in labels_.labeled_frames[:count]:
    points = frame.user_instances[0].numpy()                      # (K, 2)
    frames.append(sio.LabeledFrame(video=frame.video, frame_idx=frame.frame_idx, instances=[
        sio.Instance.from_numpy(points, labels_.skeleton, track=tracks[0]),
        sio.Instance.from_numpy(points + shift, labels_.skeleton, track=tracks[1])]))
  return sio.Labels(labeled_frames=frames, videos=labels_.videos,
                    skeletons=labels_.skeletons, tracks=tracks)


def test_two_animals_in_an_slp_become_two_annotations(openfield_labels, tmp_path):
  path = tmp_path / "two.slp"
  sio.save_slp(two_animals(openfield_labels, 6), str(path))
  coco, _ = converted(path)
  assert len(coco["images"]) == 6 and len(coco["annotations"]) == 12
  first, second = (np.reshape(a["keypoints"], (-1, 3)) for a in coco["annotations"][:2])
  assert coco["annotations"][1]["image_id"] == coco["annotations"][0]["image_id"]
  np.testing.assert_allclose(second[:, :2] - first[:, :2], [[50, 20]] * 4)


def write_multi_animal_csv(path, frames):
  """A DeepLabCut multi-animal csv (scorer / individuals / bodyparts / coords rows)."""
  parts = ["snout", "leftear", "rightear", "tailbase"]
  columns = [(who, part, c) for who in ("mouse1", "mouse2") for part in parts
             for c in ("x", "y")]
  rows = [["scorer"] + ["me"] * len(columns),
          ["individuals"] + [c[0] for c in columns],
          ["bodyparts"] + [c[1] for c in columns],
          ["coords"] + [c[2] for c in columns]]
  for name, points in frames:                               # points (2, 4, 2), NaN: missing
    rows.append([name] + ["" if np.isnan(v) else repr(float(v)) for v in points.ravel()])
  path.write_text("\n".join(",".join(row) for row in rows) + "\n")


def test_multi_animal_dlc_csv_gives_one_annotation_per_animal(tmp_path):
  frames = []
  for i in range(3):
    mouse = np.array([[100.0, 200], [110, 190], [90, 190], [100, 300]]) + i
    other = mouse + [300, 50]
    if i == 2:
      other[1] = np.nan                                    # mouse2's leftear unlabelled
    frames.append((f"labeled-data/m4s1/img{i:04d}.png", np.stack([mouse, other])))
  csv = tmp_path / "CollectedData_me.csv"
  write_multi_animal_csv(csv, frames)
  (tmp_path / "labeled-data").symlink_to(OPENFIELD / "labeled-data")
  coco, _ = converted(csv)
  assert len(coco["images"]) == 3 and len(coco["annotations"]) == 6
  last = np.reshape(coco["annotations"][5]["keypoints"], (-1, 3))
  np.testing.assert_array_equal(last[1], [0, 0, 0])
  assert coco["annotations"][5]["num_keypoints"] == 3
  np.testing.assert_allclose(np.reshape(coco["annotations"][0]["keypoints"], (-1, 3))[:, :2],
                             frames[0][1][0])


# ---------------------------------------------------------------------------------------
# Bad input.


def test_bodyparts_disagreeing_with_config_names_both_files(tmp_path):
  project = tmp_path / "project"
  shutil.copytree(OPENFIELD, project, ignore=shutil.ignore_patterns("videos", "*.json",
                                                                    "*.png"))
  config = project / "config.yaml"
  config.write_text(config.read_text().replace("- tailbase", "- tail"))
  with pytest.raises(labels.LabelsError) as error:
    labels.read_labels(str(project))
  message = str(error.value)
  assert "CollectedData_Pranav.csv" in message and str(config) in message
  assert "'bodyparts'" in message and "tail" in message


def test_slp_without_skeleton_names_the_file(tmp_path):
  path = tmp_path / "empty.slp"
  sio.save_slp(sio.Labels(), str(path))
  with pytest.raises(labels.LabelsError, match=f"{path}.*'skeleton'.*no skeleton"):
    labels.read_labels(str(path))


def test_ultralytics_kpt_shape_disagreeing_with_label_files(openfield_labels, tmp_path):
  dataset = tmp_path / "yolo"
  sio.save_ultralytics(subset(openfield_labels, 5), str(dataset), verbose=False)
  data_yaml = dataset / "data.yaml"
  data_yaml.write_text(data_yaml.read_text().replace("- 4\n- 3", "- 5\n- 3"))
  with pytest.raises(labels.LabelsError) as error:
    labels.read_labels(str(data_yaml))
  message = str(error.value)
  assert str(data_yaml) in message and "'kpt_shape'" in message and ".txt" in message


def test_unreadable_h5_names_the_file(tmp_path):
  path = tmp_path / "CollectedData_me.h5"
  path.write_bytes(b"not hdf5 at all")
  with pytest.raises(labels.LabelsError, match=f"{path}: not a readable HDF5"):
    labels.read_labels(str(path))


@pytest.mark.parametrize("name, content, match", [
    ("labels.txt", "x", "unknown label file type"),
    ("labels.csv", "a,b\n1,2\n", "not a DeepLabCut csv"),
    ("tasks.json", "[1, 2]", "neither a COCO keypoints json"),
])
def test_unknown_files_name_the_file_and_what_was_expected(tmp_path, name, content, match):
  path = tmp_path / name
  path.write_text(content)
  with pytest.raises(labels.LabelsError, match=match) as error:
    labels.read_labels(str(path))
  assert str(path) in str(error.value)


def test_missing_path_and_coco_json():
  with pytest.raises(FileNotFoundError, match="label file not found"):
    labels.read_labels("/nonexistent/labels.slp")
  coco_json = str(OPENFIELD / "openfield_coco.json")
  assert labels.coco_json_path(coco_json) == (coco_json, None)      # COCO: as given


# ---------------------------------------------------------------------------------------
# The three flags: configs/custom_coco.py trains and evaluates from each format.


def three_flag_config(root, train_ann, val_ann=""):
  config = config_lib.load_config_file(str(REPO / "configs/custom_coco.py"))
  config.data.root, config.data.train_ann, config.data.val_ann = root, train_ann, val_ann
  config.data.num_workers = 0
  config.data.input_height = config.data.input_width = 64
  config.batch_size = config.eval.batch_size = 4
  config.train.num_steps, config.train.warmup_steps, config.train.log_every_steps = 2, 1, 1
  config.model = model_config("tiny", num_keypoints=0)
  return config


def test_split_rules(openfield_labels, tmp_path):
  """DLC project, no val_ann: last 20% held out; Ultralytics: its own val split."""
  config = three_flag_config("", str(OPENFIELD))
  assert pipeline.train_fraction(config.data) == 0.8
  dataset = tmp_path / "yolo"
  sio.save_ultralytics(subset(openfield_labels, 10), str(dataset), verbose=False)
  config = three_flag_config(str(tmp_path), "yolo/data.yaml")
  assert pipeline.train_fraction(config.data) == 0 and pipeline.own_val_split(config.data)
  assert pipeline.image_folder(config.data, "val") == str(dataset / "val/images")
  info = pipeline.dataset_info(config)
  assert info.num_keypoints == 4
  assert len(pipeline.load_instances(config, info, "val")) == 2


def test_three_flags_train_and_evaluate_from_a_dlc_project(tmp_path):
  """The whole job (tiny model, 64x64, two steps) on a 15-frame DLC project."""
  project = tmp_path / "project"              # 15 frames: 12 train, the last 3 evaluate
  shutil.copytree(OPENFIELD, project, ignore=shutil.ignore_patterns("videos", "*.json"))
  csv = project / "labeled-data/m4s1/CollectedData_Pranav.csv"
  csv.write_text("\n".join(csv.read_text().splitlines()[:3 + 15]) + "\n")
  csv.with_suffix(".h5").unlink()
  metrics = train.train_and_evaluate(three_flag_config("", str(project)), str(tmp_path / "run"))
  assert 0 <= metrics["PCK@0.1"] <= 1 and "AP" in metrics
  saved = json.loads(next((tmp_path / "run/eval").glob("metrics_step*.json")).read_text())
  assert saved["num_instances"] == 3
  written = json.loads((tmp_path / "run/config.json").read_text())
  assert written["model"]["num_keypoints"] == 4


@pytest.mark.parametrize("source", ["slp_pair", "ultralytics"])
def test_three_flags_evaluate_ground_truth_perfectly(source, openfield_labels, tmp_path):
  """The datasets and metrics of the three-flag config from an .slp train/val pair and
  an Ultralytics set: their own GT as predictions scores AP 1 and PCK 1."""
  if source == "slp_pair":
    val = sio.Labels(labeled_frames=openfield_labels.labeled_frames[100:104],
                     videos=openfield_labels.videos, skeletons=openfield_labels.skeletons)
    sio.save_slp(subset(openfield_labels, 8), str(tmp_path / "train.slp"))
    sio.save_slp(val, str(tmp_path / "val.slp"))
    config, expected = three_flag_config(str(tmp_path), "train.slp", "val.slp"), (8, 4)
  else:
    sio.save_ultralytics(subset(openfield_labels, 10), str(tmp_path / "yolo"), verbose=False)
    config, expected = three_flag_config(str(tmp_path), "yolo/data.yaml"), (8, 2)
  datasets = pipeline.create_datasets(config)
  assert (datasets.num_train, len(datasets.eval_instances)) == expected
  instances = datasets.eval_instances
  keypoints = np.stack([i["keypoints"] for i in instances])               # (N, K, 2)
  boxes = np.stack([i["bbox"] for i in instances])                        # (N, 4)
  metrics, _ = evaluation_metrics.evaluate_predictions(
      pipeline.resolve_custom_config(config), datasets.info, instances, keypoints,
      np.ones(keypoints.shape[:2]), boxes[:, 2:] * 1.25)
  assert metrics["PCK@0.1"] == 1.0 and metrics["AP"] == pytest.approx(1.0)


def test_relative_label_path_outside_the_root_is_taken_from_the_working_directory(
    tmp_path, monkeypatch):
  """A label path given without --config.data.root: data.root first, then the cwd."""
  (tmp_path / "root").mkdir()
  (tmp_path / "root" / "a.slp").write_bytes(b"")
  (tmp_path / "b.slp").write_bytes(b"")
  monkeypatch.chdir(tmp_path)
  data = config_lib.custom("tiny").data
  data.root = str(tmp_path / "root")
  assert pipeline.resolve_path(data, "a.slp") == str(tmp_path / "root" / "a.slp")
  assert pipeline.resolve_path(data, "b.slp") == str(tmp_path / "b.slp")
  assert pipeline.resolve_path(data, "c.slp") == str(tmp_path / "root" / "c.slp")  # missing
