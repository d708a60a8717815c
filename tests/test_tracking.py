"""mamkpd_jax.inference.tracking: track ids through a synthetic clip (two subjects swap sides, one
leaves the frame and returns, a third appears) with a fake detector and pose model; the
One-Euro filter against the formula written out; one end-to-end run of the tiny model
with the static-background detector on bundled open-field frames."""

import json
import math
import pathlib
import re
import shutil
import subprocess
import sys
import types
import warnings

import cv2
import numpy as np
import pytest

from mamkpd_jax import inference
from mamkpd_jax.inference import detectors, tracking, video
# The tiny open-field workdir and its fast-compiled estimator (module fixtures).
from test_inference import estimator, workdir  # pylint: disable=unused-import

REPO = pathlib.Path(__file__).resolve().parents[1]
FRAMES = REPO / "data/samples/dlc-openfield/labeled-data/m4s1"
WIDTH, HEIGHT, NUM_FRAMES = 320, 240, 40


# ------------------------------------------------------------------ a synthetic clip


def clip_box(box):
  """The visible part (x, y, w, h) of a box in the frame, or None."""
  x0, y0 = max(box[0], 0), max(box[1], 0)
  x1, y1 = min(box[0] + box[2], WIDTH), min(box[1] + box[3], HEIGHT)
  return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


def scene(t):
  """{subject: visible box} at frame t. A walks right to left (top row), B left to right
  (bottom row) until it leaves the frame on the right at t = 25, and comes back in
  where it left at t = 30; C appears at t = 32."""
  b_x = 20 + 12 * t if t <= 27 else 344 - 12 * (t - 27)
  boxes = {"A": (260 - 6 * t, 40, 40, 60), "B": (b_x, 150, 40, 60)}
  if t >= 32:
    boxes["C"] = (150, 110, 40, 30)
  return {name: clip_box(box) for name, box in boxes.items() if clip_box(box)}


def synthetic_frame(t):
  """A black frame with the subjects drawn as grey rectangles and its index written in
  the top-left 16 x 16 pixels as 6 * index (frame_index reads it, also after mp4
  compression)."""
  frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
  for x, y, w, h in scene(t).values():
    frame[y:y + h, x:x + w] = 128
  frame[:16, :16] = 6 * t
  return frame


def frame_index(image):
  return int(round(image[:16, :16].mean() / 6))


def fake_detector(seed=0):
  """Boxes of the frame's subjects, in a random order (ids must not depend on it)."""
  rng = np.random.default_rng(seed)

  def detect(image):
    boxes = np.array(list(scene(frame_index(image)).values()), np.float32)
    return boxes[rng.permutation(len(boxes))]

  return detect


class FakeEstimator:
  """A pose model that finds the subject overlapping each box: 5 keypoints (corners and
  centre of its visible box) scoring 0.9; none there: the box centre, scoring 0."""

  info = types.SimpleNamespace(keypoint_names=("a", "b", "c", "d", "e"), skeleton=((0, 1),))

  def __init__(self):
    self.calls = []                       # images per predict_batch call
    self.pad_to = []                      # predict_batch's pad_to per call

  def predict_batch(self, images, boxes_list, pad_to=1):
    self.calls.append(len(images))
    self.pad_to.append(pad_to)
    return [self._predict(image, boxes) for image, boxes in zip(images, boxes_list)]

  def _predict(self, image, boxes):
    truth = list(scene(frame_index(image)).values())
    keypoints, scores = np.zeros((len(boxes), 5, 2), np.float32), np.zeros((len(boxes), 5))
    for i, box in enumerate(boxes):
      iou = detectors.box_iou(box, truth)[0] if truth else np.zeros(1)
      x, y, w, h = truth[int(iou.argmax())] if iou.max() > 0.1 else (*box[:2] + box[2:] / 2, 0, 0)
      keypoints[i] = [[x, y], [x + w, y], [x, y + h], [x + w, y + h], [x + w / 2, y + h / 2]]
      scores[i] = 0.9 if iou.max() > 0.1 else 0.0
    return inference.Prediction(np.asarray(boxes, np.float32), keypoints,
                                scores.astype(np.float32), scores.mean(1).astype(np.float32))


def ids_by_subject(records):
  """{subject: set of track ids} of the records with a found pose."""
  found = {}
  for record in records:
    if record["score"] == 0:
      continue                           # a carried box whose subject has gone
    truth = scene(record["frame_index"])
    center = np.array(record["keypoints"]).reshape(-1, 3)[4, :2]
    name = min(truth, key=lambda n: np.linalg.norm(
        np.array(truth[n][:2]) + np.array(truth[n][2:]) / 2 - center))
    found.setdefault(name, set()).add(record["track_id"])
  return found


def synthetic_video(path):
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (WIDTH, HEIGHT))
  for t in range(NUM_FRAMES):
    writer.write(synthetic_frame(t))
  writer.release()
  return str(path)


@pytest.mark.parametrize("det_every", [1, 3])
def test_ids_survive_swapping_sides_leaving_and_returning(det_every):
  estimator = FakeEstimator()
  tracker = tracking.PoseTracker(estimator, fake_detector(),
                                 tracking.TrackingConfig(det_every=det_every, batch_frames=4))
  frames = [(t, f"frame{t:06d}", synthetic_frame(t)) for t in range(NUM_FRAMES)]
  records = []
  for start in range(0, NUM_FRAMES, 4):
    batch = frames[start:start + 4]
    for (t, name, _), prediction in zip(batch, tracker.process(batch)):
      records += tracking.frame_records(prediction, t, name)
  ids = ids_by_subject(records)
  assert all(len(subject_ids) == 1 for subject_ids in ids.values()), ids
  assert len(set.union(*ids.values())) == 3 and set(ids) == {"A", "B", "C"}
  # B is away at t = 25..29 and seen again from t = 30
  assert {r["frame_index"] for r in records if r["track_id"] in ids["B"] and r["score"] > 0} \
      == set(range(25)) | set(range(30, NUM_FRAMES))
  # det_every = 1: 4 frames per model call, padded to a full batch; else frame by frame
  assert estimator.calls == ([4] * 10 if det_every == 1 else [1] * NUM_FRAMES)
  assert set(estimator.pad_to) == ({4} if det_every == 1 else {1})


@pytest.mark.parametrize("det_every", [1, 3])
def test_tracked_frames_are_predictions_with_track_ids(det_every):
  """The tracker's results are the Estimator's type, its track_ids set; the json records
  are Prediction.to_json's, their "track_id" those ids, plus the frame's index and name."""
  tracker = tracking.PoseTracker(FakeEstimator(), fake_detector(),
                                 tracking.TrackingConfig(det_every=det_every))
  frames = [(t, f"f{t}.png", synthetic_frame(t)) for t in range(8)]
  predictions = tracker.process(frames)
  assert all(isinstance(p, inference.Prediction) for p in predictions)
  assert not hasattr(tracking, "TrackedFrame")
  for (t, name, _), prediction in zip(frames, predictions):
    assert len(prediction.track_ids) == len(scene(t)) == len(prediction.boxes)
    assert np.all(prediction.track_ids != inference.UNTRACKED)
    as_json = prediction.to_json(image_id=t)
    assert [r["track_id"] for r in as_json] == prediction.track_ids.tolist()
    records = tracking.frame_records(prediction, t, name)
    assert records == [{**r, "frame_index": t, "file_name": name} for r in as_json]
  # A (top) and B (bottom) keep their ids over the 8 frames; ids 0 and 1 only
  assert {i for p in predictions for i in p.track_ids} == {0, 1}


def test_a_short_max_age_forgets_the_subject_that_left():
  config = tracking.TrackingConfig(max_age=2)
  tracker = tracking.PoseTracker(FakeEstimator(), fake_detector(), config)
  records = [r for t in range(NUM_FRAMES)
             for prediction in tracker.process([(t, "", synthetic_frame(t))])
             for r in tracking.frame_records(prediction, t)]
  assert len(ids_by_subject(records)["B"]) == 2          # a new id when B returns


def test_a_known_number_of_subjects_keeps_one_id_through_jumps():
  """One subject jumping 3 box sizes a frame: a new id each time, unless max_tracks=1
  (the extra low-scoring detection is dropped then)."""
  jumps = [np.array([[x, 50, 20, 20]], np.float32) for x in (0, 60, 120, 180, 240)]
  tracker = tracking.Tracker()
  assert [tracker.assign(boxes, t)[0] for t, boxes in enumerate(jumps)] == [0, 1, 2, 3, 4]
  tracker = tracking.Tracker(max_tracks=1)
  assert [tracker.assign(boxes, t)[0] for t, boxes in enumerate(jumps)] == [0] * 5
  estimator = FakeEstimator()
  detector = lambda image: (np.array(list(scene(frame_index(image)).values()))[:1].repeat(
      2, 0) + [[0, 0, 0, 0], [100, 100, 0, 0]], np.array([0.9, 0.2]))
  tracker = tracking.PoseTracker(estimator, detector, tracking.TrackingConfig(max_tracks=1))
  tracked = tracker.process([(0, "", synthetic_frame(0))])[0]
  np.testing.assert_array_equal(tracked.boxes, [scene(0)["A"]])


def test_two_carried_boxes_on_one_subject_become_one():
  """A detector that finds A twice (2 px apart): both poses land on A, and only the
  better one is carried into the next frame (carry_nms_iou)."""
  def twice(image):
    a = np.array(scene(frame_index(image))["A"], np.float32)
    return np.stack([a, a + [2, 0, 0, 0]]), np.array([0.9, 0.8])

  tracker = tracking.PoseTracker(FakeEstimator(), twice, tracking.TrackingConfig(det_every=3))
  first, second = tracker.process([(t, "", synthetic_frame(t)) for t in (0, 1)])
  assert len(first.track_ids) == 2 and len(second.track_ids) == 1
  assert second.track_ids[0] == first.track_ids[0]


def test_track_video_writes_an_mp4_and_a_json(tmp_path):
  source = synthetic_video(tmp_path / "clip.mp4")
  result = tracking.track_video(FakeEstimator(), source, str(tmp_path / "out"),
                                detector=fake_detector(), det_every=2, smoothing=True)
  assert result["frames"] == NUM_FRAMES and result["track_ids"] == [0, 1, 2]
  capture = cv2.VideoCapture(result["video"])
  assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == NUM_FRAMES
  ok, first = capture.read()
  assert ok and first.shape == (HEIGHT, WIDTH, 3)
  records = json.loads(pathlib.Path(result["json"]).read_text())
  assert {r["frame_index"] for r in records} == set(range(NUM_FRAMES))
  assert set(records[0]) >= {"frame_index", "track_id", "bbox", "keypoints", "score"}
  assert all(len(set(ids)) == 1 for ids in ids_by_subject(records).values())
  # the static-background detector's sample of a video file (seeking: OpenCV may land
  # a frame off in compressed video)
  sampled = [frame_index(f) for f in video.sample_frames(source, 5)]
  np.testing.assert_allclose(sampled, [0, 10, 20, 29, 39], atol=1)
  with pytest.raises(ValueError, match="overwrite the input"):
    tracking.track_video(FakeEstimator(), result["video"], str(tmp_path / "out"))
  with pytest.raises(FileNotFoundError, match="video not found: .*missing.mp4"):
    tracking.track_video(FakeEstimator(), str(tmp_path / "missing.mp4"), str(tmp_path))
  with pytest.raises(ValueError, match="det_every"):
    tracking.track_video(FakeEstimator(), source, str(tmp_path / "o"), det_every=0)


@pytest.mark.parametrize("det_every", [1, 3])
def test_the_overlapped_loop_gives_the_one_thread_loop_s_records(tmp_path, det_every):
  """track_video's reader and writer threads (detections found ahead, drawing behind)
  change nothing: the same records, in order, and the same drawn frames as one thread."""
  source = synthetic_video(tmp_path / "clip.mp4")
  runs = {}
  for overlap in (True, False):
    drawn = []
    with pytest.MonkeyPatch.context() as patch:
      patch.setattr(video.VideoWriter, "write", lambda self, frame: drawn.append(frame))
      result = tracking.track_video(FakeEstimator(), source, str(tmp_path / f"o{overlap}"),
                                    detector=fake_detector(), det_every=det_every,
                                    batch_frames=3, smoothing=True, overlap=overlap)
    runs[overlap] = (json.loads(pathlib.Path(result["json"]).read_text()), drawn)
  (records, drawn), (one_thread, one_thread_drawn) = runs[True], runs[False]
  assert records == one_thread and len(drawn) == NUM_FRAMES
  assert [r["frame_index"] for r in records] == sorted(r["frame_index"] for r in records)
  for frame, expected in zip(drawn, one_thread_drawn):
    np.testing.assert_array_equal(frame, expected)


def test_the_loop_s_speed_counts_the_first_batch_apart():
  throughput = video.Throughput(frames=10, seconds=3.0, first_frames=2, first_seconds=1.0)
  assert throughput.steady_frames_per_second == pytest.approx(4.0)     # 8 frames in 2 s
  assert throughput.frames_per_second == pytest.approx(10 / 3)
  assert throughput.line("tracked") == ("tracked 10 frames in 3.0 s: 4.0 frames/s steady "
                                        "state (first batch, compilation, 1.0 s)")
  one = video.Throughput(frames=2, seconds=1.0, first_frames=2, first_seconds=1.0)
  assert one.steady_frames_per_second is None and "no steady state" in one.line()
  clock = iter(range(100))             # clock reads: start 0, first batch 1, end 2
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(video.time, "perf_counter", lambda: float(next(clock)))
    timed = video.run_frames([[1, 2], [3, 4], [5]], lambda b: b, lambda i, o: None,
                             overlap=False)
  assert (timed.frames, timed.first_frames, timed.first_seconds, timed.seconds) == \
      (5, 2, 1.0, 2.0)
  assert timed.steady_frames_per_second == 3.0


def test_the_loop_s_threads_raise_errors_and_stop():
  consumed = []

  def fail_at(n):
    def check(item, *_):
      if item == n:
        raise RuntimeError(f"item {n}")
      consumed.append(item)
    return check

  def items():
    yield from ([i, i + 1] for i in range(0, 1000, 2))

  batches = items()
  with pytest.raises(RuntimeError, match="item 5"):       # the writer thread's error
    video.run_frames(batches, lambda b: b, fail_at(5))
  assert consumed == [0, 1, 2, 3, 4]
  assert batches.gi_frame is None                      # the reader was stopped, closed
  with pytest.raises(RuntimeError, match="item 3"):       # this thread's error
    video.run_frames(items(), lambda b: [fail_at(3)(i) for i in b], lambda i, o: None)

  def broken():
    yield [0, 1]
    raise OSError("cannot decode")
  with pytest.raises(OSError, match="cannot decode"):     # the reader thread's error
    video.run_frames(broken(), lambda b: b, lambda i, o: None)
  with pytest.raises(ValueError, match="zip"):            # one output per item
    video.run_frames([[0, 1]], lambda b: b[:1], lambda i, o: None)


def test_the_overlapped_loop_gives_the_frame_by_frame_poses(estimator, tmp_path):
  """The tiny model through track_video (batches of 3 frames padded to bucket 8,
  detections ahead, drawing behind) finds what Estimator.predict finds frame by frame."""
  clip = tmp_path / "frames"
  clip.mkdir()
  for i in range(100, 105):
    shutil.copy(FRAMES / f"img{i:04d}.png", clip)
  detector = detectors.make_detector("background", source=str(FRAMES))
  traced = len(estimator.traced_buckets)
  result = tracking.track_video(estimator, str(clip), str(tmp_path / "out"),
                                detector=detector, batch_frames=3, write_video=False)
  assert result["video"] is None and not (tmp_path / "out/frames.mp4").exists()
  assert set(estimator.traced_buckets[traced:]) <= {8}      # 3 and 2 frames: bucket 8
  records = json.loads(pathlib.Path(result["json"]).read_text())
  assert [r["frame_index"] for r in records] == list(range(5))
  for record, (_, _, frame) in zip(records, video.read_frames(str(clip))):
    alone = estimator.predict(frame, detectors.detect(detector, frame).boxes)   # bucket 1
    np.testing.assert_allclose(record["bbox"], alone.boxes[0])
    np.testing.assert_allclose(np.reshape(record["keypoints"], (-1, 3))[:, :2],
                               alone.keypoints[0], atol=1e-3)
    np.testing.assert_allclose(np.reshape(record["keypoints"], (-1, 3))[:, 2],
                               alone.keypoint_scores[0], atol=1e-5)


def test_keypoint_box_by_hand():
  keypoints = np.array([[10, 20], [30, 60], [100, 100], [20, 40]], np.float32)
  scores = np.array([0.9, 0.8, 0.1, 0.5])
  # visible: (10, 20) .. (30, 60): centre (20, 40), size (20, 40) * 1.5
  np.testing.assert_allclose(tracking.keypoint_box(keypoints, scores, 0.3, 1.5),
                             [5, 10, 30, 60])
  assert tracking.keypoint_box(keypoints, scores, 0.85, 1.5) is None     # one keypoint


# ------------------------------------------------------------------ One-Euro filter


def one_euro_reference(xs, ts, min_cutoff, beta, d_cutoff):
  """Casiez et al. 2012, written out for one scalar signal."""
  def alpha(cutoff, dt):
    r = 2 * math.pi * cutoff * dt
    return r / (r + 1)

  out, x_prev, dx_prev = [xs[0]], xs[0], 0.0
  for i in range(1, len(xs)):
    dt = ts[i] - ts[i - 1]
    dx = (xs[i] - x_prev) / dt
    dx_hat = alpha(d_cutoff, dt) * dx + (1 - alpha(d_cutoff, dt)) * dx_prev
    cutoff = min_cutoff + beta * abs(dx_hat)
    x_hat = alpha(cutoff, dt) * xs[i] + (1 - alpha(cutoff, dt)) * x_prev
    out.append(x_hat)
    x_prev, dx_prev = x_hat, dx_hat
  return np.array(out)


def test_one_euro_matches_the_formula():
  rng = np.random.default_rng(0)
  ts = np.cumsum(rng.uniform(0.02, 0.05, 60))                     # uneven frame times
  signals = np.cumsum(rng.normal(0, 3, (60, 4, 2)), axis=0)       # (T, K, 2)
  one_euro = tracking.OneEuroFilter(min_cutoff=1.5, beta=0.3, d_cutoff=2.0)
  got = np.stack([one_euro(x, t) for x, t in zip(signals, ts)])
  for k in range(4):
    for c in range(2):
      want = one_euro_reference(signals[:, k, c], ts, 1.5, 0.3, 2.0)
      np.testing.assert_allclose(got[:, k, c], want, rtol=1e-12, atol=1e-9)
  assert np.std(np.diff(got[:, 0, 0])) < np.std(np.diff(signals[:, 0, 0]))  # it smooths


def test_one_euro_passes_a_constant_and_checks_its_input():
  one_euro = tracking.OneEuroFilter(min_cutoff=0.5, beta=1.0)
  constant = np.array([[3.25, -7.5], [100.0, 0.0]])
  for t in range(20):
    np.testing.assert_array_equal(one_euro(constant, t / 30), constant)
  with pytest.raises(ValueError, match="time must increase"):
    one_euro(constant, 0.0)
  with pytest.raises(ValueError, match="min_cutoff > 0"):
    tracking.OneEuroFilter(min_cutoff=0)


# ------------------------------------------------------------------ the tiny model, for real


def test_predict_with_a_detector_and_the_whole_image_warning(estimator, monkeypatch):
  image = inference.load_image(str(FRAMES / "img0100.png"))
  box = np.array([[61.5, 384.2, 128.5, 44.3]], np.float32)
  with_detector = estimator.predict(image, detector=lambda frame: box)
  np.testing.assert_array_equal(with_detector.boxes, box)
  np.testing.assert_allclose(with_detector.keypoints, estimator.predict(image, box).keypoints,
                             atol=1e-4)
  nothing = estimator.predict(image, detector=lambda frame: np.zeros((0, 4)))
  assert nothing.keypoints.shape == (0, 4, 2) and nothing.scores.shape == (0,)
  monkeypatch.setattr("mamkpd_jax.inference.estimator._WARNED_WHOLE_IMAGE", [])
  with pytest.warns(UserWarning, match="pass boxes=.* or a detector="):
    estimator.predict(image)
  with warnings.catch_warnings():
    warnings.simplefilter("error")                            # once: no second warning
    estimator.predict(image)
  with pytest.raises(ValueError, match="not both"):
    estimator.predict_batch([image], [box], detector=lambda frame: box)
  with pytest.raises(ValueError, match="not both"):
    estimator.predict(image, box, detector=lambda frame: box)


def test_track_the_mouse_with_the_background_detector(estimator, tmp_path):
  clip = tmp_path / "frames"
  clip.mkdir()
  for i in range(100, 106):
    shutil.copy(FRAMES / f"img{i:04d}.png", clip)
  detector = detectors.make_detector("background", source=str(FRAMES))
  result = tracking.track_video(estimator, str(clip), str(tmp_path / "out"),
                                detector=detector, batch_frames=8)
  print(f"tracking end to end: {result['frames_per_second']:.2f} frames/s")
  assert result["frames"] == 6 and result["track_ids"] == [0]
  records = json.loads(pathlib.Path(result["json"]).read_text())
  assert [r["file_name"] for r in records] == [f"img{i:04d}.png" for i in range(100, 106)]
  assert [r["track_id"] for r in records] == [0] * 6
  capture = cv2.VideoCapture(result["video"])
  assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6


def run_track(*args):
  """`mamkpd track`, compiled fast (bucket 8 shared through the persistent cache)."""
  return subprocess.run([sys.executable, "-m", "mamkpd_jax.cli", "track", "--fast_compile",
                         *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_track_script_on_the_bundled_frames_and_its_errors(workdir, tmp_path):
  out = tmp_path / "track"
  result = run_track(f"--checkpoint={workdir}", f"--input={FRAMES}", f"--output={out}",
                     "--detector=background", "--max_frames=4", "--smooth",
                     "--max_tracks=1", "--batch_frames=2")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "track ids [0]" in result.stdout
  assert re.search(r"^tracked 4 frames in [\d.]+ s: [\d.]+ frames/s steady state \(first "
                   r"batch, compilation, [\d.]+ s\)$", result.stdout, re.MULTILINE), \
      result.stdout
  records = json.loads((out / "m4s1.json").read_text())
  assert [r["frame_index"] for r in records] == [0, 1, 2, 3]
  assert (out / "m4s1.mp4").is_file()
  result = run_track(f"--checkpoint={workdir}", f"--input={tmp_path / 'none.mp4'}",
                     f"--output={out}", "--detector=background")
  assert result.returncode != 0 and "video not found" in result.stderr
  assert "none.mp4" in result.stderr
  result = run_track(f"--checkpoint={workdir}", f"--input={FRAMES}", f"--output={out}",
                     f"--detector=yolox:{tmp_path / 'yolox.onnx'}")
  assert result.returncode != 0 and "YOLOX ONNX file not found" in result.stderr
  result = run_track(f"--checkpoint={workdir}", f"--input={out / 'm4s1.mp4'}",
                     f"--output={out}")
  assert result.returncode != 0 and "would overwrite the input" in result.stderr
  assert "m4s1.mp4" in result.stderr


def test_webcam_sources_without_a_webcam(tmp_path):
  assert video.webcam_index("0") == 0 and video.webcam_index(2) == 2
  assert video.webcam_index("clip.mp4") is None
  mp4_path, _ = tracking.output_paths("1", str(tmp_path))
  assert mp4_path.endswith("webcam1.mp4")
  with pytest.raises(ValueError, match="cannot open webcam 99"):
    next(video.read_frames(99))


def test_smoothing_restarts_for_a_returning_track():
  """A moves steadily: its filtered keypoints lag the raw ones. B comes back at t = 30
  after a gap: its filter restarts there, so that frame passes unchanged."""
  runs, ids = {}, {}
  for smoothing in (False, True):
    tracker = tracking.PoseTracker(FakeEstimator(), fake_detector(),
                                   tracking.TrackingConfig(smoothing=smoothing, fps=10))
    records = [r for t in range(NUM_FRAMES)
               for prediction in tracker.process([(t, "", synthetic_frame(t))])
               for r in tracking.frame_records(prediction, t)]
    runs[smoothing] = {(r["frame_index"], r["track_id"]): np.array(r["keypoints"])
                       for r in records}
    ids = ids_by_subject(records)
  (a_id,), (b_id,) = ids["A"], ids["B"]
  raw, smooth = runs[False], runs[True]
  np.testing.assert_array_equal(smooth[0, a_id], raw[0, a_id])    # first sample
  assert np.abs(smooth[10, a_id] - raw[10, a_id]).max() > 1.0      # lags a moving subject
  np.testing.assert_array_equal(smooth[30, b_id], raw[30, b_id])  # restarted after the gap
  assert np.abs(smooth[31, b_id] - raw[31, b_id]).max() > 0
