"""kernels/dcnv4.py against independent references (docs/hrvmamba.md §4).

- numpy_refs.dcnv4, a float64 loop written from the equations of docs/hrvmamba.md §4 (values, and the
  lane layout and kernel point order it encodes);
- invariants with zero offsets: a 3x3 box sum, and a depth-wise convolution whose taps
  are the masks (this pins the x-major point order, which a box sum cannot see);
- scipy's map_coordinates (order 1, zeros outside) for the bilinear sampling itself;
- finite differences in float64 for the gradients w.r.t. value and offset_mask;
- the compiled CPU kernel (impl="cpu_ffi") against the pure-JAX op (impl="jax"), forward
  and gradient, on odd maps, every D the kernel specialises, boundary and exactly-integer
  positions, groups.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import ndimage

import numpy_refs
from conftest import largest_intermediate
from mamkpd_jax.kernels import cpu_kernels, dcnv4
from mamkpd_jax.kernels.dcnv4 import resolve_impl

STATIC = ("groups", "kernel_size", "stride", "padding", "dilation", "offset_scale", "impl")
dcnv4_jit = jax.jit(dcnv4, static_argnames=STATIC)
needs_cpu_kernel = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not cpu_kernels.available(),
    reason="the compiled CPU kernels need the CPU backend and a C++ compiler")
IMPLS = ["jax", pytest.param("cpu_ffi", marks=needs_cpu_kernel)]


def padded_lanes(groups, kernel_size):
  """DCNv4's offset_mask width: 3*K*G rounded up to a multiple of 8."""
  return 8 * -(-3 * kernel_size**2 * groups // 8)


def out_size(size, kernel_size, stride, padding, dilation):
  return (size + 2 * padding - (dilation * (kernel_size - 1) + 1)) // stride + 1


def random_inputs(seed, batch, height, width, groups, group_dim, kernel_size=3, stride=1,
                  padding=1, dilation=1, offset_range=1.0, extra_lanes=0):
  """value (N, H, W, G*D) and offset_mask (N, H_out, W_out, P) with uniform offsets in
  ±offset_range, standard-normal (signed, unnormalised) masks and random padding lanes."""
  rng = np.random.default_rng(seed)
  out_h, out_w = (out_size(s, kernel_size, stride, padding, dilation) for s in (height, width))
  lanes = padded_lanes(groups, kernel_size) + extra_lanes
  value = rng.normal(size=(batch, height, width, groups * group_dim)).astype(np.float32)
  offset_mask = rng.uniform(-offset_range, offset_range, (batch, out_h, out_w, lanes))
  num_points = kernel_size**2
  for g in range(groups):
    masks = slice(3 * num_points * g + 2 * num_points, 3 * num_points * (g + 1))
    offset_mask[..., masks] = rng.normal(size=offset_mask[..., masks].shape)
  return value, offset_mask.astype(np.float32)


# (batch, H, W, G, D, kernel_size, stride, padding, dilation, offset_scale, offset_range)
CASES = [
    (1, 4, 4, 1, 2, 3, 1, 1, 1, 1.0, 0.0),    # zero offsets: the regular 3x3 grid
    (2, 5, 7, 2, 3, 3, 1, 1, 1, 1.0, 2.5),    # non-square odd map; offsets leave the map
    (1, 7, 5, 3, 2, 3, 2, 1, 1, 1.0, 1.5),    # stride 2, three groups, odd output size
    (1, 6, 9, 1, 4, 3, 1, 2, 2, 1.0, 1.0),    # dilation 2 (padding 2 keeps the size)
    (2, 5, 6, 2, 2, 3, 2, 0, 2, 0.5, 2.0),    # stride 2 + dilation 2, no padding, scale 0.5
    (1, 4, 5, 1, 3, 5, 1, 2, 1, 1.5, 1.0),    # kernel 5 (K = 25), scale 1.5
    (1, 3, 3, 2, 2, 1, 1, 0, 1, 1.0, 3.0),    # kernel 1: one point per pixel
    (1, 2, 8, 8, 2, 3, 1, 1, 1, 1.0, 4.0),    # eight groups (HRVMamba's deepest branch)
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES)
def test_matches_numpy_loop(case, impl):
  batch, height, width, groups, dim, ks, stride, pad, dil, scale, spread = case
  value, offset_mask = random_inputs(0, batch, height, width, groups, dim, ks, stride, pad,
                                     dil, spread)
  params = dict(groups=groups, kernel_size=ks, stride=stride, padding=pad, dilation=dil,
                offset_scale=scale, impl=impl)
  got = dcnv4_jit(value, offset_mask, **params)
  params.pop("impl")
  want = numpy_refs.dcnv4(value, offset_mask, **params)
  assert got.shape == want.shape and got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_padding_lanes_are_never_read():
  """NaN and inf in the lanes past 3*K*G change nothing, in values or gradients."""
  value, offset_mask = random_inputs(1, 1, 5, 4, 2, 2, extra_lanes=3)
  garbage = offset_mask.copy()
  garbage[..., 3 * 9 * 2:] = np.nan
  garbage[..., -1] = np.inf
  clean = offset_mask.copy()
  clean[..., 3 * 9 * 2:] = 0.0
  np.testing.assert_array_equal(dcnv4_jit(value, garbage, groups=2),
                                dcnv4_jit(value, clean, groups=2))
  grad = jax.jit(jax.grad(lambda om: jnp.sum(dcnv4(value, om, groups=2))))(garbage)
  assert np.all(np.isfinite(grad)) and np.all(grad[..., 3 * 9 * 2:] == 0)


def test_zero_offsets_unit_masks_is_a_box_sum():
  """3x3 sum of the zero-padded map at every pixel."""
  value, offset_mask = random_inputs(2, 2, 5, 6, 2, 3, offset_range=0.0)
  offset_mask[..., 18:27] = 1.0
  offset_mask[..., 27 + 18:27 + 27] = 1.0
  padded = np.pad(value, ((0, 0), (1, 1), (1, 1), (0, 0)))
  box = sum(padded[:, dy:dy + 5, dx:dx + 6] for dy in range(3) for dx in range(3))
  np.testing.assert_allclose(dcnv4_jit(value, offset_mask, groups=2), box, rtol=1e-5,
                             atol=1e-5)


def test_zero_offsets_is_a_depthwise_conv_with_the_masks_as_taps():
  """Mask k = i*3 + j weights the tap at (dy, dx) = (j, i): the x-major point order."""
  rng = np.random.default_rng(3)
  groups, dim, stride, pad, dil = 2, 3, 2, 2, 2
  value = rng.normal(size=(1, 7, 8, groups * dim)).astype(np.float32)
  taps = rng.normal(size=(groups, 3, 3)).astype(np.float32)         # (G, dy, dx)
  out_h, out_w = out_size(7, 3, stride, pad, dil), out_size(8, 3, stride, pad, dil)
  offset_mask = np.zeros((1, out_h, out_w, padded_lanes(groups, 3)), np.float32)
  for g in range(groups):
    offset_mask[..., 27 * g + 18:27 * g + 27] = taps[g].T.reshape(9)  # k = 3*dx + dy
  kernel = np.repeat(taps, dim, axis=0).transpose(1, 2, 0)[:, :, None]  # (3, 3, 1, C) HWIO
  conv = jax.lax.conv_general_dilated(
      value, kernel, (stride, stride), [(pad, pad), (pad, pad)], rhs_dilation=(dil, dil),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups * dim,
      precision=jax.lax.Precision.HIGHEST)
  got = dcnv4_jit(value, offset_mask, groups=groups, stride=stride, padding=pad,
                  dilation=dil)
  np.testing.assert_allclose(got, conv, rtol=1e-5, atol=1e-5)


def test_one_point_is_zero_padded_bilinear_like_scipy():
  """kernel_size 1: out = m * V(y, x) at x = w + dx, y = h + dy, against map_coordinates
  (order 1, 'grid-constant' = zeros outside, interpolating across the border)."""
  value, offset_mask = random_inputs(4, 1, 6, 5, 1, 2, kernel_size=1, padding=0,
                                     offset_range=3.0)
  got = np.asarray(dcnv4_jit(value, offset_mask, groups=1, kernel_size=1, padding=0))
  rows, cols = np.meshgrid(np.arange(6), np.arange(5), indexing="ij")
  coords = [rows + offset_mask[0, ..., 1], cols + offset_mask[0, ..., 0]]
  for c in range(2):
    sampled = ndimage.map_coordinates(value[0, ..., c].astype(np.float64), coords, order=1,
                                      mode="grid-constant", cval=0.0)
    np.testing.assert_allclose(got[0, ..., c], offset_mask[0, ..., 2] * sampled,
                               rtol=1e-5, atol=1e-5)


def test_bfloat16_in_bfloat16_out_float32_sum():
  value, offset_mask = random_inputs(5, 2, 6, 5, 2, 4, offset_range=2.0)
  value16 = jnp.asarray(value, jnp.bfloat16)
  offset_mask16 = jnp.asarray(offset_mask, jnp.bfloat16)
  got = dcnv4_jit(value16, offset_mask16, groups=2)
  assert got.dtype == jnp.bfloat16
  # The float32 op on the same (rounded) inputs, rounded once at the end.
  want = numpy_refs.dcnv4(np.float32(value16), np.float32(offset_mask16), groups=2)
  np.testing.assert_allclose(np.float32(got), want, rtol=8e-3, atol=8e-3 * np.abs(want).max())
  # Gradients come back in the inputs' dtypes, near the float32 op's on the same inputs.
  grad = jax.jit(jax.grad(lambda v, om: jnp.sum(dcnv4(v, om, groups=2).astype(jnp.float32)),
                          argnums=(0, 1)))
  grads16 = grad(value16, offset_mask16)
  grads32 = grad(np.float32(value16), np.float32(offset_mask16))
  for got, want in zip(grads16, grads32):
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(got), want, rtol=2e-2,
                               atol=1e-2 * np.abs(want).max())


def target_offsets(seed, value_shape, groups, kernel_size, stride, padding, dilation,
                   offset_scale):
  """offset_mask whose sampling positions have fractional parts in [0.15, 0.85].

  Bilinear sampling is not differentiable at integer positions, so finite differences
  need positions away from them; positions range over the map and one pixel beyond.
  """
  rng = np.random.default_rng(seed)
  batch, height, width, _ = value_shape
  out_h, out_w = (out_size(s, kernel_size, stride, padding, dilation) for s in (height, width))
  num_points = kernel_size**2
  zero = np.zeros((out_h, out_w, num_points))
  grid_x, grid_y = numpy_refs.dcnv4_positions(out_h, out_w, kernel_size, stride, padding,
                                              dilation, offset_scale, zero, zero)
  offset_mask = np.zeros((batch, out_h, out_w, padded_lanes(groups, kernel_size)))
  for n in range(batch):
    for g in range(groups):
      lanes = slice(3 * num_points * g, 3 * num_points * (g + 1))
      target_x = rng.integers(-2, width + 1, zero.shape) + rng.uniform(0.15, 0.85, zero.shape)
      target_y = rng.integers(-2, height + 1, zero.shape) + rng.uniform(0.15, 0.85, zero.shape)
      packed = np.zeros((out_h, out_w, 3 * num_points))
      packed[..., 0:2 * num_points:2] = (target_x - grid_x) / offset_scale
      packed[..., 1:2 * num_points:2] = (target_y - grid_y) / offset_scale
      packed[..., 2 * num_points:] = rng.normal(size=zero.shape)
      offset_mask[n, :, :, lanes] = packed
  return offset_mask


# (value shape, groups, kernel_size, stride, padding, dilation, offset_scale)
GRAD_CASES = [
    ((2, 4, 5, 4), 2, 3, 1, 1, 1, 1.0),    # two groups, non-square
    ((1, 5, 4, 3), 1, 3, 2, 2, 2, 0.5),    # stride 2, dilation 2, offset_scale 0.5
]


@pytest.mark.parametrize("case", GRAD_CASES)
def test_gradients_match_finite_differences(case):
  shape, groups, ks, stride, pad, dil, scale = case
  with jax.enable_x64(True):
    value = np.random.default_rng(6).normal(size=shape)
    offset_mask = target_offsets(7, shape, groups, ks, stride, pad, dil, scale)
    want = numpy_refs.dcnv4(value, offset_mask, groups, ks, stride, pad, dil, scale)
    op = jax.jit(functools.partial(dcnv4, groups=groups, kernel_size=ks, stride=stride,
                                   padding=pad, dilation=dil, offset_scale=scale))
    np.testing.assert_allclose(op(value, offset_mask), want, rtol=1e-12, atol=1e-12)
    check_grads(op, (jnp.asarray(value), jnp.asarray(offset_mask)), order=1, modes=["rev"],
                eps=1e-5, atol=1e-7, rtol=1e-7)


def test_gradient_at_integer_positions_follows_dcnv4():
  """Zero offsets (HRVMamba's initial state) put every point on integers. DCNv4's
  gradient there is the one-sided (x -> x+) derivative of its floor-based weights, and 0
  for a point at exactly x = -1 or y = -1, which its kernels skip."""
  with jax.enable_x64(True):
    value = np.random.default_rng(12).normal(size=(1, 4, 5, 2))
    offset_mask = np.zeros((1, 4, 5, 32))
    offset_mask[..., 18:27] = np.random.default_rng(13).normal(size=(1, 4, 5, 9))
    cotangent = np.random.default_rng(14).normal(size=(1, 4, 5, 2))
    loss = lambda om: jnp.sum(dcnv4(value, om, groups=1) * cotangent)
    grad = np.asarray(jax.jit(jax.grad(loss))(offset_mask))
    step = 1e-7
    for lane in range(18):                       # every dx_k, dy_k lane, at every pixel
      nudged = offset_mask.copy()
      nudged[..., lane] += step
      one_sided = (numpy_refs.dcnv4(value, nudged, 1) - numpy_refs.dcnv4(value, offset_mask, 1))
      one_sided = np.einsum("nhwc,nhwc->nhw", one_sided, cotangent) / step
      # Each pixel's lane moves only that pixel's output: compare per pixel.
      point, axis = divmod(lane, 2)
      i, j = divmod(point, 3)
      skipped = np.zeros((4, 5), bool)
      skipped[:, 0] |= i == 0                      # x = w - 1 + i = -1
      skipped[0, :] |= j == 0                      # y = h - 1 + j = -1
      want = np.where(skipped, 0.0, one_sided[0])
      np.testing.assert_allclose(grad[0, ..., lane], want, atol=1e-6, err_msg=f"lane {lane}")


def test_float32_gradients_match_float64():
  """The float32 op's gradients (what training uses) are the float64 ones to round-off."""
  shape = (1, 5, 6, 4)
  value = np.random.default_rng(8).normal(size=shape)
  offset_mask = target_offsets(9, shape, 2, 3, 1, 1, 1, 1.0)
  cotangent = np.random.default_rng(10).normal(size=shape)
  # One jit per precision: a jitted function traced without x64 is not retraced with it.
  grad = lambda: jax.jit(jax.grad(lambda v, om: jnp.sum(dcnv4(v, om, groups=2) * cotangent),
                                  argnums=(0, 1)))
  grads32 = grad()(np.float32(value), np.float32(offset_mask))
  with jax.enable_x64(True):
    grads64 = grad()(value, offset_mask)
  for got, want in zip(grads32, grads64):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_memory_is_one_kernel_point_at_a_time():
  """Forward and backward hold nothing larger than their inputs (one point's samples are
  (N, Q, G, D), the size of value here), never the (N, Q, K, G, D) of all points."""
  batch, size, groups, dim = 1, 16, 2, 8
  value, offset_mask = random_inputs(11, batch, size, size, groups, dim, offset_range=2.0)
  loss = lambda v, om: jnp.sum(dcnv4(v, om, groups=groups))
  jaxpr = jax.make_jaxpr(jax.value_and_grad(loss, argnums=(0, 1)))(value, offset_mask)
  assert largest_intermediate(jaxpr.jaxpr) <= max(value.size, offset_mask.size)


@pytest.mark.parametrize("value_shape,offset_shape,params,message", [
    ((5, 5, 4), (1, 5, 5, 32), {}, "value must be"),                  # rank 3 value
    ((1, 5, 5, 4), (5, 5, 32), {}, "offset_mask must be"),            # rank 3 offsets
    ((1, 5, 5, 10), (1, 5, 5, 96), {"groups": 3}, "not divisible by groups=3"),
    ((1, 5, 5, 4), (1, 5, 5, 26), {}, r"P >= 3\*K\*G = 27"),          # too few lanes
    ((1, 5, 5, 8), (1, 5, 5, 32), {"groups": 2}, r"P >= 3\*K\*G = 54"),
    ((1, 5, 5, 4), (1, 5, 4, 32), {}, r"expected \(1, 5, 5, P\)"),    # wrong output size
    ((1, 5, 5, 4), (1, 5, 5, 32), {"stride": 2}, r"expected \(1, 3, 3, P\)"),  # stride 2
    ((1, 5, 5, 4), (1, 5, 5, 32), {"groups": 0}, "groups must be an int >= 1"),
    ((1, 5, 5, 4), (1, 5, 5, 32), {"stride": 0}, "stride must be an int >= 1"),
    ((1, 1, 1, 4), (1, 1, 1, 32), {"padding": 0}, "too small"),
])
def test_bad_input_names_the_argument(value_shape, offset_shape, params, message):
  params = {"groups": 1, **params}
  with pytest.raises(ValueError, match=message):
    dcnv4(np.zeros(value_shape, np.float32), np.zeros(offset_shape, np.float32), **params)


def test_integer_input_is_refused_by_name():
  with pytest.raises(ValueError, match="value must be a float array; got dtype int32"):
    dcnv4(np.zeros((1, 5, 5, 4), np.int32), np.zeros((1, 5, 5, 32), np.float32), groups=1)
  with pytest.raises(ValueError, match="offset_mask must be a float array"):
    dcnv4(np.zeros((1, 5, 5, 4), np.float32), np.zeros((1, 5, 5, 32), np.int32), groups=1)


# The compiled CPU kernel against the pure-JAX op.
# (batch, H, W, G, D, kernel_size, stride, padding, dilation, offset_scale, offset_range)
KERNEL_CASES = [
    (2, 7, 5, 1, 32, 3, 1, 1, 1, 1.0, 2.0),   # D = 32 (every HRVMamba width), odd map
    (1, 5, 9, 2, 16, 3, 1, 1, 1, 1.0, 3.0),   # D = 16, offsets far off the map
    (1, 6, 3, 1, 64, 3, 2, 1, 1, 1.0, 1.5),   # D = 64, stride 2, odd output
    (3, 4, 6, 8, 5, 3, 1, 1, 1, 1.0, 4.0),    # generic D = 5, eight groups
    (1, 10, 11, 3, 7, 5, 2, 0, 2, 0.5, 2.0),  # kernel 5, dilation 2, scale 0.5
    (1, 1, 1, 1, 3, 3, 1, 1, 1, 1.0, 1.0),    # a 1x1 map: every corner but one off it
]


def kernel_vs_jax(value, offset_mask, **params):
  """(cpu_ffi output, jax output) of the same inputs."""
  return (dcnv4_jit(value, offset_mask, impl="cpu_ffi", **params),
          dcnv4_jit(value, offset_mask, impl="jax", **params))


@needs_cpu_kernel
@pytest.mark.parametrize("case", KERNEL_CASES)
def test_cpu_kernel_equals_the_jax_op(case):
  batch, height, width, groups, dim, ks, stride, pad, dil, scale, spread = case
  value, offset_mask = random_inputs(20, batch, height, width, groups, dim, ks, stride, pad,
                                     dil, spread, extra_lanes=5)
  got, want = kernel_vs_jax(value, offset_mask, groups=groups, kernel_size=ks,
                            stride=stride, padding=pad, dilation=dil, offset_scale=scale)
  assert got.shape == want.shape and got.dtype == want.dtype == jnp.float32
  assert np.abs(want).max() > 0.1                              # not a trivial zero map
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * np.abs(want).max())


@needs_cpu_kernel
def test_cpu_kernel_on_integer_and_border_positions():
  """Points exactly on pixels, on the last row/column, at exactly -1 and at W or H
  (not sampled), and just inside the open interval (-1, W): as the jax op, and the
  one-point case by hand."""
  height, width = 4, 5
  value = np.random.default_rng(21).normal(size=(1, height, width, 32)).astype(np.float32)
  # kernel_size 1, padding 0: the point of pixel (h, w) samples (w + dx, h + dy).
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  targets = [(0.0, 0.0), (4.0, 3.0), (-1.0, 1.0), (2.0, -1.0), (5.0, 0.0), (0.0, 4.0),
             (-0.999, 0.5), (4.999, 2.999), (-1.001, 0.0), (2.5, 3.5)]
  offset_mask = np.zeros((1, height, width, 8), np.float32)
  for index, (tx, ty) in enumerate(targets * 2):
    h, w = divmod(index, width)
    offset_mask[0, h, w, :3] = (tx - cols[h, w], ty - rows[h, w], 1.0 + index)
  params = dict(groups=1, kernel_size=1, padding=0)
  got, want = kernel_vs_jax(value, offset_mask, **params)
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * np.abs(want).max())
  np.testing.assert_allclose(got[0, 0, 0], 1.0 * value[0, 0, 0], rtol=1e-6)     # (0, 0)
  np.testing.assert_allclose(got[0, 0, 1], 2.0 * value[0, 3, 4], rtol=1e-6)     # last pixel
  for h, w in ((0, 2), (0, 3), (0, 4), (0, 8 - width)):   # x or y at -1, W, H: not sampled
    assert np.all(np.asarray(got)[0, h, w] == 0.0), (h, w)
  # With the 3x3 grid and zero offsets, the border pixels' points sit at exactly -1.
  value3, offset_mask3 = random_inputs(22, 2, 5, 6, 2, 32, offset_range=0.0)
  got, want = kernel_vs_jax(value3, offset_mask3, groups=2)
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * np.abs(want).max())


@needs_cpu_kernel
def test_cpu_kernel_bfloat16_and_gradients_equal_the_jax_op():
  """bfloat16 in and out as the jax op; the gradient (the jax op's backward) is the jax
  op's, for float32 and bfloat16."""
  value, offset_mask = random_inputs(23, 2, 5, 7, 2, 16, offset_range=2.0)
  for dtype, tolerance in ((jnp.float32, 2e-6), (jnp.bfloat16, 1e-2)):
    v, om = jnp.asarray(value, dtype), jnp.asarray(offset_mask, dtype)
    got, want = kernel_vs_jax(v, om, groups=2)
    assert got.dtype == want.dtype == dtype
    np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=tolerance,
                               atol=tolerance * np.abs(np.float32(want)).max())
    cotangent = np.random.default_rng(24).normal(size=got.shape)
    grads = {impl: jax.jit(jax.grad(
        lambda v, om, impl=impl: jnp.sum(dcnv4(v, om, groups=2, impl=impl).astype(
            jnp.float32) * cotangent), argnums=(0, 1)))(v, om) for impl in ("cpu_ffi", "jax")}
    for got_grad, want_grad in zip(grads["cpu_ffi"], grads["jax"]):
      assert got_grad.dtype == dtype
      np.testing.assert_allclose(np.float32(got_grad), np.float32(want_grad),
                                 rtol=tolerance, atol=tolerance *
                                 np.abs(np.float32(want_grad)).max())


@needs_cpu_kernel
def test_auto_runs_the_cpu_kernel_on_the_cpu_and_jax_for_float64():
  value, offset_mask = random_inputs(25, 1, 4, 4, 1, 4)
  assert resolve_impl("auto", jnp.asarray(value), jnp.asarray(offset_mask)) == "cpu_ffi"
  traced = str(jax.make_jaxpr(lambda v, om: dcnv4(v, om, groups=1))(value, offset_mask))
  assert "mamkpd_dcnv4_forward" in traced
  traced = str(jax.make_jaxpr(lambda v, om: dcnv4(v, om, groups=1, impl="jax"))(
      value, offset_mask))
  assert "mamkpd_dcnv4_forward" not in traced and "gather" in traced
  with jax.enable_x64(True):
    value64 = jnp.asarray(value, jnp.float64)
    assert resolve_impl("auto", value64, jnp.asarray(offset_mask)) == "jax"
    with pytest.raises(ValueError, match="float64 input needs impl='jax'"):
      dcnv4(value64, offset_mask, groups=1, impl="cpu_ffi")


@needs_cpu_kernel
def test_cpu_kernel_under_vmap_equals_the_jax_op():
  value, offset_mask = random_inputs(26, 3, 5, 4, 1, 8, offset_range=2.0)
  op = lambda impl: jax.jit(jax.vmap(lambda v, om: dcnv4(v[None], om[None], groups=1,
                                                         impl=impl)[0]))
  np.testing.assert_allclose(op("cpu_ffi")(value, offset_mask), op("jax")(value, offset_mask),
                             rtol=2e-6, atol=1e-5)


def test_unknown_impl_is_refused_by_name():
  with pytest.raises(ValueError, match="unknown impl 'fast'; known: .*cpu_ffi"):
    dcnv4(np.zeros((1, 5, 5, 4), np.float32), np.zeros((1, 5, 5, 32), np.float32), groups=1,
          impl="fast")
