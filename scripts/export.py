"""Exports a trained model: `mamkpd export` (mamkpd_jax/commands/export.py has the flags
and the documentation).

    python scripts/export.py --checkpoint=/tmp/sample_openfield --output=/tmp/exported
    python scripts/export.py --checkpoint=/tmp/sample_openfield --output=/tmp/weights \\
        --format=safetensors
"""

from absl import app, flags

from mamkpd_jax.commands import export as command

flags.adopt_module_key_flags(command)     # --help lists the command's flags

if __name__ == "__main__":
  app.run(command.main)
