"""`selective_scan` and `cross_selective_scan`: one entry point each, implementation by name.

`SCAN_REGISTRY` holds one `ScanImpl` per implementation with what it can do (platforms,
pure JAX, what an export runs instead, Pallas `interpret`, `LowRankDelta`, "auto",
benchmark-only); every capability query (`SCAN_IMPLS`, `PURE_JAX_IMPLS`,
`resolve_impl`, `portable_impl`, ...) is derived from it. "reference" is the readable
pure-JAX definition, "chunked" the fast pure-JAX one (time-major, checkpointed chunks),
"onnx" the loop-free pure-JAX one that ONNX export needs, "cpu_ffi" SS2D's scan as one
compiled CPU kernel (XLA FFI, built on first use); the Pallas kernels (interpreted on a
CPU) are "pallas_triton", "pallas_mosaic" (Mosaic GPU), "pallas_tpu" (Mosaic TPU) and
"pallas", this accelerator's backend (`backend.default_backend`: the TPU kernel on a TPU,
else the default GPU backend). "identity" (y = D*u) is benchmark-only.
`AUTO` ("auto", the model's default) picks by backend the fastest measured there: on a
CPU "cpu_ffi" where a C++ compiler can build it, else "chunked"; "pallas" on a GPU;
"pallas_tpu" on a TPU (unmeasured: the only kernel there). An
unknown name, or a backend this JAX lacks, is an error naming what is available, never
a silent fallback.
"""

import dataclasses
import functools
import typing

import jax

from mamkpd_jax.kernels import backend

from mamkpd_jax.kernels.cross_scan import (NUM_DIRECTIONS, LowRankDelta, as_delta,
                                           cross_selective_scan_reference)
from mamkpd_jax.kernels import selective_scan_cpu
from mamkpd_jax.kernels.selective_scan_identity import cross_selective_scan_identity
from mamkpd_jax.kernels.selective_scan_chunked import (cross_selective_scan_chunked,
                                                       selective_scan_chunked)
from mamkpd_jax.kernels.selective_scan_onnx import (cross_selective_scan_onnx,
                                                    selective_scan_onnx)
from mamkpd_jax.kernels.selective_scan_pallas import (cross_selective_scan_pallas,
                                                      selective_scan_pallas)
from mamkpd_jax.kernels.selective_scan_ref import selective_scan_reference


ALL_PLATFORMS = ("cpu", "gpu", "tpu")


@dataclasses.dataclass(frozen=True)
class ScanImpl:
  """One scan implementation and what it can do; every query about scans reads these."""

  name: str
  cross_selective_scan: typing.Callable
  selective_scan: typing.Callable | None = None   # None: SS2D's fused scan only
  # The backends it runs on (the Pallas kernels run interpreted on a CPU).
  platforms: tuple[str, ...] = ALL_PLATFORMS
  # Plain JAX: any backend, a symbolic batch, jax.export and ONNX.
  pure_jax: bool = False
  # What an exported artefact runs instead (a custom call registered by this process
  # cannot travel); None: itself.
  exported_as: str | None = None
  takes_interpret: bool = False          # the Pallas `interpret` argument
  low_rank_delta: bool = False           # takes a `LowRankDelta` as it is
  auto_on: tuple[str, ...] = ()          # backends where "auto" picks it
  available: typing.Callable[[], bool] = lambda: True   # for "auto": usable here?
  benchmark_only: bool = False           # timing only: not for configs, never "auto"


def _backend_usable(kernel_backend):
  """Whether the pinned backend (None: this accelerator's) can run here."""
  try:
    name = kernel_backend or backend.default_backend()
  except ValueError:                     # no backend for impl="pallas" on this device
    return False
  return name in backend.available_backends()


def _pallas(name, kernel_backend=None, platforms=("cpu", "gpu"), auto_on=()):
  """A Pallas entry, pinned to one kernel backend or (None) this accelerator's."""
  pin = {} if kernel_backend is None else {"kernel_backend": kernel_backend}
  available = lambda: _backend_usable(kernel_backend)
  return ScanImpl(name, functools.partial(cross_selective_scan_pallas, **pin),
                  functools.partial(selective_scan_pallas, **pin), platforms=platforms,
                  takes_interpret=True, auto_on=auto_on, available=available)


# Registration order is "auto"'s preference where two entries claim a backend. "auto"
# picks, per backend, the implementation measured fastest there (kernels/README.md):
# on the 2-core CPU the compiled kernel beat the chunked scan, which beat the
# reference, for MamKPD inference and training; without a C++ compiler the CPU gets
# `AUTO_FALLBACK`.
_ENTRIES = (
    ScanImpl("reference", cross_selective_scan_reference, selective_scan_reference,
             pure_jax=True, low_rank_delta=True),
    _pallas("pallas", platforms=ALL_PLATFORMS, auto_on=("gpu",)),
    _pallas("pallas_triton", backend.TRITON),
    _pallas("pallas_mosaic", backend.MOSAIC_GPU),
    _pallas("pallas_tpu", backend.MOSAIC_TPU, platforms=("cpu", "tpu"), auto_on=("tpu",)),
    ScanImpl("chunked", cross_selective_scan_chunked, selective_scan_chunked,
             pure_jax=True, low_rank_delta=True),
    ScanImpl("onnx", cross_selective_scan_onnx, selective_scan_onnx, pure_jax=True,
             low_rank_delta=True),
    # SS2D's fused scan compiled for the CPU; the plain selective scan is the chunked one.
    ScanImpl("cpu_ffi", selective_scan_cpu.cross_selective_scan_cpu, selective_scan_chunked,
             platforms=("cpu",), exported_as="chunked", low_rank_delta=True,
             auto_on=("cpu",),
             available=lambda: selective_scan_cpu.available()),   # looked up per call
    ScanImpl("identity", cross_selective_scan_identity, pure_jax=True, low_rank_delta=True,
             benchmark_only=True),
)
SCAN_REGISTRY = {impl.name: impl for impl in _ENTRIES}
AUTO = "auto"
AUTO_FALLBACK = "chunked"      # pure JAX: runs on any backend


def scan_impls(benchmark_only=False, **capabilities):
  """Names of the registered implementations, in registration order, that have every
  `capabilities` value (e.g. pure_jax=True); benchmark-only ones only when asked."""
  return tuple(name for name, impl in SCAN_REGISTRY.items()
               if (benchmark_only or not impl.benchmark_only)
               and all(getattr(impl, k) == v for k, v in capabilities.items()))


def runs_on(platform, benchmark_only=False):
  """Names of the implementations that run on `platform` ("cpu", "gpu", "tpu")."""
  return tuple(name for name in scan_impls(benchmark_only)
               if platform in SCAN_REGISTRY[name].platforms)


# What configs may name (with AUTO), and the capability lists derived from the registry.
SCAN_IMPLS = {name: SCAN_REGISTRY[name] for name in scan_impls()}
PURE_JAX_IMPLS = scan_impls(pure_jax=True)          # any backend, any (symbolic) batch
CPU_ONLY_IMPLS = tuple(n for n in SCAN_IMPLS if SCAN_IMPLS[n].platforms == ("cpu",))
LOW_RANK_DELTA_IMPLS = scan_impls(low_rank_delta=True)


def auto_impl(platform=None):
  """The implementation "auto" means on `platform` (default: JAX's default backend)."""
  platform = platform or jax.default_backend()
  for impl in SCAN_IMPLS.values():
    if platform in impl.auto_on and impl.available():
      return impl.name
  return AUTO_FALLBACK       # no compiler for cpu_ffi (logged once by its available())


def resolve_impl(impl, backend=None):
  """The SCAN_REGISTRY key that `impl` names: itself, or for "auto" the default backend's.

  Benchmark-only names resolve too (a benchmark passes them straight to the scan);
  configs are checked against `SCAN_IMPLS`, which leaves them out.
  """
  if impl == AUTO:
    return auto_impl(backend)
  if impl not in SCAN_REGISTRY:
    raise ValueError(f"unknown impl {impl!r}; available: {AUTO!r} or one of "
                     f"{sorted(SCAN_IMPLS)}")
  return impl


def portable_impl(impl, backend=None):
  """What an exported artefact (jax.export, ONNX) runs for `impl`: `resolve_impl`'s
  answer, or the entry's `exported_as` (the CPU kernel, a custom call registered by
  this process only, becomes the chunked scan, the same math in pure JAX)."""
  resolved = resolve_impl(impl, backend)
  return SCAN_REGISTRY[resolved].exported_as or resolved


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
  chosen = SCAN_REGISTRY[impl]
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
  if chosen.selective_scan is None:
    raise ValueError(f"impl {chosen.name!r} has no plain selective scan (SS2D's "
                     "cross_selective_scan only)")
  _check_shapes(u, delta, A, B, C, D, delta_bias)
  return chosen.selective_scan(u, delta, A, B, C, D, delta_bias,
                               delta_softplus=delta_softplus, **kwargs)


def cross_selective_scan(x, delta, A, B, C, D, delta_bias, *, delta_softplus=True,
                         impl="reference", interpret=None):
  """SS2D's four-direction scan of a map (args in `cross_selective_scan_reference`).

  delta may be a `LowRankDelta` (SS2D's dt_proj not yet applied): the chunked scan
  applies it per token inside its loop.
  """
  chosen, kwargs = _impl(impl, interpret)
  _check_cross_shapes(x, delta, A, B, C, D, delta_bias)
  if isinstance(delta, LowRankDelta) and not chosen.low_rank_delta:
    delta = as_delta(delta)
  return chosen.cross_selective_scan(x, delta, A, B, C, D, delta_bias,
                                     delta_softplus=delta_softplus, **kwargs)
