"""Exports a trained model: `mamkpd export` (mamkpd_jax/commands/export.py has the flags
and the documentation).

    python scripts/export.py --checkpoint=/tmp/sample_openfield --output=/tmp/exported
    python scripts/export.py --checkpoint=/tmp/sample_openfield --output=/tmp/weights \
        --format=safetensors
"""

from absl import app

from mamkpd_jax.commands.export import main

if __name__ == "__main__":
  app.run(main)
