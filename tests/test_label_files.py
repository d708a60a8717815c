"""inference.label_files and `predict` / `track --formats`: predictions written as SLEAP,
DeepLabCut and NWB files, read back with sleap-io itself (and pandas, h5py), with the
shipped tiny open-field weights on bundled frames; `predict --input=LABELS` scored
against the labelled points by a PCK written out here by hand."""

import json
import os
import pathlib
import shutil
import sys

import h5py
import numpy as np
import pandas as pd
import pytest

from mamkpd_jax import inference
from mamkpd_jax.commands import predict, track
from mamkpd_jax.data_pipelines import labels as labels_lib
from mamkpd_jax.data_pipelines import metadata
from mamkpd_jax.inference import detectors, label_files, labelled_frames, tracking

sio = pytest.importorskip("sleap_io")

REPO = pathlib.Path(__file__).resolve().parents[1]
PROJECT = REPO / "data/samples/dlc-openfield"
FRAMES = PROJECT / "labeled-data/m4s1"
VIDEO = PROJECT / "videos/m3v1mp4.mp4"
WEIGHTS = REPO / "weights/mamkpd_tiny_openfield"
NAMES = ("snout", "leftear", "rightear", "tailbase")
INFO = metadata.DatasetInfo(name="mouse", keypoint_names=NAMES, flip_indices=(0, 2, 1, 3),
                            sigmas=np.full(4, 0.05), skeleton=((0, 1), (0, 2), (0, 3)))
NO_MODEL = (None, None, None)          # never read: the errors come before the model loads


@pytest.fixture(scope="module")
def estimator():
  return inference.Estimator.from_pretrained(str(WEIGHTS),
                                             compiler_options=inference.FAST_COMPILE_CPU)


def images(tmp_path, indices=(100, 101, 102)):
  """Copies of bundled frames in tmp_path/m4s1 -> their paths."""
  folder = tmp_path / "m4s1"
  folder.mkdir(exist_ok=True)
  return [str(shutil.copy(FRAMES / f"img{i:04d}.png", folder)) for i in indices]


def poses(video, track_ids_per_frame, seed=0):
  """FramePoses with random keypoints and scores; one pose per track id of a frame."""
  rng = np.random.default_rng(seed)
  frames = []
  for index, ids in enumerate(track_ids_per_frame):
    m = len(ids)
    frames.append(label_files.FramePoses(
        video, index, rng.uniform(0, 400, (m, 4, 2)).astype(np.float32),
        rng.uniform(0, 1, (m, 4)).astype(np.float32), rng.uniform(0, 1, m).astype(np.float32),
        np.array(ids)))
  return frames


# ------------------------------------------------------------------ round trips


def test_slp_keeps_skeleton_scores_tracks_and_images(tmp_path):
  files = images(tmp_path)
  frames = poses(tuple(files), [[0, 1], [1], [0, 1]])
  paths = label_files.output_paths(str(tmp_path / "out/predictions"), ("slp", "coco"))
  assert paths == {"slp": str(tmp_path / "out/predictions.slp")}
  label_files.write(label_files.to_labels(frames, INFO), paths)
  labels = sio.load_slp(paths["slp"])
  assert labels.skeleton.node_names == list(NAMES) and labels.skeleton.name == "mouse"
  assert labels.skeleton.edge_inds == [(0, 1), (0, 2), (0, 3)]
  assert labels.video.filename == files
  assert [t.name for t in labels.tracks] == ["track_0", "track_1"]
  assert [f.frame_idx for f in labels] == [0, 1, 2]
  for frame, expected in zip(labels, frames):
    assert [type(i) for i in frame.instances] == [sio.PredictedInstance] * len(expected.scores)
    assert [i.track.name for i in frame.instances] == \
        [f"track_{t}" for t in expected.track_ids]
    got = np.stack([i.numpy(scores=True) for i in frame.instances])       # (M, K, 3)
    np.testing.assert_allclose(got[..., :2], expected.keypoints, rtol=1e-6)
    np.testing.assert_allclose(got[..., 2], expected.keypoint_scores, rtol=1e-6)
    np.testing.assert_allclose([i.score for i in frame.instances], expected.scores, rtol=1e-6)


def test_dlc_single_animal_reads_back_in_sleap_io_and_pandas(tmp_path):
  files = images(tmp_path)
  frames = poses(tuple(files), [[-1], [-1], [-1]])
  path = str(tmp_path / "m4s1/predictions.dlc.csv")          # beside the images
  label_files.write(label_files.to_labels(frames, INFO), {"dlc": path})
  table = pd.read_csv(path, header=[0, 1, 2], index_col=0)
  assert list(table.columns.names) == ["scorer", "bodyparts", "coords"]
  assert list(table.index) == [f"labeled-data/m4s1/img{i:04d}.png" for i in (100, 101, 102)]
  np.testing.assert_allclose(table.xs("likelihood", axis=1, level="coords").to_numpy(),
                             np.concatenate([f.keypoint_scores for f in frames]), rtol=1e-6)
  labels = sio.load_file(path)     # sleap-io's DeepLabCut reader: x, y; nodes sorted by name
  order = [NAMES.index(name) for name in labels.skeleton.node_names]
  assert sorted(labels.skeleton.node_names) == sorted(NAMES) and len(labels) == 3
  for frame, expected in zip(sorted(labels, key=lambda f: f.frame_idx), frames):
    np.testing.assert_allclose(frame.instances[0].numpy(), expected.keypoints[0][order],
                               rtol=1e-5)


def test_dlc_tracked_and_video_layouts(tmp_path):
  """Tracks -> the multi-animal layout (individuals = track names, a missing track NaN);
  a video's rows are frame numbers, as DeepLabCut's analyze_videos writes them."""
  frames = poses(str(VIDEO), [[0, 1], [1]])
  path = str(tmp_path / "clip.dlc.csv")
  label_files.write(label_files.to_labels(frames, INFO), {"dlc": path})
  table = pd.read_csv(path, header=[0, 1, 2, 3], index_col=0)
  assert list(table.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
  assert list(table.index) == [0, 1]
  assert list(table.columns.unique("individuals")) == ["track_0", "track_1"]
  np.testing.assert_allclose(table.loc[1, ("mamkpd", "track_1", "snout", "x")],
                             frames[1].keypoints[0, 0, 0], rtol=1e-6)
  assert np.isnan(table.loc[1, ("mamkpd", "track_0", "snout", "x")])
  untracked = poses(str(VIDEO), [[-1, -1]])                   # two untracked poses
  label_files.write(label_files.to_labels(untracked, INFO), {"dlc": str(tmp_path / "u.csv")})
  table = pd.read_csv(tmp_path / "u.csv", header=[0, 1, 2, 3], index_col=0)
  assert list(table.columns.unique("individuals")) == ["individual1", "individual2"]


def xy_by_name(labels, frame_index, instance):
  """(K, 2) points of a read-back instance in NAMES' order."""
  frame = sorted(labels, key=lambda f: f.frame_idx)[frame_index]
  points = frame.instances[instance].numpy()
  return points[[labels.skeleton.node_names.index(name) for name in NAMES]]


def test_dlc_h5_beside_the_csv_as_deeplabcut_writes_it(tmp_path):
  """--formats=dlc: STEM.dlc.csv and STEM.dlc.h5 (DeepLabCut's key, table format), the
  same table; both read back with pandas and with data_pipelines/labels.py."""
  files = images(tmp_path)
  frames = poses(tuple(files), [[-1], [-1], [-1]])
  paths = label_files.output_paths(str(tmp_path / "m4s1/predictions"), ("dlc", "coco"))
  assert paths == {"dlc": str(tmp_path / "m4s1/predictions.dlc.csv"),
                   "dlc_h5": str(tmp_path / "m4s1/predictions.dlc.h5")}
  assert label_files.write(label_files.to_labels(frames, INFO), paths) == paths
  with pd.HDFStore(paths["dlc_h5"], mode="r") as store:
    assert store.keys() == ["/df_with_missing"]
    assert store.get_storer("df_with_missing").is_table
  table = pd.read_hdf(paths["dlc_h5"], "df_with_missing")
  pd.testing.assert_frame_equal(table, pd.read_csv(paths["dlc"], header=[0, 1, 2], index_col=0),
                                check_names=False)     # the csv's index has no name row
  assert list(table.columns.names) == ["scorer", "bodyparts", "coords"]
  assert list(table.index) == [f"labeled-data/m4s1/img{i:04d}.png" for i in (100, 101, 102)]
  expected = np.concatenate([np.concatenate([f.keypoints, f.keypoint_scores[..., None]], -1)
                             for f in frames])                           # (3, K, 3)
  np.testing.assert_allclose(table.to_numpy().reshape(3, 4, 3), expected, rtol=1e-6)
  for path in (paths["dlc"], paths["dlc_h5"]):   # our labels reader: x, y (not likelihood)
    labels = labels_lib.read_labels(path)
    assert len(labels) == 3
    for i, frame in enumerate(frames):
      np.testing.assert_allclose(xy_by_name(labels, i, 0), frame.keypoints[0], rtol=1e-6)
  mixed = poses(str(VIDEO), [[-1]]) + frames[:1]           # a video's frame and an image
  label_files.write(label_files.to_labels(mixed, INFO), {"dlc_h5": paths["dlc_h5"]})
  assert list(pd.read_hdf(paths["dlc_h5"]).index) == ["0", "labeled-data/m4s1/img0100.png"]


def test_dlc_h5_of_tracks_on_a_video(tmp_path):
  """Multi-animal layout (scorer, individuals, bodyparts, coords), rows frame numbers; a
  missing track is NaN in the .h5 as in the csv, and the labels reader keeps the tracks."""
  frames = poses(str(VIDEO), [[0, 1], [1]])
  paths = label_files.output_paths(str(tmp_path / "clip"), ("dlc",))
  label_files.write(label_files.to_labels(frames, INFO), paths)
  table = pd.read_hdf(paths["dlc_h5"], "df_with_missing")
  pd.testing.assert_frame_equal(
      table, pd.read_csv(paths["dlc"], header=[0, 1, 2, 3], index_col=0), check_names=False)
  assert list(table.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
  assert list(table.index) == [0, 1]
  got = table.to_numpy().reshape(2, 2, 4, 3)                       # (frames, tracks, K, 3)
  np.testing.assert_allclose(got[0, :, :, :2], frames[0].keypoints, rtol=1e-6)
  np.testing.assert_allclose(got[1, 1, :, 2], frames[1].keypoint_scores[0], rtol=1e-6)
  assert np.isnan(got[1, 0]).all()
  labels = labels_lib.read_labels(paths["dlc_h5"])
  assert [t.name for t in labels.tracks] == ["track_0", "track_1"]
  assert [[i.track.name for i in f.instances] for f in labels] == \
      [["track_0", "track_1"], ["track_1"]]
  np.testing.assert_allclose(xy_by_name(labels, 1, 0), frames[1].keypoints[0], rtol=1e-6)


def test_nwb_of_a_video_reads_back(tmp_path):
  frames = poses(str(VIDEO), [[0], [0], [0]])
  path = str(tmp_path / "clip.nwb")
  label_files.write(label_files.to_labels(frames, INFO), {"nwb": path})
  labels = sio.load_nwb(path)
  assert labels.skeleton.node_names == list(NAMES)
  assert [f.frame_idx for f in labels] == [0, 1, 2]
  for frame, expected in zip(labels, frames):
    got = frame.instances[0].numpy(scores=True)
    np.testing.assert_allclose(got[:, :2], expected.keypoints[0], rtol=1e-5)
    np.testing.assert_allclose(got[:, 2], expected.keypoint_scores[0], rtol=1e-5)
  with h5py.File(path) as f:     # one PoseEstimation per video and track, named after it
    assert "track=track_0" in f["processing/SLEAP_VIDEO_000_m3v1mp4"]
    assert "mouse" in f["processing/behavior/Skeletons"]
  with pytest.raises(ValueError, match="NWB predictions of a video file only"):
    label_files.check_images(("nwb", "coco"))


# ------------------------------------------------------------------ formats and overwrites


def test_formats_default_unknown_and_missing_library(monkeypatch):
  assert label_files.parse_formats(None) == ("slp", "coco")
  assert label_files.parse_formats("nwb, DLC") == ("dlc", "nwb", "coco")
  assert label_files.parse_formats(["coco"]) == ("coco",)
  with pytest.raises(ValueError, match="unknown h5, xml; choose from slp,dlc,nwb,coco"):
    label_files.parse_formats("slp,xml,h5")
  monkeypatch.setattr(label_files, "sleap_io_installed", lambda: False)
  assert label_files.parse_formats("") == ("coco",)
  assert "not installed" in label_files.describe_default(("coco",))
  assert label_files.parse_formats("coco") == ("coco",)
  with pytest.raises(ImportError, match=r'needs sleap-io: pip install "mamkpd-jax\[labels\]"'):
    label_files.parse_formats("slp,dlc")
  monkeypatch.setattr(label_files, "sleap_io_installed", lambda: True)
  monkeypatch.setattr(label_files, "tables_installed", lambda: False)
  assert label_files.parse_formats("slp") == ("slp", "coco")
  with pytest.raises(ImportError, match=r"dlc needs PyTables .*mamkpd-jax\[labels\]"):
    label_files.parse_formats("slp,dlc")
  monkeypatch.setitem(sys.modules, "sleap_io", None)         # import sleap_io fails
  with pytest.raises(ImportError, match=r"mamkpd-jax\[labels\]"):
    label_files.sleap_io()


def test_user_files_and_inputs_are_never_overwritten(tmp_path):
  """A previous run's untouched .slp / .dlc.csv / .dlc.h5 may be replaced; a proofread
  .slp (a user instance in it), a file of other origin, an .nwb or an input may not."""
  files = images(tmp_path)
  paths = label_files.output_paths(str(tmp_path / "predictions"), ("slp", "dlc", "nwb"))
  label_files.check_outputs(paths)                            # nothing there: fine
  labels = label_files.to_labels(poses(tuple(files), [[-1], [-1]]), INFO)
  label_files.write(labels, {k: paths[k] for k in ("slp", "dlc", "dlc_h5")})
  label_files.check_outputs(paths)                            # untouched outputs: fine
  table = pd.read_hdf(paths["dlc_h5"])
  table.columns = table.columns.set_levels(["Pranav"], level="scorer")
  table.to_hdf(paths["dlc_h5"], key="df_with_missing", format="table", mode="w")
  with pytest.raises(ValueError, match="predictions.dlc.h5 exists and is not an unedited"):
    label_files.check_outputs(paths)                          # DeepLabCut's, not ours
  pathlib.Path(paths["dlc_h5"]).write_text("not HDF5")
  with pytest.raises(ValueError, match="predictions.dlc.h5 exists"):
    label_files.check_outputs({"dlc_h5": paths["dlc_h5"]})
  os.remove(paths["dlc_h5"])
  labels[0].instances.append(sio.Instance.from_numpy(np.ones((4, 2)), skeleton=labels.skeleton))
  sio.save_slp(labels, paths["slp"])                          # proofread in SLEAP
  with pytest.raises(ValueError, match="predictions.slp exists and is not an unedited"):
    label_files.check_outputs(paths)
  pathlib.Path(paths["slp"]).write_text("a file of the user's")
  with pytest.raises(ValueError, match="predictions.slp exists"):
    label_files.check_outputs(paths)
  pathlib.Path(paths["nwb"]).write_text("an experiment's NWB")
  with pytest.raises(ValueError, match="predictions.nwb exists"):
    label_files.check_outputs({"nwb": paths["nwb"]})
  with pytest.raises(ValueError, match="would overwrite the input"):
    label_files.check_outputs(paths, [paths["slp"]])
  folder = str(pathlib.Path(files[0]).parent)
  with pytest.raises(ValueError, match="predictions.slp exists"):     # before the model
    predict.run(folder, str(tmp_path), NO_MODEL)
  with pytest.raises(ValueError, match="choose from slp,dlc,nwb,coco"):
    predict.run(folder, str(tmp_path / "new"), NO_MODEL, formats=["slp", "sleap"])
  with pytest.raises(ValueError, match="NWB predictions of a video file only"):
    predict.run(folder, str(tmp_path / "new"), NO_MODEL, formats=["nwb"])
  with pytest.raises(ValueError, match="NWB predictions of a video file only"):
    track.run(folder, str(tmp_path / "new"), NO_MODEL, formats=["nwb"])
  assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------ the commands


def test_predict_on_bundled_frames_writes_an_slp(estimator, tmp_path):
  folder = str(pathlib.Path(images(tmp_path, (100, 101))[0]).parent)
  out = tmp_path / "pred"
  results = predict.predict(estimator, folder, str(out),
                            boxes=str(PROJECT / "openfield_coco.json"), formats=("slp", "dlc"))
  assert sorted(os.listdir(out)) == ["img0100.png", "img0101.png", "predictions.dlc.csv",
                                     "predictions.dlc.h5", "predictions.json",
                                     "predictions.slp"]
  labels = sio.load_slp(str(out / "predictions.slp"))
  assert labels.skeleton.node_names == list(NAMES) and not labels.tracks
  assert [len(f.instances) for f in labels] == [1, 1]          # one box per frame
  for frame, result in zip(labels, results):
    assert os.path.basename(frame.video.filename[frame.frame_idx]) == result["file_name"]
    got = frame.instances[0].numpy(scores=True).reshape(-1)
    np.testing.assert_allclose(got, result["keypoints"], rtol=1e-5)
    assert frame.instances[0].score == pytest.approx(result["score"], rel=1e-6)
  boxes = str(PROJECT / "openfield_coco.json")
  predict.predict(estimator, folder, str(out), boxes, formats=("slp",))   # again: replaced
  labels[0].instances[0] = sio.Instance.from_numpy(np.ones((4, 2)), skeleton=labels.skeleton)
  sio.save_slp(labels, str(out / "predictions.slp"))                 # proofread
  with pytest.raises(ValueError, match="predictions.slp exists and is not an unedited"):
    predict.predict(estimator, folder, str(out), boxes, formats=("slp",))


def test_track_ids_become_sleap_tracks(estimator, tmp_path):
  folder = str(pathlib.Path(images(tmp_path, range(100, 104))[0]).parent)
  out = str(tmp_path / "track")
  detector = detectors.make_detector("background", source=str(FRAMES))
  result = tracking.track_video(estimator, folder, out, detector=detector, batch_frames=4,
                                write_video=False)
  written = track.write_label_files(result, folder, out, estimator.info, ("slp", "coco"))
  assert written == {"slp": os.path.join(out, "m4s1.slp")}
  records = json.loads(pathlib.Path(result["json"]).read_text())
  labels = sio.load_slp(written["slp"])
  got = [(f.frame_idx, i.track.name) for f in labels for i in f.instances]
  assert got == [(r["frame_index"], f"track_{r['track_id']}") for r in records]
  assert len(got) == 4


def slp_of_bundled_labels(path, frames=slice(100, 103)):
  """A .slp of a few labelled frames of the bundled DeepLabCut project (sleap-io)."""
  labels = sio.load_dlc(str(FRAMES / "CollectedData_Pranav.csv"))
  labels = sio.Labels(labels.labeled_frames[frames], videos=labels.videos,
                      skeletons=labels.skeletons)
  sio.save_slp(labels, str(path))
  return labels


def hand_pck(pred, gt):
  """PCK@0.1 by hand: the labelled points' box grown 10% a side; a point is right when
  its distance is under 0.1 x the box's longer side."""
  hits = []
  for p, g in zip(pred, gt):
    size = (g.max(0) - g.min(0)) * 1.2                              # (2,)
    hits += list(np.linalg.norm(p - g, axis=-1) < 0.1 * size.max())
  return np.mean(hits)


def test_predict_on_labels_prints_pck_and_writes_one_pose_per_instance(tmp_path, capsys,
                                                                       estimator):
  source = slp_of_bundled_labels(tmp_path / "labels.slp")
  out = tmp_path / "pred"
  summary = predict.predict_labels(estimator, str(tmp_path / "labels.slp"), str(out))
  predicted = sio.load_slp(str(out / "predictions.slp"))
  assert predicted.skeleton.node_names == source.skeleton.node_names
  assert [len(f.instances) for f in predicted] == [1, 1, 1]
  assert [f.frame_idx for f in predicted] == [f.frame_idx for f in source]
  pred = np.stack([f.instances[0].numpy() for f in predicted])       # (3, K, 2)
  gt = np.stack([f.instances[0].numpy() for f in source])
  assert summary["PCK@0.1"] == pytest.approx(hand_pck(pred, gt))
  assert summary["instances"] == summary["matched"] == 3
  results = json.loads((out / "predictions.json").read_text())      # the model's order
  order = [NAMES.index(name) for name in source.skeleton.node_names]   # sleap-io sorts them
  np.testing.assert_allclose(np.reshape(results[0]["keypoints"], (-1, 3))[order, :2], pred[0],
                             rtol=1e-5)
  # The command: the same files and a PCK line (the shipped weights, compiled fast).
  predict.run_labels(str(tmp_path / "labels.slp"), str(tmp_path / "cli"),
                     (None, str(WEIGHTS), None), fast_compile=True)
  line = f"PCK@0.1 {summary['PCK@0.1']:.3f} on 3 labelled instances"
  assert line in capsys.readouterr().out
  assert (tmp_path / "cli/predictions.slp").is_file()
  mine = shutil.copy(tmp_path / "labels.slp", tmp_path / "cli/predictions.slp")
  with pytest.raises(ValueError, match="predictions.slp would overwrite the input"):
    predict.run_labels(str(mine), str(tmp_path / "cli"), NO_MODEL)


def test_labels_with_other_keypoints_are_refused(tmp_path):
  with pytest.raises(ValueError, match=r"labels.slp: the labels' keypoints \['a', 'b'\] are "
                     "not the model's"):
    labelled_frames.keypoint_order(NAMES, ["a", "b"], str(tmp_path / "labels.slp"))
  np.testing.assert_array_equal(labelled_frames.keypoint_order(NAMES, NAMES[::-1], "x"),
                                [3, 2, 1, 0])


def test_a_video_analysis_table_is_refused_as_training_labels(tmp_path, monkeypatch):
  """Our DeepLabCut table of a video names frame numbers, not images: converting it for
  training is an error naming the file (the .slp beside it is the file to train on)."""
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  paths = label_files.output_paths(str(tmp_path / "clip"), ("dlc",))
  label_files.write(label_files.to_labels(poses(str(VIDEO), [[0], [0]]), INFO), paths)
  with pytest.raises(labels_lib.LabelsError, match=r"clip\.dlc\.csv.*frame numbers"):
    labels_lib.coco_json_path(paths["dlc"])
