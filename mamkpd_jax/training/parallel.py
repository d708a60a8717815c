"""Data parallelism: one `jax.jit` program over a 1-D device mesh, multi-host ready.

Design (the choice the training loop is built on): the train step is an ordinary
`jax.jit` function whose batch arguments are sharded over the mesh's "data" axis and
whose parameters and optimiser state are replicated (`NamedSharding`). The step computes
the loss as a mean over the *global* batch, so XLA inserts the gradient all-reduce
itself and the update is identical to one device seeing the whole batch: a run on two
devices matches a run on one at the same global batch (tested). BatchNorm statistics are
likewise taken over the global batch (synchronised BN). We chose this over
`jax.shard_map` with an explicit `lax.pmean` because the step stays device-agnostic
code, nothing else changes between one CPU and many hosts, and the same function serves
evaluation.

Multi-host: `initialize_distributed` calls `jax.distributed.initialize` (flags or the
cluster environment); each process loads its own share of every batch (Grain shards by
JAX process) and `global_batch` assembles the global array with
`jax.make_array_from_process_local_data`.
"""

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(coordinator_address="", num_processes=0, process_id=-1):
  """Joins the JAX distributed runtime when asked to (several hosts or processes).

  With a coordinator address, the three values define the job; with none, a cluster
  environment JAX recognises (SLURM, Open MPI, Cloud TPU, ...) is auto-detected when
  `JAX_COORDINATOR_ADDRESS` or such variables are set; otherwise this is one process
  and nothing happens.
  """
  if coordinator_address:
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(f"--coordinator_address needs --num_processes >= 1 and "
                       f"0 <= --process_id < num_processes; got {num_processes}, {process_id}")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif num_processes > 1:
    jax.distributed.initialize(num_processes=num_processes,
                               process_id=process_id if process_id >= 0 else None)
  logging.info("JAX process %d of %d; %d local of %d devices: %s", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.local_devices())


def make_mesh():
  """A 1-D mesh over every device of every process; axis "data" (Auto sharding)."""
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh):
  return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh):
  """Leading (batch) axis split over the devices."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_batch_size(config):
  """The global batch: config.per_device_batch_size x devices when set, else batch_size.

  It must split evenly over the processes (each loads its share) and the devices.
  """
  devices = jax.device_count()
  if config.per_device_batch_size > 0:
    return config.per_device_batch_size * devices
  if config.batch_size < 1 or config.batch_size % devices:
    raise ValueError(f"config.batch_size={config.batch_size} must be a positive multiple "
                     f"of the {devices} devices (or set config.per_device_batch_size)")
  return config.batch_size


def global_batch(local_batch, mesh):
  """Per-process numpy batch {key: (local_n, ...)} -> global jax.Arrays sharded on data."""
  sharding = data_sharded(mesh)
  return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for key, value in local_batch.items()}


def local_rows(array):
  """This process's rows of a batch-sharded jax.Array (what it fed in), as numpy."""
  shards = sorted(array.addressable_shards, key=lambda shard: shard.index[0].start or 0)
  rows, seen = [], set()
  for shard in shards:
    start = shard.index[0].start or 0
    if start not in seen:                # replicas of a row range appear once
      seen.add(start)
      rows.append(np.asarray(shard.data))
  return np.concatenate(rows)


def gather_rows(local):
  """Per-process numpy rows -> every process's rows, in process order (all processes)."""
  if jax.process_count() == 1:
    return local
  return np.asarray(multihost_utils.process_allgather(local, tiled=True))


def _replicate_leaf(leaf, sharding):
  if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):      # typed PRNG keys
    data = _replicate_leaf(jax.random.key_data(leaf), sharding)
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
  host = np.asarray(jax.device_get(leaf))
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(tree, mesh):
  """Places every leaf on every device (the parameters and optimiser state).

  Every process must hold the same values (they do: same seed, same checkpoint).
  """
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(lambda leaf: _replicate_leaf(leaf, sharding), tree)
