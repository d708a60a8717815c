"""SS2D's scan as one compiled CPU kernel through XLA's FFI: `scan_impl="cpu_ffi"`.

The chunked scan (`selective_scan_chunked.py`) is as fast as pure JAX gets on XLA's CPU
backend, yet on MamKPD-B it still left inference ~1.4-1.9x slower than the model with
the scan removed: every step of the scan (dt_proj, softplus, exp, the drive, the
four-direction layout, the merge) is a separate pass over (b, L, 4, P) arrays there.
`selective_scan_cpu.cc` does the whole four-direction scan in one pass over the model's
own (b, H, W, ...) arrays: per (batch element, channel tile) task, the state and the
tile's per-token vectors live in L1, and nothing of size (b, L, 4, P) is ever written.

* **Forward only.** The backward is the chunked scan's: a `jax.custom_vjp` whose backward
  differentiates `cross_selective_scan_chunked` at the same inputs (it recomputes its own
  forward, checkpointed per chunk). Training therefore costs one chunked scan's forward
  and backward plus this kernel's (cheap) forward; equal gradients are tested.
* **Built on first use** with the project's other CPU kernels (`cpu_kernels.py`: compiler,
  flags, cache); no compiler: `available()` is False, `scan_impl="auto"` stays on the
  chunked scan (logged once), and asking for "cpu_ffi" by name is an error quoting it.
* **Plain `selective_scan`** (not the cross scan) with impl "cpu_ffi" is the chunked
  scan's: only SS2D's fused op has a kernel here.
* **CPU only, not exportable.** A custom call has no meaning for another backend, so
  `jax.export` artefacts and ONNX use the pure-JAX scans (`PURE_JAX_IMPLS`).

Math: as `cross_selective_scan_reference` (docs/scan.md), float32 state and output;
bfloat16 inputs are cast to float32 first.
"""

import functools

import jax
import jax.numpy as jnp

from mamkpd_jax.kernels import batch_parallel, cpu_kernels
from mamkpd_jax.kernels.cross_scan import NUM_DIRECTIONS, LowRankDelta
from mamkpd_jax.kernels.selective_scan_chunked import cross_selective_scan_chunked

TARGET = "mamkpd_cross_scan_forward"         # cpu_kernels.TARGETS
# Whether the kernel builds and loads here (the reason is logged once if not).
available = cpu_kernels.available


def _forward(x, delta, A, B, C, D, delta_bias, delta_softplus):
  """The kernel's call: args as `cross_selective_scan_reference` -> (b, H, W, P) f32."""
  cpu_kernels.load()
  if jax.default_backend() != "cpu":
    raise ValueError(f"scan_impl='cpu_ffi' runs on the CPU only; the default backend is "
                     f"{jax.default_backend()!r} (use 'auto' or 'pallas')")
  f32 = lambda t: t.astype(jnp.float32)
  per_group, d_state = x.shape[-1], B.shape[-1]
  low_rank = isinstance(delta, LowRankDelta)
  if low_rank:
    delta_input = f32(delta.dts)                                  # (b, H, W, 4, R)
    weight_t = jnp.swapaxes(f32(delta.weight), 1, 2)             # (4, R, P)
  else:
    delta_input = f32(delta)                                      # (b, H, W, 4, P)
    weight_t = jnp.zeros((NUM_DIRECTIONS, 0, per_group), jnp.float32)   # unused
  k = NUM_DIRECTIONS
  arrays = (f32(x), delta_input, weight_t,
            f32(A).reshape(k, per_group, d_state).transpose(0, 2, 1),  # (4, N, P)
            f32(B), f32(C), f32(D).reshape(k, per_group).sum(0),
            f32(delta_bias).reshape(k, per_group))
  # Each device scans its own images (batch_parallel: else XLA gathers the batch).
  return batch_parallel.batch_parallel(_ffi_call, arrays, _BATCHED,
                                       (low_rank, bool(delta_softplus)))


_BATCHED = (True, True, False, False, True, True, False, False)   # per array of _ffi_call


def _ffi_call(x, delta_input, weight_t, A, B, C, d_sum, bias, low_rank, softplus):
  """The custom call: x (b, H, W, P), delta_input (b, H, W, 4, R or P), weight_t
  (4, R, P) (or (4, 0, P) when delta is given), A (4, N, P), B, C (b, H, W, 4, N),
  d_sum (P,), bias (4, P), all float32 -> (b, H, W, P) float32."""
  call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(x.shape, jnp.float32),
                          vmap_method="sequential")
  return call(x, delta_input, weight_t, A, B, C, d_sum, bias, low_rank=low_rank,
              softplus=softplus)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def _cross_scan(x, delta, A, B, C, D, delta_bias, delta_softplus):
  return _forward(x, delta, A, B, C, D, delta_bias, delta_softplus)


def _cross_scan_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus):
  out = _forward(x, delta, A, B, C, D, delta_bias, delta_softplus)
  return out, (x, delta, A, B, C, D, delta_bias)


def _cross_scan_bwd(delta_softplus, inputs, cotangent):
  chunked = functools.partial(cross_selective_scan_chunked, delta_softplus=delta_softplus)
  _, vjp = jax.vjp(chunked, *inputs)
  return vjp(cotangent)


_cross_scan.defvjp(_cross_scan_fwd, _cross_scan_bwd)


def cross_selective_scan_cpu(x, delta, A, B, C, D, delta_bias, *, delta_softplus=True):
  """SS2D's four-direction scan (args as `cross_selective_scan_reference`; delta may be a
  `LowRankDelta`) by the compiled CPU kernel; differentiable (chunked backward)."""
  return _cross_scan(x, delta, A, B, C, D, delta_bias, delta_softplus)
