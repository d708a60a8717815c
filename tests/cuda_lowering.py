"""Lowering a function for CUDA from this CPU host, on every JAX the project supports.

JAX >= 0.11.2 asks for the GPU it lowers for ("No supported GPU devices found, please
specify an abstract GPU device"): tracing and lowering run under an abstract mesh whose
device is an H100. JAX 0.10.2 accepts the same context (it assumed compute capability
9.0 anyway), so one code path serves every version. Arrays must be created outside the
context: eager ops under an abstract-only mesh fail.
"""

import jax
from jax.sharding import AbstractDevice, AbstractMesh, use_abstract_mesh

H100 = AbstractDevice(device_kind="NVIDIA H100 80GB HBM3", num_cores=132, platform="cuda")


def lower_for_cuda(fn, *args):
  """StableHLO text of `jax.jit(fn)` lowered for CUDA (no GPU needed)."""
  with use_abstract_mesh(AbstractMesh((1,), ("x",), abstract_device=H100)):
    return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
