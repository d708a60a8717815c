"""Keypoint dataset metadata: the one table of names, flips, sigmas and skeletons.

`DatasetInfo` holds what the pipeline, the codecs and the metrics need to know about a
keypoint layout. `COCO`, `MPII` and `AP10K` are the built-in layouts
(docs/conventions.md, Keypoint layouts; mmpose 1.x `configs/_base_/datasets/{coco,mpii,ap10k}.py`); `get(name)` looks them up.
`from_coco_category` builds the metadata of any COCO-format keypoint json from its
category, with flip pairs and OKS sigmas supplied by the user.

All indices are 0-based. mmpose writes the same facts as per-keypoint dicts (`swap`,
`type`) and skeleton links by name; here they are index tuples:

    flip_indices[k]   the keypoint that k becomes under a horizontal flip
    upper_body_ids    keypoints of type 'upper' (the half-body transform's upper half)
    lower_body_ids    keypoints of type 'lower'
    skeleton          (a, b) links, for drawing only
"""

import dataclasses
import re
from typing import Optional, Sequence, Union

from absl import logging
import numpy as np

# OKS sigma of every keypoint of a custom layout that names none (data/samples/NOTICE.md: no official
# sigmas exist for the DeepLabCut / Lightning Pose skeletons; 0.05 is what its checks use).
DEFAULT_CUSTOM_SIGMA = 0.05

IndexPair = tuple[int, int]
# A flip pair given by index or by keypoint name.
FlipPair = Union[tuple[int, int], tuple[str, str]]


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetInfo:
  """The keypoint layout of one dataset. Validated on construction.

  Attributes:
    name: short dataset name ("coco", "mpii", ...).
    keypoint_names: (K,) names, unique.
    flip_indices: (K,) permutation with flip_indices[flip_indices[k]] == k.
    sigmas: (K,) float32 OKS sigmas, read-only.
    skeleton: links (a, b), 0-based, a != b.
    upper_body_ids: keypoints of the upper half (half-body transform).
    lower_body_ids: keypoints of the lower half; disjoint from the upper half.
  """

  name: str
  keypoint_names: tuple[str, ...]
  flip_indices: tuple[int, ...]
  sigmas: np.ndarray
  skeleton: tuple[IndexPair, ...] = ()
  upper_body_ids: tuple[int, ...] = ()
  lower_body_ids: tuple[int, ...] = ()

  def __post_init__(self):
    names = tuple(self.keypoint_names)
    _check_names(self.name, names)
    num_keypoints = len(names)
    set_field = lambda field, value: object.__setattr__(self, field, value)
    set_field("keypoint_names", names)
    set_field("flip_indices", check_flip_indices(self.flip_indices, num_keypoints))
    set_field("sigmas", _checked_sigmas(self.sigmas, num_keypoints))
    set_field("skeleton", _checked_skeleton(self.skeleton, num_keypoints))
    upper = _checked_ids("upper_body_ids", self.upper_body_ids, num_keypoints)
    lower = _checked_ids("lower_body_ids", self.lower_body_ids, num_keypoints)
    if set(upper) & set(lower):
      raise ValueError(f"DatasetInfo {self.name!r}: upper_body_ids and lower_body_ids share "
                       f"{sorted(set(upper) & set(lower))}")
    set_field("upper_body_ids", upper)
    set_field("lower_body_ids", lower)

  @property
  def num_keypoints(self) -> int:
    return len(self.keypoint_names)

  @property
  def flip_pairs(self) -> tuple[IndexPair, ...]:
    """The (left, right) index pairs that swap under a flip, each pair once."""
    return tuple((k, j) for k, j in enumerate(self.flip_indices) if k < j)

  def index(self, keypoint_name: str) -> int:
    """The index of `keypoint_name`; ValueError naming the dataset if it has none."""
    if keypoint_name not in self.keypoint_names:
      raise ValueError(f"DatasetInfo {self.name!r} has no keypoint {keypoint_name!r}; "
                       f"keypoint_names: {self.keypoint_names}")
    return self.keypoint_names.index(keypoint_name)


def _check_names(dataset_name, names):
  if not isinstance(dataset_name, str) or not dataset_name:
    raise ValueError(f"DatasetInfo name must be a non-empty string, got {dataset_name!r}")
  if not names:
    raise ValueError(f"DatasetInfo {dataset_name!r}: keypoint_names is empty")
  if not all(isinstance(n, str) and n for n in names):
    raise ValueError(f"DatasetInfo {dataset_name!r}: keypoint_names must be non-empty "
                     f"strings, got {names}")
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise ValueError(f"DatasetInfo {dataset_name!r}: keypoint_names repeat {duplicates}")


def _as_index_tuple(field, values):
  """Python ints from a sequence of integers; ValueError naming `field` otherwise."""
  values = tuple(values)
  for v in values:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
      raise ValueError(f"{field} must hold integers, got {v!r} in {values}")
  return tuple(int(v) for v in values)


def check_flip_indices(flip_indices, num_keypoints):
  """The one check of flip indices: K ints forming a pairing (its own inverse)."""
  flip = _as_index_tuple("flip_indices", flip_indices)
  if len(flip) != num_keypoints:
    raise ValueError(f"flip_indices has {len(flip)} entries for {num_keypoints} keypoints")
  if sorted(flip) != list(range(num_keypoints)):
    raise ValueError(f"flip_indices is not a permutation of 0..{num_keypoints - 1}: {flip}")
  not_involution = [k for k in range(num_keypoints) if flip[flip[k]] != k]
  if not_involution:
    raise ValueError(f"flip_indices is not its own inverse (flipping twice moves keypoints "
                     f"{not_involution}): {flip}")
  return flip


def _checked_sigmas(sigmas, num_keypoints):
  sigmas = np.array(sigmas, dtype=np.float32)        # a copy: (K,)
  if sigmas.shape != (num_keypoints,):
    raise ValueError(f"sigmas has shape {sigmas.shape}, expected ({num_keypoints},)")
  if not np.all(np.isfinite(sigmas)) or np.any(sigmas <= 0):
    raise ValueError(f"sigmas must be finite and > 0, got {sigmas.tolist()}")
  sigmas.setflags(write=False)
  return sigmas


def _checked_skeleton(skeleton, num_keypoints):
  links = []
  for link in skeleton:
    link = _as_index_tuple("skeleton", link)
    if len(link) != 2 or not all(0 <= k < num_keypoints for k in link) or link[0] == link[1]:
      raise ValueError(f"skeleton link {link} is not two different indices in "
                       f"0..{num_keypoints - 1}")
    links.append(link)
  return tuple(links)


def _checked_ids(field, ids, num_keypoints):
  ids = _as_index_tuple(field, ids)
  if any(not 0 <= k < num_keypoints for k in ids) or len(set(ids)) != len(ids):
    raise ValueError(f"{field} must be distinct indices in 0..{num_keypoints - 1}, got {ids}")
  return ids


# ---------------------------------------------------------------------------------------
# Built-in layouts.

# COCO-17 (docs/conventions.md). Sigmas are pycocotools' COCOeval defaults. The skeleton is the
# category's `skeleton` of every COCO person-keypoints json (1-based there), minus 1.
COCO = DatasetInfo(
    name="coco",
    keypoint_names=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle"),
    flip_indices=(0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15),
    sigmas=np.array([.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062,
                     .107, .107, .087, .087, .089, .089]),
    skeleton=((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
              (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4),
              (3, 5), (4, 6)),
    upper_body_ids=tuple(range(0, 11)),
    lower_body_ids=tuple(range(11, 17)),
)

# MPII-16 (docs/conventions.md). The short names: r_ = right_, l_ = left_ in mmpose's mpii.py.
# Sigmas and skeleton from mmpose's mpii.py ("adapted from COCO"; PCKh does not use them).
MPII = DatasetInfo(
    name="mpii",
    keypoint_names=(
        "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
        "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder",
        "l_elbow", "l_wrist"),
    flip_indices=(5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 15, 14, 13, 12, 11, 10),
    sigmas=np.array([.089, .083, .107, .107, .083, .089, .026, .026, .026, .026, .062,
                     .072, .179, .179, .072, .062]),
    skeleton=((0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
              (8, 12), (12, 11), (11, 10), (8, 13), (13, 14), (14, 15)),
    upper_body_ids=tuple(range(7, 16)),
    lower_body_ids=tuple(range(0, 7)),
)

# AP-10K-17 (docs/conventions.md). Sigmas in AP-10K's keypoint order, as the AP-10K
# authors' config (AlexTheBad/AP-10K configs/_base_/datasets/ap10k.py) give them. The skeleton is
# mmpose's ap10k.py links, equal to the category skeleton of the AP-10K json minus 1.
# Body halves are mmpose's `type` fields verbatim, including its asymmetry: L_F_Paw (7)
# is 'upper' but R_F_Paw (10) is 'lower'.
AP10K = DatasetInfo(
    name="ap10k",
    keypoint_names=(
        "L_Eye", "R_Eye", "Nose", "Neck", "Root_of_tail", "L_Shoulder", "L_Elbow",
        "L_F_Paw", "R_Shoulder", "R_Elbow", "R_F_Paw", "L_Hip", "L_Knee", "L_B_Paw",
        "R_Hip", "R_Knee", "R_B_Paw"),
    flip_indices=(1, 0, 2, 3, 4, 8, 9, 10, 5, 6, 7, 14, 15, 16, 11, 12, 13),
    sigmas=np.array([.025, .025, .026, .035, .035, .079, .072, .062, .079, .072, .062,
                     .107, .087, .089, .107, .087, .089]),
    skeleton=((0, 1), (0, 2), (1, 2), (2, 3), (3, 4), (3, 5), (5, 6), (6, 7), (3, 8),
              (8, 9), (9, 10), (4, 11), (11, 12), (12, 13), (4, 14), (14, 15), (15, 16)),
    upper_body_ids=(0, 1, 2, 3, 5, 6, 7, 8, 9),
    lower_body_ids=(4, 10, 11, 12, 13, 14, 15, 16),
)

DATASETS = {info.name: info for info in (COCO, MPII, AP10K)}

# dlc-openfield (data/samples/dlc-openfield/openfield_coco.json, a custom COCO-format layout):
# the flip pair data/samples/NOTICE.md gives. Use with `from_coco_category`.
OPENFIELD_FLIP_PAIRS = (("leftear", "rightear"),)


def get(name: str) -> DatasetInfo:
  """The built-in layout called `name` ("coco", "mpii", "ap10k")."""
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; built-in: {sorted(DATASETS)}")
  return DATASETS[name]


# ---------------------------------------------------------------------------------------
# Custom COCO-format layouts.


def flip_indices_from_pairs(keypoint_names: Sequence[str],
                            flip_pairs: Sequence[FlipPair]) -> tuple[int, ...]:
  """(K,) flip indices from (left, right) pairs given by index or by name."""
  names = tuple(keypoint_names)
  flip = list(range(len(names)))
  paired = set()
  for pair in flip_pairs:
    pair = tuple(pair)
    if len(pair) != 2:
      raise ValueError(f"flip_pairs: {pair!r} is not a pair")
    a, b = (_pair_index(names, side, pair) for side in pair)
    if a == b or a in paired or b in paired:
      raise ValueError(f"flip_pairs: pair {pair} repeats a keypoint or pairs one with "
                       f"itself; flip_pairs: {list(flip_pairs)}")
    paired.update((a, b))
    flip[a], flip[b] = b, a
  return tuple(flip)


def _pair_index(names, side, pair):
  if isinstance(side, str):
    if side not in names:
      raise ValueError(f"flip_pairs: {pair!r} names {side!r}, not a keypoint of {names}")
    return names.index(side)
  if isinstance(side, (bool, np.bool_)) or not isinstance(side, (int, np.integer)) \
      or not 0 <= side < len(names):
    raise ValueError(f"flip_pairs: {pair!r} holds {side!r}, not an index in "
                     f"0..{len(names) - 1} or a keypoint name")
  return int(side)


# Name patterns of a left/right keypoint pair (lower case): a prefix or a suffix, where
# "left"/"right" may join the rest directly ("leftear") but "l"/"r" need a separator
# ("l_ear", "ear_l"), so that "leg" and "reg" do not pair.
_SIDE_PATTERNS = (
    re.compile(r"^(?P<side>left|right)(?P<rest>.+)$"),
    re.compile(r"^(?P<side>l|r)(?P<rest>[_\-. ].+)$"),
    re.compile(r"^(?P<rest>.+)(?P<side>left|right)$"),
    re.compile(r"^(?P<rest>.+[_\-. ])(?P<side>l|r)$"),
)
_OTHER_SIDE = {"left": "right", "right": "left", "l": "r", "r": "l"}


def _side_and_mirror(name: str) -> tuple[Optional[str], Optional[str]]:
  """("left" | "right", the lower-case name of the other side's keypoint), or (None, None).

  "left_ear" -> ("left", "right_ear"); "paw_r" -> ("right", "paw_l").
  """
  lower = name.lower()
  for pattern in _SIDE_PATTERNS:
    match = pattern.match(lower)
    if match:
      side = match.group("side")
      start, end = match.span("side")
      full_side = "left" if side in ("left", "l") else "right"
      return full_side, lower[:start] + _OTHER_SIDE[side] + lower[end:]
  return None, None


def keypoint_side(name: str) -> str:
  """'left', 'right' or 'center', read from a keypoint name as find_flip_pairs reads it."""
  return _side_and_mirror(name)[0] or "center"


def find_flip_pairs(keypoint_names: Sequence[str]) -> tuple[tuple[str, str], ...]:
  """(left, right) name pairs that mirror each other: left_*/right_*, l_*/r_*, *_l/*_r,
  leftX/rightX (case-insensitive, separators _ - . or space). Each name pairs once."""
  by_lower = {name.lower(): name for name in keypoint_names}
  pairs, paired = [], set()
  for name in keypoint_names:
    side, mirror = _side_and_mirror(name)
    other = by_lower.get(mirror) if mirror else None
    if other is None or other == name or name in paired or other in paired:
      continue
    pairs.append((name, other) if side == "left" else (other, name))
    paired.update((name, other))
  return tuple(pairs)


def unnamed_keypoint_names(num_keypoints: int) -> tuple[str, ...]:
  """Names for a layout whose json gives none: kp1 .. kpK."""
  return tuple(f"kp{k + 1}" for k in range(num_keypoints))


_WARNED = set()       # messages already logged by _warn_once


def _warn_once(message: str):
  """A warning logged once per process (the category is read by several steps)."""
  if message not in _WARNED:
    _WARNED.add(message)
    logging.warning("%s", message)


def from_coco_category(category: dict, flip_pairs: Optional[Sequence[FlipPair]] = None,
                       sigmas: Optional[Sequence[float]] = None,
                       name: Optional[str] = None,
                       num_keypoints: Optional[int] = None) -> DatasetInfo:
  """The layout of a COCO-format keypoint category (docs/conventions.md, custom datasets).

  Names and skeleton (1-based in the json) come from `category`; flips and OKS sigmas
  from the arguments. Without `flip_pairs` nothing swaps under a flip (identity flip
  indices); without `sigmas` every keypoint gets DEFAULT_CUSTOM_SIGMA. Either default
  is logged once, here. Body halves are unknown, so both are empty (no half-body).
  Keypoints the category does not name (no list, given `num_keypoints`; or names
  that are empty or repeat) are called kp1 .. kpK, said in the log.

  Args:
    category: a `categories[i]` entry with "name", "keypoints" and optional "skeleton".
    flip_pairs: (left, right) pairs, 0-based indices or keypoint names.
    sigmas: (K,) OKS sigmas.
    name: the dataset name; the category's name when None.
    num_keypoints: K, for a category without a "keypoints" list (counted in the
      annotations).
  """
  if not isinstance(category, dict):
    raise ValueError(f"category must be a dict, got {type(category).__name__}")
  name = name or str(category.get("name", "custom"))
  names = category_keypoint_names(category, num_keypoints, name)
  skeleton = _zero_based_skeleton(category.get("skeleton") or [], len(names), name)
  defaults = []
  if flip_pairs is None:
    flip_indices = tuple(range(len(names)))
    defaults.append("no flip pairs given: flip_indices = identity (nothing swaps)")
  else:
    flip_indices = flip_indices_from_pairs(names, flip_pairs)
  if sigmas is None:
    sigmas = np.full(len(names), DEFAULT_CUSTOM_SIGMA)
    defaults.append(f"no sigmas given: OKS sigma {DEFAULT_CUSTOM_SIGMA} for every keypoint")
  if defaults:
    logging.warning("Dataset %r (from its COCO category): %s.", name, "; ".join(defaults))
  return DatasetInfo(name=name, keypoint_names=names, flip_indices=flip_indices,
                     sigmas=sigmas, skeleton=skeleton)


def category_keypoint_names(category: dict, num_keypoints: Optional[int] = None,
                            name: Optional[str] = None) -> tuple[str, ...]:
  """The category's keypoint names; kp1 .. kpK where it names none (logged once)."""
  name = name or str(category.get("name", "custom"))
  names = category.get("keypoints")
  if not isinstance(names, (list, tuple)) or not names:
    if not num_keypoints:
      raise ValueError(f"category {name!r}: field 'keypoints' must be a non-empty list of "
                       f"names, got {names!r}")
    names = unnamed_keypoint_names(num_keypoints)
    _warn_once(f"Dataset {name!r}: the category lists no keypoint names; its "
               f"{num_keypoints} keypoints are called {names[0]} .. {names[-1]}.")
    return names
  named = all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names)
  if not named:
    _warn_once(f"Dataset {name!r}: the category's keypoint names {names} are empty or "
               f"repeat; they are called kp1 .. kp{len(names)}.")
    return unnamed_keypoint_names(len(names))
  return tuple(names)


def _zero_based_skeleton(skeleton, num_keypoints, name):
  links = []
  for link in skeleton:
    if not isinstance(link, (list, tuple)) or len(link) != 2 or \
        not all(isinstance(k, int) and 1 <= k <= num_keypoints for k in link):
      raise ValueError(f"category {name!r}: field 'skeleton' link {link!r} is not two "
                       f"1-based keypoint indices in 1..{num_keypoints}")
    links.append((link[0] - 1, link[1] - 1))
  return tuple(links)
