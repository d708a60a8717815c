"""`selective_scan` and `cross_selective_scan`: one entry point each, implementation by name.

`SCAN_IMPLS` maps a name to the pair of functions; "reference" is the readable pure-JAX
definition, "chunked" the fast pure-JAX one (time-major, checkpointed chunks), "cpu_ffi" SS2D's scan
as one compiled CPU kernel (XLA FFI, built on first use), "onnx" the loop-free
pure-JAX one that ONNX export needs (unrolled across chunks, no loop); the Pallas
kernels (interpreted on CPU) are "pallas_triton" and "pallas_mosaic" (Mosaic GPU), and
"pallas" is the default GPU backend (`backend.default_gpu_backend`). `AUTO` ("auto", the
model's default) picks by backend: the fastest measured there (`AUTO_IMPLS`; on a CPU
"cpu_ffi" where a C++ compiler can build it, else "chunked"). An unknown
name, or a backend this JAX lacks, is an error naming what is available, never a silent
fallback.
"""

import functools
import typing

import jax

from mamkpd_jax.kernels import backend

from mamkpd_jax.kernels.cross_scan import (NUM_DIRECTIONS, LowRankDelta, as_delta,
                                           cross_selective_scan_reference)
from mamkpd_jax.kernels import selective_scan_cpu
from mamkpd_jax.kernels.selective_scan_chunked import (cross_selective_scan_chunked,
                                                       selective_scan_chunked)
from mamkpd_jax.kernels.selective_scan_onnx import (cross_selective_scan_onnx,
                                                    selective_scan_onnx)
from mamkpd_jax.kernels.selective_scan_pallas import (cross_selective_scan_pallas,
                                                      selective_scan_pallas)
from mamkpd_jax.kernels.selective_scan_ref import selective_scan_reference


class ScanImpl(typing.NamedTuple):
  selective_scan: typing.Callable
  cross_selective_scan: typing.Callable
  takes_interpret: bool


def _on_backend(name):
  """The Pallas pair pinned to one GPU backend."""
  return (functools.partial(selective_scan_pallas, gpu_backend=name),
          functools.partial(cross_selective_scan_pallas, gpu_backend=name))


SCAN_IMPLS = {
    "reference": ScanImpl(selective_scan_reference, cross_selective_scan_reference, False),
    "pallas": ScanImpl(selective_scan_pallas, cross_selective_scan_pallas, True),
    "pallas_triton": ScanImpl(*_on_backend(backend.TRITON), True),
    "pallas_mosaic": ScanImpl(*_on_backend(backend.MOSAIC_GPU), True),
    "chunked": ScanImpl(selective_scan_chunked, cross_selective_scan_chunked, False),
    "onnx": ScanImpl(selective_scan_onnx, cross_selective_scan_onnx, False),
    # SS2D's fused scan compiled for the CPU; the plain selective scan is the chunked one.
    "cpu_ffi": ScanImpl(selective_scan_chunked, selective_scan_cpu.cross_selective_scan_cpu,
                        False),
}

# impl="auto": per backend, the implementation measured fastest there (kernels/README.md).
# On the 2-core CPU the compiled kernel beat the chunked scan, which beat the reference,
# for MamKPD inference and training; without a C++ compiler the CPU gets "chunked".
AUTO = "auto"
AUTO_IMPLS = {"cpu": "cpu_ffi", "gpu": "pallas"}
PURE_JAX_IMPLS = ("reference", "chunked", "onnx")   # any backend, any (symbolic) batch
CPU_ONLY_IMPLS = ("cpu_ffi",)    # a custom call of this process: no GPU, no jax.export


def resolve_impl(impl, backend=None):
  """The SCAN_IMPLS key that `impl` names: itself, or for "auto" the default backend's."""
  if impl == AUTO:
    chosen = AUTO_IMPLS.get(backend or jax.default_backend(), "chunked")
    if chosen == "cpu_ffi" and not selective_scan_cpu.available():
      chosen = "chunked"                  # no compiler here (logged once by available())
    return chosen
  if impl not in SCAN_IMPLS:
    raise ValueError(f"unknown impl {impl!r}; available: {AUTO!r} or one of "
                     f"{sorted(SCAN_IMPLS)}")
  return impl


def portable_impl(impl, backend=None):
  """What an exported artefact (jax.export, ONNX) runs for `impl`: `resolve_impl`'s
  answer, with the CPU kernel (a custom call registered by this process only) replaced
  by the chunked scan, the same math in pure JAX."""
  resolved = resolve_impl(impl, backend)
  return "chunked" if resolved in CPU_ONLY_IMPLS else resolved


def _expect(name, array, shape, context):
  if tuple(array.shape) != tuple(shape):
    raise ValueError(f"{context}: {name} has shape {tuple(array.shape)}, expected "
                     f"{tuple(shape)}")


def _check_shapes(u, delta, A, B, C, D, delta_bias):
  """Raises ValueError naming the argument whose shape does not fit the others."""
  if u.ndim != 3:
    raise ValueError(f"selective_scan: u must be (batch, L, channels); got {u.shape}")
  batch, length, channels = u.shape
  if B.ndim != 4:
    raise ValueError(f"selective_scan: B must be (batch, L, G, N); got {B.shape}")
  groups, d_state = B.shape[2], B.shape[3]
  context = f"selective_scan (u {u.shape}, B {B.shape})"
  for name, array, shape in [("delta", delta, u.shape), ("A", A, (channels, d_state)),
                             ("B", B, (batch, length, groups, d_state)),
                             ("C", C, (batch, length, groups, d_state)),
                             ("D", D, (channels,)), ("delta_bias", delta_bias, (channels,))]:
    _expect(name, array, shape, context)
  if groups < 1 or channels % groups:
    raise ValueError(f"selective_scan: channels ({channels}) must be divisible by the "
                     f"number of B/C groups G ({groups})")


def _check_cross_shapes(x, delta, A, B, C, D, delta_bias):
  if x.ndim != 4:
    raise ValueError(f"cross_selective_scan: x must be (batch, H, W, P); got {x.shape}")
  batch, height, width, per_group = x.shape
  if B.ndim != 5 or B.shape[3] != NUM_DIRECTIONS:
    raise ValueError(f"cross_selective_scan: B must be (batch, H, W, 4, N); got {B.shape}")
  k, d_state = NUM_DIRECTIONS, B.shape[4]
  context = f"cross_selective_scan (x {x.shape}, B {B.shape})"
  for name, array, shape in [("delta", delta, (batch, height, width, k, per_group)),
                             ("A", A, (k * per_group, d_state)),
                             ("C", C, B.shape), ("D", D, (k * per_group,)),
                             ("delta_bias", delta_bias, (k * per_group,))]:
    _expect(name, array, shape, context)


def _impl(impl, interpret):
  impl = resolve_impl(impl)
  chosen = SCAN_IMPLS[impl]
  if interpret is not None and not chosen.takes_interpret:
    raise ValueError(f"interpret={interpret} applies to the Pallas impls only, not {impl!r}")
  return chosen, ({} if interpret is None else {"interpret": interpret})


def selective_scan(u, delta, A, B, C, D, delta_bias, *, delta_softplus=True,
                   impl="reference", interpret=None):
  """Runs the selective scan (math in `selective_scan_ref`).

  Args:
    u, delta: (batch, L, channels), float32 or bfloat16.
    A: (channels, N) float32.
    B, C: (batch, L, G, N); channel c uses group c // (channels // G).
    D, delta_bias: (channels,) float32.
    delta_softplus: apply softplus to delta + delta_bias.
    impl: a key of `SCAN_IMPLS`, or "auto" (`resolve_impl`).
    interpret: Pallas impls only; None interprets when the default backend is the CPU.

  Returns:
    (batch, L, channels) float32.
  """
  chosen, kwargs = _impl(impl, interpret)
  _check_shapes(u, delta, A, B, C, D, delta_bias)
  return chosen.selective_scan(u, delta, A, B, C, D, delta_bias,
                               delta_softplus=delta_softplus, **kwargs)


# Implementations that take a `LowRankDelta` as it is (the others get it materialised).
LOW_RANK_DELTA_IMPLS = ("reference", "chunked", "onnx", "cpu_ffi")


def cross_selective_scan(x, delta, A, B, C, D, delta_bias, *, delta_softplus=True,
                         impl="reference", interpret=None):
  """SS2D's four-direction scan of a map (args in `cross_selective_scan_reference`).

  delta may be a `LowRankDelta` (SS2D's dt_proj not yet applied): the chunked scan
  applies it per token inside its loop.
  """
  chosen, kwargs = _impl(impl, interpret)
  _check_cross_shapes(x, delta, A, B, C, D, delta_bias)
  if isinstance(delta, LowRankDelta) and resolve_impl(impl) not in LOW_RANK_DELTA_IMPLS:
    delta = as_delta(delta)
  return chosen.cross_selective_scan(x, delta, A, B, C, D, delta_bias,
                                     delta_softplus=delta_softplus, **kwargs)
