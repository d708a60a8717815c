"""The project's compiled CPU kernels: built from C++ on first use, cached, loaded and
registered as XLA FFI targets.

    selective_scan_cpu.cc   SS2D's four-direction scan (scan_impl="cpu_ffi")
    depthwise_conv_cpu.cc   a depth-wise conv + bias (+ SiLU) (models.common.DepthwiseConv)
    dcnv4_cpu.cc            DCNv4's deformable sampling (kernels.dcnv4, impl="cpu_ffi")
    cpu_parallel_for.h      the task loop they all run on XLA's CPU thread pool

* **One library.** The sources compile together, by the C++ compiler on the machine
  (`$CXX`, else c++, g++ or clang++), against the XLA FFI headers of the installed
  jaxlib, with `-O3 -ffast-math -march=native` (the vector expf/log1pf of glibc's
  libmvec).
* **Cached** under `$MAMKPD_JAX_CACHE` (default `~/.cache/mamkpd_jax`), keyed by the
  sources, compiler, flags, jaxlib and CPU, and written atomically, so concurrent
  processes are safe.
* **No compiler**: `available()` is False (the reason logged once) and the callers fall
  back to pure JAX: `scan_impl="auto"` to the chunked scan, DepthwiseConv to its
  shifted sum. Asking for "cpu_ffi" by name is an error quoting the compiler.
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
from absl import logging

_HERE = pathlib.Path(__file__).parent
SOURCES = (_HERE / "selective_scan_cpu.cc", _HERE / "depthwise_conv_cpu.cc",
           _HERE / "dcnv4_cpu.cc")
HEADERS = (_HERE / "cpu_parallel_for.h",)
TARGETS = {                                   # FFI target name: its handler symbol
    "mamkpd_cross_scan_forward": "MamkpdCrossScanForward",
    "mamkpd_depthwise_conv_forward": "MamkpdDepthwiseConvForward",
    "mamkpd_dcnv4_forward": "MamkpdDcnv4Forward",
}
COMPILERS = ("c++", "g++", "clang++")


class KernelBuildError(RuntimeError):
  """The CPU kernels could not be compiled or loaded (the message says why)."""


def find_compiler():
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
                         f"{', '.join(s.name for s in SOURCES)}; none of $CXX, "
                         f"{', '.join(COMPILERS)} was found (install one, e.g. `apt install "
                         f"g++`, or use scan_impl='chunked')")


def _arch_flags():
  machine = platform.machine().lower()
  return ["-mcpu=native"] if machine in ("arm64", "aarch64") else ["-march=native"]


def compile_command(compiler, output, sources=None):
  """The command that builds `sources` (default SOURCES) into the shared library
  `output`."""
  return [compiler, "-O3", "-ffast-math", *_arch_flags(), "-std=c++17", "-shared", "-fPIC",
          "-w", f"-I{jax.ffi.include_dir()}", f"-I{_HERE}",
          *map(str, SOURCES if sources is None else sources), "-o", str(output)]


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
  """The cached library for these sources, compiler, flags, jaxlib and CPU."""
  version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                           check=False).stdout
  key = hashlib.sha256("\0".join([
      *(path.read_text() for path in (*SOURCES, *HEADERS)), version,
      " ".join(compile_command(compiler, "out")), jax.__version__,
      importlib.metadata.version("jaxlib"), _cpu_signature()]).encode()).hexdigest()[:16]
  return cache_dir() / f"mamkpd_cpu_kernels-{key}.so"


def build():
  """Compiles SOURCES unless their cached library exists; returns the library's path."""
  compiler = find_compiler()
  path = library_path(compiler)
  if path.exists():
    return path
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:   # same filesystem
      built = pathlib.Path(scratch) / path.name
      command = compile_command(compiler, built)
      logging.info("Building the CPU kernels: %s", " ".join(command))
      result = subprocess.run(command, capture_output=True, text=True, check=False)
      if result.returncode != 0:
        names = ", ".join(s.name for s in SOURCES)
        raise KernelBuildError(f"building {names} failed ({' '.join(command)}):\n"
                               f"{result.stderr[-3000:]}")
      os.replace(built, path)                                       # atomic
  except OSError as error:
    raise KernelBuildError(f"cannot write the CPU kernels to {path.parent} ({error}); "
                           f"set MAMKPD_JAX_CACHE to a writable folder") from error
  return path


@functools.lru_cache(maxsize=None)
def load():
  """Builds (once per machine), loads and registers the kernels (once per process)."""
  import ctypes                                  # pylint: disable=g-import-not-at-top
  path = build()
  try:
    library = ctypes.cdll.LoadLibrary(str(path))
    handlers = {target: getattr(library, symbol) for target, symbol in TARGETS.items()}
  except (OSError, AttributeError) as error:
    raise KernelBuildError(f"loading the CPU kernels {path} failed: {error}") from error
  for target, handler in handlers.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(handler), platform="cpu")
  return path


@functools.lru_cache(maxsize=None)
def available():
  """Whether the kernels build and load here (the reason is logged once if not)."""
  try:
    load()
    return True
  except KernelBuildError as error:
    logging.warning("the compiled CPU kernels are unavailable; scan_impl='auto' uses the "
                    "chunked scan and depth-wise convs their pure-JAX form: %s", error)
    return False
