"""Lowering and compiling for an accelerator this host does not have.

Tests, `scripts/dcnv4_hlo.py` and `scripts/tpu_compile_check.py` read the programs JAX
would run on a GPU or a TPU from a CPU host:

* `lower_for_cuda`: StableHLO for CUDA. JAX >= 0.11.2 asks for the GPU it lowers for
  ("No supported GPU devices found, please specify an abstract GPU device"), so tracing
  and lowering run under an abstract mesh whose device is an H100; JAX 0.10.2 accepts the
  same context. Arrays must be created outside it (eager ops under an abstract-only mesh
  fail).
* `lower_for_tpu`: `jax.export` with platforms=["tpu"]. Each Pallas TPU kernel becomes a
  Mosaic module (a `tpu_custom_call`) through Pallas's TPU lowering rules (block shapes
  against the (8, 128) tiling, supported primitives). Mosaic's own passes (vector
  layouts, VMEM allocation) run later, inside libtpu.
* `compile_for_tpu`: with libtpu installed, XLA:TPU and Mosaic compile ahead of time for
  one chip of a TPU topology (`jax.experimental.topologies`), no TPU attached: those
  passes run, so what a TPU's compiler rejects is rejected here.
* `accelerator_tracing()` and `train_step_programs()`: a model's forward and train step
  as an accelerator traces them, with abstract arguments.
"""

import contextlib
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import (AbstractDevice, AbstractMesh, Mesh, NamedSharding, PartitionSpec,
                          use_abstract_mesh)

H100 = AbstractDevice(device_kind="NVIDIA H100 80GB HBM3", num_cores=132, platform="cuda")
TPU_KERNEL_MARKER = "tpu_custom_call"


def lower_for_cuda(fn, *args):
  """StableHLO text of `jax.jit(fn)` lowered for CUDA (no GPU needed)."""
  with use_abstract_mesh(AbstractMesh((1,), ("x",), abstract_device=H100)):
    return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()


def lower_for_tpu(fn, *args):
  """StableHLO text of `jax.jit(fn)` exported for TPU (no TPU needed)."""
  return jax.export.export(jax.jit(fn), platforms=["tpu"])(*args).mlir_module()


def accelerator_tracing():
  """Within: what a GPU or TPU traces. The Pallas kernels compiled, not interpreted, and
  the grouped depth-wise convs (on a CPU host the defaults are the interpreter and the
  CPU kernels). Trace everything inside: JAX reuses a trace made outside."""
  from mamkpd_jax.kernels import backend   # pylint: disable=g-import-not-at-top
  from mamkpd_jax.models import common     # pylint: disable=g-import-not-at-top
  stack = contextlib.ExitStack()
  stack.enter_context(common.depthwise_conv_mode("grouped"))
  stack.enter_context(backend.compiled_kernels())
  return stack


def tpu_topology_device(topology):
  """One chip of a Cloud TPU topology ("v5e:2x2", ...), for `compile_for_tpu` (libtpu)."""
  from jax.experimental import topologies   # pylint: disable=g-import-not-at-top
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")   # else libtpu asks a TPU VM
  return topologies.get_topology_desc(topology_name=topology, platform="tpu").devices[0]


def compile_for_tpu(device, fn, args):
  """jax.jit(fn) compiled for one TPU `device` (`tpu_topology_device`) at the shapes of
  `args` (arrays or ShapeDtypeStructs, any pytree): the `jax.stages.Compiled`."""
  sharding = NamedSharding(Mesh(np.array([device]), ("x",)), PartitionSpec())
  placed = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
                        args)
  return jax.jit(fn).lower(*placed).compile()


def train_step_programs(model_config, batch, input_size=(256, 192)):
  """{"forward": (fn, args), "train step": (fn, args)} of a model config, abstract.

  The forward is model(images); the train step is the project's
  (`training.train.make_train_step`: loss, gradients, AdamW update). Arguments are
  ShapeDtypeStructs (no parameter is allocated). Call (and lower) inside
  `accelerator_tracing()` for what an accelerator runs.
  """
  import optax   # pylint: disable=g-import-not-at-top
  from flax import nnx   # pylint: disable=g-import-not-at-top
  from mamkpd_jax import models   # pylint: disable=g-import-not-at-top
  from mamkpd_jax.training import train   # pylint: disable=g-import-not-at-top
  model = models.abstract_model(model_config)
  model.train()
  optimizer = nnx.eval_shape(lambda: nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param))
  (model_graph, model_state), (opt_graph, opt_state) = nnx.split(model), nnx.split(optimizer)
  specs = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
  state = specs({"model": model_state, "opt": opt_state})
  images = jax.ShapeDtypeStruct((batch, *input_size, 3), jnp.float32)
  forward = lambda model_state, x: nnx.merge(model_graph, model_state)(x)
  heatmaps = jax.eval_shape(forward, state["model"], images)
  step_batch = {"image": images,
                "heatmaps": jax.ShapeDtypeStruct(heatmaps.shape, jnp.float32),
                "keypoint_weights": jax.ShapeDtypeStruct((batch, heatmaps.shape[-1]),
                                                         jnp.float32)}
  return {"forward": (forward, (state["model"], images)),
          "train step": (train.make_train_step(model_graph, opt_graph), (state, step_batch))}
