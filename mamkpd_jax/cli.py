"""The `mamkpd` command: one entry point, a subcommand per job (installed by pip).

    mamkpd train --config=configs/sample_openfield.py --workdir=/tmp/sample_openfield
    mamkpd eval --config=configs/sample_openfield.py --workdir=/tmp/sample_openfield
    mamkpd predict --weights=weights/mamkpd_tiny_openfield --input=IMAGE_OR_VIDEO --output=DIR
    mamkpd track ...            mamkpd export ...       mamkpd benchmark ...
    mamkpd convert ...          mamkpd COMMAND --help   (that command's flags)

Each subcommand is a module with absl flags and a `main(argv)` (mamkpd_jax/commands/);
only the chosen one is imported, then run by
`absl.app.run` on the remaining arguments, so its flags work exactly as in the script
(`--config.train.num_steps=50` included). `python main.py` and scripts/*.py are the
same modules.
"""

import dataclasses
import importlib
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


def load_command(name):
  """The module of command `name`, imported now (its flags are defined on import)."""
  command = COMMANDS[name]
  try:
    return importlib.import_module(command.module)
  except ImportError as error:
    if error.name is not None and not command.module.startswith(error.name):
      raise                     # a missing dependency of an existing module: say so as is
    sys.exit(f"mamkpd {name}: this installation has no {command.module} ({error})")


def command_help(name, module):
  """The command's documentation and its flags (absl's listing of that module)."""
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
  module = load_command(name)
  if any(arg in ("-h", "--help", "-help") for arg in rest):
    print(command_help(name, module))
    return 0
  app.run(module.main, argv=[f"mamkpd {name}", *COMMANDS[name].preset, *rest])
  return 0


if __name__ == "__main__":
  sys.exit(main())
