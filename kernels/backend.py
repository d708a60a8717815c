"""The one place that knows the Pallas kernel backends: their shape rules, parameters, choice.

Three backends build the same scan kernels (kernels/README.md), two for GPUs and one for TPUs:

* "triton": Pallas's Triton lowering (`jax.experimental.pallas.triton`), a `pallas_call`
  selected by its `CompilerParams`. Power-of-two in-kernel arrays; deprecated by JAX 0.11.
* "mosaic_gpu": Pallas Mosaic GPU (`jax.experimental.pallas.mosaic_gpu`), a
  `plgpu.kernel` with Warpgroup lowering. 128-channel rows, one channel per lane.
* "mosaic_tpu": Pallas Mosaic TPU (`jax.experimental.pallas.tpu`), a `pallas_call` with
  `pltpu.CompilerParams`. 128-channel lanes, tokens on sublanes, blocks in VMEM.

`default_backend()` is the backend `impl="pallas"` means: on a TPU "mosaic_tpu", elsewhere
`default_gpu_backend()`, which picks by feature detection (which modules import), never
by a JAX version number. Mosaic GPU becomes the
preferred one only once a GPU run has validated it (`MOSAIC_GPU_VALIDATED`).
"""

import contextlib
import contextvars
import importlib

import jax

TRITON = "triton"
MOSAIC_GPU = "mosaic_gpu"
MOSAIC_TPU = "mosaic_tpu"
BACKENDS = (TRITON, MOSAIC_GPU, MOSAIC_TPU)
MERGING_BACKENDS = (MOSAIC_GPU, MOSAIC_TPU)   # sum SS2D's four directions in the kernel
MAX_D_STATE = 16          # state sizes the kernels are tiled for
CHUNK = 16                # tokens per chunk; the backward's checkpoint stride
MOSAIC_GPU_LANES = 128    # one Mosaic GPU thread = one warpgroup of 128 lanes
TPU_LANES = 128           # a TPU vector register is (8 sublanes, 128 lanes)
# False until `scripts/gpu_check.py` has shown Mosaic GPU correct and faster on a GPU;
# then `pallas` prefers it where it is available.
MOSAIC_GPU_VALIDATED = False


def next_power_of_two(n):
  return 1 << max(0, (int(n) - 1).bit_length())


# ----------------------------------------------------------------------------------
# Availability and choice.


def _imports(module):
  try:
    importlib.import_module(module)
  except ImportError:
    return False
  return True


def _mosaic_gpu_features():
  """The Mosaic GPU names the kernels use (absent on old JAX; 0.10.2 also needs absl)."""
  if not _imports("jax.experimental.pallas.mosaic_gpu"):
    return False
  from jax.experimental.pallas import mosaic_gpu as plgpu
  return (hasattr(plgpu, "kernel") and hasattr(plgpu, "LoweringSemantics")
          and hasattr(plgpu.LoweringSemantics, "Warpgroup")
          and _interpret_params_class() is not None)


def _mosaic_tpu_features():
  """The Pallas TPU names the kernel uses (its interpreter runs it on a CPU)."""
  if not _imports("jax.experimental.pallas.tpu"):
    return False
  from jax.experimental.pallas import tpu as pltpu
  return all(hasattr(pltpu, name) for name in ("CompilerParams", "InterpretParams", "VMEM"))


def _on_rocm():
  """Mosaic GPU targets NVIDIA only."""
  if jax.default_backend() != "gpu":
    return False
  client = jax.devices()[0].client
  return "rocm" in str(getattr(client, "platform_version", "")).lower()


def available_backends():
  """Backends whose Pallas module imports here and that can run here: interpreted on a
  CPU, the GPU ones on a GPU (Mosaic GPU not on ROCm), the TPU one on a TPU."""
  platform = jax.default_backend()
  found = []
  if platform != "tpu" and _imports("jax.experimental.pallas.triton"):
    found.append(TRITON)
  if platform != "tpu" and _mosaic_gpu_features() and not _on_rocm():
    found.append(MOSAIC_GPU)
  if platform != "gpu" and _mosaic_tpu_features():
    found.append(MOSAIC_TPU)
  return tuple(found)


def default_backend():
  """The backend `impl="pallas"` uses: the TPU's kernel on a TPU, else the GPU default."""
  if jax.default_backend() == "tpu":
    check_backend(MOSAIC_TPU)
    return MOSAIC_TPU
  return default_gpu_backend()


def default_gpu_backend():
  """The GPU backend `impl="pallas"` uses off a TPU: the preferred one available."""
  preference = (MOSAIC_GPU, TRITON) if MOSAIC_GPU_VALIDATED else (TRITON, MOSAIC_GPU)
  available = available_backends()
  for name in preference:
    if name in available:
      return name
  raise ValueError("impl='pallas': no Pallas GPU backend is available in this JAX "
                   f"{jax.__version__} (tried {', '.join(preference)}); use impl='reference'")


def check_backend(name):
  """Raises ValueError naming what is available when `name` cannot be used here."""
  if name not in BACKENDS:
    raise ValueError(f"unknown Pallas backend {name!r}; known: {BACKENDS}")
  available = available_backends()
  if name not in available:
    raise ValueError(f"Pallas backend {name!r} is not available with JAX {jax.__version__}"
                     f" on {jax.default_backend()}; available: {available or 'none'}")


_COMPILED = contextvars.ContextVar("mamkpd_pallas_compiled", default=False)


@contextlib.contextmanager
def compiled_kernels():
  """Inside: interpret=None means the compiled kernel even on a CPU host.

  For lowering a whole model for an accelerator from a CPU host (`jax.export` with
  `platforms=["tpu"]`, tests): the model's scan calls leave `interpret` at None.
  """
  token = _COMPILED.set(True)
  try:
    yield
  finally:
    _COMPILED.reset(token)


def resolve_interpret(interpret):
  """None -> interpret when the default backend is the CPU (tests, CI, laptops), unless
  inside `compiled_kernels()`."""
  if interpret is None:
    return jax.default_backend() == "cpu" and not _COMPILED.get()
  return bool(interpret)


# ----------------------------------------------------------------------------------
# Shape rules.


def padded_d_state(name, d_state):
  """Triton's in-kernel arrays are powers of two; Mosaic GPU and TPU keep N as it is."""
  return next_power_of_two(d_state) if name == TRITON else int(d_state)


def channel_tile(name, per_group, padded_state):
  """Channels per program.

  Triton: a power of two, smaller when the state is large (the backward keeps CHUNK
  states of (padded_state, tile) float32 in registers): 64 channels for N <= 4, 32
  above. Mosaic GPU: one 128-lane row, one channel per lane of the warpgroup. Mosaic
  TPU: the 128 lanes of a vector register.
  """
  if name == MOSAIC_GPU:
    return MOSAIC_GPU_LANES
  if name == MOSAIC_TPU:
    return TPU_LANES
  limit = 64 if padded_state <= 4 else 32
  return min(limit, next_power_of_two(per_group))


# ----------------------------------------------------------------------------------
# Triton parameters.


def num_warps(padded_state, tile):
  """One warp per 128 state elements, 1 to 4 (untuned: no GPU has measured it yet)."""
  return max(1, min(4, padded_state * tile // 128))


def triton_compiler_params(padded_state, tile):
  """Parameters that select the Triton backend for a `pallas_call`.

  Passed in interpret mode too, so tests exercise the exact production call.
  """
  from jax.experimental.pallas import triton as plt
  return plt.CompilerParams(num_warps=num_warps(padded_state, tile), num_stages=1)


# ----------------------------------------------------------------------------------
# Mosaic GPU parameters.


def _interpret_params_class():
  """`InterpretGPUParams`: public from JAX 0.11.2, a private module on 0.10.2."""
  from jax.experimental.pallas import mosaic_gpu as plgpu
  if hasattr(plgpu, "InterpretGPUParams"):
    return plgpu.InterpretGPUParams
  try:
    from jax._src.pallas.mosaic_gpu.interpret import params
  except ImportError:
    return None
  return getattr(params, "InterpretGPUParams", None)


def mosaic_gpu_compiler_params():
  """Warpgroup lowering, explicitly: JAX 0.10.2 defaults to Lane, which cannot interpret."""
  from jax.experimental.pallas import mosaic_gpu as plgpu
  return plgpu.CompilerParams(lowering_semantics=plgpu.LoweringSemantics.Warpgroup)


def mosaic_gpu_interpret(interpret):
  """The `interpret` argument of `plgpu.kernel` (`interpret=True` does not work there)."""
  return _interpret_params_class()() if interpret else None


def reset_mosaic_gpu_interpreter():
  """Clears the GPU interpreter's state after a kernel raised (else the next one fails)."""
  from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call
  interpret_pallas_call.reset_gpu_interpret_mode_state()
