"""Training input-pipeline throughput (images/s) for several Grain worker counts.

Builds the real training DataLoader (pipeline.create_datasets, with
config.data.num_workers replaced by each --workers value) and times --batches batches
after --warmup batches (worker start-up and the first decodes excluded). Everything the
training step gets is included: JPEG decode, augmentation, the affine warp, normalising,
the target heatmaps and batching. No accelerator is involved.

    python scripts/benchmark_pipeline.py --config=configs/sample_coco.py --json
    python scripts/benchmark_pipeline.py --config=configs/sample_coco.py --workers=0,2,4 \
        --batches=50

`per_worker` is images/s divided by the number of processes doing the work: the worker
count, or 1 for --workers=0 (the main process). With --json the last stdout line is one
JSON object: results [{workers, images_per_s, per_worker, seconds, batches}], batch_size
(per JAX process), input [H, W], cpu_count.
"""

import gc
import json
import os
import time

from absl import app, flags, logging
from ml_collections import config_flags

from mamkpd_jax.data_pipelines import pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/*.py file.",
                                          lock_config=True)
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "Grain worker counts to time.")
_BATCHES = flags.DEFINE_integer("batches", 20, "Timed batches per worker count.",
                                lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed batches first.", lower_bound=0)
_JSON = flags.DEFINE_bool("json", False, "End stdout with one JSON object.")
flags.mark_flag_as_required("config")


def worker_counts(values):
  """--workers as non-negative ints; a ValueError naming the bad entry."""
  counts = []
  for value in values:
    if not value.strip().isdigit():
      raise ValueError(f"--workers must list non-negative integers, got {value!r}")
    counts.append(int(value))
  if not counts:
    raise ValueError("--workers is empty")
  return counts


def with_workers(config, workers):
  config = config.copy_and_resolve_references()
  config.data.num_workers = workers
  return config


def check_batch(batch, batch_size, input_size):
  """The batch holds batch_size images of input_size (height, width)."""
  expected = (batch_size, *input_size, 3)
  if tuple(batch["image"].shape) != expected:
    raise RuntimeError(f"batch images have shape {batch['image'].shape}, expected {expected}")


def time_loader(loader, batches, warmup, batch_size, input_size):
  """Seconds for `batches` batches of `loader` after `warmup` untimed ones."""
  iterator = iter(loader)
  for _ in range(warmup):
    check_batch(next(iterator), batch_size, input_size)
  start = time.perf_counter()
  for _ in range(batches):
    batch = next(iterator)
  elapsed = time.perf_counter() - start
  check_batch(batch, batch_size, input_size)
  del iterator                     # stops the worker processes
  gc.collect()
  return elapsed


def benchmark(config, counts, batches, warmup):
  """[{workers, images_per_s, per_worker, seconds, batches}] for each worker count."""
  batch_size = pipeline.per_process_batch_size(config)
  input_size = pipeline.input_size(config)
  results = []
  for workers in counts:
    datasets = pipeline.create_datasets(with_workers(config, workers))
    seconds = time_loader(datasets.train, batches, warmup, batch_size, input_size)
    images_per_s = batches * batch_size / seconds
    results.append({"workers": workers, "images_per_s": round(images_per_s, 2),
                    "per_worker": round(images_per_s / max(workers, 1), 2),
                    "seconds": round(seconds, 3), "batches": batches})
    logging.info("workers=%d: %.1f images/s", workers, images_per_s)
  return results


def print_table(results, batch_size, input_size):
  print(f"Training pipeline throughput: batch {batch_size}, input {input_size[0]}x"
        f"{input_size[1]}, {os.cpu_count()} CPUs (JPEG decode included, warm-up excluded)")
  print(f"  {'workers':>7} {'images/s':>10} {'per worker':>11} {'seconds':>8}")
  for row in results:
    print(f"  {row['workers']:>7} {row['images_per_s']:>10.1f} {row['per_worker']:>11.1f} "
          f"{row['seconds']:>8.2f}")


def main(argv):
  del argv
  config = _CONFIG.value
  try:
    counts = worker_counts(_WORKERS.value)
    results = benchmark(config, counts, _BATCHES.value, _WARMUP.value)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"benchmark_pipeline.py: {e}") from None
  batch_size = pipeline.per_process_batch_size(config)
  input_size = list(pipeline.input_size(config))
  print_table(results, batch_size, input_size)
  if _JSON.value:
    print(json.dumps({"results": results, "batch_size": batch_size, "input": input_size,
                      "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
  app.run(main)
