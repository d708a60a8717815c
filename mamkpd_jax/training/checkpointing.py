"""Orbax checkpoints of a training run: WORKDIR/checkpoints/<step>/{state,data,meta}.

    state  the model and optimiser state (parameters, BN statistics, Adam moments, the
           optimiser step, the drop-path RNG streams), as one pytree
    data   the Grain training iterator's position (one file per JAX process)
    meta   json: model config, dataset, keypoint count, global batch; checked on resume

Saving is asynchronous; the manager keeps the latest `keep` checkpoints plus the best
one by the evaluation metric (Orbax preservation policies). A workdir whose checkpoints
belong to another model (other variant, keypoint count or dataset) is an error, never
a silent restart or an overwrite.
"""

import dataclasses
import json
import logging as python_logging
import os
import shutil
import time

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as ocm

CHECKPOINT_DIR = "checkpoints"
UNUSABLE_DIR = "unusable_checkpoints"   # beside CHECKPOINT_DIR: steps that did not read back
META_KEYS = ("model", "dataset", "num_keypoints", "input_size")


class CheckpointMismatchError(ValueError):
  """The workdir's checkpoints were written for another model or dataset."""


class CheckpointUnusableError(ValueError):
  """No checkpoint of the workdir reads back (each set aside in UNUSABLE_DIR)."""


class _DropLibraryInfo(python_logging.Filter):
  """Drops Orbax's INFO records (dozens of lines per checkpoint) and its warnings that a
  periodic save carries no metrics or that a reader is read-only; other warnings pass."""

  EXPECTED = ("did not provide metrics", "read_only=True", "is read only",
              "Metadata file does not exist")

  def filter(self, record):
    if "/orbax/" not in record.pathname:
      return True
    if record.levelno < python_logging.WARNING:
      return False
    return not any(text in record.getMessage() for text in self.EXPECTED)


def quiet_orbax_logs():
  """Keeps the run's log readable: Orbax's per-save INFO lines are dropped."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _DropLibraryInfo) for f in handler.filters):
    handler.addFilter(_DropLibraryInfo())


# ------------------------------------------------------------------- state <-> pytree


def _is_key(leaf):
  return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype,
                                                               jax.dtypes.prng_key)


def _pure(state):
  """nnx.State -> nested dict with string keys (list indices too) for Orbax."""
  def strings(tree):
    if isinstance(tree, dict):
      return {str(k): strings(v) for k, v in tree.items()}
    return jax.random.key_data(tree) if _is_key(tree) else tree
  return strings(nnx.to_pure_dict(state))


def _load_pure(state, saved):
  """Writes the nested dict `saved` (as `_pure` made it) into the nnx.State `state`."""
  def matched(template, tree):
    if isinstance(template, dict):
      return {k: matched(v, tree[str(k)]) for k, v in template.items()}
    return jax.random.wrap_key_data(tree) if _is_key(template) else tree
  nnx.replace_by_pure_dict(state, matched(nnx.to_pure_dict(state), saved))


def to_saveable(state):
  """{"model": nnx.State, "opt": nnx.State} -> nested dicts of arrays for Orbax."""
  return {name: _pure(part) for name, part in state.items()}


def from_saveable(saved, state):
  """Writes a restored `to_saveable` tree into `state` (in place) and returns it."""
  for name, part in state.items():
    _load_pure(part, saved[name])
  return state


def abstract_saveable(state):
  """ShapeDtypeStructs (with shardings) of `to_saveable(state)`, for restoring into."""
  def abstract(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
  return jax.tree.map(abstract, to_saveable(state))


# ------------------------------------------------------------------------ meta data


def run_meta(config, global_batch):
  """What must agree between a checkpoint and the config that resumes from it."""
  return {
      "model": json.loads(config.model.to_json_best_effort()),
      "dataset": config.data.dataset,
      "num_keypoints": int(config.model.num_keypoints),
      "input_size": [int(config.data.input_height), int(config.data.input_width)],
      "global_batch": int(global_batch),
  }


def check_meta(saved, current, directory):
  """Raises CheckpointMismatchError naming the first field that differs."""
  for key in META_KEYS:
    if saved.get(key) != current.get(key):
      raise CheckpointMismatchError(
          f"{directory} holds checkpoints of another run: {key} is {saved.get(key)!r} there "
          f"but {current.get(key)!r} in this config. Use a new --workdir, or the matching "
          f"config (the saved one is {os.path.dirname(directory)}/config.json).")
  if saved.get("global_batch") != current.get("global_batch"):
    logging.warning("resuming with global batch %s (checkpoint: %s): the data order "
                    "changes from here", current.get("global_batch"), saved.get("global_batch"))


# ------------------------------------------------------------------------- manager


@dataclasses.dataclass
class Checkpointer:
  """The run's CheckpointManager and what it needs to save and restore."""

  manager: ocp.CheckpointManager
  directory: str
  best_metric: str

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step, state, data_iterator, meta, metrics=None):
    """Asynchronous save of `state` (nnx.State), the iterator position and `meta`."""
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(to_saveable(state)),
        data=grain.checkpoint.CheckpointSave(data_iterator),
        meta=ocp.args.JsonSave(meta))
    saved = self.manager.save(step, args=args, metrics=metrics, force=True)
    if saved:
      logging.info("checkpoint: step %d -> %s (async)", step, self.directory)
    return saved

  def restore(self, step, state):
    """Restores step's model and optimiser state into `state` (in place)."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_saveable(state))))
    from_saveable(restored["state"], state)

  def restore_data_position(self, step, data_iterator):
    """Restores step's Grain iterator position into `data_iterator`."""
    self.manager.restore(step, args=ocp.args.Composite(
        data=grain.checkpoint.CheckpointRestore(data_iterator)))

  def restore_latest_usable(self, state, data_iterator, meta):
    """Restores the newest checkpoint that reads back whole; returns its step (None: none).

    A step that fails to read (a truncated or missing file: a crash, a full disk) is
    said in the log, moved to UNUSABLE_DIR beside the checkpoints (kept, not deleted;
    its step number is then free to be saved again) and the previous step is tried.
    Checkpoints that all fail are an error, never a silent start from scratch; a
    checkpoint of another model (CheckpointMismatchError) is an error at once.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    for step in steps:
      try:
        check_meta(self.read_meta(step), meta, self.directory)
        self._check_data_position_parses(step)
        self.restore(step, state)
      except CheckpointMismatchError:
        raise
      except Exception as error:    # pylint: disable=broad-except  (Orbax, TensorStore,
        self._set_aside(step, error)                               # json, OS errors)
        continue
      # A position that parses but does not fit this run's data (Grain compares the
      # source) is an incompatibility, not damage: Grain's error stops the run.
      self.restore_data_position(step, data_iterator)
      return step
    if steps:
      raise CheckpointUnusableError(
          f"no checkpoint in {self.directory} reads back (steps {steps}, moved to "
          f"{self._unusable_dir()}); start over with a new --workdir")
    return None

  def _check_data_position_parses(self, step):
    """Raises when a file of the step's Grain iterator position is not whole json."""
    folder = os.path.join(self.directory, str(step), "data")
    for name in sorted(os.listdir(folder)):
      if name.endswith(".json"):
        with open(os.path.join(folder, name), encoding="utf-8") as f:
          json.load(f)

  def _unusable_dir(self):
    return os.path.join(os.path.dirname(self.directory), UNUSABLE_DIR)

  def _set_aside(self, step, error):
    target = os.path.join(self._unusable_dir(), str(step))
    logging.warning("checkpoint step %d in %s is unusable (%s: %s); it is moved to %s and "
                    "the previous checkpoint is tried", step, self.directory,
                    type(error).__name__, str(error).splitlines()[0][:300] if str(error)
                    else "", target)
    if jax.process_index() == 0:
      os.makedirs(self._unusable_dir(), exist_ok=True)
      if os.path.exists(target):
        target = f"{target}.{time.strftime('%Y%m%d-%H%M%S')}"
      shutil.move(os.path.join(self.directory, str(step)), target)
    multihost_utils.sync_global_devices(f"checkpoint_set_aside_{step}")
    self.manager.reload()

  def read_meta(self, step):
    return self.manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"]

  def wait(self):
    self.manager.wait_until_finished()


def save_model_checkpoint(directory, step, model, meta):
  """Writes `model` alone as checkpoint `directory`/`step` (state {"model": ...} and meta),
  readable by evaluation, config.init_from and the Estimator (no optimiser, no data
  position: not resumable as a training run). Refuses an existing step."""
  path = os.path.join(os.path.abspath(directory), str(step))
  if os.path.exists(path):
    raise FileExistsError(f"{path} exists; not overwriting it")
  handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
  options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
  with ocp.CheckpointManager(os.path.abspath(directory), options=options,
                             item_handlers=handlers) as manager:
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(to_saveable({"model": nnx.state(model)})),
        meta=ocp.args.JsonSave(meta)), force=True)
    manager.wait_until_finished()
  return path


def make_checkpointer(directory, keep=3, best_metric="", read_only=False):
  """A Checkpointer on `directory` keeping the latest `keep` and the best by `best_metric`."""
  policies = [ocm.LatestN(n=max(int(keep), 1))]
  if best_metric:
    policies.append(ocm.BestN(get_metric_fn=lambda metrics: metrics["best"], n=1,
                              keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      preservation_policy=ocm.AnyPreservationPolicy(policies), read_only=read_only,
      create=not read_only, enable_async_checkpointing=True,
      best_fn=(lambda metrics: metrics["best"]) if best_metric else None,
      best_mode="max")
  handlers = {"state": ocp.StandardCheckpointHandler(),
              "data": grain.checkpoint.CheckpointHandler(),
              "meta": ocp.JsonCheckpointHandler()}
  manager = ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                  item_handlers=handlers)
  return Checkpointer(manager, os.path.abspath(directory), best_metric)


def checkpoint_directory(path):
  """A workdir (holding checkpoints/) or a checkpoints folder -> the checkpoints folder."""
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint path not found: {path}")
  nested = os.path.join(path, CHECKPOINT_DIR)
  return nested if os.path.isdir(nested) else path


def resolve_checkpoint(path):
  """PATH (a workdir, its checkpoints/ folder, or one step folder) -> (directory, step).

  A step folder (checkpoints/1200) gives that step; otherwise the latest step.
  """
  path = os.path.abspath(path.rstrip("/"))
  base = os.path.basename(path)
  if base.isdigit() and os.path.isdir(os.path.join(path, "state")):
    return os.path.dirname(path), int(base)
  directory = checkpoint_directory(path)
  steps = sorted(int(name) for name in os.listdir(directory)
                 if name.isdigit() and os.path.isdir(os.path.join(directory, name, "state")))
  if not steps:
    raise FileNotFoundError(f"no checkpoints in {directory} (expected step folders such as "
                            f"{directory}/1000/state)")
  return directory, steps[-1]


def _read(directory, step, items):
  """Restores `items` ({name: args}) of one step without a training manager."""
  quiet_orbax_logs()
  handlers = {"state": ocp.PyTreeCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
  options = ocp.CheckpointManagerOptions(read_only=True)
  with ocp.CheckpointManager(directory, options=options, item_handlers=handlers) as manager:
    return manager.restore(step, args=ocp.args.Composite(**items))


def _read_model_arrays(directory, step):
  """The "model" subtree of a checkpoint's state as host numpy arrays.

  Read as numpy, not onto the devices it was saved from: a checkpoint written on 8 GPUs
  loads on one CPU (and the other way round).
  """
  quiet_orbax_logs()
  path = os.path.join(directory, str(step), "state")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no checkpoint state at {path}")
  with ocp.PyTreeCheckpointer() as checkpointer:
    tree = checkpointer.metadata(path).item_metadata.tree
    if "model" not in tree:
      raise CheckpointMismatchError(f"{path} holds no model state (keys {sorted(tree)})")
    wanted = {"model": tree["model"]}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
    restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
        wanted, restore_args=restore_args, partial_restore=True))
  return restored["model"]


def load_model_state(directory, step, model, config):
  """Loads the model part of checkpoint `directory`/`step` into `model` (evaluation).

  The checkpoint must be of the same model and keypoint count (CheckpointMismatchError).
  Returns the checkpoint's meta.
  """
  meta = _read(directory, step, {"meta": ocp.args.JsonRestore()})["meta"]
  current = run_meta(config, meta.get("global_batch"))
  for key in ("model", "num_keypoints", "input_size"):
    if meta.get(key) != current.get(key):
      raise CheckpointMismatchError(
          f"{directory}/{step} was trained with {key}={meta.get(key)!r}, but this config has "
          f"{current.get(key)!r}")
  state = nnx.state(model)
  _load_pure(state, _read_model_arrays(directory, step))
  nnx.update(model, state)
  return meta


def restore_params_for_finetuning(path, state):
  """Loads the model arrays of checkpoint PATH into state["model"] (config.init_from).

  Only the model is read (not the optimiser, step or data position). An array whose
  shape differs (a head for another keypoint count) or that the checkpoint lacks keeps
  its fresh initialisation, with a log line naming it. Returns the number loaded.
  """
  directory, step = resolve_checkpoint(path)
  saved_flat = {jax.tree_util.keystr(p): v for p, v in
                jax.tree_util.tree_leaves_with_path(_read_model_arrays(directory, step))}
  current = _pure(state["model"])
  loaded, skipped = 0, 0

  def take(path, leaf):
    nonlocal loaded, skipped
    name = jax.tree_util.keystr(path)
    value = saved_flat.get(name)
    if value is None or np.shape(value) != np.shape(leaf):
      skipped += 1
      logging.info("init_from: kept the fresh %s %s (checkpoint: %s)", name,
                   np.shape(leaf), "absent" if value is None else np.shape(value))
      return leaf
    loaded += 1
    return np.asarray(value).astype(leaf.dtype)

  merged = jax.tree_util.tree_map_with_path(take, current)
  _load_pure(state["model"], merged)
  logging.info("init_from %s/%d: loaded %d arrays, kept %d freshly initialised",
               directory, step, loaded, skipped)
  return loaded
