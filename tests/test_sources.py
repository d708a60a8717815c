"""Annotation sources on the bundled data (counts from data/samples/NOTICE.md) and
on small malformed files: each bad input raises naming its file and annotation, or is
skipped and counted."""

import copy
import json
import pathlib

import cv2
import numpy as np
import pytest
import scipy.io

from mamkpd_jax.data_pipelines import sources

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "samples"
COCO_JSON = DATA / "coco/test_coco.json"
COCO_DETS = DATA / "coco/test_coco_det_AP_H_56.json"
MINI = DATA / "coco-mini"
OPENFIELD_JSON = DATA / "dlc-openfield/openfield_coco.json"
MPII_JSON = DATA / "mpii/test_mpii.json"

# (annotation file, image folder, instances, filtered), the counts data/samples/NOTICE.md states:
# coco: 14 person anns, 12 with keypoints; coco-mini val 118 anns (68 with keypoints,
# 1 crowd), train 172 (86 with keypoints, 5 crowd); ap10k 2; openfield 116.
BUNDLED_COCO = [
    (COCO_JSON, DATA / "coco", 12, {"no_keypoints": 2}),
    (MINI / "annotations/person_keypoints_val2017.json", MINI / "val2017", 68,
     {"crowd": 1, "no_keypoints": 49}),
    (MINI / "annotations/person_keypoints_train2017.json", MINI / "train2017", 86,
     {"crowd": 5, "no_keypoints": 81}),
    (DATA / "ap10k/test_ap10k.json", DATA / "ap10k", 2, {}),
    (OPENFIELD_JSON, DATA / "dlc-openfield", 116, {}),
]


def _raw(path):
  return json.loads(pathlib.Path(path).read_text())


@pytest.mark.parametrize("ann_file, image_root, count, filtered", BUNDLED_COCO,
                         ids=lambda v: getattr(v, "name", None))
def test_bundled_coco_counts_and_raw_values(ann_file, image_root, count, filtered):
  instances = sources.load_coco_instances(str(ann_file), str(image_root))
  raw = _raw(ann_file)
  assert len(instances) == count
  assert dict(instances.filtered) == filtered
  assert sum(filtered.values()) + count == len(raw["annotations"])
  assert not instances.skipped
  anns = {ann["id"]: ann for ann in raw["annotations"]}
  images = {image["id"]: image for image in raw["images"]}
  for instance in instances:
    ann = anns[instance["instance_id"]]
    k = len(ann["keypoints"]) // 3
    triples = np.array(ann["keypoints"], np.float32).reshape(k, 3)
    np.testing.assert_array_equal(instance["keypoints"], triples[:, :2])
    np.testing.assert_array_equal(instance["keypoints_visible"], triples[:, 2] > 0)
    assert instance["image_id"] == ann["image_id"]
    assert instance["category_id"] == ann["category_id"]
    assert instance["area"] == np.float32(ann["area"])
    assert pathlib.Path(instance["image_path"]) == \
        pathlib.Path(image_root).resolve() / images[ann["image_id"]]["file_name"]
    _check_clipped_box(instance["bbox"], ann["bbox"], images[ann["image_id"]])


def _check_clipped_box(bbox, raw_bbox, image):
  """mmpose: corners clipped to [0, W-1] x [0, H-1], then back to xywh."""
  x, y, w, h = raw_bbox
  x1, x2 = np.clip([x, x + w], 0, image["width"] - 1)
  y1, y2 = np.clip([y, y + h], 0, image["height"] - 1)
  np.testing.assert_allclose(bbox, [x1, y1, x2 - x1, y2 - y1], rtol=1e-6, atol=1e-4)


def test_instance_format():
  (instance, *_) = sources.load_coco_instances(str(COCO_JSON), str(DATA / "coco"))
  shapes = {key: np.shape(value) for key, value in instance.items()
            if isinstance(value, np.ndarray)}
  assert shapes == {"bbox": (4,), "bbox_score": (), "keypoints": (17, 2),
                    "keypoints_visible": (17,), "area": ()}
  assert all(instance[key].dtype == np.float32 for key in shapes)
  assert {type(instance[key]) for key in ("image_id", "instance_id", "category_id")} == {int}
  assert isinstance(instance["image_path"], str) and instance["bbox_score"] == 1.0


def test_detection_file_gives_its_boxes():
  instances = sources.load_coco_detections(str(COCO_JSON), str(COCO_DETS), str(DATA / "coco"))
  dets = _raw(COCO_DETS)
  assert len(instances) == len(dets) == 118
  for index, (instance, det) in enumerate(zip(instances, dets)):
    np.testing.assert_array_equal(instance["bbox"], np.float32(det["bbox"]))
    assert instance["bbox_score"] == np.float32(det["score"])
    assert instance["image_id"] == det["image_id"] and instance["instance_id"] == index
    assert not instance["keypoints"].any() and instance["keypoints"].shape == (17, 2)


def test_detection_score_threshold():
  dets = _raw(COCO_DETS)
  kept = sum(det["score"] >= 0.5 for det in dets)
  assert 0 < kept < len(dets)
  instances = sources.load_coco_detections(str(COCO_JSON), str(COCO_DETS), str(DATA / "coco"),
                                           score_threshold=0.5)
  assert len(instances) == kept
  assert instances.filtered == {"below_score_threshold": len(dets) - kept}
  assert all(instance["bbox_score"] >= 0.5 for instance in instances)


def test_mpii_follows_mmpose_center_and_scale():
  entries = _raw(MPII_JSON)
  instances = sources.load_mpii_instances(str(MPII_JSON), str(DATA / "mpii"))
  assert len(instances) == len(entries) == 5
  for index, (instance, entry) in enumerate(zip(instances, entries)):
    side = entry["scale"] * 200
    center_x = entry["center"][0] - 1
    center_y = entry["center"][1] + 15 * entry["scale"] - 1
    np.testing.assert_allclose(
        instance["bbox"], [center_x - side / 2, center_y - side / 2, side, side], rtol=1e-5)
    np.testing.assert_array_equal(instance["keypoints"], np.float32(entry["joints"]))
    np.testing.assert_array_equal(instance["keypoints_visible"],
                                  np.array(entry["joints_vis"]) > 0)
    assert instance["instance_id"] == index
    assert instance["image_id"] == int(entry["image"].split(".")[0])


@pytest.mark.parametrize("path", ["mpii/005808361.jpg", "coco/000000000785.jpg",
                                  "dlc-openfield/labeled-data/m4s1/img0000.png"])
def test_read_image_size_matches_decoding(path):
  image = cv2.imread(str(DATA / path))
  assert sources.read_image_size(str(DATA / path)) == (image.shape[1], image.shape[0])


def test_openfield_split_is_contiguous_and_disjoint():
  instances = sources.load_coco_instances(str(OPENFIELD_JSON), str(DATA / "dlc-openfield"))
  train, held_out = sources.split_contiguous_frames(instances)
  train_frames = sorted(i["image_path"] for i in train)
  held_frames = sorted(i["image_path"] for i in held_out)
  assert (len(train_frames), len(held_frames)) == (92, 24)           # floor(0.8 x 116)
  assert not set(train_frames) & set(held_frames)
  assert train_frames + held_frames == sorted(i["image_path"] for i in instances)
  assert max(train_frames) < min(held_frames)
  assert pathlib.Path(held_frames[0]).name == "img0092.png"
  with pytest.raises(ValueError, match="train_fraction"):
    sources.split_contiguous_frames(instances, 1.0)


# ---------------------------------------------------------------------------------------
# Small files written to tmp_path.

TOY_K = 3


def _toy_coco():
  """Two images (one on disk as 100x80 PNG, one too) and two good annotations."""
  return {
      "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80},
                 {"id": 2, "file_name": "b.png", "width": 100, "height": 80}],
      "annotations": [
          {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 400.0,
           "bbox": [10, 10, 20, 20], "keypoints": [12, 12, 2, 20, 20, 1, 0, 0, 0],
           "num_keypoints": 2},
          {"id": 11, "image_id": 2, "category_id": 1, "iscrowd": 0, "area": 600.0,
           "bbox": [50, 40, 30, 20], "keypoints": [55, 45, 2, 60, 50, 2, 70, 55, 2],
           "num_keypoints": 3}],
      "categories": [{"id": 1, "name": "toy", "keypoints": ["a", "b", "c"],
                      "skeleton": []}],
  }


@pytest.fixture
def toy_dir(tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  for name in ("a.png", "b.png"):
    cv2.imwrite(str(images / name), np.zeros((80, 100, 3), np.uint8))
  return tmp_path


def _write(directory, data, name="ann.json"):
  path = directory / name
  path.write_text(data if isinstance(data, str) else json.dumps(data))
  return str(path)


def _load_toy(toy_dir, data, **kwargs):
  return sources.load_coco_instances(_write(toy_dir, data), str(toy_dir / "images"), **kwargs)


def test_toy_file_loads(toy_dir):
  instances = _load_toy(toy_dir, _toy_coco())
  assert [i["instance_id"] for i in instances] == [10, 11]
  np.testing.assert_array_equal(instances[0]["keypoints_visible"], [1, 1, 0])


def _edit_annotation(field, value, index=0):
  def edit(data):
    data["annotations"][index][field] = value
  return edit


def _set_file_name(name):
  def edit(data):
    data["images"][0]["file_name"] = name
  return edit


def _remove_image_file(toy_dir):
  (toy_dir / "images/a.png").unlink()


# (name, edit of the toy json, the reason counted, words of the error). Each breaks
# annotation 10 only.
BAD_COCO = [
    ("wrong keypoint count", _edit_annotation("keypoints", [12, 12, 2, 20, 20, 1]),
     "wrong_keypoint_count", "6 keypoint values, expected 3 x 3"),
    ("zero-area box", _edit_annotation("bbox", [10, 10, 0, 20]), "empty_box", "no area"),
    ("keypoints far off", _edit_annotation("keypoints", [12, 12, 2, 900, 20, 2, 0, 0, 0]),
     "keypoints_off_image", "far off the 100x80 image"),
    ("non-numeric keypoints", _edit_annotation("keypoints", [12, "x", 2, 20, 20, 1, 0, 0, 0]),
     "malformed_annotation", "finite numbers"),
    ("missing bbox", _edit_annotation("bbox", None), "malformed_annotation", "'bbox'"),
    ("unknown image", _edit_annotation("image_id", 99), "unknown_image", "image_id 99"),
    ("path traversal", _set_file_name("../../etc/passwd"), "path_outside_image_root",
     "resolves outside"),
    ("absolute path", _set_file_name("/etc/passwd"), "path_outside_image_root",
     "resolves outside"),
    ("visibility flag 3", _edit_annotation("keypoints", [12, 12, 2, 20, 20, 3, 0, 0, 0]),
     "bad_visibility", "field 'keypoints': visibility flags [3.0] of keypoints [1]"),
    ("negative visibility flag", _edit_annotation("keypoints", [12, 12, -1, 20, 20, 2,
                                                                0, 0, 0]),
     "bad_visibility", "not 0, 1 or 2"),
    ("undeclared category", _edit_annotation("category_id", 7), "unknown_category",
     "field 'category_id': 7 is not declared in 'categories' (ids [1])"),
]


@pytest.mark.parametrize("name, edit, reason, words", BAD_COCO, ids=[c[0] for c in BAD_COCO])
def test_bad_coco_annotation_errors_or_is_skipped(toy_dir, name, edit, reason, words):
  data = _toy_coco()
  edit(data)
  with pytest.raises(sources.AnnotationError) as error:
    _load_toy(toy_dir, data)
  message = str(error.value)
  assert str(toy_dir / "ann.json") in message and "annotation id 10" in message
  assert words in message
  instances = _load_toy(toy_dir, data, on_bad="skip")
  assert [i["instance_id"] for i in instances] == [11]
  assert instances.skipped == {reason: 1}


def test_duplicate_annotation_id_errors_or_is_skipped(toy_dir):
  """pycocotools keys annotations by id: a second annotation 10 would silently vanish."""
  data = _toy_coco()
  data["annotations"][1]["id"] = 10
  with pytest.raises(sources.AnnotationError) as error:
    _load_toy(toy_dir, data)
  message = str(error.value)
  assert str(toy_dir / "ann.json") in message
  assert "annotation id 10 (annotations[1])" in message
  assert "field 'id': 10 is also the id of annotations[0]" in message
  instances = _load_toy(toy_dir, data, on_bad="skip")
  assert [i["image_id"] for i in instances] == [1]
  assert instances.skipped == {"duplicate_annotation_id": 1}


def test_symlink_leaving_the_image_root_errors_or_is_skipped(toy_dir):
  outside = toy_dir / "outside.png"
  cv2.imwrite(str(outside), np.zeros((80, 100, 3), np.uint8))
  (toy_dir / "images/link.png").symlink_to(outside)
  (toy_dir / "images/inner.png").symlink_to(toy_dir / "images/b.png")   # stays inside
  data = _toy_coco()
  data["images"][0]["file_name"] = "link.png"
  data["images"][1]["file_name"] = "inner.png"
  with pytest.raises(sources.AnnotationError) as error:
    _load_toy(toy_dir, data)
  message = str(error.value)
  assert str(toy_dir / "ann.json") in message and "annotation id 10" in message
  assert "field 'file_name': 'link.png' resolves outside" in message
  instances = _load_toy(toy_dir, data, on_bad="skip")
  assert [i["instance_id"] for i in instances] == [11]
  assert instances.skipped == {"path_outside_image_root": 1}


def test_image_root_behind_a_symlink_is_fine(toy_dir):
  (toy_dir / "linked_images").symlink_to(toy_dir / "images")
  ann_file = _write(toy_dir, _toy_coco())
  instances = sources.load_coco_instances(ann_file, str(toy_dir / "linked_images"))
  assert len(instances) == 2


def test_missing_image_file(toy_dir):
  _remove_image_file(toy_dir)
  with pytest.raises(sources.AnnotationError, match="annotation id 10.*image file not found"):
    _load_toy(toy_dir, _toy_coco())
  instances = _load_toy(toy_dir, _toy_coco(), on_bad="skip")
  assert instances.skipped == {"missing_image": 1} and len(instances) == 1
  assert len(_load_toy(toy_dir, _toy_coco(), check_image_files=False)) == 2


# (edit, the mmpose filter that leaves annotation 10 out)
FILTERS = [
    (_edit_annotation("iscrowd", 1), "crowd"),
    (_edit_annotation("keypoints", [0] * 9), "no_keypoints"),
    (_edit_annotation("num_keypoints", 0), "no_keypoints"),
    (_edit_annotation("bbox", [120, 10, 20, 20]), "box_outside_image"),   # x >= W - 1
]


@pytest.mark.parametrize("edit, reason", FILTERS)
def test_mmpose_filters_are_counted_not_errors(toy_dir, edit, reason):
  data = _toy_coco()
  edit(data)
  instances = _load_toy(toy_dir, data)
  assert [i["instance_id"] for i in instances] == [11]
  assert instances.filtered == {reason: 1} and not instances.skipped


def test_box_is_clipped_like_mmpose(toy_dir):
  data = _toy_coco()
  data["annotations"][1]["bbox"] = [-5, 40, 200, 100]
  instances = _load_toy(toy_dir, data)
  np.testing.assert_allclose(instances[1]["bbox"], [0, 40, 99, 39])


def test_missing_files_and_folders(toy_dir):
  with pytest.raises(FileNotFoundError, match="annotation file not found: .*nope.json"):
    sources.load_coco_instances(str(toy_dir / "nope.json"), str(toy_dir / "images"))
  ann_file = _write(toy_dir, _toy_coco())
  with pytest.raises(FileNotFoundError, match="image folder not found: .*no_images"):
    sources.load_coco_instances(ann_file, str(toy_dir / "no_images"))
  with pytest.raises(FileNotFoundError, match="annotation file not found"):
    sources.load_mpii_instances(str(toy_dir / "nope.json"), str(toy_dir / "images"))


@pytest.mark.parametrize("text, words", [
    ('{"images": [', "malformed json"),                                 # truncated
    ('{"images": [], "annotations": {}}', "field 'annotations' must be a list"),
    ("[]", "not a COCO annotation file"),
])
def test_malformed_coco_files(toy_dir, text, words):
  ann_file = _write(toy_dir, text)
  with pytest.raises(sources.AnnotationError, match=words) as error:
    sources.load_coco_instances(ann_file, str(toy_dir / "images"))
  assert ann_file in str(error.value)


def test_on_bad_must_be_known(toy_dir):
  with pytest.raises(ValueError, match="on_bad"):
    _load_toy(toy_dir, _toy_coco(), on_bad="ignore")


def test_resolve_image_path():
  assert sources.resolve_image_path("/data/imgs", "a/b.jpg") == "/data/imgs/a/b.jpg"
  assert sources.resolve_image_path("/data/imgs", "a/../b.jpg") == "/data/imgs/b.jpg"
  for name in ("../b.jpg", "a/../../b.jpg", "/etc/passwd", "", ".", None):
    assert sources.resolve_image_path("/data/imgs", name) is None, name


# ---------------------------------------------------------------------------------------
# Detection files.

GOOD_DET = {"image_id": 2, "bbox": [50, 40, 30, 20], "score": 0.9, "category_id": 1}

# (bad detection placed at index 1, reason, words)
BAD_DETS = [
    ({**GOOD_DET, "image_id": 99}, "unknown_image", "image_id 99 is not an image"),
    ({**GOOD_DET, "bbox": [50, 40, 30]}, "malformed_detection", "bbox"),
    ({**GOOD_DET, "score": None}, "malformed_detection", "score"),
    ({**GOOD_DET, "bbox": [50, 40, 30, 0]}, "empty_box", "no area"),
]


@pytest.mark.parametrize("det, reason, words", BAD_DETS)
def test_bad_detection_errors_or_is_skipped(toy_dir, det, reason, words):
  ann_file = _write(toy_dir, _toy_coco())
  det_file = _write(toy_dir, [GOOD_DET, det, GOOD_DET], "dets.json")
  with pytest.raises(sources.AnnotationError, match=words) as error:
    sources.load_coco_detections(ann_file, det_file, str(toy_dir / "images"))
  assert det_file in str(error.value) and "detection #1" in str(error.value)
  instances = sources.load_coco_detections(ann_file, det_file, str(toy_dir / "images"),
                                           on_bad="skip")
  assert [i["instance_id"] for i in instances] == [0, 1]
  assert instances.skipped == {reason: 1}


def test_detection_other_categories_are_filtered(toy_dir):
  ann_file = _write(toy_dir, _toy_coco())
  det_file = _write(toy_dir, [GOOD_DET, {**GOOD_DET, "category_id": 2}], "dets.json")
  instances = sources.load_coco_detections(ann_file, det_file, str(toy_dir / "images"))
  assert len(instances) == 1 and instances.filtered == {"not_person": 1}
  assert instances[0]["keypoints"].shape == (TOY_K, 2)


def test_detection_file_must_be_a_list_or_a_coco_dict(toy_dir):
  ann_file = _write(toy_dir, _toy_coco())
  det_file = _write(toy_dir, {"image_id": 1}, "dets.json")
  with pytest.raises(sources.AnnotationError, match="must hold a json list") as error:
    sources.load_coco_detections(ann_file, det_file, str(toy_dir / "images"))
  assert det_file in str(error.value)
  det_file = _write(toy_dir, {"annotations": [GOOD_DET]}, "dets.json")
  (instance,) = sources.load_coco_detections(ann_file, det_file, str(toy_dir / "images"))
  np.testing.assert_array_equal(instance["bbox"], np.float32(GOOD_DET["bbox"]))


@pytest.mark.parametrize("field", ["image_id", "score", "category_id"])
def test_a_detection_without_a_required_field_is_named(toy_dir, field):
  """Evaluation needs every detection's image, score and category (read_boxes_file's
  other users default them)."""
  ann_file = _write(toy_dir, _toy_coco())
  det = {key: value for key, value in GOOD_DET.items() if key != field}
  if field == "image_id":
    det["file_name"] = "a.jpg"
  det_file = _write(toy_dir, [GOOD_DET, det], "dets.json")
  with pytest.raises(sources.AnnotationError, match=f"detection #1.*needs a field '{field}'"):
    sources.load_coco_detections(ann_file, det_file, str(toy_dir / "images"))
  instances = sources.load_coco_detections(ann_file, det_file, str(toy_dir / "images"),
                                           on_bad="skip")
  assert len(instances) == 1 and instances.skipped == {"malformed_detection": 1}


# ---------------------------------------------------------------------------------------
# MPII files.


def _toy_mpii():
  joints = [[20.0 + k, 30.0 + k] for k in range(16)]
  entry = {"image": "a.png", "center": [40.0, 40.0], "scale": 0.3, "joints": joints,
           "joints_vis": [1] * 15 + [0]}
  return [entry, copy.deepcopy({**entry, "image": "b.png"})]


def _edit_entry(field, value):
  def edit(entries):
    entries[0][field] = value
  return edit


BAD_MPII = [
    (_edit_entry("joints", [[1.0, 1.0]] * 14), "wrong_keypoint_count", "14 joints"),
    (_edit_entry("joints_vis", [1] * 17), "wrong_keypoint_count", "17 joints_vis"),
    (_edit_entry("scale", 0), "empty_box", "no area"),
    (_edit_entry("center", [40.0]), "malformed_annotation", "center"),
    (_edit_entry("joints", [[500.0, 30.0]] + [[20.0, 30.0]] * 15), "keypoints_off_image",
     "far off the 100x80 image"),
    (_edit_entry("image", "../secret.png"), "path_outside_image_root", "resolves outside"),
    (_edit_entry("image", "missing.png"), "missing_image", "not found"),
    (_edit_entry("headbox", [10.0, 10.0, 20.0]), "malformed_annotation", "headbox"),
]


@pytest.mark.parametrize("edit, reason, words", BAD_MPII)
def test_bad_mpii_entry_errors_or_is_skipped(toy_dir, edit, reason, words):
  entries = _toy_mpii()
  edit(entries)
  ann_file = _write(toy_dir, entries, "mpii.json")
  with pytest.raises(sources.AnnotationError, match=words) as error:
    sources.load_mpii_instances(ann_file, str(toy_dir / "images"))
  assert ann_file in str(error.value) and "entry #0" in str(error.value)
  instances = sources.load_mpii_instances(ann_file, str(toy_dir / "images"), on_bad="skip")
  assert [i["instance_id"] for i in instances] == [1]
  assert instances.skipped == {reason: 1}


def test_mpii_invisible_joint_may_lie_anywhere(toy_dir):
  entries = _toy_mpii()
  entries[0]["joints"][15] = [-1.0, -1.0]             # joints_vis[15] == 0
  entries[0]["joints"][14] = [130.0, 100.0]           # outside, but not far off
  instances = sources.load_mpii_instances(_write(toy_dir, entries, "mpii.json"),
                                          str(toy_dir / "images"))
  assert len(instances) == 2 and instances[0]["keypoints_visible"][15] == 0


# ---------------------------------------------------------------------------------------
# MPII head sizes (PCKh): 0.6 x head-box diagonal, as mmpose's MpiiDataset.


def _load_toy_mpii(toy_dir, entries, **kwargs):
  return sources.load_mpii_instances(_write(toy_dir, entries, "mpii.json"),
                                     str(toy_dir / "images"), **kwargs)


def _write_headboxes(toy_dir, boxes):
  """boxes (N, 2, 2) [corner, (x, y)] -> the official layout headboxes_src (2, 2, N)."""
  path = toy_dir / "mpii_gt_val.mat"
  scipy.io.savemat(str(path), {"headboxes_src": np.transpose(boxes, (1, 2, 0))})
  return str(path)


def test_mpii_headbox_field_gives_head_size(toy_dir):
  entries = _toy_mpii()
  entries[0]["headbox"] = [10.0, 20.0, 13.0, 24.0]            # diagonal 5
  instances = _load_toy_mpii(toy_dir, entries)
  assert instances[0]["head_size"] == pytest.approx(0.6 * 5)
  assert np.isnan(instances[1]["head_size"])                  # no head box: NaN


def test_mpii_without_head_boxes_has_nan_head_sizes():
  instances = sources.load_mpii_instances(str(MPII_JSON), str(DATA / "mpii"))
  assert all(np.isnan(instance["head_size"]) for instance in instances)


def test_mpii_headbox_file_is_indexed_by_entry(toy_dir):
  # Entry 0: corners (1, 2), (7, 10): diagonal 10; entry 1: (0, 0), (5, 12): 13. Every
  # other reading of the (2, 2, N) array gives other sizes.
  boxes = np.array([[[1.0, 2.0], [7.0, 10.0]], [[0.0, 0.0], [5.0, 12.0]]])   # (N, 2, 2)
  headbox_file = _write_headboxes(toy_dir, boxes)
  entries = _toy_mpii()
  entries[0]["headbox"] = [0.0, 0.0, 1.0, 1.0]                # the file takes precedence
  instances = _load_toy_mpii(toy_dir, entries, headbox_file=headbox_file)
  assert [i["head_size"] for i in instances] == pytest.approx([6.0, 7.8])


def test_mpii_headbox_file_follows_entries_when_one_is_skipped(toy_dir):
  boxes = np.array([[[1.0, 2.0], [7.0, 10.0]], [[0.0, 0.0], [5.0, 12.0]]])
  entries = _toy_mpii()
  entries[0]["scale"] = 0                                     # bad: skipped
  instances = _load_toy_mpii(toy_dir, entries, on_bad="skip",
                             headbox_file=_write_headboxes(toy_dir, boxes))
  assert [(i["instance_id"], i["head_size"]) for i in instances] == [(1, pytest.approx(7.8))]


@pytest.mark.parametrize("content, words", [
    ({"headboxes_src": np.zeros((2, 2, 3))}, "3 head boxes for 2 annotation entries"),
    ({"headboxes_src": np.zeros((3, 2, 2))}, "expected (2, 2, N)"),
    ({"headboxes_src": np.zeros((2, 2))}, "1 head boxes for 2 annotation entries"),
    ({"jnt_missing": np.zeros((16, 2))}, "headboxes_src"),
])
def test_bad_headbox_file_errors_naming_it(toy_dir, content, words):
  path = toy_dir / "heads.mat"
  scipy.io.savemat(str(path), content)
  with pytest.raises(sources.AnnotationError) as error:
    _load_toy_mpii(toy_dir, _toy_mpii(), headbox_file=str(path))
  assert str(path) in str(error.value) and words in str(error.value)


def test_headbox_file_must_exist(toy_dir):
  with pytest.raises(FileNotFoundError, match="head-box file not found: .*nope.mat"):
    _load_toy_mpii(toy_dir, _toy_mpii(), headbox_file=str(toy_dir / "nope.mat"))
