"""mamkpd_jax.inference.detectors: YOLOX decoding, letterbox and NMS on a tiny ONNX graph with
YOLOX's output layout (computed here by hand), the static-background detector on the
bundled open-field frames (every labelled keypoint in its padded box), box files,
callables, and clear errors."""

import json
import pathlib
import sys
import time

import numpy as np
import pytest

from mamkpd_jax.data_pipelines import sources
from mamkpd_jax.inference import detectors, video

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # pylint: disable=wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[1]
OPENFIELD = REPO / "data/samples/dlc-openfield"
FRAMES = OPENFIELD / "labeled-data/m4s1"
OPENFIELD_COCO = OPENFIELD / "openfield_coco.json"
COCO_DETS = REPO / "data/samples/coco/test_coco_det_AP_H_56.json"   # 118 person detections
INPUT = 64                                    # the tiny graph's input: (1, 3, 64, 64)
ANCHORS = sum((INPUT // s) ** 2 for s in detectors.YOLOX_STRIDES)      # 64 + 16 + 4
C = len(detectors.COCO_CLASSES)
DOG = detectors.COCO_CLASSES.index("dog")


def yolox_raw():
  """(A, 85) raw output and the detections it must give (score >= 0.3, person).

  Anchor indices: stride 8 cells first (row-major, 8 x 8), then stride 16 (4 x 4),
  then stride 32 (2 x 2)."""
  raw = np.zeros((ANCHORS, 5 + C), np.float32)

  def anchor(index, dx, dy, w, h, objectness, cls, cls_score):
    raw[index, :5] = dx, dy, np.log(w), np.log(h), objectness
    raw[index, 5 + cls] = cls_score

  # stride 8, cell (x=2, y=3): center (2.5, 3.5) * 8 = (20, 28), size (2, 3) * 8 = (16, 24)
  anchor(3 * 8 + 2, 0.5, 0.5, 2, 3, 0.9, 0, 0.8)          # person 0.72: kept
  anchor(3 * 8 + 3, -0.4, 0.5, 2, 3, 0.75, 0, 0.8)        # person 0.60, 0.8 px right:
                                                          # IoU 0.9 with the first: dropped
  anchor(3 * 8 + 4, -1.5, 0.5, 2, 3, 0.7, DOG, 1.0)       # dog 0.70 on the same box
  anchor(5 * 8 + 5, 0.5, 0.5, 1, 1, 0.2, 0, 0.5)          # person 0.10: below threshold
  # stride 32, cell (1, 0) = anchor 64 + 16 + 1: center (48, 16), size 0.5 * 32 = 16;
  # objectness from the graph: mean(letterboxed input) / 357 (module test below)
  anchor(64 + 16 + 1, 0.5, 0.5, 0.5, 0.5, 0.0, 0, 1.0)
  return raw


def write_yolox_onnx(path, raw, output_channels=5 + C):
  """A graph (1, 3, 64, 64) -> raw[None] + mean(input) / 357 at anchor 81's objectness."""
  weight = np.zeros((1, ANCHORS, output_channels), np.float32)
  weight[0, 64 + 16 + 1, 4] = 1 / 357
  nodes = [
      helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
      helper.make_node("Mul", ["mean", "weight"], ["scaled"]),
      helper.make_node("Add", ["scaled", "raw"], ["output"]),
  ]
  graph = helper.make_graph(
      nodes, "yolox_layout",
      [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, INPUT, INPUT])],
      [helper.make_tensor_value_info("output", TensorProto.FLOAT,
                                     [1, ANCHORS, output_channels])],
      initializer=[onnx.numpy_helper.from_array(raw[None, :, :output_channels], "raw"),
                   onnx.numpy_helper.from_array(weight, "weight")])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
  model.ir_version = 8
  onnx.checker.check_model(model)
  onnx.save(model, str(path))
  return str(path)


@pytest.fixture(name="onnx_path")
def fixture_onnx_path(tmp_path):
  return write_yolox_onnx(tmp_path / "yolox_layout.onnx", yolox_raw())


def test_letterbox_by_hand():
  image = np.zeros((96, 128, 3), np.uint8)
  image[..., 0], image[..., 2] = 10, 200                  # R, B
  inputs, ratio = detectors.letterbox(image, (INPUT, INPUT))
  assert ratio == 0.5 and inputs.shape == (1, 3, INPUT, INPUT) and inputs.dtype == np.float32
  # BGR planes, the image in the top 48 rows, 114 below, values not normalised
  np.testing.assert_array_equal(inputs[0, 0, :48], 200)
  np.testing.assert_array_equal(inputs[0, 2, :48], 10)
  np.testing.assert_array_equal(inputs[0, :, 48:], 114)


def test_grids_follow_yolox_order():
  grids, strides = detectors.yolox_grids((INPUT, INPUT))
  assert grids.shape == (ANCHORS, 2) and strides.shape == (ANCHORS, 1)
  np.testing.assert_array_equal(grids[[0, 1, 8, 64, 81]], [[0, 0], [1, 0], [0, 1], [0, 0],
                                                           [1, 0]])
  np.testing.assert_array_equal(strides[[63, 64, 79, 80], 0], [8, 16, 16, 32])


def test_yolox_onnx_decodes_letterboxes_and_suppresses(onnx_path):
  detector = detectors.YoloxOnnxDetector(onnx_path, classes="person", score_threshold=0.3)
  assert detector.input_size == (INPUT, INPUT)
  image = np.full((96, 128, 3), 200, np.uint8)            # ratio 0.5: image px = input px * 2
  found = detector(image)
  # mean of the letterboxed input: (200 * 48 + 114 * 16) / 64 = 178.5 -> objectness 0.5
  want_boxes = np.array([[20 - 8, 28 - 12, 16, 24], [48 - 8, 16 - 8, 16, 16]]) * 2.0
  np.testing.assert_allclose(found.boxes, want_boxes, rtol=1e-5)
  np.testing.assert_allclose(found.scores, [0.72, 0.5], rtol=1e-5)
  np.testing.assert_array_equal(found.class_ids, [0, 0])
  both = detectors.YoloxOnnxDetector(onnx_path, classes=("person", "dog"))(image)
  np.testing.assert_allclose(both.scores, [0.72, 0.7, 0.5], rtol=1e-5)   # class-aware NMS
  np.testing.assert_array_equal(both.class_ids, [0, DOG, 0])
  animals = detectors.YoloxOnnxDetector(onnx_path, classes="animal")(image)
  np.testing.assert_array_equal(animals.class_ids, [DOG])
  np.testing.assert_allclose(animals.boxes, want_boxes[:1], rtol=1e-5)


def test_decoded_exports_are_taken_as_they_are():
  raw = np.zeros((3, 5 + C), np.float32)
  raw[:, :4] = [[50, 50, 20, 10], [51, 50, 20, 10], [10, 10, 4, 4]]   # cx, cy, w, h
  raw[:, 4], raw[:, 5] = [0.9, 0.8, 0.6], 1.0
  detector = detectors.YoloxOnnxDetector.__new__(detectors.YoloxOnnxDetector)
  detector.decoded, detector.class_ids = True, np.array([0])
  detector.score_threshold, detector.nms_iou = 0.3, 0.45
  found = detector.postprocess(raw, ratio=0.25)
  np.testing.assert_allclose(found.boxes, [[160, 180, 80, 40], [32, 32, 16, 16]])
  np.testing.assert_allclose(found.scores, [0.9, 0.6])


def test_nms_and_iou_by_hand():
  boxes = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [1, 1, 10, 10], [100, 100, 5, 5]])
  iou = detectors.box_iou(boxes[:1], boxes)
  np.testing.assert_allclose(iou[0], [1, 50 / 150, 81 / 119, 0])
  keep = detectors.nms(boxes, [0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0], iou_threshold=0.5)
  np.testing.assert_array_equal(keep, [0, 1, 3])          # box 2: IoU 0.68 with box 0
  keep = detectors.nms(boxes, [0.9, 0.8, 0.7, 0.6], [0, 0, 1, 0], iou_threshold=0.5)
  np.testing.assert_array_equal(keep, [0, 1, 2, 3])       # box 2 is another class


def test_yolox_bad_inputs(tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match="nothing.onnx"):
    detectors.YoloxOnnxDetector(str(tmp_path / "nothing.onnx"))
  wrong = write_yolox_onnx(tmp_path / "wrong.onnx", yolox_raw(), output_channels=6)
  with pytest.raises(ValueError, match=r"wrong.onnx: output shape .* not YOLOX's"):
    detectors.YoloxOnnxDetector(wrong)
  with pytest.raises(ValueError, match="unknown class 'unicorn'"):
    detectors.class_ids_of(("person", "unicorn"))
  monkeypatch.setitem(sys.modules, "onnxruntime", None)      # as if not installed
  with pytest.raises(ImportError, match=r"mamkpd-jax\[onnx\]"):
    detectors.YoloxOnnxDetector(write_yolox_onnx(tmp_path / "ok.onnx", yolox_raw()))


# ------------------------------------------------------------------ background detector


def labelled_keypoints():
  """{file name: (K, 2) labelled keypoints} of the bundled open-field frames."""
  data = json.loads((OPENFIELD / "openfield_coco.json").read_text())
  names = {image["id"]: pathlib.Path(image["file_name"]).name for image in data["images"]}
  return {names[a["image_id"]]: np.array(a["keypoints"], np.float32).reshape(-1, 3)[:, :2]
          for a in data["annotations"]}


def padded(box, factor=1.25):
  x, y, w, h = box
  return x - (factor - 1) * w / 2, y - (factor - 1) * h / 2, w * factor, h * factor


def test_background_detector_boxes_every_labelled_mouse():
  detector = detectors.StaticBackgroundDetector.from_video(str(FRAMES), num_frames=50)
  labels = labelled_keypoints()
  contained, seconds = 0, 0.0
  for name, keypoints in sorted(labels.items()):
    image = video.load_image(FRAMES / name)
    start = time.perf_counter()
    found = detector(image)
    seconds += time.perf_counter() - start
    assert len(found.boxes) == 1, name
    x, y, w, h = padded(found.boxes[0])
    inside = (keypoints[:, 0] >= x) & (keypoints[:, 0] <= x + w) & \
        (keypoints[:, 1] >= y) & (keypoints[:, 1] <= y + h)
    contained += bool(inside.all())
  print(f"background detector: {contained}/{len(labels)} frames contain every keypoint, "
        f"{1000 * seconds / len(labels):.1f} ms/frame")
  assert contained == len(labels) == 116


def test_background_detector_finds_nothing_in_the_background():
  frames = [video.load_image(FRAMES / f"img{i:04d}.png") for i in range(0, 116, 10)]
  detector = detectors.StaticBackgroundDetector(frames)
  empty = detector.background[..., None].repeat(3, -1)                  # (H, W, 3)
  assert len(detector(empty).boxes) == 0
  noise = np.random.default_rng(0).normal(0, 3, empty.shape)
  assert len(detector(np.clip(empty + noise, 0, 255).astype(np.uint8)).boxes) == 0
  with pytest.raises(ValueError, match="at least 3 frames"):
    detectors.StaticBackgroundDetector(frames[:2])
  with pytest.raises(ValueError, match="shape"):
    detector(np.zeros((10, 10, 3), np.uint8))
  with pytest.raises(FileNotFoundError, match="missing.mp4"):
    detectors.StaticBackgroundDetector.from_video("missing.mp4")


# ------------------------------------------------------------------ files, callables, specs


def test_box_file_detector_by_name_id_and_frame(tmp_path):
  boxes = [{"file_name": "a/img0100.png", "bbox": [1, 2, 3, 4], "score": 0.5},
           {"image_id": 7, "bbox": [5, 6, 7, 8]}]
  path = tmp_path / "boxes.json"
  path.write_text(json.dumps(boxes))
  detector = detectors.BoxFileDetector(str(path))
  found = detectors.detect(detector, None, key="img0100.png")
  np.testing.assert_array_equal(found.boxes, [[1, 2, 3, 4]])
  np.testing.assert_array_equal(found.scores, [0.5])
  np.testing.assert_array_equal(detectors.detect(detector, None, key=7).boxes, [[5, 6, 7, 8]])
  np.testing.assert_array_equal(detectors.detect(detector, None, key=(7, "frame000007")).boxes,
                                [[5, 6, 7, 8]])
  assert len(detectors.detect(detector, None, key=8).boxes) == 0
  with pytest.raises(ValueError, match="needs the image's id"):
    detectors.detect(detector, None)
  with pytest.raises(FileNotFoundError, match="boxes file not found"):
    detectors.make_detector(f"boxes:{tmp_path / 'none.json'}")
  path.write_text(json.dumps([{"bbox": [1, 2, 3, 4]}]))
  with pytest.raises(ValueError, match="detection #0.*needs a field 'image_id' or "
                     "'file_name'"):
    detectors.BoxFileDetector(str(path))


# (entries, words the error names) of boxes files that cannot be read
BAD_BOXES = [
    ([{"image_id": 1, "bbox": [1, 2, 3]}], r"detection #0 .*field 'bbox'"),
    ([{"image_id": 1, "bbox": [1, 2, 3, "4"]}], r"field 'bbox'"),
    ([{"image_id": 1, "bbox": [1, 2, 3, float("inf")]}], r"field 'bbox'"),
    ([{"image_id": 1, "bbox": [1, 2, 3, 4]}, {"image_id": 2, "bbox": [1, 2, 3, 4],
                                               "score": "high"}],
     r"detection #1 \(image id 2\).*field 'score'"),
    ([{"image_id": True, "bbox": [1, 2, 3, 4]}], r"field 'image_id'"),
    ([{"image_id": "a7", "bbox": [1, 2, 3, 4]}], r"field 'image_id'"),
    ([{"file_name": 7, "bbox": [1, 2, 3, 4]}], r"field 'file_name'"),
    ([{"image_id": 1, "bbox": [1, 2, 3, 4], "category_id": "person"}], r"field 'category_id'"),
    ([[1, 2, 3, 4]], r"detection #0 .*must be a json object"),
    ({"image_id": 1, "bbox": [1, 2, 3, 4]}, r"a dict without an 'annotations' list"),
    ("boxes", r"json list of detections"),
]


@pytest.mark.parametrize("content, words", BAD_BOXES)
def test_bad_boxes_files_name_the_file_and_the_field(tmp_path, content, words):
  path = tmp_path / "boxes.json"
  path.write_text(json.dumps(content, allow_nan=True))
  for read in (sources.read_boxes_file, detectors.load_boxes, detectors.BoxFileDetector):
    with pytest.raises(sources.AnnotationError, match=words) as error:
      read(str(path))
    assert str(path) in str(error.value)


def test_malformed_json_and_missing_boxes_files_are_named(tmp_path):
  path = tmp_path / "boxes.json"
  path.write_text('[{"image_id": 1, "bbox": [1, 2, 3, 4]')
  with pytest.raises(sources.AnnotationError, match="malformed json") as error:
    detectors.load_boxes(str(path))
  assert str(path) in str(error.value)
  with pytest.raises(FileNotFoundError, match="boxes file not found.*none.json"):
    detectors.load_boxes(str(tmp_path / "none.json"))


def test_a_coco_dict_gives_its_annotations_boxes_by_file_name(tmp_path):
  """The bundled open-field labels as a boxes file: each image's boxes are its
  annotations' (looked up by file name), score 1."""
  coco = json.loads(OPENFIELD_COCO.read_text())
  boxes = detectors.load_boxes(str(OPENFIELD_COCO))
  names = {image["id"]: image["file_name"] for image in coco["images"]}
  expected = {}
  for ann in coco["annotations"]:
    expected.setdefault(pathlib.Path(names[ann["image_id"]]).name, []).append(ann["bbox"])
  assert sorted(boxes) == sorted(expected)
  for name, rows in expected.items():
    np.testing.assert_allclose(boxes[name][0], rows)
    np.testing.assert_array_equal(boxes[name][1], np.ones(len(rows)))


def test_the_three_users_of_a_boxes_file_read_the_same_boxes(tmp_path):
  """load_coco_detections (evaluation), load_boxes (mamkpd predict --boxes) and
  BoxFileDetector (mamkpd track --detector=boxes:) on one COCO detections file."""
  dets = json.loads(COCO_DETS.read_text())
  instances = sources.load_coco_detections(str(COCO_DETS.parent / "test_coco.json"),
                                           str(COCO_DETS), str(COCO_DETS.parent))
  boxes = detectors.load_boxes(str(COCO_DETS))
  detector = detectors.BoxFileDetector(str(COCO_DETS))
  for image_id in {det["image_id"] for det in dets}:
    rows = [det for det in dets if det["image_id"] == image_id]
    expected = np.float32([det["bbox"] for det in rows])
    scores = np.float32([det["score"] for det in rows])
    evaluated = [i for i in instances if i["image_id"] == image_id]
    np.testing.assert_array_equal(np.stack([i["bbox"] for i in evaluated]), expected)
    np.testing.assert_array_equal([i["bbox_score"] for i in evaluated], scores)
    np.testing.assert_array_equal(boxes[image_id][0], expected)
    np.testing.assert_array_equal(boxes[image_id][1], scores)
    found = detectors.detect(detector, None, key=image_id)
    np.testing.assert_array_equal(found.boxes, expected)
    np.testing.assert_array_equal(found.scores, scores)


@pytest.mark.parametrize("output, boxes, scores", [
    (np.array([[1, 2, 3, 4]]), [[1, 2, 3, 4]], [1.0]),                 # plain boxes
    ((np.array([[1, 2, 3, 4]]), np.array([0.3])), [[1, 2, 3, 4]], [0.3]),  # (boxes, scores)
    (detectors.Detections.of_boxes([[1, 2, 3, 4]], [0.2]), [[1, 2, 3, 4]], [0.2]),
    ([], np.zeros((0, 4)), []),                                         # nothing found
])
def test_callables(output, boxes, scores):
  found = detectors.detect(lambda image: output, np.zeros((4, 4, 3), np.uint8))
  np.testing.assert_array_equal(found.boxes, boxes)
  np.testing.assert_allclose(found.scores, scores)


def test_bad_specs_and_outputs():
  with pytest.raises(ValueError, match="must return Detections"):
    detectors.detect(lambda image: np.zeros((2, 5)), None)
  with pytest.raises(ValueError, match="2 boxes, 3 scores"):
    detectors.detect(lambda image: (np.zeros((2, 4)), np.ones(3)), None)
  with pytest.raises(ValueError, match="unknown detector 'hog'"):
    detectors.make_detector("hog")
  with pytest.raises(ValueError, match="webcam"):
    detectors.make_detector("background", source=0)
  assert detectors.make_detector("none") is None
