"""Throughput and latency of MamKPD: `mamkpd benchmark` (mamkpd_jax/commands/benchmark.py
has the flags and the documentation).

    python scripts/benchmark.py --variants=tiny --batch_sizes=1,4 --scan_impls=reference \\
        --input_height=64 --input_width=64 --repeats=2 --peers= --json
"""

from absl import app, flags

from mamkpd_jax.commands import benchmark as command

flags.adopt_module_key_flags(command)     # --help lists the command's flags

if __name__ == "__main__":
  app.run(command.main)
