"""The Pallas selective-scan kernels (interpret mode on CPU) against the pure-JAX reference.

Outputs and the gradients of every input are compared; the GPU lowering of the kernels
is checked from this CPU host so that a change that breaks it fails CI. Both GPU backends
are tested: Triton over the whole case table (`scan_inputs.CASES`), Mosaic GPU (slow to
interpret) on a few tiny shapes; both lower for CUDA over a dtype x d_state x groups
table. The TPU kernel's tests are in test_tpu_scan.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mamkpd_jax import kernels
from mamkpd_jax.kernels import backend, tolerances
from mamkpd_jax.kernels.tolerances import assert_close
from conftest import make_config
from mamkpd_jax.benchmarking.lowering import lower_for_cuda
from scan_inputs import CASES, CROSS_CASES, cross_inputs, scan_inputs, values_and_grads

NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")


# The kernels' tolerances against the reference (kernels/tolerances.py; gpu_check uses
# them on the GPU too).
OUTPUT_RTOL = tolerances.OUTPUT_RTOL
RTOL = {dtype: tolerances.grad_rtol(dtype) for dtype in (jnp.float32, jnp.bfloat16)}


@pytest.mark.parametrize("batch,length,channels,groups,d_state,dtype", CASES)
def test_kernel_matches_reference(batch, length, channels, groups, d_state, dtype):
  inputs = scan_inputs(length + channels, batch, length, channels, groups, d_state, dtype)
  run = lambda impl: values_and_grads(
      lambda *a: kernels.selective_scan(*a, impl=impl), inputs)
  y, grads = run("pallas")
  y_ref, grads_ref = run("reference")
  assert y.dtype == jnp.float32 and y.shape == (batch, length, channels)
  assert_close(y, y_ref, OUTPUT_RTOL, "y")
  for name in NAMES:
    assert grads[name].dtype == inputs[name].dtype, name
    assert_close(grads[name], grads_ref[name], RTOL[dtype], name)


def test_kernel_without_softplus():
  inputs = scan_inputs(0, 1, 20, 8, 2, 2)
  inputs["delta"] = jnp.abs(inputs["delta"])
  inputs["delta_bias"] = jnp.abs(inputs["delta_bias"])
  run = lambda impl: values_and_grads(
      lambda *a: kernels.selective_scan(*a, delta_softplus=False, impl=impl), inputs)
  (y, grads), (y_ref, grads_ref) = run("pallas"), run("reference")
  assert_close(y, y_ref, OUTPUT_RTOL)
  for name in NAMES:
    assert_close(grads[name], grads_ref[name], RTOL[jnp.float32], name)


@pytest.mark.parametrize("batch,height,width,per_group,d_state", CROSS_CASES)
def test_fused_cross_scan_matches_reference(batch, height, width, per_group, d_state):
  inputs = cross_inputs(height * width, batch, height, width, per_group, d_state)
  run = lambda impl: values_and_grads(
      lambda *a: kernels.cross_selective_scan(*a, impl=impl), inputs)
  (y, grads), (y_ref, grads_ref) = run("pallas"), run("reference")
  assert y.shape == (batch, height, width, per_group) and y.dtype == jnp.float32
  assert_close(y, y_ref, OUTPUT_RTOL, "y")
  for name in inputs:
    assert_close(grads[name], grads_ref[name], RTOL[jnp.float32], name)


# Mosaic GPU in interpret mode (about 10-20 ms per program step on a CPU): tiny shapes.
# (batch, L, channels, G, N, dtype, delta_softplus). A tile is 128 channels, N unpadded.
MOSAIC_CASES = [
    (1, 20, 8, 2, 3, jnp.float32, True),     # L 20 -> 32 (2 chunks); 4 channels -> 128
    (1, 16, 130, 1, 1, jnp.bfloat16, True),  # 2 tiles, the second padded; MamKPD's N = 1
    (1, 9, 4, 1, 2, jnp.float32, False),     # no softplus; L < chunk
]


@pytest.fixture
def mosaic_interpreter():
  """The GPU interpreter keeps state after a kernel raises: reset it for the next test."""
  yield
  backend.reset_mosaic_gpu_interpreter()


@pytest.mark.parametrize("batch,length,channels,groups,d_state,dtype,softplus", MOSAIC_CASES)
def test_mosaic_kernel_matches_reference(mosaic_interpreter, batch, length, channels, groups,
                                         d_state, dtype, softplus):
  inputs = scan_inputs(length + channels, batch, length, channels, groups, d_state, dtype)
  if not softplus:  # delta itself must then be positive
    inputs["delta"], inputs["delta_bias"] = jnp.abs(inputs["delta"]), jnp.abs(inputs["delta_bias"])
  run = lambda impl: values_and_grads(
      lambda *a: kernels.selective_scan(*a, delta_softplus=softplus, impl=impl), inputs)
  (y, grads), (y_ref, grads_ref) = run("pallas_mosaic"), run("reference")
  assert y.dtype == jnp.float32 and y.shape == (batch, length, channels)
  assert_close(y, y_ref, OUTPUT_RTOL, "y")
  for name in NAMES:
    assert grads[name].dtype == inputs[name].dtype, name
    assert_close(grads[name], grads_ref[name], RTOL[dtype], name)


def test_mosaic_fused_cross_scan_matches_reference(mosaic_interpreter):
  inputs = cross_inputs(3, 1, 3, 5, 6, 2)        # 4 directions, L = 15, column-major odd
  run = lambda impl: values_and_grads(
      lambda *a: kernels.cross_selective_scan(*a, impl=impl), inputs)
  (y, grads), (y_ref, grads_ref) = run("pallas_mosaic"), run("reference")
  assert_close(y, y_ref, OUTPUT_RTOL, "y")
  for name in inputs:
    assert_close(grads[name], grads_ref[name], RTOL[jnp.float32], name)


def _lower_forward_and_grad(fn, inputs):
  """CUDA StableHLO of fn and of its gradient w.r.t. every input."""
  args = list(inputs.values())
  grad = jax.grad(lambda *a: jnp.sum(fn(*a)), argnums=tuple(range(len(args))))
  return [lower_for_cuda(f, *args) for f in (fn, grad)]


# The custom call each backend's kernels lower to.
KERNEL_MARKER = {"pallas_triton": "triton", "pallas_mosaic": "mosaic_gpu"}
# dtype x d_state x groups, each value at least once: (dtype, N, G of the plain scan).
LOWERING_CASES = [(jnp.float32, 16, 4), (jnp.bfloat16, 1, 1), (jnp.bfloat16, 3, 4)]


@pytest.mark.parametrize("impl", sorted(KERNEL_MARKER))
@pytest.mark.parametrize("dtype,d_state,groups", LOWERING_CASES)
def test_kernels_lower_for_gpu(impl, dtype, d_state, groups):
  """Both backends lower for CUDA (Mosaic GPU's 128-element, layout and TMA rules)."""
  scan = lambda *a: kernels.selective_scan(*a, impl=impl, interpret=False)
  cross = lambda *a: kernels.cross_selective_scan(*a, impl=impl, interpret=False)
  texts = (_lower_forward_and_grad(scan, scan_inputs(0, 2, 100, 200, groups, d_state, dtype))
           + _lower_forward_and_grad(cross, cross_inputs(0, 2, 16, 12, 96, d_state, dtype)))
  for forward, backward in (texts[:2], texts[2:]):
    assert forward.count(KERNEL_MARKER[impl]) >= 1        # the forward kernel
    assert backward.count(KERNEL_MARKER[impl]) >= 2       # forward with states + backward
  if impl == "pallas_mosaic":  # the kernel merges the four directions: y (b, L, 128), no K
    calls = [line for line in texts[2].splitlines() if "custom_call" in line]
    assert calls[-1].endswith("-> tensor<2x192x128xf32>"), calls


def test_pallas_is_the_default_backend(monkeypatch):
  """Feature detection: Triton while Mosaic GPU is unvalidated, else what is there."""
  assert set(backend.available_backends()) == set(backend.BACKENDS)   # this JAX has both
  assert backend.default_gpu_backend() == backend.TRITON
  monkeypatch.setattr(backend, "available_backends", lambda: (backend.MOSAIC_GPU,))
  assert backend.default_gpu_backend() == backend.MOSAIC_GPU
  monkeypatch.setattr(backend, "available_backends", lambda: ())
  with pytest.raises(ValueError, match="no Pallas GPU backend is available"):
    kernels.selective_scan(**scan_inputs(0, 1, 8, 4, 1, 1), impl="pallas")


def test_unavailable_backend_says_what_is_available(monkeypatch):
  monkeypatch.setattr(backend, "available_backends", lambda: (backend.TRITON,))
  with pytest.raises(ValueError, match=r"'mosaic_gpu' is not available.*available: \('triton',\)"):
    kernels.selective_scan(**scan_inputs(0, 1, 8, 4, 1, 1), impl="pallas_mosaic")
  with pytest.raises(ValueError, match="unknown Pallas backend 'cuda'"):
    backend.check_backend("cuda")


def test_interpret_defaults_to_cpu():
  assert backend.resolve_interpret(None) == (jax.default_backend() == "cpu")
  assert backend.resolve_interpret(False) is False


def test_d_state_beyond_kernel_is_an_error():
  inputs = scan_inputs(0, 1, 8, 4, 1, backend.MAX_D_STATE + 1)
  with pytest.raises(ValueError, match="d_state 1 to 16"):
    kernels.selective_scan(**inputs, impl="pallas")


def test_interpret_flag_only_for_pallas():
  with pytest.raises(ValueError, match="Pallas impls only"):
    kernels.selective_scan(**scan_inputs(0, 1, 8, 4, 1, 1), interpret=True)


def test_cross_scan_bad_shape_names_argument():
  inputs = cross_inputs(0, 1, 4, 4, 8, 1)
  inputs["delta"] = inputs["delta"][:, :, :, :2]
  with pytest.raises(ValueError, match="delta has shape"):
    kernels.cross_selective_scan(*inputs.values(), impl="pallas")


@pytest.mark.parametrize("impl", ["pallas", "pallas_triton", "pallas_mosaic"])
def test_model_config_accepts_backend_names(impl):
  assert make_config(scan_impl=impl).scan_impl == impl
