"""What a run writes in its workdir, in one place.

    WORKDIR/config.json              the resolved config of the first run (kept)
    WORKDIR/config.<time>.json       a later run's config when it differs (nothing lost)
    WORKDIR/checkpoints/<step>/      Orbax checkpoints (checkpointing.py)
    WORKDIR/tensorboard/             TensorBoard event files (tensorboardX)
    WORKDIR/scalars.jsonl            the same scalars, one json object per line
    WORKDIR/eval/metrics_step<N>.json       metrics of the evaluation after step N
    WORKDIR/eval/predictions_step<N>.json   its predictions, COCO results format
WORKDIR/eval/predictions_step<N>.png    those predictions drawn on a few evaluation frames
    WORKDIR/learning_curve.png       training loss and the evaluation metric by step

Only JAX process 0 writes files (checkpoints are written by Orbax on every process).
"""

import dataclasses
import json
import os
import time

import jax
import numpy as np
from absl import logging

from mamkpd_jax import models
from mamkpd_jax.inference import visualization
from mamkpd_jax.training import checkpointing
from mamkpd_jax.evaluation import metrics as metrics_lib

EVAL_DIR = "eval"
PICTURE_FRAMES = 4      # evaluation frames drawn with their predictions after each evaluation


def _is_main():
  return jax.process_index() == 0


class ScalarWriter:
  """TensorBoard event files plus scalars.jsonl (easy to read back for plots)."""

  def __init__(self, workdir):
    self.path = os.path.join(workdir, "scalars.jsonl")
    self._tb = None
    if _is_main():
      from tensorboardX import SummaryWriter   # protobuf only; imported on process 0
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write_scalars(self, step, scalars):
    if not _is_main():
      return
    for name, value in scalars.items():   # TensorBoard tags allow no "@": PCK@0.1 -> PCK_0.1
      self._tb.add_scalar(name.replace("@", "_"), value, step)
    self._tb.flush()
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}})
              + "\n")

  def close(self):
    if self._tb is not None:
      self._tb.close()


def read_scalars(workdir):
  """scalars.jsonl -> {name: [(step, value)]}, the last value per step (resumes repeat)."""
  path = os.path.join(workdir, "scalars.jsonl")
  by_name = {}
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      record = json.loads(line)
      step = record.pop("step")
      for name, value in record.items():
        by_name.setdefault(name, {})[step] = value
  return {name: sorted(values.items()) for name, values in by_name.items()}


@dataclasses.dataclass
class Workdir:
  """An opened workdir: paths, the scalar writer and the checkpoint manager."""

  path: str
  config: object
  writer: ScalarWriter

  def config_with_batch(self, global_batch):
    config = self.config.copy_and_resolve_references()
    config.unlock()
    config.batch_size = int(global_batch)
    return config

  def checkpointer(self, read_only=False):
    return checkpointing.make_checkpointer(
        os.path.join(self.path, checkpointing.CHECKPOINT_DIR),
        keep=self.config.train.keep_checkpoints,
        best_metric=self.config.eval.best_metric, read_only=read_only)

  def eval_paths(self, step):
    directory = os.path.join(self.path, EVAL_DIR)
    return (os.path.join(directory, f"metrics_step{step}.json"),
            os.path.join(directory, f"predictions_step{step}.json"))

  def write_evaluation(self, step, metrics, results, extra):
    """metrics_step<N>.json and predictions_step<N>.json (process 0 only)."""
    if not _is_main():
      return None
    metrics_path, predictions_path = self.eval_paths(step)
    metrics_lib.write_json_atomic(predictions_path, results)
    metrics_lib.write_metrics_json(metrics_path, metrics, {"step": int(step), **extra})
    self.writer.write_scalars(step, {f"eval/{k}": v for k, v in metrics.items()})
    self.plot_learning_curve()
    return metrics_path

  def write_prediction_picture(self, step, datasets, keypoints, scores,
                               num_frames=PICTURE_FRAMES):
    """eval/predictions_step<N>.png: predictions on `num_frames` evaluation frames, spread
    over the evaluation set (process 0 only). keypoints (N, K, 2), scores (N, K)."""
    if not _is_main() or not datasets.eval_instances:
      return None
    paths = [instance["image_path"] for instance in datasets.eval_instances]
    frames = list(dict.fromkeys(paths))                           # in order, once each
    chosen = [frames[i] for i in np.unique(np.linspace(0, len(frames) - 1, num_frames)
                                           .round().astype(int))]
    rows = [[i for i, p in enumerate(paths) if p == frame] for frame in chosen]
    sheet = visualization.prediction_sheet(chosen, [keypoints[r] for r in rows],
                                           [scores[r] for r in rows], datasets.info)
    path = os.path.join(self.path, EVAL_DIR, f"predictions_step{step}.png")
    return visualization.save_image(path, sheet)

  def plot_learning_curve(self):
    if _is_main():
      plot_learning_curve(self.path, os.path.join(self.path, "learning_curve.png"),
                          title=f"{models.model_title(self.config.model)} on "
                                f"{self.config.data.dataset}: {os.path.basename(self.path)}")

  def finish(self):
    self.writer.close()

  # `with open_workdir(...) as run:` closes the writers on every path, errors included
  # (tensorboardX's writer thread left open prints a traceback at interpreter exit).
  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.finish()


def save_config(workdir, config):
  """config.json on the first run; a differing later config goes beside it, dated."""
  text = config.to_json_best_effort(indent=1, sort_keys=True)
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      if f.read() == text:
        return
    path = os.path.join(workdir, f"config.{time.strftime('%Y%m%d-%H%M%S')}.json")
    logging.info("the config differs from %s/config.json; saved this run's as %s",
                 workdir, path)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


def open_workdir(workdir, config, write_config=True):
  """Creates workdir (process 0), saves the resolved config, opens the writers."""
  if not workdir:
    raise ValueError("a --workdir is required")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise NotADirectoryError(f"--workdir={workdir} exists and is not a directory")
  if _is_main():
    os.makedirs(workdir, exist_ok=True)
    if write_config:
      save_config(workdir, config)
  return Workdir(os.path.abspath(workdir), config, ScalarWriter(workdir) if write_config
                 else _NullWriter())


class _NullWriter:
  def write_scalars(self, step, scalars):
    del step, scalars

  def close(self):
    pass


PLOTTED_METRICS = ("AP", "PCKh", "PCK@0.1")


def plot_learning_curve(workdir, output_path, metrics=PLOTTED_METRICS, title=""):
  """Training loss (log scale) and evaluation `metrics` against the step, as a PNG."""
  from matplotlib.figure import Figure   # no pyplot: leaves the caller's backend alone

  scalars = read_scalars(workdir)
  loss = scalars.get("train/loss")
  if not loss:
    return None
  eval_names = [f"eval/{m}" for m in metrics if f"eval/{m}" in scalars]
  fig = Figure(figsize=(7, 4), dpi=110)
  ax = fig.subplots()
  steps, values = zip(*loss)
  ax.plot(steps, values, color="tab:blue", label="train loss")
  ax.set_yscale("log")
  ax.set_xlabel("step")
  ax.set_ylabel("training loss (MSE)", color="tab:blue")
  if eval_names:
    ax2 = ax.twinx()
    for name, color in zip(eval_names, ("tab:orange", "tab:green", "tab:red")):
      s, v = zip(*scalars[name])
      ax2.plot(s, v, marker="o", color=color, label=name[len("eval/"):])
    ax2.set_ylabel("evaluation metric")
    ax2.set_ylim(0, 1)
    ax2.legend(loc="center right")
  ax.set_title(title or os.path.basename(os.path.abspath(workdir)))
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(output_path)
  return output_path
