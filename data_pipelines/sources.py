"""Annotation sources: COCO-format and MPII files -> lists of top-down instance dicts.

Every loader returns an `InstanceList` (a list) of dicts, one person (or animal) each:

    image_path         str, inside the image folder
    image_id           int
    instance_id        int
    bbox               float32 (4,) x, y, w, h in image pixels
    bbox_score         float32 ()
    keypoints          float32 (K, 2) x, y in image pixels
    keypoints_visible  float32 (K,) 1 for a labelled keypoint, else 0
    category_id        int
    area               float32 ()
    head_size          float (MPII only) PCKh normaliser: 0.6 x head-box diagonal, or NaN

What is left out follows mmpose 1.x (`BaseCocoStyleDataset`, `MpiiDataset`) and is
counted in `InstanceList.filtered`: crowd annotations, annotations with no labelled
keypoints, boxes with w or h <= 0 after clipping to [0, W-1] x [0, H-1]; detections of
another category or below the score threshold.

Bad input is different: a missing file or folder, malformed json, a keypoint list that
is not 3K long, a visibility flag other than 0, 1, 2, a box with no area, labelled
keypoints far off the image, an image that is not in the annotation file or not on
disk, a category_id not declared in `categories`, two annotations sharing an id, a file
name that leaves the image folder (also through a symlink).
With on_bad="error" (the default) the first one raises `AnnotationError` naming the file
and the annotation; with on_bad="skip" each is logged and counted in
`InstanceList.skipped` by reason. No bad annotation ever becomes an instance.
"""

import collections
import contextlib
import copy
import dataclasses
import functools
import io
import json
import math
import os
import struct
from typing import Any, Iterable, Optional

from absl import logging
import cv2
import numpy as np
from pycocotools.coco import COCO
import scipy.io

ON_BAD_CHOICES = ("error", "skip")
# A labelled keypoint more than this fraction of the image's width (height) beyond its
# left or right (top or bottom) edge is "far off the image": a broken annotation.
FAR_OFF_MARGIN = 0.5
# MPII json: scale = person height / 200 px; centre y moves down 15 px per unit of scale.
MPII_PIXEL_STD = 200.0
MPII_CENTER_SHIFT = 15.0
# PCKh: head size = this x the head box's diagonal (mmpose's and MPII's SC_BIAS).
MPII_HEAD_SIZE_FACTOR = 0.6
# COCO keypoint visibility: 0 not labelled, 1 labelled but hidden, 2 labelled and visible.
VISIBILITY_FLAGS = (0, 1, 2)
# Detection files name people with COCO's person category.
PERSON_CATEGORY_ID = 1


class AnnotationError(ValueError):
  """An annotation or detection file that cannot be loaded as it is."""


class InstanceList(list):
  """Instance dicts, plus what was left out: `filtered` (mmpose's rules) and `skipped`
  (bad input under on_bad="skip"), each a Counter of reason -> count."""

  def __init__(self, instances: Iterable[dict] = (), filtered=None, skipped=None):
    super().__init__(instances)
    self.filtered = collections.Counter(filtered or {})
    self.skipped = collections.Counter(skipped or {})


class _BadInput:
  """Raises or counts bad input for one source file, as `on_bad` says."""

  def __init__(self, source_file: str, on_bad: str):
    if on_bad not in ON_BAD_CHOICES:
      raise ValueError(f"on_bad must be one of {ON_BAD_CHOICES}, got {on_bad!r}")
    self.source_file = source_file
    self.on_bad = on_bad
    self.skipped = collections.Counter()

  def __call__(self, reason: str, where: str, message: str):
    text = f"{self.source_file}: {where}: {message} [{reason}]"
    if self.on_bad == "error":
      raise AnnotationError(text)
    self.skipped[reason] += 1
    logging.warning("Skipping bad input: %s", text)


# ---------------------------------------------------------------------------------------
# Files, folders and images.


def load_json(path: str) -> Any:
  """The parsed json at `path`; FileNotFoundError or AnnotationError naming the file."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"annotation file not found: {path}")
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise AnnotationError(f"{path}: malformed json: {error}") from error


def _check_image_root(image_root: str) -> str:
  if not os.path.isdir(image_root):
    raise FileNotFoundError(f"image folder not found: {image_root}")
  return os.path.abspath(image_root)


def _inside(root: str, path: str) -> bool:
  return os.path.commonpath([root, path]) == root and path != root


def resolve_image_path(image_root: str, file_name: str) -> Optional[str]:
  """image_root/file_name, or None when file_name does not lead inside image_root.

  "..", absolute names and empty names are rejected; so is a name that reaches
  outside through a symlink (checked after resolving links, the root's own included).
  """
  if not isinstance(file_name, str) or not file_name or "\x00" in file_name:
    return None
  root = os.path.normpath(os.path.abspath(image_root))
  path = os.path.normpath(os.path.join(root, file_name))
  if os.path.isabs(file_name) or not _inside(root, path):
    return None
  if not _inside(os.path.realpath(root), os.path.realpath(path)):
    return None
  return path


_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(f) -> Optional[tuple[int, int]]:
  """(width, height) from a JPEG's start-of-frame header; None if it has none."""
  f.seek(2)
  while True:
    marker = f.read(2)
    if len(marker) < 2 or marker[0] != 0xFF:
      return None
    code = marker[1]
    while code == 0xFF:                               # fill bytes before a marker
      code = f.read(1)[0]
    if code == 0x01 or 0xD0 <= code <= 0xD8:          # markers without a length
      continue
    (length,) = struct.unpack(">H", f.read(2))
    if code in _JPEG_SOF_MARKERS:
      height, width = struct.unpack(">xHH", f.read(5))
      return width, height
    f.seek(length - 2, os.SEEK_CUR)


def read_image_size(path: str) -> Optional[tuple[int, int]]:
  """(width, height) of an image file from its header (PNG, JPEG), else by decoding.

  None when the file cannot be read as an image.
  """
  try:
    with open(path, "rb") as f:
      head = f.read(24)
      if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
      if head[:2] == b"\xff\xd8":
        size = _jpeg_size(f)
        if size is not None:
          return size
  except (OSError, struct.error, IndexError):
    return None
  image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
  return None if image is None else (image.shape[1], image.shape[0])


def _far_off_keypoints(keypoints, visible, width, height) -> list[int]:
  """Indices of labelled keypoints far off a width x height image (FAR_OFF_MARGIN)."""
  low = -FAR_OFF_MARGIN * np.array([width, height])           # (2,)
  high = (1 + FAR_OFF_MARGIN) * np.array([width, height])     # (2,)
  outside = np.any((keypoints < low) | (keypoints > high), axis=1) & (visible > 0)
  return np.flatnonzero(outside).tolist()


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) \
      and math.isfinite(value)


def _numbers(values, length: Optional[int] = None) -> Optional[np.ndarray]:
  """float64 array of finite numbers (of `length`), or None."""
  if not isinstance(values, (list, tuple)) or (length is not None and len(values) != length):
    return None
  if not all(_is_number(v) for v in values):
    return None
  return np.asarray(values, dtype=np.float64)


def _instance(image_path, image_id, instance_id, bbox_xywh, bbox_score, keypoints, visible,
              category_id, area) -> dict:
  return {
      "image_path": image_path,
      "image_id": int(image_id),
      "instance_id": int(instance_id),
      "bbox": np.asarray(bbox_xywh, dtype=np.float32).reshape(4),
      "bbox_score": np.array(bbox_score, dtype=np.float32),
      "keypoints": np.asarray(keypoints, dtype=np.float32).reshape(-1, 2),
      "keypoints_visible": np.asarray(visible, dtype=np.float32).reshape(-1),
      "category_id": int(category_id),
      "area": np.array(area, dtype=np.float32),
  }


# ---------------------------------------------------------------------------------------
# COCO format.


class _CocoFile:
  """A checked COCO-format annotation file: its pycocotools index and image paths."""

  def __init__(self, ann_file: str, image_root: str, bad: _BadInput,
               check_image_files: bool):
    self.ann_file = ann_file
    self.image_root = _check_image_root(image_root)
    self.bad = bad
    self.check_image_files = check_image_files
    data = load_json(ann_file)
    for field in ("images", "annotations", "categories"):
      if not isinstance(data, dict) or not isinstance(data.get(field), list):
        raise AnnotationError(f"{ann_file}: not a COCO annotation file: field {field!r} "
                              "must be a list")
    data = dict(data, images=self._good_images(data["images"]))
    data["annotations"] = self._good_annotations(data["annotations"], data["images"],
                                                 data["categories"])
    self.coco = COCO()
    self.coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):   # pycocotools prints progress
      self.coco.createIndex()
    self._paths = {}

  def _good_images(self, images):
    good = []
    for i, image in enumerate(images):
      image = image if isinstance(image, dict) else {}
      if not isinstance(image.get("id"), int) or not isinstance(image.get("file_name"), str) \
          or not all(_is_number(image.get(k)) and image[k] > 0 for k in ("width", "height")):
        self.bad("malformed_image", f"images[{i}] (id {image.get('id')!r})",
                 "needs an integer id, a file_name and width, height > 0")
        continue
      good.append(image)
    return good

  def _good_annotations(self, annotations, images, categories):
    image_ids = {image["id"] for image in images}
    category_ids = sorted({c.get("id") for c in categories if isinstance(c, dict)},
                          key=repr)
    seen_ids = {}                     # annotation id -> its index in 'annotations'
    good = []
    for i, ann in enumerate(annotations):
      ann = ann if isinstance(ann, dict) else {}
      where = f"annotation id {ann.get('id')!r} (annotations[{i}])"
      if not all(isinstance(ann.get(k), int) for k in ("id", "image_id", "category_id")):
        self.bad("malformed_annotation", where, "needs integer id, image_id and category_id")
      elif ann["id"] in seen_ids:     # pycocotools keys by id: one would vanish
        self.bad("duplicate_annotation_id", where, f"field 'id': {ann['id']} is also the id "
                 f"of annotations[{seen_ids[ann['id']]}]; annotation ids must be unique")
      elif ann["image_id"] not in image_ids:
        self.bad("unknown_image", where, f"image_id {ann['image_id']} is not a (valid) "
                 "entry of 'images'")
      elif ann["category_id"] not in category_ids:
        self.bad("unknown_category", where, f"field 'category_id': {ann['category_id']} is "
                 f"not declared in 'categories' (ids {category_ids})")
      else:
        good.append(ann)
      if isinstance(ann.get("id"), int):
        seen_ids.setdefault(ann["id"], i)
    return good

  def num_keypoints(self, category_id: int) -> int:
    names = self.coco.cats.get(category_id, {}).get("keypoints")
    if not isinstance(names, list) or not names:
      raise AnnotationError(f"{self.ann_file}: category {category_id} has no 'keypoints' "
                            "list; pass num_keypoints")
    return len(names)

  def image_path(self, image: dict, where: str) -> Optional[str]:
    """The image's checked path, or None after reporting it as bad input."""
    if image["id"] not in self._paths:
      self._paths[image["id"]] = self._check_image_path(image["file_name"])
    path, problem = self._paths[image["id"]]
    if problem is not None:
      self.bad(problem[0], where, problem[1])
      return None
    return path

  def _check_image_path(self, file_name):
    """(path, None), or (None, (reason, message)) for a bad image path."""
    path = resolve_image_path(self.image_root, file_name)
    if path is None:
      return None, ("path_outside_image_root", f"field 'file_name': {file_name!r} resolves "
                    f"outside {self.image_root} (symlinks followed)")
    if self.check_image_files and not os.path.isfile(path):
      return None, ("missing_image", f"image file not found: {path}")
    return path, None


def load_coco_category(ann_file: str, category_id: int = PERSON_CATEGORY_ID) -> dict:
  """The `categories` entry `category_id` of a COCO-format json (for metadata)."""
  data = load_json(ann_file)
  categories = data.get("categories") if isinstance(data, dict) else None
  for category in categories if isinstance(categories, list) else []:
    if isinstance(category, dict) and category.get("id") == category_id:
      return category
  raise AnnotationError(f"{ann_file}: no category with id {category_id} in 'categories'")


def keypoint_category(ann_file: str) -> tuple[dict, int]:
  """`_keypoint_category` of ann_file, read once while the file is unchanged."""
  stat = os.stat(ann_file) if os.path.isfile(ann_file) else None
  key = (os.path.abspath(ann_file), stat and (stat.st_mtime_ns, stat.st_size))
  return copy.deepcopy(_keypoint_category(*key))


@functools.lru_cache(maxsize=8)
def _keypoint_category(ann_file: str, unused_file_version) -> tuple[dict, int]:
  """(category, K) of a custom COCO-format keypoint json, whatever its category id.

  The category is the one whose "keypoints" list is non-empty (with several, they must
  list the same names, as AP-10K's species do; the first is used), else the first
  category. K is the length of that list, else of the first annotation's "keypoints"
  over 3 (a json that names no keypoints). AnnotationError naming the file otherwise.
  """
  data = load_json(ann_file)
  categories = data.get("categories") if isinstance(data, dict) else None
  categories = [c for c in categories if isinstance(c, dict)] \
      if isinstance(categories, list) else []
  if not categories:
    raise AnnotationError(f"{ann_file}: field 'categories' declares no category")
  named = [c for c in categories if isinstance(c.get("keypoints"), list) and c["keypoints"]]
  if len({json.dumps(c["keypoints"]) for c in named}) > 1:
    raise AnnotationError(
        f"{ann_file}: categories {[c.get('id') for c in named]} list different keypoints; "
        "one layout per dataset (split the json by category)")
  if named:
    return named[0], len(named[0]["keypoints"])
  annotations = data.get("annotations") or []
  lengths = [len(a["keypoints"]) for a in annotations
             if isinstance(a, dict) and isinstance(a.get("keypoints"), list)]
  if not lengths or lengths[0] % 3 or lengths[0] == 0:
    raise AnnotationError(f"{ann_file}: no category lists 'keypoints' and no annotation's "
                          "'keypoints' (3 values per keypoint) tells their number")
  return categories[0], lengths[0] // 3


def _parse_coco_annotation(ann, image, image_path_fn, num_keypoints, bad, filtered):
  """One instance dict from a COCO annotation, or None (filtered or bad input)."""
  where = f"annotation id {ann['id']} (image id {ann['image_id']})"
  if ann.get("iscrowd", 0):
    filtered["crowd"] += 1
    return None
  raw = ann.get("keypoints")
  if isinstance(raw, list) and len(raw) != 3 * num_keypoints:
    return bad("wrong_keypoint_count", where, f"{len(raw)} keypoint values, expected "
               f"3 x {num_keypoints} = {3 * num_keypoints}")
  raw = _numbers(raw, 3 * num_keypoints)
  box = _numbers(ann.get("bbox"), 4)
  if raw is None or box is None:
    return bad("malformed_annotation", where, "'keypoints' and 'bbox' must be lists of "
               "finite numbers")
  triples = raw.reshape(num_keypoints, 3)                    # (K, 3) x, y, v
  keypoints, flags = triples[:, :2], triples[:, 2]
  odd_flags = np.flatnonzero(~np.isin(flags, VISIBILITY_FLAGS)).tolist()
  if odd_flags:
    return bad("bad_visibility", where, f"field 'keypoints': visibility flags "
               f"{flags[odd_flags].tolist()} of keypoints {odd_flags} are not 0, 1 or 2")
  labelled = ann.get("num_keypoints", np.count_nonzero(keypoints.max(axis=1)))
  if raw.max() == 0 or labelled == 0:                         # mmpose: nothing labelled
    filtered["no_keypoints"] += 1
    return None
  if box[2] <= 0 or box[3] <= 0:
    return bad("empty_box", where, f"bbox {box.tolist()} has no area")
  far_off = _far_off_keypoints(keypoints, flags, image["width"], image["height"])
  if far_off:
    return bad("keypoints_off_image", where, f"labelled keypoints {far_off} lie far off the "
               f"{image['width']}x{image['height']} image: {keypoints[far_off].tolist()}")
  x1, x2 = np.clip([box[0], box[0] + box[2]], 0, image["width"] - 1)
  y1, y2 = np.clip([box[1], box[1] + box[3]], 0, image["height"] - 1)
  if x2 - x1 <= 0 or y2 - y1 <= 0:                            # mmpose: box off the image
    filtered["box_outside_image"] += 1
    return None
  image_path = image_path_fn(image, where)
  if image_path is None:
    return None
  area = ann.get("area", box[2] * box[3])
  return _instance(image_path, ann["image_id"], ann["id"], [x1, y1, x2 - x1, y2 - y1], 1.0,
                   keypoints, flags > 0, ann["category_id"], area)


def load_coco_instances(ann_file: str, image_root: str, *,
                        num_keypoints: Optional[int] = None, on_bad: str = "error",
                        check_image_files: bool = True) -> InstanceList:
  """Ground-truth instances of a COCO-format keypoint file (training, or GT-box eval).

  Images in file order, annotations in file order within an image (as mmpose).

  Args:
    ann_file: COCO-format keypoints json.
    image_root: folder that each image's `file_name` is relative to.
    num_keypoints: K; by default the length of each annotation's category keypoints.
    on_bad: "error" raises AnnotationError at the first bad input; "skip" counts it.
    check_image_files: report instances whose image file is missing as bad input.
  """
  bad = _BadInput(ann_file, on_bad)
  source = _CocoFile(ann_file, image_root, bad, check_image_files)
  instances = InstanceList()
  for image_id in source.coco.getImgIds():
    image = source.coco.imgs[image_id]
    for ann in source.coco.imgToAnns[image_id]:
      k = num_keypoints or source.num_keypoints(ann["category_id"])
      instance = _parse_coco_annotation(ann, image, source.image_path, k, bad,
                                        instances.filtered)
      if instance is not None:
        instances.append(instance)
  instances.skipped.update(bad.skipped)
  _log_summary(ann_file, instances)
  return instances


# ---------------------------------------------------------------------------------------
# Boxes files: the one reader of detection / boxes json, used by `load_coco_detections`,
# `mamkpd predict --boxes` and `detectors.BoxFileDetector`.


@dataclasses.dataclass(frozen=True)
class BoxEntry:
  """One box of a boxes file, its fields checked."""

  index: int                      # position in the file (in "annotations" for a dict)
  bbox: np.ndarray                # (4,) float64 x, y, w, h image pixels, finite
  score: Optional[float]          # None when the entry has none
  image_id: Optional[int]         # None when the entry names its image by file_name
  file_name: Optional[str]        # None when the entry names its image by image_id
  category_id: Optional[int]


def _image_id(value):
  """An int image id (a string of digits counts), else None."""
  if isinstance(value, str) and value.isdigit():
    return int(value)
  return value if isinstance(value, int) and not isinstance(value, bool) else None


def _box_entry_fields(entry, file_names):
  """(BoxEntry fields, None) of a boxes-file entry, or (None, what is wrong)."""
  if not isinstance(entry, dict):
    return None, f"must be a json object, got {type(entry).__name__}"
  box = _numbers(entry.get("bbox"), 4)
  if box is None:
    return None, f"field 'bbox' must be [x, y, w, h], 4 finite numbers; got " \
        f"{entry.get('bbox')!r}"
  if "score" in entry and not _is_number(entry["score"]):
    return None, f"field 'score' must be a finite number; got {entry['score']!r}"
  category = entry.get("category_id")
  if category is not None and _image_id(category) is None:
    return None, f"field 'category_id' must be an integer; got {category!r}"
  image_id = _image_id(entry.get("image_id"))
  if entry.get("image_id") is not None and image_id is None:
    return None, f"field 'image_id' must be an integer; got {entry['image_id']!r}"
  file_name = file_names.get(image_id) or entry.get("file_name") or None
  if file_name is not None and not isinstance(file_name, str):
    return None, f"field 'file_name' must be a string; got {file_name!r}"
  if image_id is None and file_name is None:
    return None, "needs a field 'image_id' or 'file_name' (the image the box is on)"
  score = float(entry["score"]) if "score" in entry else None
  return dict(bbox=box, score=score, image_id=image_id, file_name=file_name,
              category_id=None if category is None else int(category)), None


def _box_file_entries(data, path):
  """(entries, {image id: file name}) of a boxes file's parsed json."""
  if isinstance(data, list):
    return data, {}
  if isinstance(data, dict) and isinstance(data.get("annotations"), list):
    images = data.get("images", [])
    if not isinstance(images, list):
      raise AnnotationError(f"{path}: field 'images' must be a list of "
                            "{'id', 'file_name'}")
    return data["annotations"], {image.get("id"): image.get("file_name")
                                 for image in images if isinstance(image, dict)}
  kind = "a dict without an 'annotations' list" if isinstance(data, dict) else \
      type(data).__name__
  raise AnnotationError(f"{path}: a boxes file must hold a json list of detections "
                        "[{image_id or file_name, bbox, score?, category_id?}] or a COCO "
                        f"dict whose 'annotations' carry the boxes; got {kind}")


def read_boxes_file(path: str, bad=None, required=()) -> list[BoxEntry]:
  """The boxes of a detection / boxes json, each checked.

  Accepted: a json list of {"image_id" or "file_name", "bbox": [x, y, w, h], "score"?,
  "category_id"?} (COCO detection results, as mmpose's `bbox_file`), or a COCO dict
  whose "annotations" carry the boxes and whose "images" map ids to file names.

  Args:
    path: the json file.
    bad: callable(reason, where, message) for an entry that cannot be read, or lacks a
      field of `required`; it raises, or returns to skip the entry (default: raise
      AnnotationError naming the file, the entry and the field).
    required: fields an entry must have ("score", "category_id", "image_id").
  Raises:
    FileNotFoundError naming the file; AnnotationError for malformed json or a
    content that is neither form.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"boxes file not found: {path}")
  bad = bad or _BadInput(path, "error")
  entries, file_names = _box_file_entries(load_json(path), path)
  boxes = []
  for index, entry in enumerate(entries):
    image_id = entry.get("image_id") if isinstance(entry, dict) else None
    where = f"detection #{index} (image id {image_id!r})"
    fields, problem = _box_entry_fields(entry, file_names)
    missing = [name for name in required if fields is not None and fields[name] is None]
    if missing:
      problem = f"needs a field {missing[0]!r}"
    if problem:
      bad("malformed_detection", where, problem)
    else:
      boxes.append(BoxEntry(index=index, **fields))
  return boxes


def _parse_detection(entry, source, num_keypoints, score_threshold, filtered):
  """One instance dict from a checked box entry, or None (filtered or bad input)."""
  where = f"detection #{entry.index} (image id {entry.image_id!r})"
  if entry.category_id != PERSON_CATEGORY_ID:
    filtered["not_person"] += 1
    return None
  if entry.score < score_threshold:
    filtered["below_score_threshold"] += 1
    return None
  image = source.coco.imgs.get(entry.image_id)
  if image is None:
    return source.bad("unknown_image", where, f"image_id {entry.image_id} is not an image "
                      f"of {source.ann_file}")
  box = entry.bbox
  if box[2] <= 0 or box[3] <= 0:
    return source.bad("empty_box", where, f"bbox {box.tolist()} has no area")
  image_path = source.image_path(image, where)
  if image_path is None:
    return None
  return dict(image_path=image_path, image_id=entry.image_id, bbox_xywh=box,
              bbox_score=entry.score, keypoints=np.zeros((num_keypoints, 2)),
              visible=np.ones(num_keypoints), category_id=PERSON_CATEGORY_ID,
              area=box[2] * box[3])


def load_coco_detections(ann_file: str, det_file: str, image_root: str, *,
                         num_keypoints: Optional[int] = None, score_threshold: float = 0.0,
                         on_bad: str = "error", check_image_files: bool = True
                         ) -> InstanceList:
  """Evaluation instances from a person-detection file, as mmpose's `bbox_file`.

  `det_file` is read by `read_boxes_file`; each entry needs image_id, bbox (xywh),
  score and category_id (COCO_val2017_detections_AP_H_56_person.json). Category 1
  only; scores below `score_threshold` are filtered. Boxes are kept as detected (not
  clipped). Keypoints are zeros and keypoints_visible ones (mmpose's dummies);
  instance_id counts the kept detections from 0; area = box w x h.

  Args:
    ann_file: the COCO-format json of the images (file names, sizes, keypoint count).
    det_file: the detection results json.
    image_root: folder of the images.
    num_keypoints: K; by default the length of category 1's keypoints in `ann_file`.
    score_threshold: minimum detection score kept (mmpose's bbox_score_thr).
    on_bad, check_image_files: as in `load_coco_instances`.
  """
  ann_bad = _BadInput(ann_file, on_bad)
  source = _CocoFile(ann_file, image_root, ann_bad, check_image_files)
  source.bad = _BadInput(det_file, on_bad)   # from here on, errors are the detections'
  detections = read_boxes_file(det_file, source.bad,
                               required=("image_id", "score", "category_id"))
  num_keypoints = num_keypoints or source.num_keypoints(PERSON_CATEGORY_ID)
  instances = InstanceList()
  for entry in detections:
    fields = _parse_detection(entry, source, num_keypoints, score_threshold,
                              instances.filtered)
    if fields is not None:
      instances.append(_instance(instance_id=len(instances), **fields))
  instances.skipped.update(ann_bad.skipped + source.bad.skipped)
  _log_summary(det_file, instances)
  return instances


# ---------------------------------------------------------------------------------------
# MPII (the HRNet / mmpose json).


def _mpii_box(center, scale):
  """mmpose 1.x MpiiDataset: (centre (2,), box side) in 0-based image pixels."""
  side = scale * MPII_PIXEL_STD
  center = center.copy()
  if center[0] != -1:                             # -1: no centre given; mmpose leaves it
    center[1] += MPII_CENTER_SHIFT / MPII_PIXEL_STD * side
  return center - 1, side                         # MATLAB 1-based -> 0-based


def load_mpii_headboxes(headbox_file: str, num_entries: int) -> np.ndarray:
  """(N, 2, 2) head boxes, [corner, (x, y)], of the official `mpii_gt_val.mat`.

  Its `headboxes_src` is (2 corners, 2 coordinates, N); box i belongs to entry i of
  mpii_val.json (mmpose's MpiiDataset transposes it to (N, 2, 2) the same way). A file
  without it, or with other than `num_entries` boxes, is an AnnotationError naming it.
  """
  if not os.path.isfile(headbox_file):
    raise FileNotFoundError(f"head-box file not found: {headbox_file}")
  try:
    boxes = np.asarray(scipy.io.loadmat(headbox_file)["headboxes_src"], np.float64)
  except (KeyError, ValueError, TypeError, scipy.io.matlab.MatReadError) as error:
    raise AnnotationError(f"{headbox_file}: not an MPII head-box file (needs "
                          f"'headboxes_src'): {error!r}") from error
  if boxes.shape == (2, 2):                                   # MATLAB drops a last N = 1
    boxes = boxes[..., None]
  if boxes.ndim != 3 or boxes.shape[:2] != (2, 2):
    raise AnnotationError(f"{headbox_file}: headboxes_src has shape {boxes.shape}, "
                          "expected (2, 2, N)")
  if boxes.shape[2] != num_entries:
    raise AnnotationError(f"{headbox_file}: {boxes.shape[2]} head boxes for "
                          f"{num_entries} annotation entries")
  return np.transpose(boxes, (2, 0, 1))                       # (N, 2, 2)


def _mpii_head_size(entry, index, headboxes) -> Optional[float]:
  """0.6 x the head-box diagonal; NaN without a head box; None for a malformed one."""
  if headboxes is not None:
    corners = headboxes[index]                                # (2, 2)
  elif "headbox" in entry:
    box = _numbers(entry["headbox"], 4)                       # x1, y1, x2, y2
    if box is None:
      return None
    corners = box.reshape(2, 2)
  else:
    return math.nan
  return MPII_HEAD_SIZE_FACTOR * float(np.linalg.norm(corners[1] - corners[0]))


def _parse_mpii_entry(index, entry, image_root, num_keypoints, bad, image_ids, image_sizes,
                      headboxes=None):
  """One instance dict from an MPII json entry, or None after reporting bad input."""
  entry = entry if isinstance(entry, dict) else {}
  where = f"entry #{index} (image {entry.get('image')!r})"
  head_size = _mpii_head_size(entry, index, headboxes)
  if head_size is None:
    return bad("malformed_annotation", where, "headbox must be [x1, y1, x2, y2], finite "
               "numbers")
  joints, joints_vis = entry.get("joints"), entry.get("joints_vis")
  for field, values in (("joints", joints), ("joints_vis", joints_vis)):
    if isinstance(values, list) and len(values) != num_keypoints:
      return bad("wrong_keypoint_count", where, f"{len(values)} {field}, expected "
                 f"{num_keypoints}")
  center, scale = _numbers(entry.get("center"), 2), entry.get("scale")
  visible = _numbers(joints_vis, num_keypoints)
  points = [_numbers(p, 2) for p in joints] if isinstance(joints, list) else [None]
  if center is None or not _is_number(scale) or visible is None or \
      any(p is None for p in points) or not isinstance(entry.get("image"), str):
    return bad("malformed_annotation", where, "needs image, center [x, y], scale, "
               f"joints [{num_keypoints} x [x, y]] and joints_vis [{num_keypoints}]")
  if scale <= 0:
    return bad("empty_box", where, f"scale {scale} gives a box with no area")
  image_path = resolve_image_path(image_root, entry["image"])
  if image_path is None:
    return bad("path_outside_image_root", where, f"image {entry['image']!r} resolves "
               f"outside {image_root}")
  if image_path not in image_sizes:   # one header read per image, not per person
    image_sizes[image_path] = (read_image_size(image_path) if os.path.isfile(image_path)
                               else None)
  size = image_sizes[image_path]
  if size is None:
    return bad("missing_image", where, f"image file not found or unreadable: {image_path}")
  keypoints = np.stack(points)                                   # (K, 2)
  far_off = _far_off_keypoints(keypoints, visible, *size)
  if far_off:
    return bad("keypoints_off_image", where, f"labelled joints {far_off} lie far off the "
               f"{size[0]}x{size[1]} image: {keypoints[far_off].tolist()}")
  center, side = _mpii_box(center, scale)
  stem = os.path.splitext(os.path.basename(entry["image"]))[0]
  image_id = int(stem) if stem.isdigit() else image_ids.setdefault(entry["image"],
                                                                    len(image_ids))
  instance = _instance(image_path, image_id, index, [*(center - side / 2), side, side],
                       1.0, keypoints, visible > 0, PERSON_CATEGORY_ID, side * side)
  return dict(instance, head_size=head_size)


def load_mpii_instances(ann_file: str, image_root: str, *, num_keypoints: int = 16,
                        on_bad: str = "error", headbox_file: Optional[str] = None
                        ) -> InstanceList:
  """Instances of an MPII json: [{image, center, scale, joints, joints_vis}, ...].

  As mmpose 1.x's MpiiDataset: box side = scale x 200 px; centre y += 15/200 x side
  (unless the centre is -1); centre -= 1 (MATLAB is 1-based); joints are kept as the
  json stores them. The box is the side x side square around that centre, so the
  usual 1.25 padding of the box gives mmpose's crop. instance_id = the entry's index;
  image_id = the image's numeric file stem (else a running number); area = side^2.

  head_size (PCKh's normaliser; the evaluation reads it) = 0.6 x the diagonal of the
  entry's head box: box i of `headbox_file` for entry i, else the entry's optional
  "headbox": [x1, y1, x2, y2], else NaN (no PCKh). The official boxes are not in the
  json but in mpii_gt_val.mat, which only matches mpii_val.json.

  Args:
    ann_file: MPII json.
    image_root: folder of the images.
    num_keypoints: joints per person (16).
    on_bad: "error" or "skip", as in `load_coco_instances`.
    headbox_file: mpii_gt_val.mat (`load_mpii_headboxes`), one box per json entry;
      None or "" for none.
  """
  bad = _BadInput(ann_file, on_bad)
  image_root = _check_image_root(image_root)
  entries = load_json(ann_file)
  if not isinstance(entries, list):
    raise AnnotationError(f"{ann_file}: an MPII file must hold a json list, got "
                          f"{type(entries).__name__}")
  headboxes = load_mpii_headboxes(headbox_file, len(entries)) if headbox_file else None
  instances, image_ids, image_sizes = InstanceList(), {}, {}
  for index, entry in enumerate(entries):
    instance = _parse_mpii_entry(index, entry, image_root, num_keypoints, bad, image_ids,
                                 image_sizes, headboxes)
    if instance is not None:
      instances.append(instance)
  instances.skipped.update(bad.skipped)
  _log_summary(ann_file, instances)
  return instances


# ---------------------------------------------------------------------------------------
# Splits and logging.


def split_contiguous_frames(instances: list[dict], train_fraction: float = 0.8
                            ) -> tuple[list[dict], list[dict]]:
  """(train, held_out): the first `train_fraction` of frames, sorted by image path, and the rest.

  For one-video sets (dlc-openfield): a held-out block of unseen frames, not random
  frames that leak near-duplicates of the training frames. All instances of a frame go to the
  same side; the train side gets floor(train_fraction x frames) frames.
  """
  if not 0 < train_fraction < 1:
    raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
  frames = sorted({instance["image_path"] for instance in instances})
  train_frames = set(frames[:math.floor(train_fraction * len(frames))])
  train = [inst for inst in instances if inst["image_path"] in train_frames]
  held_out = [inst for inst in instances if inst["image_path"] not in train_frames]
  return train, held_out


def _log_summary(source_file, instances):
  logging.info("%s: %d instances; filtered (mmpose rules): %s; skipped bad input: %s",
               source_file, len(instances), dict(instances.filtered),
               dict(instances.skipped))
  if instances.skipped:
    logging.warning("%s: skipped %d bad annotations: %s", source_file,
                    sum(instances.skipped.values()), dict(instances.skipped))
