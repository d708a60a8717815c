"""Tracks poses through a video, a folder of frames or a webcam: `mamkpd track`
(mamkpd_jax/commands/track.py has the flags and the documentation).

    python scripts/track.py --weights=weights/mamkpd_tiny_openfield \\
        --input=data/samples/dlc-openfield/labeled-data/m4s1 --detector=background \\
        --max_tracks=1 --output=/tmp/track
"""

from absl import app, flags

from mamkpd_jax.commands import track as command

flags.adopt_module_key_flags(command)     # --help lists the command's flags

if __name__ == "__main__":
  app.run(command.main)
