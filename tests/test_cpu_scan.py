"""scan_impl="cpu_ffi" (SS2D's scan as a compiled CPU kernel) against the reference.

Outputs and the gradient of every input on the cross-scan cases of the Pallas tests plus
channel counts that fill no 64-channel tile, d_state 1/3/16, a LowRankDelta of rank 1 to
24, bfloat16 inputs, no softplus, and the 96x72 map (L 6912, the 384x288 HR branch) with
decays near 0 and near 1 against the float64 numpy loop. Then the kernel's build (cached,
errors naming the compiler), what "auto" and exports pick. (A batch sharded over two
devices: tests/test_batch_parallel.py.)

Skipped, with the reason, only where no C++ compiler is installed; a failing build fails.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpy_refs
from mamkpd_jax import kernels
from mamkpd_jax.kernels import cpu_kernels, selective_scan_cpu
from scan_inputs import CROSS_CASES, cross_inputs
from test_chunked_scan import compare, compare_low_rank
from test_pallas_scan import RTOL


@pytest.fixture(scope="module", autouse=True)
def kernel_built():
  try:
    cpu_kernels.load()
  except cpu_kernels.KernelBuildError as error:
    if "needs a C++17 compiler" in str(error):
      pytest.skip(str(error))
    raise


# (batch, H, W, P, N): the Pallas cross cases, then 130 channels (tiles of 64, 64, 2) at
# batch 3, and MamKPD's d_state 1 on an odd map.
CASES = [*CROSS_CASES, (3, 3, 5, 130, 3), (2, 9, 4, 65, 1)]


@pytest.mark.parametrize("batch,height,width,per_group,d_state", CASES)
def test_matches_reference(batch, height, width, per_group, d_state):
  compare(cross_inputs(height * width, batch, height, width, per_group, d_state), 2e-5,
          cross=True, impl="cpu_ffi")


def test_bfloat16_inputs():
  inputs = cross_inputs(1, 2, 5, 7, 70, 1, jnp.bfloat16)
  compare(inputs, RTOL[jnp.bfloat16], cross=True, impl="cpu_ffi")


def test_without_softplus():
  inputs = cross_inputs(2, 1, 4, 6, 12, 2)
  inputs["delta"] = jnp.abs(inputs["delta"])
  inputs["delta_bias"] = jnp.abs(inputs["delta_bias"])
  compare(inputs, 2e-5, cross=True, impl="cpu_ffi", delta_softplus=False)


@pytest.mark.parametrize("rank,per_group,d_state", [(1, 6, 3), (6, 70, 1), (24, 130, 16)])
def test_low_rank_delta_matches_the_materialised_reference(rank, per_group, d_state):
  """dt_proj in the kernel (a LowRankDelta), on a 5x3 map at batch 2."""
  compare_low_rank("cpu_ffi", 2, 5, 3, per_group, d_state, rank)


@pytest.mark.parametrize("decay", ["near_0", "near_1"])
def test_long_map_does_not_drift(decay):
  """96x72 (L 6912) against the float64 loop: near_1 (A -1e-4, delta ~0.02: the state
  sums the whole sequence), near_0 (A -50, delta ~5: every step forgets the past)."""
  inputs = cross_inputs(5, 1, 96, 72, 8, 1)
  if decay == "near_1":
    inputs["A"] = jnp.full_like(inputs["A"], -1e-4)
    inputs["delta_bias"] = jnp.full_like(inputs["delta_bias"], -4.0)
  else:
    inputs["A"] = jnp.full_like(inputs["A"], -50.0)
    inputs["delta_bias"] = jnp.full_like(inputs["delta_bias"], 5.0)
  y = jax.jit(lambda kw: kernels.cross_selective_scan(**kw, impl="cpu_ffi"))(inputs)
  expected = numpy_refs.cross_selective_scan(**{k: np.asarray(v, np.float64)
                                                for k, v in inputs.items()})
  np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4,
                             atol=1e-5 * np.abs(expected).max())


def test_auto_is_the_kernel_on_cpu_and_chunked_without_a_compiler(monkeypatch):
  assert kernels.resolve_impl("auto", "cpu") == "cpu_ffi"
  assert kernels.resolve_impl("auto", "gpu") == "pallas"
  monkeypatch.setattr(selective_scan_cpu, "available", lambda: False)
  assert kernels.resolve_impl("auto", "cpu") == "chunked"
  assert kernels.resolve_impl("cpu_ffi", "cpu") == "cpu_ffi"       # explicit names stay


def test_exports_use_the_chunked_scan():
  assert kernels.portable_impl("cpu_ffi") == "chunked"
  assert kernels.portable_impl("auto", "cpu") == "chunked"
  assert kernels.portable_impl("auto", "gpu") == "pallas"
  assert kernels.portable_impl("reference") == "reference"


def test_build_is_cached_per_machine(tmp_path, monkeypatch):
  """A second build finds the library; another cache dir builds its own."""
  path = cpu_kernels.build()
  assert path.exists() and path.suffix == ".so"
  built_at = path.stat().st_mtime_ns
  assert cpu_kernels.build() == path and path.stat().st_mtime_ns == built_at
  monkeypatch.setenv("MAMKPD_JAX_CACHE", str(tmp_path))
  other = cpu_kernels.build()
  assert other.parent == tmp_path and other.exists()
  assert [p.name for p in tmp_path.iterdir()] == [other.name]     # no scratch left


def test_missing_compiler_is_an_error_naming_it(tmp_path, monkeypatch):
  monkeypatch.setenv("MAMKPD_JAX_CACHE", str(tmp_path))
  monkeypatch.setenv("CXX", "/nonexistent/c++")
  with pytest.raises(cpu_kernels.KernelBuildError,
                     match=r"\$CXX=/nonexistent/c\+\+ was not found"):
    cpu_kernels.build()
  monkeypatch.delenv("CXX")
  monkeypatch.setattr(cpu_kernels, "COMPILERS", ("no-such-compiler++",))
  with pytest.raises(cpu_kernels.KernelBuildError, match="needs a C\\+\\+17 compiler"):
    cpu_kernels.build()


def test_unwritable_cache_is_an_error_naming_it(tmp_path, monkeypatch):
  not_a_folder = tmp_path / "file"
  not_a_folder.write_text("")
  monkeypatch.setenv("MAMKPD_JAX_CACHE", str(not_a_folder))
  with pytest.raises(cpu_kernels.KernelBuildError,
                     match=f"cannot write the CPU kernels to {not_a_folder}.*"
                           "MAMKPD_JAX_CACHE"):
    cpu_kernels.build()


def test_compile_error_quotes_the_compiler(tmp_path, monkeypatch):
  broken = tmp_path / "broken.cc"
  broken.write_text("this is not C++\n")
  monkeypatch.setenv("MAMKPD_JAX_CACHE", str(tmp_path / "cache"))
  monkeypatch.setattr(cpu_kernels, "SOURCES", (broken,))
  with pytest.raises(cpu_kernels.KernelBuildError, match="building broken.cc failed"):
    cpu_kernels.build()
  assert list((tmp_path / "cache").iterdir()) == []               # nothing half-written
