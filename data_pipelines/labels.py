"""Other tools' label files -> a sleap-io `Labels` -> a COCO keypoints json.

The one place where DeepLabCut, Lightning Pose, SLEAP, Ultralytics, Label Studio and NWB
label files are read. Everything downstream (sources.load_coco_instances, the keypoint
metadata, pycocotools evaluation) reads COCO json only, so each label file is converted
once to a COCO json in a cache folder, and all the strict checks of `sources` hold for
every format:

    read_labels(path, split)          -> sio.Labels   (format detected from the path)
    labels_to_coco(labels, path)      -> COCO keypoints dict (one image per labelled
                                         frame, one annotation per instance)
    coco_json_path(path, split)       -> (json path, image root): COCO json as given;
                                         any other format converted, cached

COCO json is not read here: `sources` has the strict reader (`detect_format` tells it
apart by its keys). sleap-io is an optional extra (`pip install "mamkpd-jax[labels]"`),
imported inside functions.

Conversion rules (those of the bundled dlc-openfield/openfield_coco.json): keypoints in
pixels as the file stores them (no half-pixel shift); a labelled point v=2, a missing
(NaN) one v=0 with x = y = 0; bbox = the tight box of the labelled keypoints pushed out by
BOX_PADDING of its width (height) on each side, clipped to [0, W] x [0, H]; area = box
w x h; iscrowd 0; one category whose keypoints and 1-based skeleton come from the file.
Image files the labels name are used where they are (their folder becomes the image
root); frames inside a video or a .pkg.slp are written once as PNGs to the cache.
"""

import collections
import contextlib
import glob
import hashlib
import json
import os
import re
import tempfile
from typing import Optional

from absl import logging
import cv2
import numpy as np
import yaml

from mamkpd_jax.data_pipelines import sources

# Every side of the labelled keypoints' tight box moves out by this fraction of its
# width (height): 1.2x each way (the rule of the bundled *_coco.json files).
BOX_PADDING = 0.1
FORMAT_NAMES = {
    "coco": "COCO json",
    "dlc_project": "DeepLabCut project",
    "dlc": "DeepLabCut labels",
    "slp": "SLEAP",
    "ultralytics": "Ultralytics",
    "labelstudio": "Label Studio",
    "nwb": "NWB",
}
EXPECTED = ("a DeepLabCut project folder (config.yaml + labeled-data/) or its config.yaml, "
            "a DeepLabCut / Lightning Pose CollectedData*.csv or .h5, a SLEAP .slp, an "
            "Ultralytics data.yaml (or its folder), a Label Studio .json export, an .nwb "
            "file, or a COCO keypoints .json")
# Splits an Ultralytics data.yaml can name.
ULTRALYTICS_SPLITS = ("train", "val", "test")


class LabelsError(sources.AnnotationError):
  """A label file that cannot be read or converted as it is (names file and field)."""


def _sio():
  try:
    import sleap_io  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError("reading DeepLabCut, SLEAP, Ultralytics, Label Studio or NWB labels "
                      'needs sleap-io: pip install "mamkpd-jax[labels]"') from error
  return sleap_io


# ---------------------------------------------------------------------------------------
# Format detection.


def _json_kind(path: str) -> str:
  """'labelstudio' for a json list of Label Studio tasks; 'coco' for a json object (the
  strict reader then checks its 'images', 'annotations' and 'categories' keys, without
  this reading a large COCO file twice); LabelsError otherwise."""
  with open(path, encoding="utf-8", errors="replace") as f:
    head = f.read(4096).lstrip("\ufeff \t\r\n")
  if head.startswith("{"):
    return "coco"
  data = sources.load_json(path)
  if isinstance(data, list) and data and all(
      isinstance(t, dict) and "data" in t and
      isinstance(t.get("annotations", t.get("completions")), list) for t in data):
    return "labelstudio"
  raise LabelsError(f"{path}: neither a COCO keypoints json (an object with 'images', "
                    "'annotations' and 'categories' lists) nor a Label Studio export (a "
                    "list of tasks, each with 'data' and 'annotations')")


def detect_format(path: str) -> str:
  """The format of a label file or folder: a key of FORMAT_NAMES.

  FileNotFoundError for a missing path; LabelsError naming it and what was expected for
  anything else unknown.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"label file not found: {path}")
  name = os.path.basename(os.path.normpath(path)).lower()
  if os.path.isdir(path):
    if os.path.isfile(os.path.join(path, "config.yaml")) and \
        os.path.isdir(os.path.join(path, "labeled-data")):
      return "dlc_project"
    if os.path.isfile(os.path.join(path, "data.yaml")):
      return "ultralytics"
    raise LabelsError(f"{path}: a folder without config.yaml + labeled-data/ or data.yaml; "
                      f"expected {EXPECTED}")
  if name == "config.yaml":
    return "dlc_project"
  if name.endswith((".yaml", ".yml")):
    return "ultralytics"
  if name.endswith(".slp"):
    return "slp"
  if name.endswith(".nwb"):
    return "nwb"
  if name.endswith((".csv", ".h5", ".hdf5")):
    return "dlc"
  if name.endswith(".json"):
    return _json_kind(path)
  raise LabelsError(f"{path}: unknown label file type; expected {EXPECTED}")


# ---------------------------------------------------------------------------------------
# DeepLabCut (and Lightning Pose's DLC-style csv).
#
# sleap-io 0.9.5 parses the csv and its rows (sleap_io.io.dlc); the frames are assembled
# here because its load_dlc keeps only the images found on disk (a frame then points at
# another row's image when some are missing, and a folder without images loses its
# rows), reads no .h5, and sorts the bodyparts by name. Here each frame keeps its own
# image path, whether or not the file exists, and the bodyparts keep config.yaml's order.
# The parsing pieces reused are private in sleap_io.io.dlc (_discover_config,
# _read_dlc_dataframe, _parse_single_animal_row, _parse_multi_animal_row,
# _attach_config_skeleton): reusing them keeps one DeepLabCut parser rather than a second
# copy here, and setup.py's [labels] extra pins sleap-io below 0.10 so they stay as they
# are; tests/test_labels.py checks the result against the bundled projects.


def _dlc_config_path(label_file: str) -> Optional[str]:
  """The DLC config.yaml of a csv/h5 (sleap-io's search up to 3 folders up), or None."""
  from sleap_io.io import dlc  # pylint: disable=g-import-not-at-top
  found = dlc._discover_config(label_file)  # pylint: disable=protected-access
  return None if found is None else str(found)


def _read_config(config_path: str) -> dict:
  try:
    with open(config_path, encoding="utf-8") as f:
      config = yaml.safe_load(f)
  except (OSError, yaml.YAMLError) as error:
    raise LabelsError(f"{config_path}: not a readable DeepLabCut config.yaml: {error}") \
        from error
  if not isinstance(config, dict):
    raise LabelsError(f"{config_path}: a DeepLabCut config.yaml must be a mapping")
  return config


def _config_bodyparts(config: dict, config_path: str) -> list:
  """config.yaml's bodyparts (multi-animal: multianimalbodyparts + uniquebodyparts)."""
  parts = config.get("bodyparts")
  if parts == "MULTI!" or config.get("multianimalproject"):
    parts = list(config.get("multianimalbodyparts") or []) + \
        list(config.get("uniquebodyparts") or [])
  if not isinstance(parts, list) or not parts or \
      not all(isinstance(p, str) for p in parts):
    raise LabelsError(f"{config_path}: field 'bodyparts' must list the bodypart names; got "
                      f"{config.get('bodyparts')!r}")
  return parts


def _dlc_dataframe(label_file: str):
  """(DataFrame with (individual?, bodypart, coord) columns, multi-animal?) of a csv/h5."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from sleap_io.io import dlc  # pylint: disable=g-import-not-at-top
  if label_file.lower().endswith((".h5", ".hdf5")):
    return _dlc_h5_dataframe(label_file)
  if not dlc.is_dlc_file(label_file):
    raise LabelsError(f"{label_file}: not a DeepLabCut csv: its first rows must be "
                      "'scorer', ['individuals',] 'bodyparts', 'coords' headers")
  try:
    frame, multi = dlc._read_dlc_dataframe(label_file)  # pylint: disable=protected-access
  except (ValueError, IndexError, pd.errors.ParserError) as error:
    raise LabelsError(f"{label_file}: not a readable DeepLabCut csv: {error}") from error
  return frame, multi


def _dlc_h5_dataframe(label_file: str):
  """The pandas HDFStore a DLC .h5 holds (PyTables), in the csv's column layout."""
  import h5py  # pylint: disable=g-import-not-at-top
  import pandas as pd  # pylint: disable=g-import-not-at-top
  if not h5py.is_hdf5(label_file):
    raise LabelsError(f"{label_file}: not a readable HDF5 file (a DeepLabCut "
                      "CollectedData_*.h5 is a pandas HDFStore)")
  try:
    frame = pd.read_hdf(label_file)
  except ImportError as error:
    sibling = os.path.splitext(label_file)[0] + ".csv"
    if os.path.isfile(sibling):
      logging.info("%s: reading it needs PyTables (pip install tables); using the csv "
                   "DeepLabCut writes beside it: %s", label_file, sibling)
      return _dlc_dataframe(sibling)
    raise ImportError(f"{label_file}: reading a DeepLabCut .h5 needs PyTables: pip install "
                      "tables (or pass the CollectedData_*.csv DeepLabCut writes beside "
                      "it)") from error
  except (ValueError, KeyError, TypeError, OSError) as error:
    raise LabelsError(f"{label_file}: an HDF5 file but not a DeepLabCut label table: "
                      f"{error}") from error
  if frame.columns.nlevels == 4:        # scorer, individuals, bodyparts, coords
    frame.columns = frame.columns.droplevel(0)
  multi = frame.columns.nlevels == 3 and "individuals" in frame.columns.names
  if isinstance(frame.index, pd.MultiIndex):
    frame.index = frame.index.map("/".join)
  return frame, multi


def _csv_bodyparts(frame) -> list:
  """Bodypart names in column order (level 1 of the columns)."""
  return list(dict.fromkeys(col[1] for col in frame.columns if col[2] == "x"))


def _dlc_image_root(label_file, image_names, config_path) -> str:
  """The folder the csv's image names are relative to: the project's, else the first of
  the csv's folder and its two parents where one exists, else the csv's folder."""
  if config_path:
    return os.path.dirname(os.path.abspath(config_path))
  folder = os.path.dirname(os.path.abspath(label_file))
  for root in (folder, os.path.dirname(folder), os.path.dirname(os.path.dirname(folder))):
    if any(os.path.isfile(os.path.join(root, name)) for name in image_names[:20]):
      return root
  return folder


def _dlc_label_files(project_dir: str, scorer) -> list:
  """labeled-data/<video>/CollectedData_<scorer>.csv (else .h5, else any CollectedData_*)."""
  files = []
  for folder in sorted(glob.glob(os.path.join(project_dir, "labeled-data", "*"))):
    if not os.path.isdir(folder):
      continue
    candidates = [os.path.join(folder, f"CollectedData_{scorer}{ext}") for ext in
                  (".csv", ".h5")] + sorted(glob.glob(os.path.join(folder, "CollectedData*.csv"))) \
        + sorted(glob.glob(os.path.join(folder, "CollectedData*.h5")))
    found = [c for c in candidates if os.path.isfile(c)]
    if found:
      files.append(found[0])
  return files


def _dlc_sources(path: str, project: bool) -> tuple:
  """(label files, config.yaml path or None, its contents or None) of a DLC project
  (path: folder or config.yaml) or of one csv/h5."""
  if not project:
    config_path = _dlc_config_path(path)
    return [path], config_path, _read_config(config_path) if config_path else None
  project_dir = path if os.path.isdir(path) else os.path.dirname(path)
  config_path = os.path.join(project_dir, "config.yaml")
  config = _read_config(config_path)
  label_files = _dlc_label_files(project_dir, config.get("scorer"))
  if not label_files:
    raise LabelsError(f"{project_dir}: no labeled-data/*/CollectedData_*.csv or .h5 in "
                      "this DeepLabCut project")
  return label_files, config_path, config


def _dlc_bodyparts(tables, config, config_path) -> list:
  """The bodypart names (config.yaml's, else the first table's header), checked against
  every table's header."""
  names = _config_bodyparts(config, config_path) if config else _csv_bodyparts(tables[0][1])
  for label_file, frame, _ in tables:
    found = _csv_bodyparts(frame)
    if set(found) != set(names) or len(found) != len(names):
      where = f"{config_path}'s 'bodyparts'" if config else \
          f"{tables[0][0]}'s 'bodyparts' header"
      raise LabelsError(f"{label_file}: field 'bodyparts' lists {found} but {where} lists "
                        f"{names}")
  return names


def _dlc_frames(frame, multi, skeleton, tracks, root) -> tuple:
  """(sio.LabeledFrames, sio.Videos) of one table: one Video per labeled-data folder,
  the list of its rows' images (relative to root), each row a frame of it."""
  sio = _sio()
  from sleap_io.io import dlc  # pylint: disable=g-import-not-at-top
  names = [str(i) for i in frame.index]
  by_folder = collections.defaultdict(list)             # video folder -> row names
  for name in names:
    by_folder[os.path.dirname(name)].append(name)
  folder_video = {folder: sio.Video(filename=[os.path.join(root, n) for n in rows])
                  for folder, rows in by_folder.items()}
  frames = []
  for name, (_, row) in zip(names, frame.iterrows()):
    folder = os.path.dirname(name)
    instances = dlc._parse_multi_animal_row(row, skeleton, tracks) if multi else \
        dlc._parse_single_animal_row(row, skeleton)     # pylint: disable=protected-access
    frames.append(sio.LabeledFrame(video=folder_video[folder],
                                   frame_idx=by_folder[folder].index(name),
                                   instances=instances))
  return frames, list(folder_video.values())


def _read_dlc(path: str, project: bool):
  """Labels of a DLC project (path: folder or config.yaml) or of one csv/h5."""
  sio = _sio()
  from sleap_io.io import dlc  # pylint: disable=g-import-not-at-top
  label_files, config_path, config = _dlc_sources(path, project)
  tables = [(f, *_dlc_dataframe(f)) for f in label_files]   # (file, DataFrame, multi?)
  skeleton = sio.Skeleton(nodes=[sio.Node(n) for n in
                                 _dlc_bodyparts(tables, config, config_path)])
  if config:
    dlc._attach_config_skeleton(skeleton, config)  # pylint: disable=protected-access
  individuals = list(dict.fromkeys(c[0] for _, f, multi in tables if multi
                                   for c in f.columns if c[0] not in ("", "individuals")))
  tracks = [sio.Track(name=str(n)) for n in individuals]
  frames, videos, roots = [], [], []
  for label_file, frame, multi in tables:
    roots.append(_dlc_image_root(label_file, [str(i) for i in frame.index], config_path))
    table_frames, table_videos = _dlc_frames(frame, multi, skeleton, tracks, roots[-1])
    frames += table_frames
    videos += table_videos
  labels = sio.Labels(labeled_frames=frames, videos=videos, tracks=tracks,
                      skeletons=[skeleton])
  labels.provenance["image_root"] = roots[0]
  size = _dlc_crop_size(config)
  if size:
    labels.provenance["frame_size"] = size
  return labels


def _dlc_crop_size(config) -> Optional[tuple]:
  """(width, height) of the labelled frames from config.yaml's first video_sets crop."""
  for entry in ((config or {}).get("video_sets") or {}).values():
    crop = entry.get("crop") if isinstance(entry, dict) else None
    values = re.findall(r"-?\d+", str(crop)) if crop is not None else []
    if len(values) == 4:
      x1, x2, y1, y2 = map(int, values)
      if x2 > x1 and y2 > y1:
        return x2 - x1, y2 - y1
  return None


# ---------------------------------------------------------------------------------------
# SLEAP, Ultralytics, Label Studio, NWB: sleap-io's readers, then checks.


def _check_ultralytics(yaml_path: str, split: str) -> None:
  """kpt_shape [K, 2 or 3] that the split's label files agree with; LabelsError else."""
  with open(yaml_path, encoding="utf-8") as f:
    config = yaml.safe_load(f)
  if not isinstance(config, dict):
    raise LabelsError(f"{yaml_path}: an Ultralytics data.yaml must be a mapping")
  shape = config.get("kpt_shape")
  if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int)
                                                               for v in shape)
          and shape[0] > 0 and shape[1] in (2, 3)):
    raise LabelsError(f"{yaml_path}: field 'kpt_shape' must be [K, 2] or [K, 3] (a pose "
                      f"dataset); got {shape!r}")
  if split not in config:
    raise LabelsError(f"{yaml_path}: no '{split}:' split; it names "
                      f"{[s for s in ULTRALYTICS_SPLITS if s in config]}")
  labels_dir = os.path.join(os.path.dirname(yaml_path),
                            str(config[split]).replace("/images", "/labels"))
  expected = 5 + shape[0] * shape[1]
  for label_file in sorted(glob.glob(os.path.join(labels_dir, "*.txt"))):
    with open(label_file, encoding="utf-8") as f:
      for number, line in enumerate(f, 1):
        values = line.split()
        if values and not line.startswith("#") and len(values) != expected:
          raise LabelsError(
              f"{yaml_path}: field 'kpt_shape' {shape} means {expected} values per line "
              f"(class, box, {shape[0]} x {shape[1]}) but {label_file} line {number} has "
              f"{len(values)}")


def _read_ultralytics(path: str, split: str):
  yaml_path = os.path.join(path, "data.yaml") if os.path.isdir(path) else path
  _check_ultralytics(yaml_path, split)
  labels = _sio().load_ultralytics(yaml_path, split=split)
  return labels


def _check_skeleton(labels, path: str) -> None:
  if len(labels.skeletons) != 1 or not labels.skeletons[0].nodes:
    what = "no skeleton" if not labels.skeletons else \
        f"{len(labels.skeletons)} skeletons" if len(labels.skeletons) > 1 else \
        "a skeleton without nodes"
    raise LabelsError(f"{path}: field 'skeleton': the labels have {what}; one skeleton "
                      "with named nodes (keypoints) is needed")


def file_splits(path: str) -> tuple:
  """The splits a label file names itself (an Ultralytics data.yaml's train/val/test), or
  () for a file that is one set of frames. Never parses a big file."""
  if not os.path.exists(path):
    return ()
  name = os.path.basename(os.path.normpath(path)).lower()
  yaml_path = os.path.join(path, "data.yaml") if os.path.isdir(path) else path
  if not (name.endswith((".yaml", ".yml")) and name != "config.yaml" or
          os.path.isdir(path) and os.path.isfile(yaml_path)
          and not os.path.isdir(os.path.join(path, "labeled-data"))):
    return ()
  try:
    with open(yaml_path, encoding="utf-8") as f:
      config = yaml.safe_load(f)
  except (OSError, yaml.YAMLError):
    return ()
  return tuple(s for s in ULTRALYTICS_SPLITS if isinstance(config, dict) and s in config)


def read_labels(path: str, split: Optional[str] = None):
  """A label file or folder of another tool as a `sleap_io.Labels`.

  Args:
    path: a DeepLabCut project folder or its config.yaml; a DLC / Lightning Pose
      CollectedData*.csv or .h5 (single- or multi-animal); a SLEAP .slp (.pkg.slp);
      an Ultralytics data.yaml or its folder; a Label Studio .json export; an .nwb file.
    split: for a file with splits (Ultralytics), the one to read (default "train");
      ignored otherwise.
  Returns:
    Labels with exactly one skeleton; `labels.provenance` gains "format" (a key of
    FORMAT_NAMES), "source" (the absolute path) and, where known, "image_root" (the
    folder the labels' image names are relative to) and "frame_size" (width, height).
  Raises:
    FileNotFoundError for a missing path; LabelsError (an AnnotationError) naming the
    file and field for unreadable or inconsistent labels; ImportError naming the
    [labels] extra without sleap-io.
  """
  kind = detect_format(path)
  if kind == "coco":
    raise LabelsError(f"{path}: a COCO keypoints json: read it with "
                      "sources.load_coco_instances (coco_json_path returns it as is)")
  sio = _sio()
  if kind in ("dlc_project", "dlc"):
    labels = _read_dlc(path, project=kind == "dlc_project")
  elif kind == "ultralytics":
    labels = _read_ultralytics(path, split or "train")
  else:
    loader = {"slp": sio.load_slp, "nwb": sio.load_nwb,
              "labelstudio": sio.load_labelstudio}[kind]
    try:
      labels = loader(path)
    except (OSError, KeyError, ValueError, TypeError) as error:
      raise LabelsError(f"{path}: not a readable {FORMAT_NAMES[kind]} file: "
                        f"{type(error).__name__}: {error}") from error
    for key in ("image_root", "frame_size"):   # saved from another file's Labels: stale
      labels.provenance.pop(key, None)
  _check_skeleton(labels, path)
  labels.provenance.update(format=kind, source=os.path.abspath(path))
  return labels


# ---------------------------------------------------------------------------------------
# Labels -> COCO keypoints dict.


def cache_root() -> str:
  """$XDG_CACHE_HOME/mamkpd_jax/labels, else ~/.cache/mamkpd_jax/labels."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "mamkpd_jax", "labels")


def _version_files(path: str) -> list:
  """The files whose size and mtime key a conversion of `path`."""
  if not os.path.isdir(path):
    return [path] + [p for p in [_sibling_config(path)] if p]
  patterns = ("config.yaml", "data.yaml", "labeled-data/*/CollectedData*", "*/labels/*.txt",
              "labels/*/*.txt")
  return sorted(f for p in patterns for f in glob.glob(os.path.join(path, p)))


def _sibling_config(path):
  if path.lower().endswith((".csv", ".h5", ".hdf5")):
    with contextlib.suppress(Exception):
      return _dlc_config_path(path)
  return None


def cache_dir(path: str) -> str:
  """The cache folder of a label file: keyed by its absolute path, size and mtime."""
  stats = [(os.path.abspath(f), os.path.getsize(f), os.stat(f).st_mtime_ns)
           for f in _version_files(path) if os.path.isfile(f)]
  key = json.dumps([os.path.abspath(path), stats])
  return os.path.join(cache_root(), hashlib.sha1(key.encode()).hexdigest()[:16])


def _write_atomic(path: str, write) -> None:
  """write(tmp_path), then rename onto `path`: readers never see half a file."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=os.path.splitext(path)[1])
  os.close(fd)
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _video_file(video, frame_idx) -> Optional[str]:
  """The image file of a frame when the video is a list of images (or one image: a file
  name with one of the extensions sleap-io opens as an ImageVideo)."""
  from sleap_io.io.video_reading import ImageVideo  # pylint: disable=g-import-not-at-top
  filename = video.filename
  if isinstance(filename, (list, tuple)):
    return os.path.abspath(filename[frame_idx])
  if isinstance(filename, str) and \
      filename.lower().endswith(tuple("." + ext for ext in ImageVideo.EXTS)):
    return os.path.abspath(filename)
  return None


def _extract_frame(video, video_index, frame_idx, frames_dir, source_path) -> tuple:
  """(path, (width, height)) of a video or embedded frame written as a PNG (once)."""
  path = os.path.join(frames_dir, f"video{video_index:03d}_frame{frame_idx:07d}.png")
  if os.path.isfile(path):
    size = sources.read_image_size(path)
    if size:
      return path, size
  try:
    image = np.asarray(video[frame_idx])                          # (H, W, C) RGB or gray
  except Exception as error:  # pylint: disable=broad-except
    raise LabelsError(f"{source_path}: frame {frame_idx} of video {video.filename!r} "
                      f"cannot be read: {error}") from error
  if image.ndim == 3 and image.shape[-1] == 3:
    image = image[..., ::-1]                                      # RGB -> BGR for cv2
  _write_atomic(path, lambda tmp: _write_png(tmp, image))
  return path, (image.shape[1], image.shape[0])


def _write_png(path, image):
  if not cv2.imwrite(path, image):
    raise OSError(f"could not write {path}")


class _FrameSizes:
  """(width, height) of image files: the header, else another frame of the same video,
  else the labels' stated frame size; None when none is known."""

  def __init__(self, labels):
    self.by_video = {}
    self.default = labels.provenance.get("frame_size")

  def __call__(self, video, path):
    size = sources.read_image_size(path) if os.path.isfile(path) else None
    if size is None and id(video) not in self.by_video:
      files = video.filename if isinstance(video.filename, (list, tuple)) else []
      sizes = (sources.read_image_size(f) for f in files if os.path.isfile(f))
      self.by_video[id(video)] = next((s for s in sizes if s), None)
    if size is None:
      size = self.by_video.get(id(video)) or self.default
    if size is None and video.shape is not None:
      size = (video.shape[2], video.shape[1])
    self.by_video.setdefault(id(video), size)
    return size


def padded_box(points: np.ndarray, width: float, height: float) -> list:
  """[x, y, w, h]: the tight box of `points` (N, 2) pushed out by BOX_PADDING of its width
  (height) on every side, clipped to [0, width] x [0, height]."""
  low, high = points.min(axis=0), points.max(axis=0)              # (2,) (2,)
  pad = BOX_PADDING * (high - low)
  low = np.maximum(low - pad, 0.0)
  high = np.minimum(high + pad, [width, height])
  return [float(low[0]), float(low[1]), float(high[0] - low[0]), float(high[1] - low[1])]


def _annotation(points, width, height, ann_id, image_id) -> Optional[dict]:
  """The COCO annotation of one instance's (K, 2) points (NaN: missing), or None."""
  labelled = np.all(np.isfinite(points), axis=1)                  # (K,)
  if not labelled.any():
    return None
  keypoints = np.where(labelled[:, None], points, 0.0)
  triples = np.concatenate([keypoints, 2.0 * labelled[:, None]], axis=1)   # (K, 3)
  box = padded_box(points[labelled], width, height)
  values = [float(v) if i % 3 != 2 else int(v) for i, v in enumerate(triples.reshape(-1))]
  return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
          "keypoints": values, "num_keypoints": int(labelled.sum()), "bbox": box,
          "area": box[2] * box[3]}


def _locate_frames(labels, source_path: str, frames_dir: str) -> list:
  """[(frame, image path, (width, height))] of the frames with user instances: the image
  file the labels name, or the video's frame written as a PNG to frames_dir."""
  video_index = {id(v): i for i, v in enumerate(labels.videos)}
  sizes = _FrameSizes(labels)
  located = []
  for frame in labels.labeled_frames:
    if not frame.user_instances:
      continue
    path = _video_file(frame.video, frame.frame_idx)
    if path is not None:
      size = sizes(frame.video, path)
      if size is None:
        raise LabelsError(f"{source_path}: image {path} not found and no other frame of "
                          "its video tells the image size")
    else:
      path, size = _extract_frame(frame.video, video_index.get(id(frame.video), 0),
                                  frame.frame_idx, frames_dir, source_path)
    located.append((frame, path, size))
  if not located:
    raise LabelsError(f"{source_path}: no frame has a labelled (user) instance")
  return located


def labels_to_coco(labels, source_path: str, frames_dir: Optional[str] = None) -> dict:
  """A COCO keypoints dict of `labels` (one split), as the strict reader expects.

  One image per frame with user-labelled instances (predicted instances are left out),
  one annotation per instance (multi-animal: one per animal), rules in the module
  docstring. Image file names are relative to info["image_root"]: the labels' own
  image root (provenance "image_root"), else the folder holding all their image files;
  frames inside videos or a .pkg.slp are written as PNGs to `frames_dir` (default:
  cache_dir(source_path)/frames) and named relative to it.

  Args:
    labels: a sleap_io.Labels with one skeleton (read_labels).
    source_path: the label file the labels came from (named in errors and in info).
  Returns:
    {"info": {description, source, format, image_root}, "images", "annotations",
     "categories": [{id 1, name, keypoints, skeleton (1-based)}]}.
  """
  _check_skeleton(labels, source_path)
  skeleton = labels.skeleton
  located = _locate_frames(labels, source_path, frames_dir or
                           os.path.join(cache_dir(source_path), "frames"))
  root = labels.provenance.get("image_root") or os.path.commonpath(
      [os.path.dirname(path) for _, path, _ in located])
  images, annotations = [], []
  for image_id, (frame, path, (width, height)) in enumerate(located, 1):
    images.append({"id": image_id, "file_name": os.path.relpath(path, root),
                   "width": int(width), "height": int(height)})
    for instance in frame.user_instances:
      ann = _annotation(np.asarray(instance.numpy(), np.float64), width, height,
                        len(annotations) + 1, image_id)
      if ann is not None:
        annotations.append(ann)
  kind = labels.provenance.get("format", "")
  category = {"id": 1, "name": skeleton.name or "animal", "supercategory": "animal",
              "keypoints": list(skeleton.node_names),
              "skeleton": [[a + 1, b + 1] for a, b in skeleton.edge_inds]}
  info = {"description": f"converted by mamkpd_jax from {FORMAT_NAMES.get(kind, kind)} "
                         f"labels {os.path.abspath(source_path)}",
          "source": os.path.abspath(source_path), "format": kind,
          "image_root": os.path.abspath(root)}
  return {"info": info, "images": images, "annotations": annotations,
          "categories": [category]}


# ---------------------------------------------------------------------------------------
# Any label file -> a COCO json path.

_CONVERTED = {}       # converted json (absolute) -> its label file (absolute)
_ROOTS = {}           # converted json (absolute) -> its image root (its info)


def converted_source(json_path: str) -> Optional[str]:
  """The label file a json of coco_json_path was converted from, or None (COCO)."""
  return _CONVERTED.get(os.path.abspath(json_path))


@contextlib.contextmanager
def naming_source(json_path: str):
  """Re-raises an AnnotationError about a converted json naming its label file too."""
  try:
    yield
  except sources.AnnotationError as error:
    source = converted_source(json_path)
    if source is None or isinstance(error, LabelsError):
      raise
    raise sources.AnnotationError(f"{source} (converted to {json_path}): {error}") \
        from error


def _describe(coco: dict, kind: str) -> str:
  category = coco["categories"][0]
  return (f"{FORMAT_NAMES[kind]}, {len(coco['images'])} frames, "
          f"{len(coco['annotations'])} instances, {len(category['keypoints'])} keypoints "
          f"{category['keypoints']}, skeleton {category['skeleton']}")


def _check_names_images(labels, path: str) -> None:
  """LabelsError for DeepLabCut table rows that are frame numbers, not image paths: a
  video's analysis table (DeepLabCut's or `mamkpd predict --formats=dlc`), with no image
  to train on."""
  if labels.provenance.get("format") not in ("dlc", "dlc_project"):
    return
  names = [os.path.basename(f) for v in labels.videos if isinstance(v.filename, list)
           for f in v.filename]
  if names and all(name.isdigit() for name in names):
    raise LabelsError(f"{path}: field 'index' holds frame numbers, not image paths: a "
                      "video's analysis table, which names no images; train on labelled "
                      "frames (CollectedData_*.csv) or the .slp written beside it")


def coco_json_path(path: str, split: Optional[str] = None) -> tuple:
  """(COCO json path, image root) for any label file: a COCO json and None as given;
  else its conversion (labels_to_coco), written atomically once to
  cache_dir(path)/<split or "all">.json and logged, and its image root.

  Args:
    path: a label file or folder (read_labels), or a COCO json.
    split: for a file with splits (file_splits: Ultralytics), the one to convert
      ("train" when None); ignored for other formats.
  """
  kind = detect_format(path)
  if kind == "coco":
    return path, None
  if kind == "ultralytics":
    split = split or "train"
  else:
    split = None
  json_path = os.path.join(cache_dir(path), f"{split or 'all'}.json")
  if not os.path.isfile(json_path):
    labels = read_labels(path, split)
    _check_names_images(labels, path)
    coco = labels_to_coco(labels, path)
    _write_atomic(json_path, lambda tmp: _dump(coco, tmp))
    logging.info("converted %s (%s%s) -> %s", path, _describe(coco, kind),
                 f", split {split!r}" if split else "", json_path)
  json_path = os.path.abspath(json_path)
  _CONVERTED[json_path] = os.path.abspath(path)
  if json_path not in _ROOTS:
    _ROOTS[json_path] = sources.load_json(json_path)["info"]["image_root"]
  return json_path, _ROOTS[json_path]


def _dump(coco, path):
  with open(path, "w", encoding="utf-8") as f:
    json.dump(coco, f)
