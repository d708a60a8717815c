"""Poses through a video or a webcam, with track ids and optional smoothing.

    result = track_video(estimator, "clip.mp4", "/tmp/out", detector=detector)
    # -> /tmp/out/clip.mp4 (poses and track ids drawn) and /tmp/out/clip.json
    predictions = PoseTracker(estimator, detector).process([(index, name, frame), ...])
    # -> one inference.Prediction per frame, its track_ids set

The results type is `inference.Prediction` (the Estimator's), with `track_ids` filled in;
the json records are its `to_json` plus the frame's index and file name.

The detector runs every `det_every` frames; in between, each subject's box is carried
from its previous frame's keypoints (the box of the keypoints scoring at least
`keypoint_threshold`, padded by `carry_padding`), as rtmlib's PoseTracker does, so the
detector's cost is paid once per `det_every` frames (two carried boxes overlapping by
more than `carry_nms_iou`, two tracks on one subject, are merged). Carrying makes frame
t depend on frame t-1, so frames go through the model together (`batch_frames` of them)
only when every frame is detected (det_every=1); then a frame's boxes depend on the frame
alone, and `track_video` finds them on its reader thread, ahead of the model
(`PoseTracker.detections`, then `process(batch, detected)`). Batches are padded to the
crops of a full batch (`Estimator.predict_batch(pad_to=)`): a short last batch compiles
nothing new.

Track ids (`Tracker`): each track's box is moved on at its constant velocity (smoothed
centre motion, for at most `predict_frames` frames), and a detection takes the id of the
track whose predicted box overlaps it most (IoU >= iou_threshold, Hungarian
assignment), else of the nearest remaining track (centre distance to its predicted or
its last box <= max_distance box sizes), else a new id: two subjects crossing keep
their ids where their last boxes alone would swap them. Tracks unseen for up to
`max_age` frames are kept, so a subject that leaves and returns where it left (or is
missed by the detector for a while) keeps its id. When the number of subjects is known
(`max_tracks`, e.g. 1 for a single animal), only the best max_tracks detections are
used, and once max_tracks tracks exist a detection takes the nearest free track however
far it is (a new id only while fewer exist), as SLEAP's target instance count does.
A track's box is the one its pose was last estimated in (the detection, or the box
carried from its keypoints). The tracks' predicted boxes go to the detector as hints
(`split_hints`; detectors.StaticBackgroundDetector uses them to split touching animals
among the tracks); ids only need boxes, so with det_every=1 each frame's ids are
assigned as soon as it is detected (`detections`), before the pose model.

Smoothing (`OneEuroFilter`, Casiez et al., CHI 2012) filters each track's keypoints: a
low-pass filter whose cutoff rises with speed (min_cutoff + beta * |speed|), so slow
jitter is removed and fast motion is not lagged.
"""

import dataclasses
import json
import math
import os

import numpy as np
from absl import logging
from scipy.optimize import linear_sum_assignment

from mamkpd_jax import progress as progress_lib
from mamkpd_jax.inference import detectors, video, visualization


# ------------------------------------------------------------------ One-Euro filter


def smoothing_factor(cutoff, dt):
  """alpha = 1 / (1 + tau / dt), tau = 1 / (2 pi cutoff): an exponential filter's weight."""
  tau = 1.0 / (2 * math.pi * cutoff)
  return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
  """The One-Euro filter (Casiez, Roussel, Vogel 2012) on arrays of any fixed shape.

      dx_hat = a(d_cutoff) * (x - x_hat_prev) / dt + (1 - a(d_cutoff)) * dx_hat_prev
      cutoff = min_cutoff + beta * |dx_hat|
      x_hat  = a(cutoff) * x + (1 - a(cutoff)) * x_hat_prev

  with a(c) = smoothing_factor(c, dt); the first sample passes unchanged (dx_hat = 0).
  Cutoffs in Hz when t is in seconds.
  """

  def __init__(self, min_cutoff=1.0, beta=0.0, d_cutoff=1.0):
    if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
      raise ValueError(f"One-Euro filter needs min_cutoff > 0, d_cutoff > 0, beta >= 0; got "
                       f"{min_cutoff}, {d_cutoff}, {beta}")
    self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
    self.x_hat = self.dx_hat = self.t = None

  def __call__(self, x, t):
    """The filtered value of x (any shape) at time t (> the previous t)."""
    x = np.asarray(x, np.float64)
    if self.x_hat is None:
      self.x_hat, self.dx_hat, self.t = x, np.zeros_like(x), t
      return x
    dt = t - self.t
    if dt <= 0:
      raise ValueError(f"One-Euro filter: time must increase, got {t} after {self.t}")
    a_d = smoothing_factor(self.d_cutoff, dt)
    self.dx_hat = a_d * (x - self.x_hat) / dt + (1 - a_d) * self.dx_hat
    a = smoothing_factor(self.min_cutoff + self.beta * np.abs(self.dx_hat), dt)
    self.x_hat, self.t = self.x_hat + a * (x - self.x_hat), t     # = a x + (1 - a) x_hat
    return self.x_hat


# ------------------------------------------------------------------ track ids


def keypoint_box(keypoints, scores, threshold, padding=1.25):
  """The (4,) xywh box of the keypoints (K, 2) scoring >= threshold, w and h scaled by
  padding about its centre; None when fewer than 2 such keypoints or a zero-size box."""
  shown = (scores >= threshold) & np.isfinite(keypoints).all(-1)
  if shown.sum() < 2:
    return None
  low, high = keypoints[shown].min(0), keypoints[shown].max(0)            # (2,), (2,)
  size = (high - low) * padding
  if np.any(size < 1.0):
    return None
  return np.concatenate([(low + high) / 2 - size / 2, size]).astype(np.float32)


@dataclasses.dataclass
class Track:
  box: np.ndarray       # (4,) xywh: where the subject was last seen
  last_seen: int        # frame index
  velocity: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros(2, np.float32))   # (2,) box centre px / frame


class Tracker:
  """Track ids for boxes, frame after frame (module docstring).

  Each track's box is predicted forward at constant velocity (its centre's smoothed
  motion per frame, `velocity_smoothing` the weight of the newest step) for at most
  `predict_frames` frames; detections are matched to the predicted boxes, so two
  subjects crossing keep their ids where their last boxes alone would swap them
  (predict_frames=0: the last boxes, no motion)."""

  def __init__(self, iou_threshold=0.3, max_distance=1.0, max_age=30, max_tracks=None,
               velocity_smoothing=0.5, predict_frames=3):
    self.iou_threshold, self.max_distance, self.max_age = iou_threshold, max_distance, max_age
    self.max_tracks = max_tracks
    self.velocity_smoothing, self.predict_frames = velocity_smoothing, predict_frames
    self.tracks = {}          # id -> Track
    self.next_id = 0

  def _matches(self, cost, allowed):
    """(row, col) pairs of a minimum-cost assignment restricted to allowed pairs."""
    if cost.size == 0:
      return []
    rows, cols = linear_sum_assignment(np.where(allowed, cost, 1e9))
    return [(r, c) for r, c in zip(rows, cols) if allowed[r, c]]

  def predicted_box(self, track, frame_index):
    """track's box (4,) xywh moved by its velocity to frame_index (at most
    predict_frames frames ahead)."""
    steps = min(frame_index - track.last_seen, self.predict_frames)
    return np.concatenate([track.box[:2] + steps * track.velocity, track.box[2:]])

  def predictions(self, frame_index):
    """The predicted boxes (T, 4) xywh at frame_index of the tracks seen in the last
    predict_frames frames before it (a detector's hints: where the subjects should be)."""
    recent = [t for t in self.tracks.values()
              if 0 < frame_index - t.last_seen <= max(self.predict_frames, 1)]
    return np.array([self.predicted_box(t, frame_index) for t in recent],
                    np.float32).reshape(-1, 4)

  def assign(self, boxes, frame_index):
    """Track ids (M,) of boxes (M, 4) xywh detected in frame frame_index."""
    self.tracks = {i: t for i, t in self.tracks.items()
                   if frame_index - t.last_seen <= self.max_age}
    ids = [i for i in self.tracks if self.tracks[i].last_seen < frame_index]
    old = np.array([self.predicted_box(self.tracks[i], frame_index) for i in ids],
                   np.float32).reshape(-1, 4)                            # (T, 4)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    iou = detectors.box_iou(boxes, old)                                  # (M, T)
    matches = self._matches(-iou, iou >= self.iou_threshold)
    assigned = dict(matches)
    free_rows = [r for r in range(len(boxes)) if r not in assigned]
    free_cols = [c for c in range(len(ids)) if c not in assigned.values()]
    last = np.array([self.tracks[ids[c]].box for c in free_cols], np.float32).reshape(-1, 4)
    distance = np.minimum(center_distance(boxes[free_rows], old[free_cols]),
                          center_distance(boxes[free_rows], last))        # (M', T')
    gate = distance <= self.max_distance
    if self.max_tracks and len(free_rows) > self.max_tracks - len(self.tracks):
      gate = np.ones_like(gate)                    # no new ids to hand out: nearest track
    for r, c in self._matches(distance, gate):
      assigned[free_rows[r]] = free_cols[c]
    result = []
    for row, box in enumerate(boxes):
      if row in assigned:
        track_id = ids[assigned[row]]
      else:
        track_id, self.next_id = self.next_id, self.next_id + 1
      self.observe(track_id, box, frame_index)
      result.append(track_id)
    return np.array(result, np.int64)

  def observe(self, track_id, box, frame_index):
    """Track track_id was at box (4,) xywh in frame frame_index (its velocity updated
    from its previous box, a new track's is 0)."""
    box = np.asarray(box, np.float32)
    track = self.tracks.get(track_id)
    velocity = np.zeros(2, np.float32)
    if track is not None and frame_index > track.last_seen:
      step = (box_center(box) - box_center(track.box)) / (frame_index - track.last_seen)
      velocity = (self.velocity_smoothing * step +
                  (1 - self.velocity_smoothing) * track.velocity).astype(np.float32)
    elif track is not None:
      velocity = track.velocity
    self.tracks[track_id] = Track(box, frame_index, velocity)


def box_center(box):
  """The centre (2,) of a (4,) xywh box."""
  return np.asarray(box[:2], np.float32) + np.asarray(box[2:], np.float32) / 2


def center_distance(boxes, others):
  """Distance of box centres (N, 4) xywh to (M, 4), in units of the larger box's size
  sqrt(w * h) -> (N, M)."""
  centers = boxes[:, None, :2] + boxes[:, None, 2:] / 2                   # (N, 1, 2)
  other_centers = others[None, :, :2] + others[None, :, 2:] / 2           # (1, M, 2)
  size = np.sqrt(np.maximum(np.prod(boxes[:, None, 2:], -1),
                            np.prod(others[None, :, 2:], -1)))            # (N, M)
  return np.linalg.norm(centers - other_centers, axis=-1) / np.maximum(size, 1e-6)


# ------------------------------------------------------------------ poses with track ids


@dataclasses.dataclass
class TrackingConfig:
  """How PoseTracker detects, carries, matches and smooths (module docstring)."""

  det_every: int = 1               # run the detector on every n-th frame
  batch_frames: int = 8            # frames per model call when det_every == 1
  keypoint_threshold: float = 0.3  # keypoints carried into the next box, and drawn
  carry_padding: float = 1.25      # the carried box: keypoint box scaled by this
  carry_nms_iou: float = 0.7       # carried boxes overlapping more: the best pose's kept
  iou_threshold: float = 0.3
  max_distance: float = 1.0        # in box sizes (Tracker)
  max_age: int = 30                # frames a lost track is kept
  max_tracks: int = 0              # the number of subjects when known (0: any)
  velocity_smoothing: float = 0.5  # a track's velocity: this weight on its newest step
  predict_frames: int = 3          # a lost track's box moved at most this many frames on
  split_hints: bool = True         # pass the tracks' predicted boxes to the detector
  smoothing: bool = False          # One-Euro filter keypoints per track
  min_cutoff: float = 1.0          # Hz
  beta: float = 0.05
  d_cutoff: float = 1.0            # Hz
  fps: float = 25.0                # the filter's time base

  def validate(self):
    if self.det_every < 1 or self.batch_frames < 1 or self.max_age < 0 or self.max_tracks < 0:
      raise ValueError(f"det_every and batch_frames must be >= 1, max_age and max_tracks "
                       f">= 0, got {self.det_every}, {self.batch_frames}, {self.max_age}, "
                       f"{self.max_tracks}")
    if not 0 < self.velocity_smoothing <= 1 or self.predict_frames < 0:
      raise ValueError(f"velocity_smoothing must be in (0, 1] and predict_frames >= 0, got "
                       f"{self.velocity_smoothing}, {self.predict_frames}")
    if self.smoothing:
      OneEuroFilter(self.min_cutoff, self.beta, self.d_cutoff)       # checks the values


class PoseTracker:
  """Frames in order -> inference.Prediction with track_ids (keypoints smoothed when
  asked), for one video (state: tracks, carried boxes)."""

  def __init__(self, estimator, detector=None, config=None):
    self.estimator, self.detector = estimator, detector
    self.config = config or TrackingConfig()
    self.config.validate()
    self.tracker = Tracker(self.config.iou_threshold, self.config.max_distance,
                           self.config.max_age, self.config.max_tracks,
                           self.config.velocity_smoothing, self.config.predict_frames)
    self.carried = {}           # track id -> (4,) box for the next frame
    self.filters = {}           # track id -> (OneEuroFilter, last frame index)

  def _detect(self, index, name, frame):
    """The detector's best (max_tracks) boxes (M, 4) of a frame, given the tracks'
    predicted boxes as hints (split_hints); None without a detector."""
    if self.detector is None:
      return None                                       # the whole frame (warned once)
    hints = self.tracker.predictions(index) if self.config.split_hints else None
    found = detectors.detect(self.detector, frame, key=(index, name), hints=hints)
    best = np.argsort(-found.scores, kind="stable")[:self.config.max_tracks or None]
    return found.boxes[best]

  def detections(self, batch):
    """When every frame is detected (det_every == 1): per (index, name, frame) of batch,
    (the detector's boxes (M_i, 4), their track ids (M_i,)), or (None, None) without a
    detector (the whole frame, ids assigned after the model). Frame by frame: a
    frame's ids, hence the next frame's hints, depend on its boxes alone, so this may
    run ahead of the model on another thread (which then owns the tracker). Else None:
    the boxes of frames in between come from the previous frame's poses."""
    if self.config.det_every != 1:
      return None
    found = []
    for index, name, frame in batch:
      boxes = self._detect(index, name, frame)
      found.append((boxes, None if boxes is None else self.tracker.assign(boxes, index)))
    return found

  def process(self, batch, detected=None):
    """[(index, name, frame (H, W, 3) RGB uint8)] in order -> [Prediction], each with
    its track_ids set. detected: `detections(batch)` when found beforehand (another
    thread may find them; used when det_every == 1), else None (the detector runs
    here)."""
    if self.config.det_every == 1:
      frames = [frame for _, _, frame in batch]
      found = self.detections(batch) if detected is None else detected
      predictions = self.estimator.predict_batch(frames, [boxes for boxes, _ in found],
                                                 pad_to=self.config.batch_frames)
      return [self._track(index, prediction, ids)
              for (index, _, _), prediction, (_, ids) in zip(batch, predictions, found)]
    return [self._process_frame(*item) for item in batch]

  def _process_frame(self, index, name, frame):
    if index % self.config.det_every == 0 or not self.carried:
      boxes, ids, carried = self._detect(index, name, frame), None, False
    else:
      ids, carried = np.array(list(self.carried), np.int64), True
      boxes = np.stack(list(self.carried.values()))
    prediction = self.estimator.predict_batch([frame], [boxes])[0]
    return self._track(index, prediction, ids, carried)

  def _track(self, index, prediction, ids, carried=False):
    """prediction with its track ids (assigned here when None; carried: the boxes were
    carried from the previous frame's poses) and smoothed keypoints; the next frame's
    boxes."""
    if ids is None:
      ids = self.tracker.assign(prediction.boxes, index)
    self._carry(ids, prediction)
    for i, track_id in enumerate(ids):
      if carried and int(track_id) in self.carried:          # found where it was carried to
        self.tracker.observe(track_id, prediction.boxes[i], index)
      if self.config.smoothing:
        prediction.keypoints[i] = self._smooth(int(track_id), prediction.keypoints[i], index)
    return dataclasses.replace(prediction, track_ids=np.asarray(ids, np.int64))  # checked

  def _carry(self, ids, prediction):
    """The next frame's boxes: each pose's keypoint box; of boxes overlapping more than
    carry_nms_iou (two tracks on one subject) the best-scoring pose's."""
    boxes = [keypoint_box(keypoints, scores, self.config.keypoint_threshold,
                          self.config.carry_padding)
             for keypoints, scores in zip(prediction.keypoints, prediction.keypoint_scores)]
    found = [i for i, box in enumerate(boxes) if box is not None]
    keep = detectors.nms(np.array([boxes[i] for i in found]).reshape(-1, 4),
                         prediction.scores[found], np.zeros(len(found)),
                         self.config.carry_nms_iou)
    self.carried = {int(ids[found[k]]): boxes[found[k]] for k in sorted(keep)}

  def _smooth(self, track_id, keypoints, index):
    """keypoints (K, 2) filtered by the track's One-Euro filter (restarted after a gap)."""
    entry = self.filters.get(track_id)
    if entry is None or entry[1] != index - 1:
      entry = (OneEuroFilter(self.config.min_cutoff, self.config.beta, self.config.d_cutoff),
               index)
    self.filters[track_id] = (entry[0], index)
    return entry[0](keypoints, index / self.config.fps).astype(np.float32)


# ------------------------------------------------------------------ outputs


def frame_records(prediction, index, name="", category_id=1):
  """A tracked frame's Prediction.to_json (image_id = frame index: COCO results with
  bbox and track_id) with frame_index and file_name added."""
  records = prediction.to_json(image_id=index, category_id=category_id)
  for record in records:
    record.update(frame_index=index, file_name=name)
  return records


def draw_tracked(frame, prediction, info, threshold):
  """The frame with poses, boxes and "id N" labels drawn (visualization's drawing)."""
  drawn = visualization.draw_prediction(frame, prediction, info, threshold)
  return visualization.draw_labels(drawn, prediction.boxes,
                                   [f"id {i}" for i in prediction.track_ids])


def output_paths(source, output_dir):
  """(mp4, json) paths in output_dir, named after the source ("webcam0" for a webcam)."""
  index = video.webcam_index(source)
  stem = f"webcam{index}" if index is not None else \
      os.path.splitext(os.path.basename(os.path.normpath(str(source))))[0]
  paths = tuple(os.path.join(output_dir, stem + ext) for ext in (".mp4", ".json"))
  if index is None:
    for path in paths:
      video.refuse_overwrite(path, source)
  return paths


def track_video(estimator, source, output_dir, detector=None, det_every=1, smoothing=False,
                batch_frames=8, max_frames=None, log_every=50, write_video=True,
                overlap=True, **options):
  """Tracked poses of a video file, an image folder (frames sorted by name) or a webcam
  index; writes OUTPUT_DIR/<stem>.json and (write_video) OUTPUT_DIR/<stem>.mp4.

  Args:
    estimator: an inference.Estimator.
    source: a video path, a folder of frames, or a webcam index (int or "0").
    output_dir: created if needed.
    detector: a mamkpd_jax.inference.detectors detector or callable; None: the whole frame is
      the first box (then boxes are carried from the keypoints).
    det_every, smoothing, batch_frames: as TrackingConfig.
    max_frames: stop after this many frames (a webcam runs until it fails or Ctrl-C).
    log_every: a progress line (frames/s, ETA) every this many frames.
    write_video: draw the poses and ids into an mp4; False: the json only (faster).
    overlap: decode and detect on a reader thread, draw and encode on a writer thread,
      beside the model (video.run_frames); False: one thread, the same results.
    **options: other TrackingConfig fields (keypoint_threshold, min_cutoff, beta,
      max_age, ...); fps defaults to the source's.

  Returns:
    {"video": mp4 path (None without write_video), "json": json path, "frames": count,
     "track_ids": sorted ids, "seconds": wall time, "frames_per_second": frames /
     seconds, "steady_frames_per_second": frames/s after the first batch (None when
     there is one batch), "first_batch_seconds": the first batch's time (compilation),
     "summary": the line `mamkpd track` prints}.
  """
  total, fps = video.frame_count_and_fps(source)
  config = TrackingConfig(**{"fps": fps, **options, "det_every": det_every,
                             "smoothing": smoothing, "batch_frames": batch_frames})
  tracker = PoseTracker(estimator, detector, config)
  mp4_path, json_path = output_paths(source, output_dir)
  os.makedirs(output_dir, exist_ok=True)
  writer = video.VideoWriter(mp4_path, config.fps) if write_video else None
  total = min(total, max_frames) if max_frames and total else (max_frames or total)
  records = []

  def detect_ahead(batch):                     # reader thread: items + (boxes, ids)
    found = tracker.detections(batch) or [None] * len(batch)
    return [(*item, boxes) for item, boxes in zip(batch, found)]

  def process(batch):                          # this thread: the model and the ids
    return tracker.process([item[:3] for item in batch], [item[3] for item in batch])

  def consume(item, prediction):               # writer thread: draw, encode, json
    index, name, frame, _ = item
    if writer is not None:
      writer.write(draw_tracked(frame, prediction, estimator.info,
                                config.keypoint_threshold))
    records.extend(frame_records(prediction, index, name))

  frames = video.batches(video.read_frames(source, max_frames), config.batch_frames)
  try:
    throughput = video.run_frames(map(detect_ahead, frames), process, consume,
                                  progress_lib.Progress(total, log_every), overlap,
                                  interruptible=True)
  finally:
    frames.close()                             # the video file, also after an error
    if writer is not None:
      writer.close()
  with open(json_path, "w", encoding="utf-8") as f:
    json.dump(records, f)
  summary = throughput.line("tracked")
  logging.info("%s; %d poses -> %s", summary, len(records), json_path)
  return {"video": mp4_path if write_video else None, "json": json_path,
          "frames": throughput.frames, "track_ids": sorted({r["track_id"] for r in records}),
          "seconds": throughput.seconds, "frames_per_second": throughput.frames_per_second,
          "steady_frames_per_second": throughput.steady_frames_per_second,
          "first_batch_seconds": throughput.first_seconds, "summary": summary}
