"""Predictions as other tools' label files, to proofread there and train on again.

    formats = label_files.parse_formats("slp,dlc")        # before any model loads
    frames = label_files.frames_of_records(records, video)     # COCO results -> FramePoses
    labels = label_files.to_labels(frames, estimator.info)     # -> sleap_io.Labels
    paths = label_files.output_paths("/tmp/pred/predictions", formats)
    label_files.write(labels, paths)
    label_files.write_records(records, video, estimator.info, paths)   # the three in one

`to_labels` makes a `sleap_io.Labels`: one `PredictedInstance` per pose (points with
their scores, the instance score), one `Track` per track id ("track_N", as SLEAP's
tracker names them), the model's `Skeleton` (keypoint names, skeleton links, the dataset
name), and a `Video` per input: the video file, or the list of image files. The writers
are sleap-io's where it has one that works:

| format | file | writer |
|---|---|---|
| slp | STEM.slp | `sio.save_slp` (SLEAP opens it to proofread) |
| nwb | STEM.nwb | `sio.save_nwb` (ndx-pose PoseEstimation per track; videos only) |
| dlc | STEM.dlc.csv, STEM.dlc.h5 | ours (`dlc_table`), below |
| coco | STEM.json | the commands' COCO results (`Prediction.to_json`), written anyway |

sleap-io 0.9.5 has no DeepLabCut writer for predictions: `save_csv(format="dlc")` fails
on image lists (TypeError on the list of file names), leaves the likelihood column empty
(it writes `instance.numpy()` without the scores) and names every row
`labeled-data/<video stem>/img%04d.png` whatever the frame. It has no DLC .h5 writer
either. So `dlc_table` builds DeepLabCut's own table with pandas: columns (scorer,
bodyparts, coords) with coords x, y, likelihood, or (scorer, individuals, bodyparts,
coords) when a frame has several poses or poses carry track ids (DeepLabCut's
multi-animal layout); rows are frame numbers for a video (`analyze_videos`' table) and
`labeled-data/<folder>/<image>` for images (`CollectedData`'s). The one table is written
twice, as DeepLabCut writes its predictions: STEM.dlc.h5, a pandas HDFStore (PyTables,
in the [labels] extra: key "df_with_missing", table format; the file DeepLabCut's own
tools open) and STEM.dlc.csv (what sleap-io and a spreadsheet read).

sleap-io is imported only here, inside functions: without it (`pip install
"mamkpd-jax[labels]"`) the COCO json is all a run writes.
"""

import dataclasses
import importlib.util
import os
from typing import Optional, Union

import numpy as np
from absl import logging

from mamkpd_jax.inference import video as video_lib

EXTRA = 'pip install "mamkpd-jax[labels]"'
FORMATS = ("slp", "dlc", "nwb", "coco")          # --formats choices
EXTENSIONS = {"slp": ".slp", "dlc": ".dlc.csv", "nwb": ".nwb", "coco": ".json"}
# The files of a format, keyed as output_paths keys them: dlc is DeepLabCut's csv and .h5.
FILES = {"dlc": {"dlc": EXTENSIONS["dlc"], "dlc_h5": ".dlc.h5"}}
NEEDS_SLEAP_IO = ("slp", "dlc", "nwb")           # coco is the commands' own json
NEEDS_TABLES = ("dlc",)                          # the .h5 is a pandas HDFStore (PyTables)
# DeepLabCut/DeepLabCut deeplabcut/pose_estimation_pytorch/apis/analyze_videos.py uses it:
DLC_H5_KEY = "df_with_missing"   # df.to_hdf(path, key=DLC_H5_KEY, format="table", mode="w")
SCORER = "mamkpd"                                # DeepLabCut's scorer row
PROVENANCE = "mamkpd-jax"                        # Labels.provenance["source"] we write


def sleap_io():
  """The sleap_io module; an ImportError naming the extra when it is not installed."""
  try:
    import sleap_io as sio  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError(f"SLEAP, DeepLabCut and NWB files need sleap-io: {EXTRA}") from error
  return sio


def sleap_io_installed():
  return importlib.util.find_spec("sleap_io") is not None


def tables_installed():
  """PyTables, which pandas' to_hdf / read_hdf need for DeepLabCut's .h5."""
  return importlib.util.find_spec("tables") is not None


def parse_formats(spec=None):
  """--formats -> a tuple of FORMATS, in FORMATS' order; coco is always in it (the
  commands write their COCO results json anyway).

  spec: None or "" (default: coco, and slp when sleap-io is installed), a comma-separated
  string or a list. An unknown name is a ValueError listing the choices; a format whose
  library is missing is an ImportError naming the extra.
  """
  if spec is None or spec == "" or spec == []:
    return ("slp", "coco") if sleap_io_installed() else ("coco",)
  names = spec.split(",") if isinstance(spec, str) else list(spec)
  names = [name.strip().lower() for name in names if name.strip()]
  unknown = sorted(set(names) - set(FORMATS))
  if unknown or not names:
    raise ValueError(f"--formats: unknown {', '.join(unknown) or 'empty list'}; choose from "
                     f"{','.join(FORMATS)}")
  missing = [name for name in names if name in NEEDS_SLEAP_IO]
  if missing and not sleap_io_installed():
    raise ImportError(f"--formats={','.join(missing)} needs sleap-io: {EXTRA}")
  missing = [name for name in names if name in NEEDS_TABLES]
  if missing and not tables_installed():
    raise ImportError(f"--formats={','.join(missing)} needs PyTables for DeepLabCut's .h5: "
                      f"{EXTRA}")
  return tuple(name for name in FORMATS if name in names or name == "coco")


def describe_default(formats):
  """The log line saying what the default --formats chose and why."""
  if "slp" in formats:
    return "sleap-io is installed: writing a SLEAP .slp beside the COCO json (--formats)"
  return f"sleap-io is not installed: COCO json only ({EXTRA} for .slp, DLC, NWB)"


def output_paths(stem, formats):
  """{file key: STEM + its extension} of every file the label formats write (coco
  excluded: the commands name their json): a format's name, and dlc_h5 beside dlc
  (FILES)."""
  paths = {}
  for name in formats:
    if name != "coco":
      files = FILES.get(name, {name: EXTENSIONS[name]})
      paths.update({key: stem + extension for key, extension in files.items()})
  return paths


def check_images(formats):
  """A ValueError when formats ask for NWB of images: sleap-io 0.9.5's NWB writer takes
  video files only (on a list of images it fails, indexing a table by the list)."""
  if "nwb" in formats:
    raise ValueError("--formats=nwb: sleap-io writes NWB predictions of a video file only, "
                     "not of images or a frame folder; use slp or dlc")


def untouched(path):
  """True for a label file a run wrote that nobody has edited since, which the next run
  may replace: an .slp whose provenance is ours and that holds no user instance (SLEAP
  saves proofreading over the file it opened, edited poses as user instances), or a
  DeepLabCut table (csv or .h5) whose scorer row is ours. Anything else (an .nwb, a file
  of other origin, one that does not load) is kept."""
  if path.endswith(EXTENSIONS["slp"]):
    try:
      labels = sleap_io().load_slp(path, open_videos=False)
    except Exception:  # pylint: disable=broad-exception-caught
      return False
    return labels.provenance.get("source") == PROVENANCE and \
        not any(frame.user_instances for frame in labels)
  if path.endswith(EXTENSIONS["dlc"]):
    with open(path, encoding="utf-8", errors="replace") as f:
      return f.readline().split(",")[:2] == ["scorer", SCORER]
  if path.endswith(FILES["dlc"]["dlc_h5"]):
    return _dlc_h5_scorers(path) == {SCORER}
  return False


def _dlc_h5_scorers(path):
  """The scorer names of a DeepLabCut .h5's columns (the header only is read); an empty
  set for any other file."""
  import pandas as pd  # pylint: disable=g-import-not-at-top  (comes with sleap-io)
  try:
    columns = pd.read_hdf(path, key=DLC_H5_KEY, stop=0).columns
  except Exception:  # pylint: disable=broad-exception-caught  (not ours: kept)
    return set()
  if not isinstance(columns, pd.MultiIndex) or columns.names[0] != "scorer":
    return set()
  return set(columns.get_level_values(0))


def check_outputs(paths, inputs=()):
  """A ValueError when a label file would overwrite an input, or an existing file that
  is not a previous run's untouched output (`untouched`: a file proofread in SLEAP is
  saved over its predictions file, and a second run must not wipe that work). Runs
  before the model loads."""
  for path in paths.values():
    for source in inputs:
      video_lib.refuse_overwrite(path, source)
    if os.path.exists(path) and not untouched(path):
      raise ValueError(f"{path} exists and is not an unedited output of an earlier run (it "
                       "may hold proofreading): choose another output folder or move it away")


# ------------------------------------------------------------------ poses per frame


@dataclasses.dataclass
class FramePoses:
  """The poses of one frame of one video (or one image of an image list)."""

  video: Union[str, tuple, object]   # a video path, a tuple of image paths, or a sio.Video
  frame_index: int                   # frame of the video; index in the image list
  keypoints: np.ndarray              # (M, K, 2) image pixels
  keypoint_scores: np.ndarray        # (M, K)
  scores: np.ndarray                 # (M,) instance scores
  track_ids: Optional[np.ndarray] = None    # (M,) int, -1 untracked; None: all untracked


def _group(records, key):
  groups = {}
  for record in records:
    groups.setdefault(key(record), []).append(record)
  return groups


def _poses_of(records):
  """(keypoints (M, K, 2), keypoint scores (M, K), scores (M,), track ids (M,)) of COCO
  results records (keypoints [x, y, s] * K, score, optional track_id)."""
  triples = np.array([r["keypoints"] for r in records], np.float32).reshape(
      len(records), -1, 3)                                                 # (M, K, 3)
  scores = np.array([r["score"] for r in records], np.float32)
  track_ids = np.array([r.get("track_id", -1) for r in records], np.int64)
  return triples[..., :2], triples[..., 2], scores, track_ids


def frames_of_records(records, video, frame_key="image_id"):
  """COCO results records -> [FramePoses] in frame order.

  Args:
    records: Prediction.to_json / tracking.frame_records dicts (one per pose).
    video: a video path (records' frame_key is the frame index), or a sequence of
      image paths (records' file_name is an image's basename; its frame index is its
      position in the sequence).
    frame_key: the records' frame index field ("image_id" for predict, "frame_index"
      for track) when video is a video file.
  """
  if isinstance(video, (str, os.PathLike)):
    groups = _group(records, lambda r: int(r[frame_key]))
    return [FramePoses(str(video), index, *_poses_of(groups[index])) for index in sorted(groups)]
  images = tuple(str(path) for path in video)
  position = {os.path.basename(path): i for i, path in enumerate(images)}
  unknown = sorted({r["file_name"] for r in records} - set(position))
  if unknown:
    raise ValueError(f"predictions of images not in the input: {unknown[:5]}")
  groups = _group(records, lambda r: position[r["file_name"]])
  return [FramePoses(images, index, *_poses_of(groups[index])) for index in sorted(groups)]


# ------------------------------------------------------------------ sleap_io.Labels


def skeleton_of(info):
  """The sio.Skeleton of a metadata.DatasetInfo: its keypoint names, links and name
  (NWB needs a name)."""
  sio = sleap_io()
  names = list(info.keypoint_names)
  return sio.Skeleton(names, edges=[(names[a], names[b]) for a, b in info.skeleton],
                      name=info.name or "mamkpd")


def make_video(source):
  """A sio.Video of a video path or a tuple of image paths (opened to record its shape,
  which SLEAP shows), or a sio.Video as is. A video file's reader is closed again; an
  image list's stays open (it holds no file): sleap-io 0.9.5 saves a closed image list
  in a form its own load_slp rejects (the list where a path is expected)."""
  sio = sleap_io()
  if isinstance(source, sio.Video):
    return source
  filename = list(source) if isinstance(source, tuple) else str(source)
  try:
    video = sio.Video.from_filename(filename)
  except Exception:  # pylint: disable=broad-exception-caught
    # a video sleap-io cannot decode here: the path alone (SLEAP opens it later); an
    # image list always opens (it reads the first image's size).
    video = sio.Video(filename=filename, open_backend=False)
  if isinstance(filename, str):
    video.close()
  return video


def to_labels(frames, skeleton, provenance=None):
  """[FramePoses] and a skeleton -> sio.Labels of PredictedInstances.

  skeleton: a sio.Skeleton (e.g. the labels' own), or the model's DatasetInfo
  (skeleton_of).

  Each pose: points (K, 2) with point scores (K,), score = the instance score, track =
  the sio.Track "track_N" of track id N (none for -1). One sio.Video per distinct
  FramePoses.video, in order of appearance.
  """
  sio = sleap_io()
  if not isinstance(skeleton, sio.Skeleton):
    skeleton = skeleton_of(skeleton)
  videos, tracks, labeled_frames = {}, {}, []
  for frame in frames:
    key = id(frame.video) if isinstance(frame.video, sio.Video) else frame.video
    if key not in videos:
      videos[key] = make_video(frame.video)
    track_ids = frame.track_ids if frame.track_ids is not None else \
        np.full(len(frame.scores), -1)
    instances = []
    for points, point_scores, score, track_id in zip(frame.keypoints, frame.keypoint_scores,
                                                      frame.scores, track_ids):
      track = None
      if track_id >= 0:
        track = tracks.setdefault(int(track_id), sio.Track(f"track_{int(track_id)}"))
      instances.append(sio.PredictedInstance.from_numpy(
          np.asarray(points, np.float64), skeleton=skeleton,
          point_scores=np.asarray(point_scores, np.float64), score=float(score),
          track=track))
    labeled_frames.append(sio.LabeledFrame(video=videos[key], frame_idx=int(frame.frame_index),
                                           instances=instances))
  return sio.Labels(labeled_frames, videos=list(videos.values()), skeletons=[skeleton],
                    tracks=[tracks[i] for i in sorted(tracks)],
                    provenance=dict(provenance or {"source": PROVENANCE}))


# ------------------------------------------------------------------ DeepLabCut's table


def _row_name(video, frame_index):
  """A DeepLabCut row: the frame number of a video, labeled-data/<folder>/<image> of an
  image."""
  if isinstance(video.filename, list):
    path = video.filename[frame_index]
    return f"labeled-data/{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}"
  return frame_index


def _slots(labels):
  """(individuals: names of the multi-animal layout's individuals, or None for the
  single-animal layout; slot(i, instance): the individual of a frame's i-th pose).

  Single-animal: at most one pose per frame and at most one track. Multi-animal: the
  tracks' names when every pose is tracked, else individual1..N (DeepLabCut's default
  names) by the poses' order in their frame."""
  most = max((len(frame.instances) for frame in labels), default=0)
  if most <= 1 and len(labels.tracks) <= 1:
    return None, lambda i, instance: 0
  if labels.tracks and all(inst.track is not None for frame in labels for inst in frame):
    names = [track.name for track in labels.tracks]
    slot = {name: k for k, name in enumerate(names)}
    return names, lambda i, instance: slot[instance.track.name]
  return [f"individual{k + 1}" for k in range(most)], lambda i, instance: i


def dlc_table(labels, scorer=SCORER):
  """sio.Labels of one skeleton -> DeepLabCut's pandas table (module docstring): NaN
  where a frame lacks a pose or an individual."""
  import pandas as pd  # pylint: disable=g-import-not-at-top  (comes with sleap-io)
  nodes = labels.skeletons[0].node_names
  individuals, slot = _slots(labels)
  coords = ("x", "y", "likelihood")
  if individuals is None:
    columns = pd.MultiIndex.from_product([[scorer], nodes, coords],
                                         names=["scorer", "bodyparts", "coords"])
  else:
    columns = pd.MultiIndex.from_product([[scorer], individuals, nodes, coords],
                                         names=["scorer", "individuals", "bodyparts", "coords"])
  rows, index = [], []
  for frame in sorted(labels, key=lambda f: (labels.videos.index(f.video), f.frame_idx)):
    row = np.full((len(individuals or [None]), len(nodes), 3), np.nan)   # (I, K, 3)
    for i, instance in enumerate(frame.instances):
      row[slot(i, instance)] = instance.numpy(scores=True)               # (K, 3)
    rows.append(row.reshape(-1))
    index.append(_row_name(frame.video, frame.frame_idx))
  if any(isinstance(name, str) for name in index):   # videos and images: one type (.h5)
    index = [str(name) for name in index]
  return pd.DataFrame(np.array(rows).reshape(len(rows), len(columns)), index=index,
                      columns=columns)


# ------------------------------------------------------------------ writing


def write_dlc_h5(table, path):
  """A dlc_table as DeepLabCut writes its .h5 (DLC_H5_KEY, table format); an ImportError
  naming the extra without PyTables."""
  if not tables_installed():
    raise ImportError(f"{path}: DeepLabCut's .h5 needs PyTables: {EXTRA}")
  table.to_hdf(path, key=DLC_H5_KEY, format="table", mode="w")


def write(labels, paths):
  """Writes labels to {file key: path} (output_paths); coco is skipped (the commands'
  json). dlc and dlc_h5 are DeepLabCut's csv and .h5 of one dlc_table. Returns {file key:
  path} of what was written."""
  sio = sleap_io()
  written, table = {}, None
  for name, path in paths.items():
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if name in ("dlc", "dlc_h5") and table is None:
      table = dlc_table(labels)
    if name == "slp":
      sio.save_slp(labels, path)
    elif name == "nwb":
      sio.save_nwb(labels, path)
    elif name == "dlc":
      table.to_csv(path)
    elif name == "dlc_h5":
      write_dlc_h5(table, path)
    else:
      continue
    written[name] = path
  return written


def write_records(records, video, skeleton, paths, frame_key="image_id"):
  """The label files of COCO results records (frames_of_records on video, to_labels with
  skeleton, write to paths: output_paths'), each logged; {file key: path} written."""
  frames = frames_of_records(records, video, frame_key=frame_key)
  written = write(to_labels(frames, skeleton), paths)
  for path in written.values():
    logging.info("wrote %s", path)
  return written
