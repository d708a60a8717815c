"""The authors' PyTorch state dict (mmpose TopdownPoseEstimator) -> our HRVMamba.

Module paths are the same on both sides (hrnet.py builds its lists in the authors'
nn.Sequential order) once mmpose's `backbone.` prefix is dropped; `head.final_layer`
stays. So a checkpoint name is (module path).(tensor), and the rule for the tensor
depends only on the kind of our module at that path:

  our module      checkpoint tensor     our variable   layout
  --------------  --------------------  -------------  -------------------------------
  Conv            weight                kernel         OIHW -> HWIO (depth-wise (C,1,k,k) -> (k,k,1,C))
  Conv            bias                  bias           same
  Linear          weight                kernel         (out, in) -> (in, out) (Linear2d, offset_mask)
  Linear          bias                  bias           same
  LayerNorm       weight                scale          same (LayerNorm2d over channels)
  LayerNorm       bias                  bias           same
  BatchNorm       weight                scale          same
  BatchNorm       bias                  bias           same
  BatchNorm       running_mean          mean           same (batch statistic)
  BatchNorm       running_var           var            same (batch statistic)
  BatchNorm       num_batches_tracked   -              dropped: only used by momentum=None
  SS2D            x_proj_weight         x_proj_weight  same (4, R+2N, 2C)
  SS2D            dt_projs_weight       dt_projs_weight  same (4, 2C, R)
  SS2D            dt_projs_bias         dt_projs_bias  same (4, 2C)
  SS2D            A_logs                A_logs         same (4*2C, N), direction-major
  SS2D            Ds                    Ds             same (4*2C,), direction-major

Every checkpoint tensor must match exactly one rule and one of our variables of the
same shape, and every parameter and batch statistic of ours must be filled: unknown,
missing or misshapen names are errors that name them.
"""

import jax
import numpy as np
from flax import nnx

from mamkpd_jax.models.ss2d import SS2D


def _oihw_to_hwio(w):
  return np.transpose(w, (2, 3, 1, 0))


def _same(w):
  return w


DROPPED = None
# (our module type, checkpoint tensor) -> (our variable, layout function).
RULES = {
    (nnx.Conv, "weight"): ("kernel", _oihw_to_hwio),
    (nnx.Conv, "bias"): ("bias", _same),
    (nnx.Linear, "weight"): ("kernel", np.transpose),
    (nnx.Linear, "bias"): ("bias", _same),
    (nnx.LayerNorm, "weight"): ("scale", _same),
    (nnx.LayerNorm, "bias"): ("bias", _same),
    (nnx.BatchNorm, "weight"): ("scale", _same),
    (nnx.BatchNorm, "bias"): ("bias", _same),
    (nnx.BatchNorm, "running_mean"): ("mean", _same),
    (nnx.BatchNorm, "running_var"): ("var", _same),
    (nnx.BatchNorm, "num_batches_tracked"): DROPPED,
    (SS2D, "x_proj_weight"): ("x_proj_weight", _same),
    (SS2D, "dt_projs_weight"): ("dt_projs_weight", _same),
    (SS2D, "dt_projs_bias"): ("dt_projs_bias", _same),
    (SS2D, "A_logs"): ("A_logs", _same),
    (SS2D, "Ds"): ("Ds", _same),
}
PREFIXES = {"backbone.": "", "head.": "head."}

OLD_TINY_HINT = (
    "this looks like the older HRVMamba-tiny (backbone HRVmamba_se_lpu, before the "
    "authors' commit 7222bc4: SE module in SS2D and 'cpe' depth-wise convs, "
    "docs/hrvmamba.md §9); only the current tiny (hrvmamba_tinynew_best.pth, "
    "plain HRVmamba) is supported")


class ConversionError(ValueError):
  """The checkpoint does not fit the model (names listed in the message)."""


def unwrap(checkpoint):
  """mmpose/mmengine saves {"state_dict": {...}, "meta": ...}; returns the inner dict."""
  if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
    return checkpoint["state_dict"]
  return checkpoint


def _module_at(model, module_path):
  """Our module at a dotted path ('stage2.0.branches.1.0.op'), or None."""
  node = model
  for part in module_path.split("."):
    if part.isdigit():
      index = int(part)
      if not isinstance(node, nnx.List) or index >= len(node):
        return None
      node = node[index]
    else:
      node = getattr(node, part, None)
    if node is None or not isinstance(node, (nnx.Module, nnx.List)):
      return None
  return node


def _rule(module, tensor_name):
  for (module_type, name), rule in RULES.items():
    if name == tensor_name and isinstance(module, module_type):
      return True, rule
  return False, None


def _our_path(name):
  """Checkpoint name -> (our module path, tensor name), or None for a foreign prefix."""
  for prefix, replacement in PREFIXES.items():
    if name.startswith(prefix):
      module_path, _, tensor = (replacement + name[len(prefix):]).rpartition(".")
      return module_path, tensor
  return None


def convert_state_dict(state_dict, model):
  """{checkpoint name: array} -> {our variable path (tuple): float32 array} for `model`.

  Raises ConversionError naming unknown, missing or misshapen tensors.
  """
  state_dict = unwrap(state_dict)
  targets = {path: var for path, var in nnx.to_flat_state(
      nnx.state(model, (nnx.Param, nnx.BatchStat)))}
  converted, unknown, misshapen, repeated = {}, [], [], []
  for name, value in state_dict.items():
    located = _our_path(name)
    module = _module_at(model, located[0]) if located else None
    found, rule = _rule(module, located[1]) if module is not None else (False, None)
    if not found:
      unknown.append(name)
      continue
    if rule is DROPPED:
      continue
    variable, layout = rule
    path = tuple(int(p) if p.isdigit() else p for p in located[0].split(".")) + (variable,)
    array = layout(np.asarray(value, dtype=np.float32))
    if path not in targets or tuple(targets[path].shape) != array.shape:
      expected = tuple(targets[path].shape) if path in targets else "absent"
      misshapen.append(f"{name} {tuple(np.shape(value))} -> {'.'.join(map(str, path))} "
                       f"{array.shape}, ours {expected}")
      continue
    if path in converted:
      repeated.append(name)
    converted[path] = array
  missing = [".".join(map(str, p)) for p in targets if p not in converted]
  problems = []
  if unknown:
    hint = (f" ({OLD_TINY_HINT})" if any(".se." in n or ".cpe" in n for n in unknown)
            else "")
    problems.append(f"{len(unknown)} checkpoint tensor(s) fit no part of "
                    f"HRVMamba-{model.config.variant}{hint}: {_listed(unknown)}")
  if misshapen:
    problems.append(f"{len(misshapen)} tensor(s) of the wrong shape (another variant or "
                    f"keypoint count?): {_listed(misshapen)}")
  if repeated:
    problems.append(f"tensor(s) mapping to an already filled variable: {_listed(repeated)}")
  if missing:
    problems.append(f"{len(missing)} of our parameters/statistics have no checkpoint "
                    f"tensor: {_listed(missing)}")
  if problems:
    raise ConversionError("; ".join(problems))
  return converted


def _listed(names, limit=8):
  shown = ", ".join(names[:limit])
  return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def load_state_dict(model, state_dict):
  """Writes the converted checkpoint into `model` (in place); returns the model."""
  converted = convert_state_dict(state_dict, model)
  state = nnx.state(model, (nnx.Param, nnx.BatchStat))
  flat = {path: var for path, var in nnx.to_flat_state(state)}
  for path, array in converted.items():
    flat[path].set_value(jax.numpy.asarray(array, flat[path].get_value().dtype))
  nnx.update(model, state)
  return model


def model_from_state_dict(state_dict, config_model, seed=0):
  """The authors' {name: array} (or {"state_dict": ...}) and a config.model -> HRVMamba.

  For notebooks and tests; `mamkpd convert` writes it as a checkpoint.
  """
  from mamkpd_jax import models   # pylint: disable=g-import-not-at-top (models imports us)
  model_config = models.parse_model_config(config_model)
  if model_config.name != "hrvmamba":
    raise ValueError(f"config.model.name={model_config.name!r}: the converter reads the "
                     f"HRVMamba authors' checkpoints only")
  return load_state_dict(models.build_model(model_config, seed=seed), state_dict)
