"""The optimiser recipes of `config.train` (config_lib.train_config) as Optax transforms.

    paper   (MamKPD): Adam, lr 1e-3, x0.1 at epochs 170 and 200 of 210, linear warm-up.
    vitpose (ViTPose): AdamW lr 5e-4, weight decay 0.1 on weights only (no norms, no
            biases, no SSM A_logs/Ds), gradient clipping at global norm 1.0, same steps.
"""

import jax
import optax
from flax import nnx

OPTIMIZERS = ("adam", "adamw")
# Parameters never decayed, besides every 1-D parameter (norms' scales, biases) and every
# name containing "bias" (dt_projs_bias is 2-D): the SSM's A (as log) and skip D, as
# VMamba's `_no_weight_decay`.
NO_DECAY_NAMES = ("A_logs", "Ds")


def learning_rate_schedule(train, steps_per_epoch):
  """step -> lr: linear warm-up from warmup_factor x lr, then x decay at the epochs."""
  if train.learning_rate <= 0:
    raise ValueError(f"config.train.learning_rate must be > 0, got {train.learning_rate}")
  if steps_per_epoch < 1:
    raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
  boundaries = {int(epoch * steps_per_epoch): train.lr_decay_factor
                for epoch in train.lr_decay_epochs}
  decayed = optax.piecewise_constant_schedule(train.learning_rate, boundaries)
  if train.warmup_steps <= 0:
    return decayed
  warmup = optax.linear_schedule(train.warmup_factor * train.learning_rate,
                                 train.learning_rate, train.warmup_steps)
  # During warm-up, warm-up and step decay multiply (mmpose's LinearLR then MultiStepLR).
  return lambda step: jax.numpy.where(step < train.warmup_steps,
                                      warmup(step) * decayed(step) / train.learning_rate,
                                      decayed(step))


def weight_decay_mask(params):
  """True for parameters to decay: >= 2-D weights, no biases, not A_logs / Ds (pytree of bools)."""
  def decay(path, leaf):
    names = [str(entry.key) for entry in path if isinstance(entry, jax.tree_util.DictKey)]
    is_bias = any("bias" in name for name in names)   # as mmcv's custom_keys {'bias': 0}
    return leaf.ndim >= 2 and not is_bias and not set(names) & set(NO_DECAY_NAMES)
  return jax.tree_util.tree_map_with_path(decay, params)


def make_optimizer(train, steps_per_epoch):
  """(optax transform, schedule) for config.train."""
  if train.optimizer not in OPTIMIZERS:
    raise ValueError(f"config.train.optimizer must be one of {OPTIMIZERS}, got "
                     f"{train.optimizer!r}")
  if train.grad_clip_norm < 0 or train.weight_decay < 0:
    raise ValueError("config.train.grad_clip_norm and config.train.weight_decay must be "
                     ">= 0")
  schedule = learning_rate_schedule(train, steps_per_epoch)
  if train.optimizer == "adam":
    if train.weight_decay:
      raise ValueError("config.train.weight_decay needs config.train.optimizer=adamw")
    tx = optax.adam(schedule, b1=train.b1, b2=train.b2)
  else:
    tx = optax.adamw(schedule, b1=train.b1, b2=train.b2, weight_decay=train.weight_decay,
                     mask=weight_decay_mask)
  if train.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(train.grad_clip_norm), tx)
  return tx, schedule


def make_nnx_optimizer(model, train, steps_per_epoch):
  tx, schedule = make_optimizer(train, steps_per_epoch)
  return nnx.Optimizer(model, tx, wrt=nnx.Param), schedule
