"""scan_impl="chunked" against the reference: outputs and the gradient of every input.

The table of cases is the Pallas tests' (L 1 to 768, d_state 1/3/16, groups 1/4, channel
counts that fill no tile, bfloat16), plus a long sequence (L 6912, the HR branch at
384x288) where a carried state must not drift, checked against the float64 numpy loop,
and decays near 0 and near 1.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpy_refs
from conftest import jitted_forward, with_config
from mamkpd_jax import kernels
from mamkpd_jax.kernels import selective_scan_chunked  # the function (kernels/__init__)
from scan_inputs import CASES, CROSS_CASES, cross_inputs, scan_inputs, values_and_grads
from test_pallas_scan import RTOL, assert_close
from conftest import largest_intermediate


@functools.lru_cache(maxsize=None)
def scan_fn(impl, cross=False, **kwargs):
  """One jitted scan per (impl, op, kwargs), shared by the cases of equal shapes."""
  op = kernels.cross_selective_scan if cross else kernels.selective_scan
  return jax.jit(functools.partial(op, impl=impl, **kwargs))


def compare(inputs, rtol, cross=False, impl="chunked", **kwargs):
  """`impl` vs reference on `inputs` (outputs, all gradients); returns impl's output."""
  run = lambda name: values_and_grads(scan_fn(name, cross, **kwargs), inputs)
  (y, grads), (y_ref, grads_ref) = run(impl), run("reference")
  assert y.dtype == jnp.float32 and y.shape == y_ref.shape
  assert_close(y, y_ref, 2e-5, "y")
  for name in inputs:
    assert grads[name].dtype == inputs[name].dtype, name
    assert_close(grads[name], grads_ref[name], rtol, name)
  return y


@pytest.mark.parametrize("batch,length,channels,groups,d_state,dtype", CASES)
def test_matches_reference(batch, length, channels, groups, d_state, dtype):
  inputs = scan_inputs(length + channels, batch, length, channels, groups, d_state, dtype)
  compare(inputs, RTOL[dtype])


def test_without_softplus():
  inputs = scan_inputs(0, 1, 20, 8, 2, 2)
  inputs["delta"] = jnp.abs(inputs["delta"])
  inputs["delta_bias"] = jnp.abs(inputs["delta_bias"])
  compare(inputs, 2e-5, delta_softplus=False)


@pytest.mark.parametrize("batch,height,width,per_group,d_state", CROSS_CASES)
def test_fused_cross_scan_matches_reference(batch, height, width, per_group, d_state):
  compare(cross_inputs(height * width, batch, height, width, per_group, d_state), 2e-5,
          cross=True)


def compare_low_rank(impl, batch, height, width, per_group, d_state, rank):
  """`impl` given a LowRankDelta (SS2D's dt_proj) == the reference given the einsum's
  delta: outputs and the gradients of x, dts, the dt_proj weight and the rest."""
  inputs = cross_inputs(rank, batch, height, width, per_group, d_state)
  rng = np.random.default_rng(rank)
  dts = jnp.asarray(rng.standard_normal((batch, height, width, 4, rank)), jnp.float32)
  weight = jnp.asarray(0.5 * rng.standard_normal((4, per_group, rank)) / np.sqrt(rank),
                       jnp.float32)
  inputs = {"dts": dts, "weight": weight,
            **{name: value for name, value in inputs.items() if name != "delta"}}

  def scan(impl, materialise):
    def run(dts, weight, x, A, B, C, D, delta_bias):
      delta = kernels.LowRankDelta(dts, weight)
      return kernels.cross_selective_scan(
          x, delta.materialize() if materialise else delta, A, B, C, D, delta_bias,
          impl=impl)
    return jax.jit(run)

  y, grads = values_and_grads(scan(impl, False), inputs)
  y_ref, grads_ref = values_and_grads(scan("reference", True), inputs)
  assert_close(y, y_ref, 2e-5, "y")
  for name in inputs:
    assert_close(grads[name], grads_ref[name], 2e-5, name)


@pytest.mark.parametrize("batch,height,width,per_group,d_state,rank",
                         [(*CROSS_CASES[0], 3), (*CROSS_CASES[1], 1)])
def test_low_rank_delta_matches_the_materialised_reference(batch, height, width, per_group,
                                                         d_state, rank):
  """SS2D's dt_proj inside the chunked loop (kernels.LowRankDelta)."""
  compare_low_rank("chunked", batch, height, width, per_group, d_state, rank)


def test_low_rank_delta_is_materialised_for_the_other_impls():
  inputs = cross_inputs(0, 1, 3, 4, 8, 1)
  dts = jnp.ones((1, 3, 4, 4, 2)) * 0.1
  weight = jnp.ones((4, 8, 2)) * 0.3
  rest = {name: value for name, value in inputs.items() if name not in ("x", "delta")}
  low_rank = kernels.cross_selective_scan(inputs["x"], kernels.LowRankDelta(dts, weight),
                                          impl="pallas_triton", **rest)
  full = kernels.cross_selective_scan(inputs["x"], kernels.as_delta(
      kernels.LowRankDelta(dts, weight)), impl="reference", **rest)
  assert_close(low_rank, full, 2e-5)


@pytest.mark.parametrize("decay", ["near_0", "near_1"])
def test_long_sequence_does_not_drift(decay):
  """L 6912 (the 384x288 HR branch's map): float64 loop for y, reference for gradients.

  near_1: A = -1e-4 and small delta, decay ~ 1 - 1e-5 per token, so the state sums the
  whole sequence and any error in the carried state would accumulate. near_0: A = -50
  and delta ~ 5, decay exp(-250) = 0 in float32: each state forgets its past at once.
  """
  inputs = scan_inputs(5, 1, 6912, 8, 4, 1)
  if decay == "near_1":
    inputs["A"] = jnp.full_like(inputs["A"], -1e-4)
    inputs["delta_bias"] = jnp.full_like(inputs["delta_bias"], -4.0)   # softplus ~ 0.02
  else:
    inputs["A"] = jnp.full_like(inputs["A"], -50.0)
    inputs["delta_bias"] = jnp.full_like(inputs["delta_bias"], 5.0)
  y = compare(inputs, 1e-4)
  expected = numpy_refs.selective_scan(**{k: np.asarray(v, np.float64)
                                          for k, v in inputs.items()})
  np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4,
                             atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("chunk_size", [1, 5, 64])
def test_chunk_size_does_not_change_the_result(chunk_size):
  """Padded last chunks (L 50 is no multiple of 5 nor 64) against the float64 loop."""
  inputs = scan_inputs(2, 2, 50, 12, 4, 3)
  y = selective_scan_chunked(**inputs, chunk_size=chunk_size)
  expected = numpy_refs.selective_scan(**{k: np.asarray(v, np.float64)
                                          for k, v in inputs.items()})
  np.testing.assert_allclose(np.asarray(y), expected, rtol=2e-5,
                             atol=2e-5 * np.abs(expected).max())


def test_memory_no_full_state_tensor():
  """Forward and backward never hold a (batch, L, channels, N) tensor."""
  batch, length, channels, groups, d_state = 1, 1024, 8, 1, 4
  inputs = scan_inputs(0, batch, length, channels, groups, d_state)
  loss = lambda kw: jnp.sum(selective_scan_chunked(**kw))
  jaxpr = jax.make_jaxpr(jax.value_and_grad(loss))(inputs)
  assert largest_intermediate(jaxpr.jaxpr) < batch * length * channels * d_state


def test_chunked_takes_no_interpret_flag():
  with pytest.raises(ValueError, match="Pallas impls only"):
    kernels.selective_scan(**scan_inputs(0, 1, 8, 4, 1, 1), impl="chunked", interpret=True)


def test_auto_resolves_by_backend():
  """On a CPU "auto" is the compiled kernel where it builds (tests/test_cpu_scan.py)."""
  assert kernels.resolve_impl("auto", "cpu") in ("cpu_ffi", "chunked")
  assert kernels.resolve_impl("auto", "gpu") == "pallas"
  assert kernels.resolve_impl("reference", "gpu") == "reference"   # explicit names stay
  with pytest.raises(ValueError, match="unknown impl 'triton'.*'auto'.*chunked"):
    kernels.resolve_impl("triton")


def test_model_default_is_auto_and_equals_reference(tiny_model):
  """The tiny model's default scan ("auto": the CPU kernel, or chunked without a
  compiler) against the reference."""
  assert tiny_model.config.scan_impl == "auto"
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 64, 48, 3)), jnp.uint8)
  forward = jitted_forward()
  reference = with_config(tiny_model, scan_impl="reference")
  np.testing.assert_allclose(np.asarray(forward(tiny_model, images)),
                             np.asarray(forward(reference, images)), rtol=1e-4, atol=1e-5)


def test_exports_with_a_symbolic_batch():
  """`mamkpd export`'s symbolic batch accepts "chunked": it must trace with batch "b"."""
  inputs = cross_inputs(0, 2, 5, 7, 6, 1)
  mapped = ("x", "delta", "B", "C")               # the per-image inputs
  scan = lambda *maps: kernels.cross_selective_scan(
      *maps[:2], inputs["A"], *maps[2:], inputs["D"], inputs["delta_bias"], impl="chunked")
  batch = jax.export.symbolic_shape("b")[0]
  specs = [jax.ShapeDtypeStruct((batch, *inputs[n].shape[1:]), inputs[n].dtype)
           for n in mapped]
  exported = jax.export.export(jax.jit(scan))(*specs)
  maps = [inputs[n] for n in mapped]
  np.testing.assert_allclose(np.asarray(exported.call(*maps)), np.asarray(scan(*maps)),
                             rtol=1e-5, atol=1e-5)
