"""Kernels over a batch-sharded input: each device runs the kernel on its own images.

XLA's SPMD partitioner does not know what a custom call computes (a Pallas kernel, our
CPU FFI handler), so when an operand arrives sharded over the batch it all-gathers the
whole batch onto every device and every device computes every image: data parallelism
is lost for the scan, and each device holds the global batch's activations. (Measured
on two simulated CPU devices: the compiled program gathers x, delta, B and C before the
call.) `batch_parallel` wraps the kernel's call in `custom_partitioning` with the one
rule all our kernels obey: every output, and every per-image operand, has the batch as
its leading axis; the other operands (A, D, biases: parameters) are whole on every
device. Each device then calls the kernel on its shard, with the local batch size.

With one device the wrapper is not used: the program is what it was without it. With
several, the price is one extra trace of the kernel's call when a program is traced.
"""

import functools

import jax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec


def batch_parallel(fn, arrays, batched, statics=()):
  """fn(*arrays, *statics), partitioned over the leading axis of the batched arrays.

  Args:
    fn: a module-level function (hashable) whose outputs (an array or a tuple / list of
      arrays) all lead with the batch axis; it must work at any batch size, since each
      device calls it on its shard.
    arrays: the array arguments.
    batched: per array, whether it leads with the batch axis (the first one must).
    statics: hashable trailing arguments (shapes, flags, plans), passed through.
  """
  if len(arrays) != len(batched) or not batched[0]:
    raise ValueError(f"batched must flag each of the {len(arrays)} arrays and the first "
                     f"must be per image; got {batched}")
  if jax.device_count() == 1:
    # Nothing to split. (Also: JAX >= 0.12 cannot lower custom_partitioning under an
    # abstract mesh, as when a CPU host lowers the kernels for CUDA.)
    return fn(*arrays, *statics)
  traced = jax.make_jaxpr(lambda *a: fn(*a, *statics))(*arrays)
  if traced.effects:
    # custom_partitioning cannot hold side effects: the Mosaic GPU kernel interpreted on
    # a CPU (tests only) calls back into Python in order. It runs unpartitioned.
    return fn(*arrays, *statics)
  rule = _sharding_rule(tuple(a.ndim for a in arrays), tuple(batched),
                        tuple(len(aval.shape) for aval in traced.out_avals))
  return _partitioned(fn, tuple(batched), len(statics), rule)(*arrays, *statics)


def _sharding_rule(input_ranks, batched, output_ranks):
  """Shardy's einsum-like rule: factor "b" shared by the batch axes, every other
  dimension a factor of its own (our partition decides those: whole)."""

  def value(name, rank, per_image):
    dims = [f"{name}d{d}" for d in range(rank)]
    if per_image:
      dims[0] = "b"
    return " ".join(dims)

  operands = ", ".join(value(f"x{i}", rank, per_image)
                       for i, (rank, per_image) in enumerate(zip(input_ranks, batched)))
  results = ", ".join(value(f"y{i}", rank, True) for i, rank in enumerate(output_ranks))
  return f"{operands} -> {results}"


@functools.lru_cache(maxsize=None)
def _partitioned(fn, batched, num_statics, rule):
  """`fn` as a custom_partitioning function: batch split, everything else whole."""
  num_arrays = len(batched)
  wrapped = custom_partitioning(
      fn, static_argnums=tuple(range(num_arrays, num_arrays + num_statics)))

  def batch_sharding(mesh, arg_shapes):
    """The first array's sharding of its batch axis only."""
    spec = arg_shapes[0].sharding.spec
    return NamedSharding(mesh, PartitionSpec(spec[0] if len(spec) else None))

  def partition(*args):        # (*statics, mesh, arg_shapes, result_shape)
    *statics, mesh, arg_shapes, result_shape = args
    batch = batch_sharding(mesh, arg_shapes)
    whole = NamedSharding(mesh, PartitionSpec())
    lower = lambda *local_arrays: fn(*local_arrays, *statics)
    return (mesh, lower, jax.tree.map(lambda _: batch, result_shape),
            tuple(batch if per_image else whole for per_image in batched))

  def infer_sharding(*args):   # (*statics, mesh, arg_shapes, result_shape)
    *_, mesh, arg_shapes, result_shape = args
    batch = batch_sharding(mesh, arg_shapes)
    return jax.tree.map(lambda _: batch, result_shape)

  wrapped.def_partition(partition=partition, infer_sharding_from_operands=infer_sharding,
                        sharding_rule=rule)
  return wrapped
