"""Images and frames in, video out: one image reader (`load_image`), frames of video
files, image folders (a video as an image sequence) and webcams, and `VideoWriter`.

    for index, name, frame in read_frames("clip.mp4"):    # frame (H, W, 3) RGB uint8
    for index, name, frame in read_frames(0):              # webcam 0 (cv2.VideoCapture(0))
"""

import os

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
