"""The Pallas Mosaic TPU scan ("pallas_tpu"): interpreted against the reference, lowered
for TPU from this CPU host, alone and inside both model families' train steps.

The interpreter is Pallas's TPU interpreter (`pltpu.InterpretParams`: VMEM blocks, the
grid run in order, revisited output blocks kept), about 8 s for forward and backward of
one program at L = 768, so the case table is the GPU kernels' (`scan_inputs.CASES`).
The L = 6912 case (96 x 72 tokens: stage 1 of a 384 x 288 input) takes ~45 s and runs with
MAMKPD_SLOW_TESTS=1. Lowering applies Pallas's TPU rules (block shapes against (8, 128)
tiles, supported primitives); Mosaic's layout passes run only inside a TPU's compiler.
"""

import importlib
import importlib.util
import itertools
import os

import jax
import jax.numpy as jnp
import pytest

from mamkpd_jax import kernels, models
from mamkpd_jax.benchmarking import lowering
from mamkpd_jax.benchmarking.lowering import TPU_KERNEL_MARKER, lower_for_tpu
from mamkpd_jax.kernels import backend, selective_scan_tpu, tolerances
from mamkpd_jax.kernels.tolerances import assert_close
from mamkpd_jax.models import hrvmamba
from scan_inputs import CASES, CROSS_CASES, cross_inputs, scan_inputs, values_and_grads

# The modules (kernels/__init__ exports functions of the same names).
registry = importlib.import_module("mamkpd_jax.kernels.selective_scan")
selective_scan_pallas = importlib.import_module("mamkpd_jax.kernels.selective_scan_pallas")
IMPL = "pallas_tpu"
NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")
slow = pytest.mark.skipif(not os.environ.get("MAMKPD_SLOW_TESTS"),
                          reason="slow (~45 s interpreted): set MAMKPD_SLOW_TESTS=1")


def assert_matches_reference(scan, inputs, dtype=jnp.float32, **kwargs):
  """scan(..., impl=IMPL) against impl="reference": y and the gradient of every input."""
  run = lambda impl: values_and_grads(lambda *a: scan(*a, impl=impl, **kwargs), inputs)
  (y, grads), (y_ref, grads_ref) = run(IMPL), run("reference")
  assert y.dtype == jnp.float32 and y.shape == y_ref.shape
  assert_close(y, y_ref, tolerances.OUTPUT_RTOL, "y")
  for name in inputs:
    assert grads[name].dtype == inputs[name].dtype, name
    assert_close(grads[name], grads_ref[name], tolerances.grad_rtol(dtype), name)


@pytest.mark.parametrize("batch,length,channels,groups,d_state,dtype", CASES)
def test_tpu_kernel_matches_reference(batch, length, channels, groups, d_state, dtype):
  inputs = scan_inputs(length + channels, batch, length, channels, groups, d_state, dtype)
  assert_matches_reference(kernels.selective_scan, inputs, dtype)


@slow
def test_tpu_kernel_matches_reference_at_stage1_length_of_384x288():
  assert_matches_reference(kernels.selective_scan, scan_inputs(5, 1, 6912, 8, 1, 1))


def test_tpu_kernel_without_softplus():
  inputs = scan_inputs(0, 1, 20, 8, 2, 2)
  inputs["delta"] = jnp.abs(inputs["delta"])
  inputs["delta_bias"] = jnp.abs(inputs["delta_bias"])
  assert_matches_reference(kernels.selective_scan, inputs, delta_softplus=False)


@pytest.mark.parametrize("batch,height,width,per_group,d_state", CROSS_CASES + [
    (1, 3, 5, 130, 2),    # two 128-channel tiles, the second padded; column-major odd map
])
def test_tpu_fused_cross_scan_matches_reference(batch, height, width, per_group, d_state):
  """The four directions merged in the kernel: y and du accumulate in VMEM."""
  inputs = cross_inputs(height * width, batch, height, width, per_group, d_state)
  assert_matches_reference(kernels.cross_selective_scan, inputs)


def test_tpu_cross_scan_in_bfloat16():
  inputs = cross_inputs(11, 2, 4, 6, 8, 1, jnp.bfloat16)
  assert_matches_reference(kernels.cross_selective_scan, inputs, jnp.bfloat16)


# ----------------------------------------------------------------------------------
# Lowering for TPU.


def _lower_forward_and_grad(fn, inputs):
  """TPU StableHLO of fn and of its gradient w.r.t. every input."""
  args = list(inputs.values())
  grad = jax.grad(lambda *a: jnp.sum(fn(*a)), argnums=tuple(range(len(args))))
  return [lower_for_tpu(fn, *args) for fn in (fn, grad)]


def _kernel_calls(text):
  return [line for line in text.splitlines() if TPU_KERNEL_MARKER in line]


@pytest.mark.parametrize("dtype,d_state,groups", list(itertools.product(
    (jnp.float32, jnp.bfloat16), (1, 3, 16), (1, 4))))
def test_tpu_kernel_lowers_for_tpu(dtype, d_state, groups):
  scan = lambda *a: kernels.selective_scan(*a, impl=IMPL, interpret=False)
  cross = lambda *a: kernels.cross_selective_scan(*a, impl=IMPL, interpret=False)
  plain = _lower_forward_and_grad(scan, scan_inputs(0, 2, 100, 200, groups, d_state, dtype))
  fused = _lower_forward_and_grad(cross, cross_inputs(0, 2, 16, 12, 96, d_state, dtype))
  for forward, backward in (plain, fused):
    assert len(_kernel_calls(forward)) == 1               # the forward kernel
    assert len(_kernel_calls(backward)) == 2              # forward with states + backward
  # The cross-scan's forward kernel returns the merged (b, Lp, 128) map: no K axis.
  assert "-> tensor<2x192x128xf32>" in _kernel_calls(fused[0])[0]


def test_compiled_kernels_lowers_the_kernel_not_the_interpreter():
  """interpret=None on a CPU host means the interpreter (host callbacks, which cannot be
  lowered for TPU); inside `compiled_kernels()` it means the Mosaic kernel."""
  inputs = list(scan_inputs(0, 1, 16, 8, 1, 1).values())
  scan = lambda *a: kernels.selective_scan(*a, impl=IMPL)
  assert backend.resolve_interpret(None) == (jax.default_backend() == "cpu")
  with backend.compiled_kernels():
    assert backend.resolve_interpret(None) is False
    assert backend.resolve_interpret(True) is True          # an explicit choice stands
    assert len(_kernel_calls(lower_for_tpu(scan, *inputs))) == 1
  assert backend.resolve_interpret(None) == (jax.default_backend() == "cpu")


@pytest.mark.parametrize("family,variant", [("mamkpd", "base"), ("hrvmamba", "tiny")])
def test_whole_models_lower_for_tpu_with_the_kernel(family, variant):
  """MamKPD-B and HRVMamba-T at 256x192: forward and the project's train step (loss,
  gradients, AdamW update) lowered for TPU with scan_impl="pallas_tpu"; one kernel per
  SS2D in the forward, two (forward with states, backward) in the step."""
  config = (models.model_config if family == "mamkpd" else hrvmamba.model_config)(variant)
  config.scan_impl = IMPL
  # Every trace inside the context: JAX reuses a trace made outside it.
  with lowering.accelerator_tracing():
    programs = lowering.train_step_programs(config, batch=2)
    forward_text = lower_for_tpu(*_flat(programs["forward"]))
    step_text = lower_for_tpu(*_flat(programs["train step"]))
  blocks = len(_kernel_calls(forward_text))
  assert blocks >= 4                                      # every SS2D: one kernel call
  assert len(_kernel_calls(step_text)) == 2 * blocks
  for text in (forward_text, step_text):                  # no CPU custom call left
    assert "mamkpd_" not in "".join(line for line in text.splitlines()
                                    if "custom_call" in line and "tpu_custom_call" not in line)


def _flat(program):
  fn, args = program
  return (fn, *args)


# ----------------------------------------------------------------------------------
# Choice.


def test_auto_resolves_to_the_tpu_kernel_on_a_tpu(monkeypatch):
  assert registry.resolve_impl("auto", "tpu") == IMPL
  assert registry.resolve_impl("auto", "gpu") == "pallas"
  assert registry.resolve_impl("auto", "cpu") in ("cpu_ffi", "chunked")
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert registry.resolve_impl("auto") == IMPL
  assert backend.available_backends() == (backend.MOSAIC_TPU,)   # no GPU kernels on a TPU
  assert backend.default_backend() == backend.MOSAIC_TPU          # what "pallas" means there
  assert not backend.resolve_interpret(None)
  with pytest.raises(ValueError, match="'triton' is not available"):
    kernels.selective_scan(**scan_inputs(0, 1, 8, 4, 1, 1), impl="pallas_triton")


def test_tpu_kernel_is_not_offered_on_a_gpu(monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(backend, "_on_rocm", lambda: False)
  assert backend.MOSAIC_TPU not in backend.available_backends()
  with pytest.raises(ValueError, match="'mosaic_tpu' is not available"):
    kernels.selective_scan(**scan_inputs(0, 1, 8, 4, 1, 1), impl=IMPL)


def test_vmem_limit_follows_the_estimate_and_the_chip(monkeypatch, caplog):
  """The VMEM asked of Mosaic is 1.25 x the estimate, capped by the chip's VMEM on a TPU;
  an estimate above the chip's VMEM warns, naming the length and the fallback."""
  import types
  from jax.experimental.pallas import tpu as pltpu
  plan = selective_scan_pallas._Plan(1, 6912, 4, 192, 1, 96, 72, True, False,
                                     backend.MOSAIC_TPU)
  f32 = (jnp.float32,) * 2
  need = selective_scan_tpu.vmem_bytes(plan, f32, backward=True)
  # Seven (6912, 128) f32 blocks, double-buffered, plus states, B, C and their gradients;
  # v4's compiler reported 24.3 MiB used, so the estimate is an upper bound.
  assert 24 << 20 < need < 60 << 20
  assert selective_scan_tpu._vmem_limit(plan, f32, True) == int(need * 1.25)   # host
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  chip = lambda mib: types.SimpleNamespace(vmem_capacity_bytes=mib << 20)
  monkeypatch.setattr(pltpu, "get_tpu_info", lambda: chip(128))
  assert selective_scan_tpu._vmem_limit(plan, f32, True) == int(need * 1.25)
  monkeypatch.setattr(pltpu, "get_tpu_info", lambda: chip(48))
  assert selective_scan_tpu._vmem_limit(plan, f32, True) == 48 << 20
  assert "VMEM" not in caplog.text
  monkeypatch.setattr(pltpu, "get_tpu_info", lambda: chip(16))
  with caplog.at_level("WARNING"):
    assert selective_scan_tpu._vmem_limit(plan, f32, True) == 16 << 20
  assert "6912 tokens" in caplog.text and "scan_impl='chunked'" in caplog.text


def test_tpu_kernel_is_registered_for_cpu_and_tpu():
  entry = registry.SCAN_REGISTRY[IMPL]
  assert entry.platforms == ("cpu", "tpu") and entry.takes_interpret
  assert IMPL in registry.runs_on("tpu") and IMPL not in registry.runs_on("gpu")
  assert "pallas" in registry.runs_on("tpu")              # "pallas": this device's kernel


# ----------------------------------------------------------------------------------
# Compiling for TPU without one (scripts/tpu_compile_check.py; needs libtpu, a separate
# venv: the script's docstring). Mosaic's layout passes run there, not in lowering.


def test_compile_check_without_libtpu_says_how_to_install_it():
  import subprocess
  import sys
  if importlib.util.find_spec("libtpu") is not None:
    pytest.skip("libtpu is installed here")
  result = subprocess.run([sys.executable, "scripts/tpu_compile_check.py"],
                          capture_output=True, text=True, check=False,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode != 0 and "libtpu is not installed" in result.stderr
  assert "jax[tpu]" in result.stderr


def test_kernel_compiles_for_a_tpu_topology_with_libtpu():
  """With libtpu (not in CI): the kernel's forward and backward through Mosaic's own
  passes for one v5e chip, with no TPU attached."""
  pytest.importorskip("libtpu")
  spec = importlib.util.spec_from_file_location(
      "tpu_compile_check", os.path.join(os.path.dirname(__file__), "..", "scripts",
                                        "tpu_compile_check.py"))
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  device = lowering.tpu_topology_device("v5e:2x2")
  for name, fn in script.kernel_functions("cross").items():
    row = script.attempt("v5e:2x2", device, name, fn,
                         script.scan_args("cross", (1, 8, 6, 130), 3, "bfloat16"))
    assert row.ok, row.error
    assert row.tpu_kernels == (1 if name == "forward" else 2)
