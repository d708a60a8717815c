"""The scan-implementation registry: its answers are the capability lists and choices
the library has always given, and the benchmark-only "identity" scan is reachable from a
benchmark only. Kernel tolerances and the timing helpers import nothing heavy."""

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from mamkpd_jax import kernels
from mamkpd_jax.kernels import selective_scan_cpu, tolerances
from mamkpd_jax.models import ModelConfig, model_config
from scan_inputs import cross_inputs

CONFIGURABLE = {"reference", "pallas", "pallas_triton", "pallas_mosaic", "pallas_tpu",
                "chunked", "onnx", "cpu_ffi"}
PALLAS = {"pallas", "pallas_triton", "pallas_mosaic", "pallas_tpu"}


def test_capability_lists_are_the_registry_answers():
  assert set(kernels.SCAN_IMPLS) == CONFIGURABLE == set(kernels.scan_impls())
  assert kernels.PURE_JAX_IMPLS == ("reference", "chunked", "onnx")
  assert kernels.CPU_ONLY_IMPLS == ("cpu_ffi",)
  assert set(kernels.LOW_RANK_DELTA_IMPLS) == {"reference", "chunked", "onnx", "cpu_ffi"}
  assert {n for n in kernels.SCAN_IMPLS if kernels.SCAN_IMPLS[n].takes_interpret} == PALLAS
  assert set(kernels.runs_on("cpu")) == CONFIGURABLE
  assert set(kernels.runs_on("gpu")) == CONFIGURABLE - {"cpu_ffi", "pallas_tpu"}
  # "pallas" is the kernel of the device at hand: the TPU's on a TPU.
  assert set(kernels.runs_on("tpu")) == {"reference", "chunked", "onnx", "pallas",
                                         "pallas_tpu"}


@pytest.mark.parametrize("compiler", [True, False])
def test_auto_picks_by_backend(monkeypatch, compiler):
  monkeypatch.setattr(selective_scan_cpu, "available", lambda: compiler)
  assert kernels.resolve_impl("auto", "cpu") == ("cpu_ffi" if compiler else "chunked")
  assert kernels.resolve_impl("auto", "gpu") == "pallas"
  assert kernels.resolve_impl("auto", "tpu") == "pallas_tpu"
  for name in CONFIGURABLE:                                  # explicit names stay
    assert kernels.resolve_impl(name, "gpu") == name


def test_exports_run_a_portable_scan():
  """An export never holds the CPU kernel (a custom call of this process only)."""
  expected = {name: name for name in CONFIGURABLE} | {"cpu_ffi": "chunked"}
  assert {name: kernels.portable_impl(name) for name in CONFIGURABLE} == expected
  assert kernels.portable_impl("auto", "cpu") == "chunked"
  assert kernels.portable_impl("auto", "gpu") == "pallas"


def test_identity_is_registered_for_benchmarks_only():
  assert "identity" in kernels.SCAN_REGISTRY and kernels.SCAN_REGISTRY["identity"].benchmark_only
  assert "identity" not in kernels.SCAN_IMPLS and "identity" not in kernels.PURE_JAX_IMPLS
  assert "identity" not in kernels.runs_on("cpu")
  assert "identity" in kernels.scan_impls(benchmark_only=True)
  assert "identity" in kernels.runs_on("cpu", benchmark_only=True)
  for platform in ("cpu", "gpu", "tpu"):
    assert kernels.resolve_impl("auto", platform) != "identity"
  config = model_config("tiny")
  config.scan_impl = "identity"
  with pytest.raises(ValueError, match="scan_impl='identity': available implementations"):
    ModelConfig.from_config(config)


def test_identity_scan_is_d_times_u_merged():
  """Every direction's y = D_k * u, merged back in row-major order: x * sum_k D_k, also
  when delta comes as SS2D's unapplied LowRankDelta."""
  inputs = cross_inputs(3, 2, 3, 5, 4, 2)
  expected = np.asarray(inputs["x"]) * np.asarray(inputs["D"]).reshape(4, 4).sum(0)
  y = kernels.cross_selective_scan(**inputs, impl="identity")
  np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-6, atol=1e-6)
  dts = jnp.ones((2, 3, 5, 4, 2), jnp.float32)
  low_rank = kernels.LowRankDelta(dts, jnp.ones((4, 4, 2), jnp.float32))
  y = kernels.cross_selective_scan(**{**inputs, "delta": low_rank}, impl="identity")
  np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="no plain selective scan"):
    kernels.selective_scan(jnp.zeros((1, 2, 4)), jnp.zeros((1, 2, 4)), jnp.zeros((4, 1)),
                           jnp.zeros((1, 2, 1, 1)), jnp.zeros((1, 2, 1, 1)), jnp.zeros(4),
                           jnp.zeros(4), impl="identity")


def test_benchmark_offers_identity_and_names_it_on_a_typo():
  from mamkpd_jax.commands import benchmark   # pylint: disable=import-outside-toplevel
  benchmark.Settings(scan_impls=("auto", "identity", "onnxruntime")).check()
  with pytest.raises(ValueError, match="--scan_impls: unknown 'identty'.*identity"):
    benchmark.Settings(scan_impls=("identty",)).check()


def test_tolerance_ratio_is_one_where_assert_close_stops_passing():
  want = np.linspace(-2.0, 3.0, 50, dtype=np.float32)
  rtol = tolerances.GRAD_RTOL["bfloat16"]
  bound = tolerances.atol(want, rtol) + rtol * np.abs(want)           # per element
  for scale, passes in ((0.9, True), (1.1, False)):
    got = want + scale * bound * np.where(np.arange(50) == 7, 1.0, 0.0)
    assert (tolerances.tolerance_ratio(got, want, rtol) <= 1.0) == passes
    if passes:
      tolerances.assert_close(got, want, rtol)
    else:
      with pytest.raises(AssertionError):
        tolerances.assert_close(got, want, rtol)


def imported_modules(statement):
  """The mamkpd_jax modules a fresh interpreter has after `statement`."""
  code = (f"{statement}\nimport sys\n"
          "print(' '.join(m for m in sys.modules if m.startswith('mamkpd_jax')))")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=True)
  return set(result.stdout.split())


def test_tolerances_and_timing_import_nothing_heavy():
  heavy = ("mamkpd_jax.training", "mamkpd_jax.inference", "mamkpd_jax.export",
           "mamkpd_jax.benchmarking.models")
  for statement in ("from mamkpd_jax.kernels import tolerances",
                    "from mamkpd_jax.benchmarking import timing, roofline"):
    loaded = imported_modules(statement)
    assert not [m for m in loaded if m.startswith(heavy)], (statement, loaded)
  assert not [m for m in imported_modules("from mamkpd_jax.kernels import tolerances")
              if m.startswith("mamkpd_jax.benchmarking")]
