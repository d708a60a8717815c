"""The `mamkpd` command: one entry point, a subcommand per job (installed by pip).

    mamkpd train --config=configs/sample_openfield.py --workdir=/tmp/sample_openfield
    mamkpd eval --config=configs/sample_openfield.py --workdir=/tmp/sample_openfield
    mamkpd predict --weights=weights/mamkpd_tiny_openfield --input=IMAGE_OR_VIDEO --output=DIR
    mamkpd track ...            mamkpd export ...       mamkpd benchmark ...
    mamkpd convert ...          mamkpd COMMAND --help   (that command's flags)
    python -m mamkpd_jax.cli COMMAND ...                (the same, without the script)

Each subcommand is a module of mamkpd_jax/commands/ with a `define_flags()`, a
`main(argv)` that reads the flags and plain functions that do the work. Only the chosen
module is imported and its flags defined, then `absl.app.run` parses the remaining
arguments (`--config.train.num_steps=50` included) and calls its main. `python main.py`
is `mamkpd train`.

JAX logs an INFO line for each accelerator backend it probes and does not find ("Unable
to initialize backend 'tpu'"); `quiet_backend_probing` drops those lines only: JAX's
warnings (a GPU present without CUDA jaxlib, ...) and every other log line still show.
"""

import dataclasses
import importlib
import logging
import sys

from absl import app, flags


@dataclasses.dataclass(frozen=True)
class Command:
  module: str                   # the module with the flags and main(argv)
  summary: str                  # one line for `mamkpd --help`
  preset: tuple[str, ...] = ()  # flags put before the user's (they may override them)


COMMANDS = {
    "train": Command("mamkpd_jax.commands.train",
                     "train (and evaluate) a model on a config's data; resumes a workdir"),
    "eval": Command("mamkpd_jax.commands.train",
                    "evaluate a workdir's (or --checkpoint's) model: COCO AP, PCK",
                    preset=("--mode=eval",)),
    "predict": Command("mamkpd_jax.commands.predict",
                       "poses on images, a folder or a video (--weights or --checkpoint)"),
    "track": Command("mamkpd_jax.commands.track",
                     "video or webcam: detect, track ids, smooth; mp4 + per-frame json"),
    "export": Command("mamkpd_jax.commands.export",
                      "shippable weights (--format=safetensors) or a jax.export artefact"),
    "benchmark": Command("mamkpd_jax.commands.benchmark",
                         "throughput and latency per variant, dtype, scan, batch size"),
    "convert": Command("mamkpd_jax.commands.convert",
                       "the HRVMamba authors' .pth/.safetensors/.npz into a checkpoint"),
}


def usage():
  """`mamkpd --help`: the commands, one line each."""
  width = max(len(name) for name in COMMANDS)
  lines = ["usage: mamkpd COMMAND [--flag=value ...]   (mamkpd COMMAND --help: its flags)",
           "", "commands:"]
  lines += [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
  return "\n".join(lines)


# JAX's logger of backend initialisation, and the start of the line it logs at INFO for
# a backend it probes and cannot start (JAX 0.4 to 0.12: xla_bridge.backends()).
BACKEND_LOGGER = "jax._src.xla_bridge"
PROBING_MESSAGE = "Unable to initialize backend"


class _DropBackendProbing(logging.Filter):
  """Drops the INFO line of a backend JAX probed and skipped; keeps everything else."""

  def filter(self, record):
    return not (record.levelno <= logging.INFO and
                str(record.msg).startswith(PROBING_MESSAGE))


_PROBING_FILTER = _DropBackendProbing()


def quiet_backend_probing():
  """Silences JAX's "Unable to initialize backend 'tpu'" INFO lines (idempotent)."""
  logger = logging.getLogger(BACKEND_LOGGER)
  if _PROBING_FILTER not in logger.filters:
    logger.addFilter(_PROBING_FILTER)


def load_command(name):
  """The module of command `name`, imported now, its flags defined."""
  command = COMMANDS[name]
  try:
    module = importlib.import_module(command.module)
  except ImportError as error:
    if error.name is not None and not command.module.startswith(error.name):
      raise                     # a missing dependency of an existing module: say so as is
    sys.exit(f"mamkpd {name}: this installation has no {command.module} ({error})")
  if hasattr(module, "define_flags"):
    module.define_flags()
  return module


def command_help(module):
  """The command's module docstring and its flags (absl's listing of that module)."""
  listing = flags.FLAGS.module_help(module.__name__)
  return f"{(module.__doc__ or '').strip()}\n\nflags:\n{listing}"


def main(argv=None):
  """Entry point of the `mamkpd` console script: mamkpd COMMAND [flags]."""
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    print(usage())
    return 0 if len(argv) >= 2 else 2
  name, rest = argv[1], argv[2:]
  if name not in COMMANDS:
    print(f"mamkpd: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
    return 2
  quiet_backend_probing()
  module = load_command(name)
  if any(arg in ("-h", "--help", "-help") for arg in rest):
    print(command_help(module))
    return 0
  app.run(module.main, argv=[f"mamkpd {name}", *COMMANDS[name].preset, *rest])
  return 0


if __name__ == "__main__":
  sys.exit(main())
