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
* **Built on first use**, by the C++ compiler on the machine (`$CXX`, else c++, g++ or
  clang++), against the XLA FFI headers of the installed jaxlib, with `-O3 -ffast-math
  -march=native` (the vector expf/log1pf of glibc's libmvec). The shared library is
  cached under `$MAMKPD_JAX_CACHE` (default `~/.cache/mamkpd_jax`), keyed by the source,
  compiler, flags, jaxlib and CPU, and written atomically, so concurrent processes are
  safe. No compiler: `available()` is False, `scan_impl="auto"` stays on the chunked
  scan (logged once), and asking for "cpu_ffi" by name is an error quoting the compiler.
* **Plain `selective_scan`** (not the cross scan) with impl "cpu_ffi" is the chunked
  scan's: only SS2D's fused op has a kernel here.
* **CPU only, not exportable.** A custom call has no meaning for another backend, so
  `jax.export` artefacts and ONNX use the pure-JAX scans (`PURE_JAX_IMPLS`).

Math: as `cross_selective_scan_reference` (docs/scan.md), float32 state and output;
bfloat16 inputs are cast to float32 first.
"""

import functools
import hashlib
import importlib.metadata
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp
from absl import logging

from mamkpd_jax.kernels import batch_parallel
from mamkpd_jax.kernels.cross_scan import NUM_DIRECTIONS, LowRankDelta
from mamkpd_jax.kernels.selective_scan_chunked import cross_selective_scan_chunked

SOURCE = pathlib.Path(__file__).with_name("selective_scan_cpu.cc")
TARGET = "mamkpd_cross_scan_forward"         # the FFI target name
SYMBOL = "MamkpdCrossScanForward"            # its handler in SOURCE
COMPILERS = ("c++", "g++", "clang++")


class KernelBuildError(RuntimeError):
  """The CPU kernel could not be compiled or loaded (the message says why)."""


def _compiler():
  """The C++ compiler command: $CXX, else the first of COMPILERS on PATH."""
  if os.environ.get("CXX"):
    if not shutil.which(os.environ["CXX"]):
      raise KernelBuildError(f"scan_impl='cpu_ffi': the compiler $CXX={os.environ['CXX']} "
                             f"was not found")
    return os.environ["CXX"]
  for name in COMPILERS:
    if shutil.which(name):
      return name
  raise KernelBuildError(f"scan_impl='cpu_ffi' needs a C++17 compiler to build "
                         f"{SOURCE.name}; none of $CXX, {', '.join(COMPILERS)} was found "
                         f"(install one, e.g. `apt install g++`, or use scan_impl='chunked')")


def _arch_flags():
  machine = platform.machine().lower()
  return ["-mcpu=native"] if machine in ("arm64", "aarch64") else ["-march=native"]


def compile_command(compiler, output):
  """The command that builds SOURCE into the shared library `output`."""
  return [compiler, "-O3", "-ffast-math", *_arch_flags(), "-std=c++17", "-shared", "-fPIC",
          "-w", f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(output)]


def _cpu_signature():
  """What -march=native compiles for: the CPU's model and feature flags (Linux), else
  the platform's processor string."""
  try:
    lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
    return "\n".join(sorted({l for l in lines if l.startswith(("model name", "flags"))}))
  except OSError:
    return platform.processor() + platform.machine()


def cache_dir():
  default = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
  return pathlib.Path(os.environ.get("MAMKPD_JAX_CACHE", default / "mamkpd_jax"))


def library_path(compiler):
  """The cached library for this source, compiler, flags, jaxlib and CPU."""
  version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                           check=False).stdout
  key = hashlib.sha256("\0".join([
      SOURCE.read_text(), version, " ".join(compile_command(compiler, "out")),
      jax.__version__, importlib.metadata.version("jaxlib"),
      _cpu_signature()]).encode()).hexdigest()[:16]
  return cache_dir() / f"selective_scan_cpu-{key}.so"


def build():
  """Compiles SOURCE unless its cached library exists; returns the library's path."""
  compiler = _compiler()
  path = library_path(compiler)
  if path.exists():
    return path
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:   # same filesystem
      built = pathlib.Path(scratch) / path.name
      command = compile_command(compiler, built)
      logging.info("Building the CPU scan kernel: %s", " ".join(command))
      result = subprocess.run(command, capture_output=True, text=True, check=False)
      if result.returncode != 0:
        raise KernelBuildError(f"building {SOURCE.name} failed ({' '.join(command)}):\n"
                               f"{result.stderr[-3000:]}")
      os.replace(built, path)                                       # atomic
  except OSError as error:
    raise KernelBuildError(f"cannot write the CPU scan kernel to {path.parent} ({error}); "
                           f"set MAMKPD_JAX_CACHE to a writable folder") from error
  return path


@functools.lru_cache(maxsize=None)
def load():
  """Builds (once per machine), loads and registers the kernel (once per process)."""
  import ctypes                                  # pylint: disable=g-import-not-at-top
  path = build()
  try:
    library = ctypes.cdll.LoadLibrary(str(path))
    handler = getattr(library, SYMBOL)
  except (OSError, AttributeError) as error:
    raise KernelBuildError(f"loading the CPU scan kernel {path} failed: {error}") from error
  jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(handler), platform="cpu")
  return path


@functools.lru_cache(maxsize=None)
def available():
  """Whether the kernel builds and loads here (the reason is logged once if not)."""
  try:
    load()
    return True
  except KernelBuildError as error:
    logging.warning("scan_impl='auto' uses the chunked scan on this CPU: %s", error)
    return False


def _forward(x, delta, A, B, C, D, delta_bias, delta_softplus):
  """The kernel's call: args as `cross_selective_scan_reference` -> (b, H, W, P) f32."""
  load()
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
