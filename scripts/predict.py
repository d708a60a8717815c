"""Predicts poses on images or a video: `mamkpd predict` (mamkpd_jax/commands/predict.py
has the flags and the documentation).

    python scripts/predict.py --weights=weights/mamkpd_tiny_openfield \\
        --input=data/samples/dlc-openfield/labeled-data/m4s1/img0100.png --output=/tmp/pred
"""

from absl import app, flags

from mamkpd_jax.commands import predict as command

flags.adopt_module_key_flags(command)     # --help lists the command's flags

if __name__ == "__main__":
  app.run(command.main)
