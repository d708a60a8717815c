"""Top-down evaluation: crops -> heatmaps (flip test) -> keypoints in the image -> metrics.

    predict_dataset:  batched, data-parallel forward passes over the evaluation crops
                      (one compiled shape: the last batch is padded), decoded to image
                      pixels by the decode module (flip-averaged heatmaps, the config's
                      codec, crop -> image), which the Estimator and the exports share
    evaluation.metrics.evaluate_predictions: rescoring, OKS-NMS, COCO AP (pycocotools),
                      PCK / PCKh
    evaluate_state:   both, then WORKDIR/eval/metrics_step<N>.json, predictions json,
                      TensorBoard scalars and a printed table
    evaluate:         eval-only mode: the latest (or a given) checkpoint of a workdir
"""

import concurrent.futures
import functools
import time

import jax
import numpy as np
from absl import logging
from flax import nnx

from mamkpd_jax.training import checkpointing, parallel, workdir_lib
from mamkpd_jax.data_pipelines import pipeline
from mamkpd_jax.evaluation import decode
from mamkpd_jax.evaluation import metrics as metrics_lib
from mamkpd_jax.evaluation import pck
from mamkpd_jax.models import build_model, model_title, parse_model_config


READ_THREADS = 8     # evaluation crops read in parallel per process


@functools.lru_cache(maxsize=8)
def _forward_fn(graphdef, flip_test, flip_indices, flip_shift, mesh):
  """Jitted (model state, images (B, H, W, 3) uint8) -> heatmaps (B, h, w, K),
  flip-averaged when flip_test (decode.crop_heatmaps)."""

  def forward(model_state, images):
    model = nnx.merge(graphdef, model_state)
    return decode.crop_heatmaps(model, images, flip_test, flip_indices, flip_shift)

  return jax.jit(forward, out_shardings=parallel.data_sharded(mesh))


def eval_graphdef(model_graphdef, model_state):
  """The graph definition of the same model in inference mode (BN running statistics)."""
  model = nnx.merge(model_graphdef, model_state)
  model.eval()
  return nnx.split(model)[0]


def _batches(dataset, batch_size):
  """Index lists of `batch_size`, the last padded by repeating its final index."""
  n = len(dataset)
  for start in range(0, n, batch_size):
    indices = list(range(start, min(start + batch_size, n)))
    yield indices, indices + [indices[-1]] * (batch_size - len(indices))


def _process_share(padded, batch_size):
  """This process's share of a global batch of indices."""
  per_process = batch_size // jax.process_count()
  start = jax.process_index() * per_process
  return padded[start:start + per_process]


def eval_batch_size(config, num_instances):
  """The eval batch, at most the instance count (no padding a small set up to a large
  batch), rounded up to a multiple of the device count."""
  devices = jax.device_count()
  wanted = min(int(config.eval.batch_size), max(int(num_instances), 1))
  return max(devices, -(-wanted // devices) * devices)


def _fetch(dataset, indices, pool):
  """dataset[i] for each index, read by a thread pool (decoding and warping release the GIL)."""
  return list(pool.map(dataset.__getitem__, indices))


def predict_dataset(config, graphdef, model_state, dataset, info, codec, mesh):
  """Keypoints of every evaluation instance, in image pixels.

  Every process reads, runs and decodes its share of each global batch; the decoded
  keypoints are then gathered so that every process holds all of them.

  Args:
    graphdef: an inference-mode graph definition (`eval_graphdef`).
    dataset: pipeline's evaluation MapDataset (elements with EVAL_KEYS).

  Returns:
    keypoints (N, K, 2), keypoint_scores (N, K), crop_scales (N, 2), numpy.
  """
  batch_size = eval_batch_size(config, len(dataset))
  flip_test = bool(config.eval.flip_test)
  forward = _forward_fn(graphdef, flip_test, tuple(info.flip_indices), codec.flip_shift, mesh)
  keypoints, scores, crop_scales = [], [], []
  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(READ_THREADS) as pool:
    for real, padded in _batches(dataset, batch_size):
      elements = _fetch(dataset, _process_share(padded, batch_size), pool)
      images = parallel.global_batch({"image": np.stack([e["image"] for e in elements])},
                                     mesh)["image"]
      heatmaps = parallel.local_rows(forward(model_state, images))  # (b, h, w, K)
      centers = np.stack([e["center"] for e in elements])
      scales = np.stack([e["scale"] for e in elements])
      in_image, batch_scores = decode.to_image(heatmaps, codec, centers, scales)
      keypoints.append(parallel.gather_rows(in_image)[:len(real)])
      scores.append(parallel.gather_rows(batch_scores)[:len(real)])
      crop_scales.append(parallel.gather_rows(scales)[:len(real)])
  elapsed = time.perf_counter() - start
  logging.info("evaluation: %d instances in %.1f s (%.1f crops/s%s)", len(dataset), elapsed,
               len(dataset) / max(elapsed, 1e-9), ", flip test" if flip_test else "")
  return np.concatenate(keypoints), np.concatenate(scores), np.concatenate(crop_scales)


def evaluate_state(config, model_graphdef, model_state, datasets, mesh, step, run):
  """Evaluates a model state; writes the metrics json (process 0) and prints a table."""
  graphdef = eval_graphdef(model_graphdef, model_state)
  if len(datasets.eval) == 0:
    raise ValueError("the evaluation set is empty: check config.data.val_ann")
  keypoints, scores, crop_scales = predict_dataset(
      config, graphdef, model_state, datasets.eval, datasets.info, datasets.codec, mesh)
  metrics, results = metrics_lib.evaluate_predictions(
      config, datasets.info, datasets.eval_instances, keypoints, scores, crop_scales)
  floor = _floor(config, datasets, metrics)
  path = run.write_evaluation(step, metrics, results, {
      "dataset": config.data.dataset, "variant": config.model.variant,
      "num_instances": len(datasets.eval), "flip_test": bool(config.eval.flip_test),
      "boxes": config.data.det_file or "ground truth", "mean_pose_floor": floor})
  if jax.process_index() == 0:
    print(metrics_lib.metrics_table(metrics, title=f"{info_title(config)} step {step}"),
          flush=True)
    for name, value in floor.items():
      print(f"held-out {name} {metrics[name]:.4f}   (mean-pose floor {value:.4f}: the "
            "training set's mean pose placed in each box)", flush=True)
    picture = run.write_prediction_picture(step, datasets, keypoints, scores)
    logging.info("metrics written to %s, predicted frames drawn in %s", path, picture)
  return metrics


def _floor(config, datasets, metrics):
  """{"PCK@thr": the mean-pose floor} beside a GT-box PCK; {} without one."""
  name = pck.pck_key(config.eval.pck_threshold)
  if name not in metrics or not datasets.train_instances:
    return {}
  mean_pose = metrics_lib.mean_box_pose(datasets.train_instances)
  return metrics_lib.mean_pose_floor(config, mean_pose, datasets.eval_instances)


def info_title(config):
  return f"{model_title(config.model)} on {config.data.dataset}"


def evaluate(config, workdir, checkpoint=""):
  """Eval-only mode: evaluates `checkpoint` (default: the workdir's latest).

  checkpoint may be a workdir, its checkpoints/ folder or one step folder. Results are
  written to workdir (metrics_step<N>.json), never over the checkpoint.
  """
  checkpointing.quiet_orbax_logs()
  config = pipeline.resolve_custom_config(config)
  source = checkpoint or workdir
  directory, step = checkpointing.resolve_checkpoint(source)
  run = workdir_lib.open_workdir(workdir, config, write_config=False)
  mesh = parallel.make_mesh()
  datasets = pipeline.create_datasets(config)
  model = build_model(parse_model_config(config.model), seed=config.seed)
  meta = checkpointing.load_model_state(directory, step, model, config)
  model.eval()
  graphdef, model_state = nnx.split(model)
  model_state = parallel.replicate(model_state, mesh)
  logging.info("evaluating %s/%d (trained on %s)", directory, step, meta.get("dataset"))
  return evaluate_state(config, graphdef, model_state, datasets, mesh, step, run)
