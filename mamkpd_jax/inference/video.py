"""Images and frames in, video out: one image reader (`load_image`), frames of video
files, image folders (a video as an image sequence) and webcams, `VideoWriter`, and the
one loop `mamkpd predict` and `mamkpd track` run a video through (`run_frames`).

    for index, name, frame in read_frames("clip.mp4"):    # frame (H, W, 3) RGB uint8
    for index, name, frame in read_frames(0):              # webcam 0 (cv2.VideoCapture(0))
    throughput = run_frames(batches(read_frames("clip.mp4"), 8), model, draw_and_write)
    print(throughput.line("tracked"))      # steady-state frames/s, compilation apart

`run_frames` keeps the model's thread busy: a reader thread decodes (and detects) the
next batches ahead of it and a writer thread draws and encodes the finished frames
behind it. OpenCV, ONNX Runtime and XLA release the GIL while they work, so the three
stages overlap instead of taking turns; on a small model XLA's threads leave gaps the
other two fill.
"""

import dataclasses
import os
import queue
import threading
import time

import cv2
import numpy as np
from absl import logging

from mamkpd_jax.data_pipelines import transforms

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def list_image_files(folder):
  """The image files of a folder, sorted by name."""
  names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
  if not names:
    raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
  return [os.path.join(folder, n) for n in names]


def load_image(image):
  """A path or an (H, W, 3) RGB array -> (H, W, 3) uint8 RGB."""
  if isinstance(image, (str, os.PathLike)):
    if not os.path.isfile(image):
      raise FileNotFoundError(f"image not found: {image}")
    return transforms.decode_image(str(image))
  array = np.asarray(image)
  if array.ndim != 3 or array.shape[-1] != 3 or 0 in array.shape:
    raise ValueError(f"image must be (H, W, 3) RGB, got shape {array.shape}")
  if array.dtype != np.uint8:
    array = np.clip(np.round(array), 0, 255).astype(np.uint8)
  return array


def webcam_index(source):
  """The device index when source names a webcam (an int or a digit string), else None."""
  if isinstance(source, (int, np.integer)):
    return int(source)
  return int(source) if isinstance(source, str) and source.isdigit() else None


def refuse_overwrite(target, source):
  """A ValueError when writing `target` would overwrite the input file `source`."""
  if os.path.abspath(str(target)) == os.path.abspath(str(source)):
    raise ValueError(f"the output {target} would overwrite the input {source}: choose "
                     "another output folder")


def open_capture(source):
  """An opened cv2.VideoCapture of a video file or a webcam index."""
  index = webcam_index(source)
  if index is None and not os.path.isfile(source):
    raise FileNotFoundError(f"video not found: {source}")
  capture = cv2.VideoCapture(index if index is not None else str(source))
  if not capture.isOpened():
    what = f"webcam {index}" if index is not None else f"video {source}"
    raise ValueError(f"cannot open {what} (OpenCV could not open or decode it)")
  return capture


def frame_count_and_fps(source):
  """(number of frames or 0 when unknown, frames per second) of a source."""
  if webcam_index(source) is None and os.path.isdir(source):
    return len(list_image_files(source)), 25.0
  capture = open_capture(source)
  count, fps = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), capture.get(cv2.CAP_PROP_FPS)
  capture.release()
  return max(count, 0), fps if fps and fps > 0 else 25.0


def read_frames(source, max_frames=None):
  """Yields (index, name, frame (H, W, 3) RGB uint8) of a video file, an image folder
  (sorted by name) or a webcam index; name is the file's basename or "frame%06d"."""
  if webcam_index(source) is None and os.path.isdir(source):
    files = list_image_files(source)[:max_frames]
    for index, path in enumerate(files):
      yield index, os.path.basename(path), load_image(path)
    return
  capture = open_capture(source)
  try:
    index = 0
    while max_frames is None or index < max_frames:
      ok, frame = capture.read()
      if not ok:
        break
      yield index, f"frame{index:06d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
      index += 1
  finally:
    capture.release()


def sample_frames(source, num_frames):
  """Up to num_frames RGB frames spread evenly over a video file or an image folder."""
  if not os.path.exists(str(source)):
    raise FileNotFoundError(f"video not found: {source}")
  total, _ = frame_count_and_fps(source)
  picks = np.unique(np.linspace(0, max(total - 1, 0), num_frames).round().astype(int))
  if os.path.isdir(source):
    files = list_image_files(source)
    return [load_image(files[i]) for i in picks]
  if total == 0:                             # length unknown: the first frames
    return [frame for _, _, frame in read_frames(source, num_frames)]
  capture, frames = open_capture(source), []
  for index in picks:                        # seek instead of decoding the whole video
    capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
    ok, frame = capture.read()
    if ok:
      frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
  capture.release()
  return frames


def batches(items, size):
  """Lists of up to `size` consecutive items of an iterable (the last may be shorter)."""
  batch = []
  for item in items:
    batch.append(item)
    if len(batch) == size:
      yield batch
      batch = []
  if batch:
    yield batch


class VideoWriter:
  """An mp4 (mp4v) written frame by frame from RGB arrays; opened on the first frame."""

  def __init__(self, path, fps):
    self.path, self.fps, self.frames = path, fps, 0
    self._writer = None

  def write(self, frame):
    if self._writer is None:
      height, width = frame.shape[:2]
      os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
      self._writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                     (width, height))
    self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    self.frames += 1

  def close(self):
    if self._writer is not None:
      self._writer.release()
    logging.info("wrote %s (%d frames)", self.path, self.frames)


# ------------------------------------------------------------------ the frame loop


def read_ahead(items, depth=2):
  """The items of an iterable, produced by a background thread up to `depth` ahead of
  the caller (decoding beside the model). The producer's errors are raised here;
  leaving the loop (or closing this generator) stops the thread and closes `items` where
  it has a close() (a generator; a `map` over one does not: its caller closes that)."""
  ready, stop = queue.Queue(maxsize=depth), threading.Event()

  def put(entry):
    while not stop.is_set():
      try:
        ready.put(entry, timeout=0.05)
        return True
      except queue.Full:
        pass
    return False

  def produce():
    iterator = iter(items)
    try:
      for item in iterator:
        if not put((True, item)):
          return
      put((False, None))
    except BaseException as error:  # pylint: disable=broad-exception-caught
      put((False, error))           # raised in the caller's thread
    finally:
      getattr(iterator, "close", lambda: None)()

  thread = threading.Thread(target=produce, name="read_ahead", daemon=True)
  thread.start()
  try:
    while True:
      more, item = ready.get()
      if not more:
        if item is not None:
          raise item
        return
      yield item
  finally:
    stop.set()
    thread.join()


class Behind:
  """Calls fn(*args) for every `submit`, in order, on one background thread (drawing
  and encoding behind the model). fn's first error is raised by the next submit or by
  close; the calls after it are skipped."""

  def __init__(self, fn, depth=16):
    self._fn, self._queue, self._error = fn, queue.Queue(maxsize=depth), None
    self._raised = False
    self._thread = threading.Thread(target=self._work, name="behind", daemon=True)
    self._thread.start()

  def _work(self):
    while (args := self._queue.get()) is not None:
      if self._error is None:
        try:
          self._fn(*args)
        except BaseException as error:  # pylint: disable=broad-exception-caught
          self._error = error

  def _raise(self):
    if self._error is not None and not self._raised:
      self._raised = True
      raise self._error

  def submit(self, *args):
    self._raise()
    self._queue.put(args)

  def close(self):
    """Waits for every call submitted; raises fn's error if submit has not."""
    self._queue.put(None)
    self._thread.join()
    self._raise()


@dataclasses.dataclass(frozen=True)
class Throughput:
  """How fast a frame loop ran: all its frames, and those of its first batch (which
  include compiling the model) apart."""

  frames: int
  seconds: float
  first_frames: int = 0
  first_seconds: float = 0.0

  @property
  def frames_per_second(self):
    """All frames over all the time, compilation included."""
    return self.frames / max(self.seconds, 1e-9)

  @property
  def steady_frames_per_second(self):
    """Frames after the first batch over the time after it; None when there are none."""
    rest = self.frames - self.first_frames
    return rest / max(self.seconds - self.first_seconds, 1e-9) if rest > 0 else None

  def line(self, verb="processed"):
    """'tracked 400 frames in 7.9 s: 64.2 frames/s steady state (first batch,
    compilation, 1.8 s)'."""
    head = f"{verb} {self.frames} frames in {self.seconds:.1f} s"
    if self.steady_frames_per_second is None:
      return (f"{head}: one batch, no steady state ({self.frames_per_second:.1f} frames/s "
              "with compilation)")
    return (f"{head}: {self.steady_frames_per_second:.1f} frames/s steady state (first "
            f"batch, compilation, {self.first_seconds:.1f} s)")


def run_frames(batches, process, consume, progress=None, overlap=True, interruptible=False):
  """Runs, and times, `for batch in batches: outputs = process(batch); consume(item,
  output) for each item and output`.

  Args:
    batches: an iterable of lists of items (frames and what goes with them).
    process: batch -> one output per item; runs on the caller's thread (the model).
    consume: (item, output) -> None, called in order (drawing, writing).
    progress: a progress.Progress counting items, or None.
    overlap: batches produced on a reader thread ahead of `process` and consume run on
      a writer thread behind it (read_ahead, Behind); False: all on this thread, in turn.
    interruptible: Ctrl-C ends the loop early, what was processed consumed (a webcam).

  Returns:
    Throughput (the first batch: the time until its outputs were ready).
  """
  start = time.perf_counter()
  frames, first = 0, None
  source = read_ahead(batches) if overlap else iter(batches)
  behind = Behind(consume) if overlap else None
  try:
    for batch in source:
      for item, output in zip(batch, process(batch), strict=True):
        if behind is None:
          consume(item, output)
        else:
          behind.submit(item, output)
      frames += len(batch)
      first = first or (frames, time.perf_counter() - start)
      if progress is not None:
        progress.add(len(batch))
  except KeyboardInterrupt:
    if not interruptible:
      _finish(source, behind, quiet=True)
      raise
    logging.info("interrupted after %d frames", frames)
  except BaseException:
    _finish(source, behind, quiet=True)           # the loop's error, not the writer's
    raise
  _finish(source, behind)
  return Throughput(frames, time.perf_counter() - start, *(first or (0, 0.0)))


def _finish(source, behind, quiet=False):
  """Stops the reader thread and waits for the writer's calls (their error raised
  unless quiet)."""
  getattr(source, "close", lambda: None)()
  if behind is not None:
    try:
      behind.close()
    except Exception:  # pylint: disable=broad-exception-caught
      if not quiet:
        raise
