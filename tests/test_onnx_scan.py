"""scan_impl="onnx" (the loop-free scan, unrolled across chunks) against the reference, and its ONNX form.

Outputs and the gradient of every input over the Pallas tests' table of cases (L 1 to
768, d_state 1/3/16, groups 1/4, bfloat16) and the fused cross-scan's; a long sequence
(L 6912) and every chunk size against the float64 numpy loop. With jax2onnx and
onnxruntime installed: the converted cross-scan has no Loop and ONNX Runtime equals JAX.
"""

import functools
import importlib

import jax
import numpy as np
import pytest

import numpy_refs
from mamkpd_jax import kernels
from mamkpd_jax.kernels import selective_scan_onnx  # the function (kernels/__init__)
selective_scan_onnx_module = importlib.import_module("mamkpd_jax.kernels.selective_scan_onnx")
from scan_inputs import CASES, CROSS_CASES, cross_inputs, scan_inputs
from test_chunked_scan import compare
from test_pallas_scan import RTOL


@pytest.mark.parametrize("batch,length,channels,groups,d_state,dtype", CASES)
def test_matches_reference(batch, length, channels, groups, d_state, dtype):
  inputs = scan_inputs(length + channels, batch, length, channels, groups, d_state, dtype)
  compare(inputs, RTOL[dtype], impl="onnx")


@pytest.mark.parametrize("batch,height,width,per_group,d_state", CROSS_CASES)
def test_fused_cross_scan_matches_reference(batch, height, width, per_group, d_state):
  compare(cross_inputs(height * width, batch, height, width, per_group, d_state), 2e-5,
          cross=True, impl="onnx")


def float64_loop(inputs):
  return numpy_refs.selective_scan(**{k: np.asarray(v, np.float64)
                                      for k, v in inputs.items()})


@pytest.mark.parametrize("decay", ["near_0", "near_1"])
def test_long_sequence_does_not_drift(decay):
  """L 6912 (three levels of chunk totals): decays ~1 - 1e-5 (the state sums the whole
  sequence) and exp(-250) = 0 (each state forgets its past at once)."""
  inputs = scan_inputs(5, 1, 6912, 8, 4, 1)
  near_1 = decay == "near_1"
  inputs["A"] = np.full(inputs["A"].shape, -1e-4 if near_1 else -50.0, np.float32)
  inputs["delta_bias"] = np.full(inputs["delta_bias"].shape, -4.0 if near_1 else 5.0,
                                 np.float32)
  y = jax.jit(functools.partial(kernels.selective_scan, impl="onnx"))(**inputs)
  expected = float64_loop(inputs)
  np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4,
                             atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("chunk_size", [2, 5, 8, 64])
def test_chunk_size_does_not_change_the_result(chunk_size):
  """L 50: padded last chunks, one to three levels of totals."""
  inputs = scan_inputs(2, 2, 50, 12, 4, 3)
  y = selective_scan_onnx(**inputs, chunk_size=chunk_size)
  expected = float64_loop(inputs)
  np.testing.assert_allclose(np.asarray(y), expected, rtol=2e-5,
                             atol=2e-5 * np.abs(expected).max())


@pytest.mark.parametrize("chunk_size", [2, 5, 16])
def test_cross_scan_with_low_rank_delta_at_every_chunk_size(chunk_size):
  """7 x 9 map (L 63): the reverse scans (directions 2, 3) with padding before the tokens,
  one to five levels of chunk totals, dt_proj reordered per direction pair; outputs and
  the gradients of x, dts and the dt_proj weight against the reference."""
  inputs = cross_inputs(chunk_size, 2, 7, 9, 6, 2)
  rng = np.random.default_rng(chunk_size)
  dts = rng.standard_normal((2, 7, 9, 4, 3)).astype(np.float32)
  weight = (0.5 * rng.standard_normal((4, 6, 3))).astype(np.float32)
  rest = {k: v for k, v in inputs.items() if k not in ("x", "delta")}

  def loss(scan, x, dts, weight):
    y = scan(x, kernels.LowRankDelta(dts, weight), **rest)
    return jax.numpy.sum(y * jax.numpy.cos(y)), y

  onnx_scan = functools.partial(kernels.cross_selective_scan_onnx, chunk_size=chunk_size)
  reference = lambda x, delta, **kw: kernels.cross_selective_scan(
      x, delta.materialize(), impl="reference", **kw)
  grad = lambda scan: jax.jit(jax.grad(functools.partial(loss, scan), argnums=(0, 1, 2),
                                       has_aux=True))(inputs["x"], dts, weight)
  (grads, y), (grads_ref, y_ref) = grad(onnx_scan), grad(reference)
  np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=2e-5,
                             atol=2e-5 * np.abs(np.asarray(y_ref)).max())
  for name, g, g_ref in zip(("x", "dts", "weight"), grads, grads_ref):
    g, g_ref = np.asarray(g), np.asarray(g_ref)
    np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-4 * np.abs(g_ref).max(),
                               err_msg=name)


def test_chunk_size_below_two_is_an_error():
  with pytest.raises(ValueError, match="chunk_size must be >= 2"):
    selective_scan_onnx(**scan_inputs(0, 1, 8, 4, 1, 1), chunk_size=1)


def test_converts_to_onnx_without_loops_and_runs_in_onnxruntime():
  jax2onnx = pytest.importorskip("jax2onnx")
  onnxruntime = pytest.importorskip("onnxruntime")
  inputs = cross_inputs(3, 2, 6, 5, 8, 1)
  maps = ("x", "delta", "B", "C")
  scan = lambda x, delta, B, C: kernels.cross_selective_scan(
      x, delta, inputs["A"], B, C, inputs["D"], inputs["delta_bias"], impl="onnx")
  model = jax2onnx.to_onnx(scan, [inputs[name] for name in maps])
  op_types = {node.op_type for node in model.graph.node}
  assert not op_types & {"Loop", "Scan", "If"}, op_types
  session = onnxruntime.InferenceSession(model.SerializeToString(),
                                         providers=["CPUExecutionProvider"])
  feed = {arg.name: np.asarray(inputs[name])
          for arg, name in zip(session.get_inputs(), maps)}
  want = np.asarray(scan(*(inputs[name] for name in maps)))
  np.testing.assert_allclose(session.run(None, feed)[0], want, rtol=1e-5,
                             atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("height,chunk_size", [(7, 3), (8, 4), (5, 16)])
def test_column_scan_matches_a_loop_in_column_order(height, chunk_size, reverse):
  """_column_scan on row-major (b, H, W, P) arrays equals h_t = a_t h_{t-1} + v_t run
  in column-major token order (reversed with `reverse`), by a numpy loop: columns
  padded with identity steps (H 7, 5), exact fits (H 8), one chunk per column (H 5)."""
  rng = np.random.default_rng(height + chunk_size)
  width = 4
  decay = rng.uniform(0.2, 1.0, (2, height, width, 3)).astype(np.float32)
  drive = rng.standard_normal((2, height, width, 3)).astype(np.float32)
  got = np.asarray(selective_scan_onnx_module._column_scan(
      decay, drive, chunk_size, reverse=reverse))
  order = [(h, w) for w in range(width) for h in range(height)]
  want, state = np.zeros_like(drive, np.float64), 0.0
  for h, w in (order[::-1] if reverse else order):
    state = decay[:, h, w] * state + drive[:, h, w]
    want[:, h, w] = state
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
