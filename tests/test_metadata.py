"""Dataset metadata: the built-in tables against docs/conventions.md, custom layouts, bad input."""

import json
import logging
import pathlib

import numpy as np
import pytest

from mamkpd_jax.data_pipelines import metadata

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "samples"

# docs/conventions.md, copied by hand: (info, K, names, flip indices, upper body, sigmas or None).
SPEC_TABLES = [
    (metadata.COCO, 17,
     "nose left_eye right_eye left_ear right_ear left_shoulder right_shoulder left_elbow "
     "right_elbow left_wrist right_wrist left_hip right_hip left_knee right_knee "
     "left_ankle right_ankle",
     [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15], list(range(0, 11)),
     [.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107, .087,
      .087, .089, .089]),
    (metadata.MPII, 16,
     "r_ankle r_knee r_hip l_hip l_knee l_ankle pelvis thorax upper_neck head_top r_wrist "
     "r_elbow r_shoulder l_shoulder l_elbow l_wrist",
     [5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 15, 14, 13, 12, 11, 10], list(range(7, 16)), None),
    (metadata.AP10K, 17,
     "L_Eye R_Eye Nose Neck Root_of_tail L_Shoulder L_Elbow L_F_Paw R_Shoulder R_Elbow "
     "R_F_Paw L_Hip L_Knee L_B_Paw R_Hip R_Knee R_B_Paw",
     [1, 0, 2, 3, 4, 8, 9, 10, 5, 6, 7, 14, 15, 16, 11, 12, 13], None,
     [.025, .025, .026, .035, .035, .079, .072, .062, .079, .072, .062, .107, .087, .089,
      .107, .087, .089]),
]
# Left/right spellings per dataset, for the name-swap check.
SIDE_PREFIXES = {"coco": ("left_", "right_"), "mpii": ("l_", "r_"), "ap10k": ("L_", "R_")}


@pytest.mark.parametrize("info, k, names, flip, upper, sigmas", SPEC_TABLES,
                         ids=lambda v: getattr(v, "name", None))
def test_tables_match_spec(info, k, names, flip, upper, sigmas):
  assert info.num_keypoints == k == len(info.sigmas) == len(info.flip_indices)
  assert info.keypoint_names == tuple(names.split())
  assert list(info.flip_indices) == flip
  if upper is not None:
    assert list(info.upper_body_ids) == upper
  if sigmas is not None:
    np.testing.assert_allclose(info.sigmas, sigmas, rtol=0, atol=1e-7)
  # the halves partition the keypoints
  assert sorted(info.upper_body_ids + info.lower_body_ids) == list(range(k))


@pytest.mark.parametrize("info", list(metadata.DATASETS.values()), ids=lambda i: i.name)
def test_flip_twice_is_identity_and_swaps_left_right(info):
  flip = np.array(info.flip_indices)
  np.testing.assert_array_equal(flip[flip], np.arange(info.num_keypoints))
  left, right = SIDE_PREFIXES[info.name]
  swap = {left: right, right: left}
  for k, name in enumerate(info.keypoint_names):
    prefix = next((p for p in swap if name.startswith(p)), None)
    expected = swap[prefix] + name[len(prefix):] if prefix else name
    assert info.keypoint_names[flip[k]] == expected, (name, info.keypoint_names[flip[k]])


def test_flip_pairs_list_each_swap_once():
  assert metadata.COCO.flip_pairs[:2] == ((1, 2), (3, 4))
  assert len(metadata.COCO.flip_pairs) == 8
  assert len(metadata.MPII.flip_pairs) == 6
  assert len(metadata.AP10K.flip_pairs) == 7


def _category(path):
  return json.loads((DATA / path).read_text())["categories"][0]


def test_coco_matches_its_json_category():
  category = _category("coco/test_coco.json")
  assert metadata.COCO.keypoint_names == tuple(category["keypoints"])
  assert metadata.COCO.skeleton == tuple((a - 1, b - 1) for a, b in category["skeleton"])


def test_ap10k_skeleton_matches_its_json_category():
  category = _category("ap10k/test_ap10k.json")
  assert metadata.AP10K.skeleton == tuple((a - 1, b - 1) for a, b in category["skeleton"])
  assert len(category["keypoints"]) == metadata.AP10K.num_keypoints


def test_mpii_skeleton_links_by_name():
  named = {tuple(metadata.MPII.keypoint_names[k] for k in link)
           for link in metadata.MPII.skeleton}
  # a few of mmpose's mpii.py links, by name
  assert {("pelvis", "thorax"), ("upper_neck", "head_top"), ("r_elbow", "r_wrist"),
          ("upper_neck", "l_shoulder")} <= named
  assert len(named) == 15


def test_get_and_unknown_name():
  assert metadata.get("mpii") is metadata.MPII
  with pytest.raises(ValueError, match="unknown dataset 'lsp'"):
    metadata.get("lsp")


def test_sigmas_are_read_only_copies():
  with pytest.raises(ValueError):
    metadata.COCO.sigmas[0] = 1.0
  source = np.full(2, 0.1)
  info = metadata.DatasetInfo("two", ("a", "b"), (0, 1), source)
  source[0] = 9.0
  assert info.sigmas[0] == np.float32(0.1)


OPENFIELD = "dlc-openfield/openfield_coco.json"


def _warnings(caplog):
  return [r for r in caplog.records if r.levelno == logging.WARNING]


def test_custom_without_flips_or_sigmas_logs_defaults_once(caplog):
  caplog.set_level(logging.WARNING)
  info = metadata.from_coco_category(_category(OPENFIELD))
  assert info.keypoint_names == ("snout", "leftear", "rightear", "tailbase")
  assert info.flip_indices == (0, 1, 2, 3)
  np.testing.assert_array_equal(info.sigmas, np.full(4, 0.05, np.float32))
  assert info.skeleton == () and info.upper_body_ids == () and info.lower_body_ids == ()
  messages = [r.getMessage() for r in _warnings(caplog)]
  assert len(messages) == 1
  assert "no flip pairs" in messages[0] and "0.05" in messages[0]


@pytest.mark.parametrize("pairs", [metadata.OPENFIELD_FLIP_PAIRS, [(1, 2)], [[2, "leftear"]]])
def test_custom_with_flip_pairs(pairs, caplog):
  caplog.set_level(logging.WARNING)
  info = metadata.from_coco_category(_category(OPENFIELD), flip_pairs=pairs,
                                     sigmas=[0.1, 0.2, 0.2, 0.3], name="openfield")
  assert info.name == "openfield"
  assert info.flip_indices == (0, 2, 1, 3)
  np.testing.assert_allclose(info.sigmas, [0.1, 0.2, 0.2, 0.3])
  assert not _warnings(caplog)


def test_custom_with_flips_but_no_sigmas_says_only_that(caplog):
  caplog.set_level(logging.WARNING)
  metadata.from_coco_category(_category(OPENFIELD), flip_pairs=[(1, 2)])
  (record,) = _warnings(caplog)
  assert "sigma" in record.getMessage() and "flip" not in record.getMessage()


def test_custom_category_skeleton_is_made_zero_based():
  category = {"name": "toy", "keypoints": ["a", "b", "c"], "skeleton": [[1, 2], [2, 3]]}
  info = metadata.from_coco_category(category, flip_pairs=[], sigmas=[0.1] * 3)
  assert info.skeleton == ((0, 1), (1, 2))


BASE = dict(name="toy", keypoint_names=("l", "r", "c"), flip_indices=(1, 0, 2),
            sigmas=[0.1, 0.1, 0.1])

# (overrides of BASE, the field the error must name)
BAD_INFOS = [
    (dict(flip_indices=(1, 0)), "flip_indices has 2 entries"),        # wrong length
    (dict(flip_indices=(0, 0, 2)), "not a permutation"),              # repeats 0
    (dict(flip_indices=(1, 2, 0)), "not its own inverse"),            # a 3-cycle
    (dict(flip_indices=(1.0, 0, 2)), "flip_indices must hold integers"),
    (dict(sigmas=[0.1, 0.1]), r"sigmas has shape \(2,\)"),            # count != K
    (dict(sigmas=[0.1, -0.1, 0.1]), "sigmas must be finite and > 0"),
    (dict(sigmas=[0.1, np.nan, 0.1]), "sigmas must be finite"),
    (dict(keypoint_names=("l", "l", "c")), "keypoint_names repeat"),
    (dict(keypoint_names=()), "keypoint_names is empty"),
    (dict(name=""), "name must be a non-empty string"),
    (dict(skeleton=((0, 3),)), "skeleton link"),                      # out of range
    (dict(skeleton=((1, 1),)), "skeleton link"),                      # self-link
    (dict(upper_body_ids=(0, 5)), "upper_body_ids"),
    (dict(upper_body_ids=(0, 1), lower_body_ids=(1, 2)), "share"),
]


@pytest.mark.parametrize("overrides, message", BAD_INFOS)
def test_bad_dataset_info_names_the_field(overrides, message):
  with pytest.raises(ValueError, match=message):
    metadata.DatasetInfo(**{**BASE, **overrides})


TOY = {"name": "toy", "keypoints": ["l", "r", "c"], "skeleton": []}

# (category, flip_pairs, sigmas, the error's words)
BAD_CUSTOM = [
    ({"name": "toy"}, None, None, "field 'keypoints'"),
    ({**TOY, "skeleton": [[0, 1]]}, None, None, "'skeleton' link"),    # 0 is not 1-based
    ({**TOY, "skeleton": [[1, 4]]}, None, None, "'skeleton' link"),
    (TOY, [("l", "x")], None, "names 'x'"),
    (TOY, [(0, 3)], None, "not an index"),
    (TOY, [(0, 1), (1, 2)], None, "repeats a keypoint"),
    (TOY, [(0,)], None, "not a pair"),
    (TOY, [(0, 1)], [0.1, 0.1], "sigmas has shape"),
    ("not a dict", None, None, "category must be a dict"),
]


@pytest.mark.parametrize("category, pairs, sigmas, message", BAD_CUSTOM)
def test_bad_custom_category(category, pairs, sigmas, message):
  with pytest.raises(ValueError, match=message):
    metadata.from_coco_category(category, flip_pairs=pairs, sigmas=sigmas)


@pytest.mark.parametrize("category, num_keypoints, names", [
    ({"name": "x"}, 3, ("kp1", "kp2", "kp3")),                 # no list: K from annotations
    ({"name": "x", "keypoints": []}, 2, ("kp1", "kp2")),
    ({"name": "x", "keypoints": ["", ""]}, None, ("kp1", "kp2")),     # empty names
    ({"name": "x", "keypoints": ["a", "a", "b"]}, None, ("kp1", "kp2", "kp3")),   # repeats
    ({"name": "x", "keypoints": ["a", "b"]}, 2, ("a", "b")),
])
def test_unnamed_keypoints_are_numbered(category, num_keypoints, names):
  info = metadata.from_coco_category(category, num_keypoints=num_keypoints)
  assert info.keypoint_names == names
