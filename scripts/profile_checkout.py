"""Profiles the forward pass of another checkout of this repository (an older commit),
with this checkout's profiler, for before/after tables.

    git worktree add /tmp/before 0e335c1
    ln -s ../kernels /tmp/before/mamkpd_jax/kernels
    ln -s ../data_pipelines /tmp/before/mamkpd_jax/data_pipelines
    PYTHONPATH=/tmp/before MAMKPD_JAX_CACHE=/tmp/before_cache \\
        python scripts/profile_checkout.py /tmp/before base
    python scripts/profile_checkout.py . base                 # this checkout

Arguments: the checkout whose `mamkpd_jax` must be imported (checked), and a benchmark
variant (base, hrvmamba-tiny, ...). Batch 8 at 256x192, float32: the jitted eval forward
is profiled over 3 calls (mamkpd_jax/benchmarking/profile.py, loaded from this file's
checkout) and then timed over 7; prints one JSON line {code, variant, wall_ms, rows,
timed_ms}. Run the two checkouts alternately: they are separate processes.
"""

import importlib.util
import json
import pathlib
import sys

import jax


def load_profiler():
  """This checkout's benchmarking/profile.py, whichever mamkpd_jax is imported."""
  path = pathlib.Path(__file__).resolve().parents[1] / "mamkpd_jax/benchmarking/profile.py"
  spec = importlib.util.spec_from_file_location("checkout_profile", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def main(checkout, variant):
  import mamkpd_jax                                      # pylint: disable=g-import-not-at-top
  from flax import nnx                                   # pylint: disable=g-import-not-at-top
  from mamkpd_jax.benchmarking import models, timing    # pylint: disable=g-import-not-at-top
  imported = pathlib.Path(mamkpd_jax.__file__).resolve()
  if pathlib.Path(checkout).resolve() not in imported.parents:
    sys.exit(f"mamkpd_jax was imported from {imported}, not from {checkout}: set PYTHONPATH")
  profile = load_profiler()
  graphdef, state = nnx.split(models.build_eval_model(variant, 17))
  forward = jax.jit(lambda state, images: nnx.merge(graphdef, state)(images))
  crops = timing.random_crops(8, 256, 192)
  result = profile.profile_call(forward, state, crops, calls=3)
  timed = timing.time_calls(lambda: forward(state, crops), jax.block_until_ready,
                            timing.Timing(2, 7))[1]
  print(json.dumps(dict(code=str(checkout), variant=variant,
                        wall_ms=round(result.wall_ms, 2), rows=result.rows(),
                        timed_ms=round(timed * 1e3, 2))))


if __name__ == "__main__":
  if len(sys.argv) != 3:
    sys.exit(__doc__)
  main(sys.argv[1], sys.argv[2])
