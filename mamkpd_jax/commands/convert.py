"""`mamkpd convert`: the HRVMamba authors' checkpoint into a checkpoint of ours.

    mamkpd convert --input=hrvmamba_tiny256192.pth \\
        --config=configs/coco_hrvmamba_tiny.py --output=/tmp/hrvmamba_tiny
    mamkpd eval --config=configs/coco_hrvmamba_tiny.py \\
        --workdir=/tmp/hrvmamba_tiny_eval --checkpoint=/tmp/hrvmamba_tiny

--input: the authors' .pth (needs torch: pip install 'mamkpd-jax[torch]'; read with
torch.load(weights_only=True), no code runs), or the same names in a .safetensors or
.npz. mmpose's {"state_dict": ...} wrapper is
unwrapped. The name and layout rules are the table in
mamkpd_jax/models/hrvmamba/convert.py; any unknown, missing or misshapen tensor stops
the conversion with its name.

--output: a new folder, written as a workdir: OUTPUT/config.json and
OUTPUT/checkpoints/0/{state,meta}. It serves `main.py --mode=eval --checkpoint=OUTPUT`,
`--config.init_from=OUTPUT` (fine-tuning, e.g. another keypoint count) and
`inference.Estimator.from_workdir(OUTPUT)`.

From Python: `convert_checkpoint(input_path, config, output)` (a ConfigDict of an
HRVMamba config); `main` only reads the flags.
"""

import functools
import os
import sys

import numpy as np
import safetensors.numpy
from absl import app, flags, logging
from ml_collections import config_flags

from mamkpd_jax.training import checkpointing, workdir_lib
from mamkpd_jax.models.hrvmamba import convert

FLAGS = flags.FLAGS


@functools.cache
def define_flags():
  """Defines `mamkpd convert`'s flags; the cli calls it before parsing (see cli.py)."""
  flags.DEFINE_string("input", None, "The authors' checkpoint: .pth, .safetensors or .npz.")
  config_flags.DEFINE_config_file("config", None, "A configs/*.py file of an HRVMamba "
                                  "model.", lock_config=True)
  flags.DEFINE_string("output", None, "A new folder for the converted checkpoint.")
  flags.mark_flags_as_required(["input", "config", "output"])


CONVERTED_STEP = 0


def read_state_dict(path):
  """{name: numpy array} from a .pth, .safetensors or .npz file ("state_dict" unwrapped)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--input={path}: no such file")
  suffix = os.path.splitext(path)[1].lower()
  if suffix in (".pth", ".pt"):
    try:
      import torch   # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ImportError(f"--input={path}: reading .pth needs PyTorch "
                        "(pip install 'mamkpd-jax[torch]'), or convert it to .safetensors "
                        "/ .npz elsewhere") from None
    tensors = convert.unwrap(torch.load(path, map_location="cpu", weights_only=True))
    return {name: t.detach().cpu().numpy() for name, t in tensors.items()
            if hasattr(t, "detach")}
  if suffix == ".safetensors":
    return safetensors.numpy.load_file(path)
  if suffix == ".npz":
    with np.load(path, allow_pickle=False) as archive:
      return convert.unwrap({name: archive[name] for name in archive.files})
  raise ValueError(f"--input={path}: unknown format {suffix!r}; expected .pth, .pt, "
                   ".safetensors or .npz")


def convert_checkpoint(input_path, config, output):
  """Reads, converts and writes; returns the written step folder."""
  if os.path.exists(output) and os.listdir(output):
    raise FileExistsError(f"--output={output} exists and is not empty; not overwriting it")
  if config.model.get("name", "mamkpd") != "hrvmamba":
    raise ValueError(f"--config: config.model.name is {config.model.get('name', 'mamkpd')!r}"
                     "; the converter reads HRVMamba checkpoints only")
  state_dict = read_state_dict(input_path)
  try:
    model = convert.model_from_state_dict(state_dict, config.model, seed=config.seed)
  except convert.ConversionError as e:
    raise ValueError(f"--input={input_path} does not fit --config "
                     f"(HRVMamba-{config.model.variant}): {e}") from None
  os.makedirs(output, exist_ok=True)
  workdir_lib.save_config(output, config)
  meta = checkpointing.run_meta(config, config.batch_size)
  meta["converted_from"] = os.path.abspath(input_path)
  return checkpointing.save_model_checkpoint(
      os.path.join(output, checkpointing.CHECKPOINT_DIR), CONVERTED_STEP, model, meta)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    path = convert_checkpoint(FLAGS.input, FLAGS.config, FLAGS.output)
  except (ValueError, FileNotFoundError, FileExistsError, ImportError) as error:
    logging.error("%s", error)
    sys.exit(f"convert: {error}")
  print(f"converted {FLAGS.input} -> {path}")

