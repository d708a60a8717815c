"""The reference selective scan against a float64 numpy loop of the recurrence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpy_refs
from conftest import largest_intermediate
from scan_inputs import scan_inputs
from mamkpd_jax.kernels import selective_scan, selective_scan_reference


# (batch, L, channels, G, N, chunk_size)
CASES = [
    (2, 1, 4, 1, 1, 64),       # a single token
    (1, 7, 6, 1, 3, 64),       # L shorter than a chunk, odd N
    (2, 48, 8, 4, 16, 64),     # four groups (SS2D's layout), d_state 16
    (1, 768, 8, 4, 1, 64),     # 12 chunks, d_state 1 (MamKPD's setting)
    (2, 100, 12, 4, 3, 64),    # L not a multiple of the chunk: padded last chunk
    (2, 100, 12, 4, 3, 7),     # many small chunks, padded
]
# Per-dtype tolerances: float32 arithmetic against float64; bfloat16 u/delta are
# compared against numpy on the same bf16-rounded values, so only f32 error remains.
TOLERANCE = {jnp.float32: 2e-5, jnp.bfloat16: 5e-5}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("batch,length,channels,groups,d_state,chunk", CASES)
def test_matches_numpy_loop(batch, length, channels, groups, d_state, chunk, dtype):
  inputs = scan_inputs(length, batch, length, channels, groups, d_state)
  for name in ("u", "delta"):  # bfloat16 u and delta only, as SS2D passes them
    inputs[name] = inputs[name].astype(dtype)
  fn = jax.jit(lambda kw: selective_scan_reference(**kw, chunk_size=chunk))
  y = fn(inputs)
  assert y.dtype == jnp.float32 and y.shape == (batch, length, channels)
  expected = numpy_refs.selective_scan(**{k: np.asarray(v, np.float64)
                                          for k, v in inputs.items()})
  scale = np.abs(expected).max()
  np.testing.assert_allclose(np.asarray(y), expected, atol=TOLERANCE[dtype] * scale,
                             rtol=TOLERANCE[dtype])


def test_without_softplus():
  inputs = scan_inputs(1, 2, 20, 4, 2, 2)
  inputs["delta"] = np.abs(inputs["delta"])
  inputs["delta_bias"] = np.abs(inputs["delta_bias"])
  y = selective_scan(**inputs, delta_softplus=False)
  expected = numpy_refs.selective_scan(**inputs, delta_softplus=False)
  np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)


def test_gradients_match_finite_differences():
  """d(sum(w * y))/d(input) for every input: JAX autodiff (f32) vs central FD (f64)."""
  inputs = scan_inputs(3, 1, 6, 4, 2, 3)
  weights = np.random.default_rng(4).standard_normal((1, 6, 4))
  names = list(inputs)

  def loss_jax(*args):
    y = selective_scan_reference(**dict(zip(names, args)), chunk_size=4)  # 2 chunks
    return jnp.sum(y * weights)

  grads = jax.grad(loss_jax, argnums=tuple(range(len(names))))(
      *[jnp.asarray(inputs[n]) for n in names])
  eps = 1e-6
  for name, grad in zip(names, grads):
    base = {n: np.asarray(v, np.float64) for n, v in inputs.items()}
    numeric = np.zeros(base[name].shape)
    for index in np.ndindex(base[name].shape):
      plus, minus = dict(base), dict(base)
      plus[name], minus[name] = base[name].copy(), base[name].copy()
      plus[name][index] += eps
      minus[name][index] -= eps
      numeric[index] = np.sum(weights * (numpy_refs.selective_scan(**plus)
                                         - numpy_refs.selective_scan(**minus))) / (2 * eps)
    np.testing.assert_allclose(np.asarray(grad), numeric, rtol=1e-3,
                               atol=1e-4 * np.abs(numeric).max(), err_msg=name)


def test_memory_no_full_state_tensor():
  """Forward and backward never hold a (batch, L, channels, N) tensor."""
  batch, length, channels, groups, d_state = 1, 1024, 8, 1, 4
  inputs = scan_inputs(0, batch, length, channels, groups, d_state)
  loss = lambda kw: jnp.sum(selective_scan_reference(**kw))
  jaxpr = jax.make_jaxpr(jax.value_and_grad(loss))(inputs)
  full_state = batch * length * channels * d_state
  assert largest_intermediate(jaxpr.jaxpr) < full_state


@pytest.mark.parametrize("name,shape,message", [
    ("A", (5, 2), "A has shape"),
    ("C", (1, 8, 2, 3), "C has shape"),
    ("D", (4, 1), "D has shape"),
])
def test_bad_shapes_name_the_argument(name, shape, message):
  inputs = scan_inputs(0, 1, 8, 4, 2, 2)
  inputs[name] = np.zeros(shape, np.float32)
  with pytest.raises(ValueError, match=message):
    selective_scan(**inputs)


def test_groups_must_divide_channels():
  inputs = scan_inputs(0, 1, 8, 6, 4, 2)
  with pytest.raises(ValueError, match="divisible"):
    selective_scan(**inputs)


def test_unknown_impl_is_an_error_not_a_fallback():
  with pytest.raises(ValueError, match="unknown impl 'triton'.*reference"):
    selective_scan(**scan_inputs(0, 1, 8, 4, 2, 2), impl="triton")
