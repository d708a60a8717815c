"""Converts the HRVMamba authors' checkpoint: `mamkpd convert`
(mamkpd_jax/commands/convert.py has the flags and the documentation).

    python scripts/convert_checkpoint.py --input=hrvmamba_tiny256192.pth \\
        --config=configs/coco_hrvmamba_tiny.py --output=/tmp/hrvmamba_tiny
"""

from absl import app, flags

from mamkpd_jax.commands import convert as command

flags.adopt_module_key_flags(command)     # --help lists the command's flags

# read_state_dict and convert_checkpoint: tests load this file as a module.
read_state_dict, convert_checkpoint = command.read_state_dict, command.convert_checkpoint

if __name__ == "__main__":
  app.run(command.main)
