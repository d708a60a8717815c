"""Converts the HRVMamba authors' checkpoint: `mamkpd convert`
(mamkpd_jax/commands/convert.py has the flags and the documentation).

    python scripts/convert_checkpoint.py --input=hrvmamba_tiny256192.pth \
        --config=configs/coco_hrvmamba_tiny.py --output=/tmp/hrvmamba_tiny
"""

from absl import app

# read_state_dict and convert_checkpoint: tests load this file as a module.
from mamkpd_jax.commands.convert import convert_checkpoint, main, read_state_dict  # pylint: disable=unused-import

if __name__ == "__main__":
  app.run(main)
