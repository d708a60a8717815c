"""Detectors: an image in, person or animal boxes out, for the top-down pose model.

A detector is any callable taking an (H, W, 3) RGB uint8 image and returning
`Detections` (boxes (M, 4) xywh image pixels, scores (M,), class ids (M,)); `detect`
also accepts callables returning plain boxes (M, 4) or (boxes, scores). Provided here:

    BoxFileDetector("boxes.json")        # a boxes file, by image id / name / frame
    YoloxOnnxDetector("yolox_tiny.onnx", classes="person")   # pip install mamkpd-jax[onnx]
    StaticBackgroundDetector.from_video("openfield.mp4", max_tracks=2)  # fixed camera
    make_detector("background" | "yolox:PATH" | "boxes:PATH", source=...)

No weights ship with this package (no wheel on the registry has a usable person or animal
detector); the YOLOX ONNX files are the official exports (Apache-2.0) a user
downloads once. The static-background detector needs none: the per-pixel median of
sampled frames is the empty arena, and the animals are the largest blobs that differ
(touching animals, one blob, split by k-means).
"""

import dataclasses
import os

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from mamkpd_jax.data_pipelines import sources
from mamkpd_jax.inference import video

# COCO-80 in the order of YOLOX's (and every COCO detector's) class outputs.
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush")
# classes="animal" selects these (COCO's animal supercategory).
COCO_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
                "giraffe")
YOLOX_STRIDES = (8, 16, 32)
YOLOX_PAD_VALUE = 114


@dataclasses.dataclass
class Detections:
  """The boxes found in one image (M of them)."""

  boxes: np.ndarray       # (M, 4) float32 xywh image pixels
  scores: np.ndarray      # (M,) float32
  class_ids: np.ndarray   # (M,) int64 (COCO_CLASSES index for YOLOX; 0 otherwise)

  def __post_init__(self):
    self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
    self.scores = np.asarray(self.scores, np.float32).reshape(-1)
    self.class_ids = np.asarray(self.class_ids, np.int64).reshape(-1)
    if not len(self.boxes) == len(self.scores) == len(self.class_ids):
      raise ValueError(f"detections: {len(self.boxes)} boxes, {len(self.scores)} scores and "
                       f"{len(self.class_ids)} class ids")

  @classmethod
  def empty(cls):
    return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0))

  @classmethod
  def of_boxes(cls, boxes, scores=None):
    """Boxes (M, 4) xywh with scores (default 1) and class 0."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.ones(len(boxes)) if scores is None else scores
    return cls(boxes, scores, np.zeros(len(boxes)))


def as_detections(output):
  """What a detector callable returned -> Detections.

  Accepted: Detections; boxes (M, 4) xywh; a (boxes, scores) or
  (boxes, scores, class_ids) tuple."""
  if isinstance(output, Detections):
    return output
  if isinstance(output, tuple) and len(output) in (2, 3):
    if len(output) == 2:
      return Detections.of_boxes(*output)
    return Detections(*output)
  boxes = np.asarray(output, np.float32)
  if boxes.size and (boxes.ndim != 2 or boxes.shape[1] != 4):
    raise ValueError(f"a detector must return Detections, boxes (M, 4) xywh or "
                     f"(boxes, scores); got an array of shape {boxes.shape}")
  return Detections.of_boxes(boxes)


def detect(detector, image, key=None, hints=None):
  """Detections of `detector` on image (H, W, 3) RGB uint8.

  key: the image's id, file name or frame index, or an (id, file name) pair; passed only
  to detectors that look boxes up (`uses_key`, e.g. BoxFileDetector).
  hints: where a tracker expects the subjects (T, 4) xywh; passed only to detectors that
  use them (`uses_hints`, e.g. StaticBackgroundDetector), others ignore them."""
  kwargs = {}
  if getattr(detector, "uses_key", False):
    kwargs["key"] = key
  if hints is not None and getattr(detector, "uses_hints", False):
    kwargs["hints"] = hints
  return as_detections(detector(image, **kwargs))


def box_iou(boxes, others):
  """IoU of xywh boxes (N, 4) with (M, 4) -> (N, M)."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)[:, None]      # (N, 1, 4)
  others = np.asarray(others, np.float64).reshape(-1, 4)[None]       # (1, M, 4)
  x0 = np.maximum(boxes[..., 0], others[..., 0])
  y0 = np.maximum(boxes[..., 1], others[..., 1])
  x1 = np.minimum(boxes[..., 0] + boxes[..., 2], others[..., 0] + others[..., 2])
  y1 = np.minimum(boxes[..., 1] + boxes[..., 3], others[..., 1] + others[..., 3])
  inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)     # (N, M)
  union = boxes[..., 2] * boxes[..., 3] + others[..., 2] * others[..., 3] - inter
  return inter / np.maximum(union, 1e-12)


def match_boxes(boxes, others, min_iou=0.5):
  """[(i, j)]: boxes (N, 4) matched one to one to others (M, 4) xywh, over pairs that
  overlap (IoU > 0) by at least min_iou, by an optimal (Hungarian) assignment maximising
  the summed IoU (a pair below min_iou costs 1, so fewer pairs are left unmatched)."""
  iou = box_iou(boxes, others)                                        # (N, M)
  if not iou.size:
    return []
  allowed = (iou > 0) & (iou >= min_iou)
  rows, cols = linear_sum_assignment(np.where(allowed, -iou, 1.0))
  return [(int(r), int(c)) for r, c in zip(rows, cols) if allowed[r, c]]


def nms(boxes, scores, class_ids, iou_threshold):
  """Class-aware greedy non-maximum suppression: indices kept, best score first.

  A box is dropped when it overlaps (IoU > iou_threshold) a higher-scoring box of its
  class. boxes (M, 4) xywh, scores (M,), class_ids (M,)."""
  order = np.argsort(-np.asarray(scores), kind="stable")
  iou = box_iou(boxes, boxes)                                         # (M, M)
  same_class = np.asarray(class_ids)[:, None] == np.asarray(class_ids)[None]
  keep = []
  for i in order:
    if not any(same_class[i, j] and iou[i, j] > iou_threshold for j in keep):
      keep.append(i)
  return np.array(keep, np.int64)


def class_ids_of(classes):
  """COCO class indices of "person", "animal", a class name, or a list of names/ids."""
  if isinstance(classes, str):
    classes = COCO_ANIMALS if classes == "animal" else (classes,)
  ids = []
  for name in classes:
    if isinstance(name, (int, np.integer)) and 0 <= name < len(COCO_CLASSES):
      ids.append(int(name))
    elif name in COCO_CLASSES:
      ids.append(COCO_CLASSES.index(name))
    else:
      raise ValueError(f"unknown class {name!r}: use 'animal' or COCO class names "
                       f"({', '.join(COCO_CLASSES[:5])}, ...)")
  return np.array(sorted(set(ids)), np.int64)


# ------------------------------------------------------------------ boxes from a file


def load_boxes(path):
  """{image_id or file basename: (boxes (M, 4), scores (M,))} from a boxes json
  (sources.read_boxes_file: COCO detections, or a COCO dict whose "annotations" carry
  the boxes). An entry with a file_name is keyed by its basename, else by its image_id;
  a box without a score scores 1."""
  grouped = {}
  for entry in sources.read_boxes_file(path):
    key = os.path.basename(entry.file_name) if entry.file_name else entry.image_id
    score = 1.0 if entry.score is None else entry.score
    grouped.setdefault(key, []).append((entry.bbox, score))
  return {key: (np.array([b for b, _ in rows], np.float32).reshape(-1, 4),
                np.array([s for _, s in rows], np.float32)) for key, rows in grouped.items()}


def boxes_for(all_boxes, image_id, file_name):
  """(boxes, box scores) of one image; (None, None) = the whole image."""
  if all_boxes is None:
    return None, None
  found = all_boxes.get(os.path.basename(file_name)) or all_boxes.get(image_id)
  if found is None:
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
  return found


class BoxFileDetector:
  """Boxes read from a json (load_boxes), looked up by the image's key: its file name,
  its id, or a video's frame index (an image with none is given no boxes)."""

  uses_key = True

  def __init__(self, path):
    self.path = path
    self.boxes = load_boxes(path)

  def __call__(self, image, key=None):
    del image
    if key is None:
      raise ValueError(f"BoxFileDetector({self.path}) needs the image's id, file name or "
                       "frame index (detectors.detect(detector, image, key=...))")
    image_id, file_name = key if isinstance(key, tuple) else \
        (key, "") if isinstance(key, (int, np.integer)) else (None, key)
    boxes, scores = boxes_for(self.boxes, image_id, file_name)
    return Detections.of_boxes(boxes, scores)


# ------------------------------------------------------------------ YOLOX (ONNX)


def letterbox(image, input_size):
  """YOLOX's `preproc`: image (H, W, 3) RGB uint8 -> ((1, 3, h, w) float32 BGR, ratio).

  The image is resized by ratio = min(h / H, w / W) into the top-left corner of an
  (h, w) canvas of 114s; pixel values stay 0..255 (no normalisation)."""
  height, width = input_size
  ratio = min(height / image.shape[0], width / image.shape[1])
  size = (int(image.shape[1] * ratio), int(image.shape[0] * ratio))       # (w, h)
  resized = cv2.resize(np.ascontiguousarray(image[..., ::-1]), size, interpolation=cv2.INTER_LINEAR)
  canvas = np.full((height, width, 3), YOLOX_PAD_VALUE, np.uint8)
  canvas[:size[1], :size[0]] = resized
  return canvas.transpose(2, 0, 1)[None].astype(np.float32), ratio


def yolox_grids(input_size, strides=YOLOX_STRIDES):
  """(grids (A, 2) cell x, y, strides (A, 1)) of YOLOX's anchors, finest level first."""
  grids, expanded = [], []
  for stride in strides:
    xs, ys = np.meshgrid(np.arange(input_size[1] // stride), np.arange(input_size[0] // stride))
    grid = np.stack([xs, ys], axis=-1).reshape(-1, 2)                 # (h*w, 2), row-major
    grids.append(grid)
    expanded.append(np.full((len(grid), 1), stride))
  return np.concatenate(grids).astype(np.float32), np.concatenate(expanded).astype(np.float32)


def yolox_decode(raw, input_size):
  """YOLOX's `demo_postprocess`: raw (A, 4+) cell offsets, log sizes -> input pixels
  (cx, cy, w, h) (A, 4)."""
  grids, strides = yolox_grids(input_size)
  if len(grids) != len(raw):
    raise ValueError(f"{len(raw)} YOLOX anchors, but an input of {input_size} with strides "
                     f"{YOLOX_STRIDES} has {len(grids)} (pass decoded=True if the export "
                     "decodes its boxes)")
  centers = (raw[:, :2] + grids) * strides
  sizes = np.exp(raw[:, 2:4]) * strides
  return np.concatenate([centers, sizes], axis=1)


def _import_onnxruntime():
  try:
    import onnxruntime  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise ImportError("YoloxOnnxDetector needs onnxruntime: pip install "
                      "'mamkpd-jax[onnx]' (or pip install onnxruntime)") from error
  return onnxruntime


class YoloxOnnxDetector:
  """An official YOLOX ONNX export (yolox_nano/tiny/s/m/l/x.onnx, COCO-80) in ONNX Runtime.

  The output is (1, A, 5 + C): per anchor cx, cy, w, h (grid-encoded unless `decoded`),
  objectness and C class scores; a box's score for class c is objectness * class score.
  Boxes of the selected classes scoring at least score_threshold are kept, class-aware
  NMS at nms_iou, and mapped back from the letterboxed input to image pixels.
  """

  def __init__(self, path, classes="person", score_threshold=0.3, nms_iou=0.45,
               input_size=None, decoded=False):
    """input_size: (h, w) when the model's input has no fixed size."""
    if not os.path.isfile(path):
      raise FileNotFoundError(f"YOLOX ONNX file not found: {path}")
    onnxruntime = _import_onnxruntime()
    self.path, self.decoded = path, decoded
    self.class_ids = class_ids_of(classes)
    self.score_threshold, self.nms_iou = score_threshold, nms_iou
    self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    model_input = self.session.get_inputs()[0]
    self.input_name = model_input.name
    self.input_size = tuple(input_size) if input_size else self._fixed_size(model_input.shape)
    self._check_output(self.session.get_outputs()[0].shape)

  def _fixed_size(self, shape):
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
      raise ValueError(f"{self.path}: input shape {shape} is not (1, 3, h, w) with a fixed "
                       "h, w; pass input_size=(h, w)")
    return tuple(shape[2:])

  def _check_output(self, shape):
    if len(shape) != 3 or (isinstance(shape[2], int) and shape[2] != 5 + len(COCO_CLASSES)):
      raise ValueError(f"{self.path}: output shape {shape} is not YOLOX's (1, A, 5 + C) "
                       f"with C = {len(COCO_CLASSES)} COCO classes")

  def __call__(self, image):
    image = np.asarray(image)
    inputs, ratio = letterbox(image, self.input_size)
    raw = self.session.run(None, {self.input_name: inputs})[0]
    if raw.ndim != 3 or raw.shape[0] != 1 or raw.shape[2] != 5 + len(COCO_CLASSES):
      raise ValueError(f"{self.path}: output of shape {raw.shape} is not YOLOX's "
                       f"(1, A, {5 + len(COCO_CLASSES)})")
    return self.postprocess(raw[0], ratio)

  def postprocess(self, raw, ratio):
    """raw (A, 85) network output of a letterboxed image -> Detections in image pixels."""
    raw = np.asarray(raw, np.float32)
    cxcywh = raw[:, :4] if self.decoded else yolox_decode(raw, self.input_size)
    scores = raw[:, 4:5] * raw[:, 5 + self.class_ids]                  # (A, C selected)
    anchor, column = np.nonzero(scores >= self.score_threshold)
    boxes = np.concatenate([cxcywh[anchor, :2] - cxcywh[anchor, 2:] / 2,
                            cxcywh[anchor, 2:]], axis=1) / ratio       # (N, 4) xywh image
    found = Detections(boxes, scores[anchor, column], self.class_ids[column])
    keep = nms(found.boxes, found.scores, found.class_ids, self.nms_iou)
    return Detections(found.boxes[keep], found.scores[keep], found.class_ids[keep])


# ------------------------------------------------------------------ static background


def _gray(image):
  return cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_RGB2GRAY)


class StaticBackgroundDetector:
  """Animals under a fixed camera (the DeepLabCut / SLEAP case), no weights.

  The background is the per-pixel median of sampled frames (the animals move, the arena
  does not). The foreground is |frame - background| (grey levels, blurred, Otsu
  threshold but at least min_contrast, morphological opening); each connected region of
  it covering at least min_area of the frame is a candidate, largest first. Otsu always
  splits, even pure noise in two: min_contrast and min_area keep a frame without an
  animal empty.

  max_tracks: the number of animals. 1 (the default): the largest region's box, one
  animal. N > 1: up to N boxes, largest region first; a region about k times the size of
  one animal (`animal_area`) while fewer than N regions are found is k touching animals,
  split in k by k-means on its pixel coordinates (`split_region`). None: every region,
  unsplit (the number of animals is unknown).
  """

  uses_hints = True          # detect() passes a tracker's predicted boxes (__call__)

  def __init__(self, frames, blur=5, opening=5, min_contrast=20, min_area=0.001,
               max_tracks=1, animal_area=None, contact_tolerance=0.25, background=None):
    """frames: a sample (N, H, W, 3) RGB uint8 of the video (N >= 3; a few dozen);
    min_contrast: grey levels; min_area: the smallest animal, as a fraction of the
    frame's area; max_tracks: the number of animals (None: unknown); animal_area: one
    animal's area in pixels (None: the median area of the max_tracks largest regions of
    each sampled frame, most of which show the animals apart); contact_tolerance: a
    region's area may differ from animal_area by this fraction and still be one animal
    alone (contact_boxes); background: the empty arena (H, W, 3) RGB uint8 when known
    (None: the median of frames, which is the arena only where each pixel is free of
    animals in most of them)."""
    frames = [np.asarray(frame) for frame in frames]
    if len(frames) < 3:
      raise ValueError(f"StaticBackgroundDetector needs at least 3 frames, got {len(frames)}")
    if max_tracks is not None and (int(max_tracks) != max_tracks or max_tracks < 1):
      raise ValueError(f"StaticBackgroundDetector: max_tracks must be a positive integer or "
                       f"None, got {max_tracks!r}")
    if background is not None:
      self.background = _gray(background)
      if self.background.shape != frames[0].shape[:2]:
        raise ValueError(f"StaticBackgroundDetector: background of shape "
                         f"{self.background.shape} but frames of {frames[0].shape[:2]}")
    else:
      self.background = np.median(np.stack([_gray(f) for f in frames]),
                                  axis=0).astype(np.uint8)
    self.blur, self.min_contrast, self.min_area = blur, min_contrast, min_area
    self.max_tracks = max_tracks
    self.contact_tolerance = contact_tolerance
    self.kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (opening, opening))
    self.animal_area = animal_area
    if animal_area is None and (max_tracks or 1) > 1:
      self.animal_area = self._typical_area(frames)

  @classmethod
  def from_video(cls, path, num_frames=50, **kwargs):
    """From up to num_frames frames spread evenly over a video file or image folder."""
    return cls(video.sample_frames(path, num_frames), **kwargs)

  def _typical_area(self, frames):
    """The median area (pixels) of the max_tracks largest regions of each frame; None
    when no frame has one."""
    areas = [area for frame in frames
             for area in self.regions(frame)[1][:self.max_tracks]]
    return float(np.median(areas)) if areas else None

  def foreground(self, image):
    """(H, W) uint8 mask (255 = differs from the background) of image (H, W, 3) RGB."""
    gray = _gray(image)
    if gray.shape != self.background.shape:
      raise ValueError(f"frame of shape {gray.shape} but the background is "
                       f"{self.background.shape}")
    diff = cv2.GaussianBlur(cv2.absdiff(gray, self.background), (self.blur, self.blur), 0)
    otsu, _ = cv2.threshold(diff, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = np.where(diff > max(otsu, self.min_contrast), 255, 0).astype(np.uint8)
    return cv2.morphologyEx(mask, cv2.MORPH_OPEN, self.kernel)

  def regions(self, image):
    """(labels (H, W) int32, areas (R,), boxes (R, 4) xywh, label values (R,)) of the
    foreground regions of at least min_area, largest first (8-connected)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(self.foreground(image),
                                                                connectivity=8)
    areas = stats[1:count, cv2.CC_STAT_AREA]                             # 0 is the background
    order = np.argsort(-areas, kind="stable")
    order = order[areas[order] >= self.min_area * self.background.size]
    boxes = stats[1:count, :4][order].astype(np.float32)                 # x, y, w, h
    return labels, areas[order], boxes, order + 1

  def __call__(self, image, hints=None):
    """Detections of image (H, W, 3) RGB uint8. hints: the tracker's predicted boxes
    (T, 4) xywh of the animals it follows, or None (used only when max_tracks > 1).

    Without hints, or while the hinted animals are apart (`in_contact`), every region
    is a box, a region k animals large split in k by its shape (`split_region`). While
    two hinted animals touch or cover each other, the regions the hints lie on are
    shared among those hints instead (`contact_boxes`): each hint is one box, sized like
    the animal's last box and placed at its predicted centre. While two animals touch,
    k-means drifts to the blob's halves whichever its seeds, so boxes bounding the
    halves stall at the middle and the tracks swap; the hints (a tracker's
    constant-velocity predictions) carry each animal's motion through the contact."""
    labels, areas, boxes, values = self.regions(image)
    if self.max_tracks is None:
      return Detections.of_boxes(boxes)
    hints = np.zeros((0, 4), np.float32) if hints is None or self.max_tracks == 1 else \
        np.asarray(hints, np.float32).reshape(-1, 4)
    on_region = self.hints_on_regions(labels, values, hints)              # R lists
    if self.in_contact(hints, on_region):
      return Detections.of_boxes(self.contact_boxes(labels, areas, boxes, values, hints,
                                                    on_region))
    counts = self.animals_per_region(areas)
    found = []
    for region_box, value, count in zip(boxes, values, counts):
      if len(found) == self.max_tracks:
        break
      count = min(count, self.max_tracks - len(found))
      if count == 1:
        found.append(region_box)
      else:
        ys, xs = np.nonzero(labels == value)
        found.extend(split_region(np.stack([xs, ys], 1), count))
    return Detections.of_boxes(np.array(found, np.float32).reshape(-1, 4))

  def in_contact(self, hints, on_region):
    """Whether hinted animals (hints (T, 4)) touch: two hints lie on one region, or two
    hinted boxes overlap."""
    if len(hints) < 2 or not self.animal_area:
      return False
    if any(len(found) >= 2 for found in on_region):
      return True
    iou = box_iou(hints, hints)                                          # (T, T)
    return bool(np.any(iou[~np.eye(len(hints), dtype=bool)] > 0))

  def contact_boxes(self, labels, areas, boxes, values, hints, on_region):
    """Boxes (<= max_tracks, 4) while hinted animals touch: a region with one hint and
    one animal's area (within contact_tolerance) is that animal's box; the other
    hinted regions are shared by the hints on them and the hints on no region whose box
    reaches their pixels' extent, each such hint being its own box; a hint on nothing
    else is dropped."""
    found, rest, taken = [], [], set()
    for area, box, value, mine in zip(areas, boxes, values, on_region):
      if len(mine) == 1 and abs(area / self.animal_area - 1) <= self.contact_tolerance:
        found.append(box)
      elif len(mine):
        rest.append(value)
      taken.update(mine.tolist())
    if rest:
      ys, xs = np.nonzero(np.isin(labels, rest))
      extent = np.array([_extent(np.stack([xs, ys], 1))], np.float32)     # (1, 4)
      on_rest = {i for value, mine in zip(values, on_region) if value in rest
                 for i in mine.tolist()}
      shared = [i for i in range(len(hints)) if i in on_rest or
                i not in taken and box_iou(hints[i], extent)[0, 0] > 0]
      found.extend(hints[shared])
    return np.array(found, np.float32).reshape(-1, 4)[:self.max_tracks]

  def hints_on_regions(self, labels, values, hints):
    """For each region (label values (R,)), the indices of hints (T, 4) whose centre
    pixel lies on it."""
    height, width = labels.shape
    centers = np.round(hints[:, :2] + hints[:, 2:] / 2).astype(np.int64)   # (T, 2)
    inside = (centers[:, 0] >= 0) & (centers[:, 0] < width) & \
        (centers[:, 1] >= 0) & (centers[:, 1] < height)
    under = np.full(len(hints), -1, np.int64)
    under[inside] = labels[centers[inside, 1], centers[inside, 0]]
    return [np.flatnonzero(under == value) for value in values]

  def animals_per_region(self, areas):
    """How many animals each region (areas (R,), largest first) holds: 1, or about
    area / animal_area when fewer regions than max_tracks are found (touching
    animals), however many the max_tracks cap leaves."""
    counts = np.ones(len(areas), np.int64)
    if not self.animal_area or len(areas) >= self.max_tracks:
      return counts
    return np.maximum(np.floor(areas / self.animal_area + 0.5).astype(np.int64), 1)


def _nearest(points, centers):
  """The index (P,) of the nearest of centers (k, 2) to each of points (P, 2)."""
  return np.argmin(((points[:, None] - centers[None]) ** 2).sum(-1), 1)


def _extent(points):
  """The (4,) xywh box bounding pixels points (P, 2) (+1: a pixel is 1 wide)."""
  low, high = points.min(0), points.max(0) + 1
  return [*low, *(high - low)]


def split_region(points, count, iterations=10):
  """Boxes (count, 4) xywh of one region's pixels (points (P, 2) x, y) split in count by
  k-means: Lloyd's iterations from centres at evenly spaced quantiles along the region's
  principal axis (deterministic). Each box bounds its cluster's pixels (+1: a pixel is 1
  wide, as cv2.boundingRect); an empty cluster gives no box."""
  points = np.asarray(points, np.float64)
  centred = points - points.mean(0)
  _, _, axes = np.linalg.svd(centred, full_matrices=False)             # (2, 2) rows
  along = centred @ axes[0]                                            # (P,)
  starts = np.quantile(along, (np.arange(count) + 0.5) / count)        # (k,)
  centers = points[np.argmin(np.abs(along[:, None] - starts[None]), 0)]  # (k, 2)
  for _ in range(iterations):
    nearest = _nearest(points, centers)                                # (P,)
    centers = np.stack([points[nearest == c].mean(0) if np.any(nearest == c)
                        else centers[c] for c in range(count)])
  nearest = _nearest(points, centers)
  boxes = [_extent(points[nearest == c]) for c in range(count) if np.any(nearest == c)]
  return np.array(boxes, np.float32).reshape(-1, 4)


# ------------------------------------------------------------------ from a spec


def make_detector(spec, source=None, **kwargs):
  """A detector from a command-line spec.

  spec: "background" (StaticBackgroundDetector of `source`, a video file or image
  folder; kwargs: max_tracks, the number of animals, default 1, ...), "yolox:PATH"
  (YoloxOnnxDetector; kwargs: classes, score_threshold, ...), "boxes:PATH"
  (BoxFileDetector), or "" / "none" (None: no detector)."""
  kind, _, path = spec.partition(":")
  if kind in ("", "none"):
    return None
  if kind == "background":
    if not isinstance(source, (str, os.PathLike)):
      raise ValueError("--detector=background builds its background from a video file or "
                       f"image folder, not {source!r} (a webcam has no frames in advance)")
    return StaticBackgroundDetector.from_video(str(source), **kwargs)
  if kind == "yolox" and path:
    return YoloxOnnxDetector(path, **kwargs)
  if kind == "boxes" and path:
    return BoxFileDetector(path)
  raise ValueError(f"unknown detector {spec!r}: use background, yolox:PATH or boxes:PATH")
