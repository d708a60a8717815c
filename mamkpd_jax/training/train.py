"""`train_and_evaluate(config, workdir)`: the main job (main.py is its command line).

    create_datasets -> MamKPD + Optax optimiser -> resume (or init_from) ->
    loop: global batch -> jitted train step (data-parallel, parallel.py) ->
          progress line + TensorBoard scalars every log_every_steps, NaN/Inf guard,
          Orbax checkpoint every checkpoint_every_steps, evaluation every
          eval_every_epochs (metrics json, predictions json, best checkpoint) ->
    final evaluation and checkpoint; learning_curve.png in the workdir.

Re-running the same command on the same workdir resumes the model, optimiser, step,
RNG streams and the Grain iterator position from the latest checkpoint, so an
interrupted run ends where an uninterrupted one would.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx

from mamkpd_jax.evaluation import evaluate
from mamkpd_jax.training import checkpointing, optim, parallel, workdir_lib
from mamkpd_jax.data_pipelines import pipeline
from mamkpd_jax.models import build_model, parse_model_config
from mamkpd_jax.progress import Progress, format_eta


class NonFiniteError(FloatingPointError):
  """A loss or gradient became NaN or Inf; training stopped before saving it."""


def keypoint_mse(heatmaps, targets, weights):
  """mmpose's KeypointMSELoss(use_target_weight=True): mean of w_k (pred - target)^2.

  heatmaps, targets: (N, h, w, K); weights: (N, K). Mean over every element.
  """
  squared = jnp.square(heatmaps.astype(jnp.float32) - targets)     # (N, h, w, K)
  return jnp.mean(squared * weights[:, None, None, :])


@dataclasses.dataclass
class Trainer:
  """The model's and optimiser's graph definitions and the compiled step."""

  model_graphdef: nnx.GraphDef
  opt_graphdef: nnx.GraphDef
  step_fn: object            # (state, batch) -> (state, metrics), jitted, state donated


def make_train_step(model_graphdef, opt_graphdef):
  """One optimisation step on a global batch; returns the new state and scalar metrics."""

  def train_step(state, batch):
    model = nnx.merge(model_graphdef, state["model"])
    optimizer = nnx.merge(opt_graphdef, state["opt"])

    def loss_fn(model):
      heatmaps = model(batch["image"])                             # (N, h, w, K)
      return keypoint_mse(heatmaps, batch["heatmaps"], batch["keypoint_weights"])

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
    return {"model": nnx.state(model), "opt": nnx.state(optimizer)}, metrics

  return train_step


def create_trainer(config, steps_per_epoch, mesh):
  """(Trainer, replicated initial state, lr schedule) for config."""
  model = build_model(parse_model_config(config.model), seed=config.seed)
  return trainer_for_model(model, config.train, steps_per_epoch, mesh)


def trainer_for_model(model, train_config, steps_per_epoch, mesh):
  """(Trainer, replicated initial state, lr schedule) training `model` (its arrays are
  the state's: the step donates them) with `train_config`'s optimiser."""
  model.train()
  optimizer, schedule = optim.make_nnx_optimizer(model, train_config, steps_per_epoch)
  model_graphdef, model_state = nnx.split(model)
  opt_graphdef, opt_state = nnx.split(optimizer)
  state = parallel.replicate({"model": model_state, "opt": opt_state}, mesh)
  state_sharding = jax.tree.map(lambda _: parallel.replicated(mesh), state)
  step_fn = jax.jit(make_train_step(model_graphdef, opt_graphdef),
                    in_shardings=(state_sharding, parallel.data_sharded(mesh)),
                    out_shardings=(state_sharding, parallel.replicated(mesh)),
                    donate_argnums=0)
  return Trainer(model_graphdef, opt_graphdef, step_fn), state, schedule


def check_finite(history):
  """Raises NonFiniteError naming the first step and quantity that is NaN or Inf.

  history: [(step, {name: scalar})], already fetched to the host.
  """
  for step, metrics in history:
    for name, value in metrics.items():
      if not np.isfinite(value):
        raise NonFiniteError(
            f"training stopped: {name} = {value} at step {step}. Nothing from this step "
            f"on was saved; the last good checkpoint stays. Lower "
            f"config.train.learning_rate, set config.train.grad_clip_norm, or check the "
            f"data.")


def num_train_steps(config, steps_per_epoch):
  if config.train.num_steps > 0:
    return int(config.train.num_steps)
  if config.train.num_epochs <= 0:
    raise ValueError(f"config.train.num_epochs must be > 0 (or set config.train.num_steps),"
                     f" got {config.train.num_epochs}")
  return int(round(config.train.num_epochs * steps_per_epoch))


def eval_steps(config, steps_per_epoch, total_steps):
  """The steps after which to evaluate: every eval_every_epochs, and the last."""
  every = int(round(config.train.eval_every_epochs * steps_per_epoch))
  steps = set(range(every, total_steps + 1, every)) if every > 0 else set()
  return steps | {total_steps}


class StepLog:
  """Training's progress lines (step, loss, lr, images/s, ETA) and its scalars to
  TensorBoard and jsonl; the rate and ETA come from `progress.Progress`."""

  def __init__(self, writer, schedule, global_batch, start_step, total_steps):
    self.writer, self.schedule = writer, schedule
    self.pending = []                       # [(step, {name: device scalar})]
    self.progress = Progress(total_steps, unit="steps", rate_unit="images",
                             per_unit=global_batch, start=start_step)

  def add(self, step, metrics):
    self.pending.append((step, metrics))

  def flush(self, step):
    """Fetches pending metrics (a device sync), checks them, logs their mean."""
    if not self.pending:
      return
    history = [(s, {k: float(v) for k, v in m.items()}) for s, m in
               jax.device_get(self.pending)]
    self.pending = []
    check_finite(history)
    reading = self.progress.read(step)
    means = {k: float(np.mean([m[k] for _, m in history])) for k in history[0][1]}
    scalars = {"train/" + k: v for k, v in means.items()}
    scalars["train/learning_rate"] = float(self.schedule(step - 1))
    scalars["train/images_per_s"] = reading.rate
    self.writer.write_scalars(step, scalars)
    logging.info("step %d/%d  loss %.6f  grad_norm %.4f  lr %.3g  %.1f img/s  ETA %s",
                 step, reading.total, means["loss"], means["grad_norm"],
                 scalars["train/learning_rate"], reading.rate, format_eta(reading.eta_s))

  def restart_clock(self, step):
    """After evaluation or a checkpoint wait: time only training in images/s."""
    self.progress.restart_clock(step)


def best_metric(config, metrics):
  """{"best": value} for Orbax's best-checkpoint policy, from config.eval.best_metric.

  When the evaluation does not produce that metric (MPII without head boxes has no
  PCKh) the first PCK@ metric stands in, said in the log.
  """
  name = config.eval.best_metric
  if name not in metrics:
    fallback = next((k for k in metrics if k.startswith("PCK")), None)
    if fallback is None:
      raise ValueError(f"config.eval.best_metric={name!r} is not among the evaluation's "
                       f"metrics {sorted(metrics)}")
    logging.warning("config.eval.best_metric=%r is not among the metrics; the best "
                    "checkpoint is chosen by %s", name, fallback)
    name = fallback
  return {"best": float(metrics[name])}


def _resume_or_init(config, checkpointer, state, train_iterator, meta):
  """Restores the latest checkpoint (returns its step) or applies init_from (returns 0)."""
  latest = checkpointer.restore_latest_usable(state, train_iterator, meta)
  if latest is not None:
    logging.info("resumed from %s/%d", checkpointer.directory, latest)
    return latest
  if config.init_from:
    checkpointing.restore_params_for_finetuning(config.init_from, state)
  return 0


def train_and_evaluate(config, workdir, evaluate_during_training=True):
  """Trains config's model in workdir (resuming when it holds checkpoints); evaluates.

  Returns the metrics of the last evaluation ({} when evaluate_during_training=False).
  """
  checkpointing.quiet_orbax_logs()
  config = pipeline.resolve_custom_config(config)
  with workdir_lib.open_workdir(workdir, config) as run:
    return _train_in_workdir(run, config, evaluate_during_training)


def _train_in_workdir(run, config, evaluate_during_training):
  """The body of train_and_evaluate, in an opened workdir (closed by the caller)."""
  mesh = parallel.make_mesh()
  global_batch = parallel.global_batch_size(config)
  config = run.config_with_batch(global_batch)
  datasets = pipeline.create_datasets(config)
  steps_per_epoch = datasets.num_train // global_batch
  if steps_per_epoch < 1:
    raise ValueError(f"{datasets.num_train} training instances do not fill one global "
                     f"batch of {global_batch}: lower config.batch_size")
  total_steps = num_train_steps(config, steps_per_epoch)
  trainer, state, schedule = create_trainer(config, steps_per_epoch, mesh)
  meta = checkpointing.run_meta(config, global_batch)
  checkpointer = run.checkpointer()
  train_iterator = iter(datasets.train)
  step = _resume_or_init(config, checkpointer, state, train_iterator, meta)
  state = parallel.replicate(state, mesh)
  evaluations = eval_steps(config, steps_per_epoch, total_steps) \
      if evaluate_during_training else set()
  logging.info("training %s on %s: %d steps (%.1f epochs of %d steps), global batch %d "
               "over %d devices, from step %d", config.model.variant, config.data.dataset,
               total_steps, total_steps / steps_per_epoch, steps_per_epoch, global_batch,
               jax.device_count(), step)
  progress = StepLog(run.writer, schedule, global_batch, step, total_steps)
  metrics = {}
  while step < total_steps:
    batch = parallel.global_batch(next(train_iterator), mesh)
    state, step_metrics = trainer.step_fn(state, batch)
    step += 1
    progress.add(step, step_metrics)
    save_now = (step % config.train.checkpoint_every_steps == 0 or step in evaluations
                or step == total_steps)
    if step % config.train.log_every_steps == 0 or save_now or step == total_steps:
      progress.flush(step)                 # raises on NaN/Inf before anything is saved
    if step in evaluations:
      metrics = evaluate.evaluate_state(config, trainer.model_graphdef, state["model"],
                                        datasets, mesh, step, run)
      progress.restart_clock(step)
    if save_now:
      checkpointer.save(step, state, train_iterator, meta,
                        metrics=best_metric(config, metrics) if step in evaluations else None)
  checkpointer.wait()
  return metrics
