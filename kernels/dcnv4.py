"""DCNv4's core op (deformable convolution, as HRVMamba uses it) in pure JAX, NHWC.

The value map V (N, H, W, G*D) is split into G channel groups of D channels. For every
output pixel (h_o, w_o) and group g, the K = kernel_size**2 kernel points sample V at
learned fractional positions and sum the samples with learned raw weights (no softmax):

    out[n, h_o, w_o, g*D + d] = sum_k m_k * bilinear(V[n, :, :, g*D + d], y_k, x_k)
    x_k = w_o*s - p + c + (i*dil - c + dx_k) * scale       c = floor(dil*(kernel_size-1)/2)
    y_k = h_o*s - p + c + (j*dil - c + dy_k) * scale

Kernel point k = i*kernel_size + j has grid offset (i, j) in (x, y): x-major, the
transpose of the usual row-major tap order (DCNv4's loop order). Bilinear sampling is
zero-padded with pixel centres at integers (grid_sample, align_corners=False). All of
(dx_k, dy_k, m_k) of group g come from one query pixel's row of `offset_mask`:

    lane 3*K*g + 2*k      dx_k
    lane 3*K*g + 2*k + 1  dy_k
    lane 3*K*g + 2*K + k  m_k
    lanes >= 3*K*G        padding (DCNv4 rounds the width up to a multiple of 8): ignored

(docs/hrvmamba.md §4, from DCNv4's `forward_kernel_dcn_reg`.)

How. Sampling is a row gather: V is viewed as (N*H*W*G, D) rows and each bilinear corner
of a kernel point reads one row per (group, query pixel). A `lax.scan` over the K points
adds each point's four weighted corner gathers, (N, G, Q, D) each with Q = H_out*W_out,
into a (N, G, Q, D) sum, so nothing larger than one point's samples is ever alive. The
gradient is a custom VJP: a second scan over the points re-gathers the corners (nothing
per point is stored), scatter-adds d_out into a float32 d V, and forms d x, d y, d m from
d_out . V(corner), a dot over D. (Autodiff of the same forward ran 1.5-4x slower on the
CPU at 64x48 maps: XLA fuses the gathers into its reductions, which it does badly there.)
Positions, weights and the sum are float32 for float32, bfloat16 or float16 inputs
(float64 only under x64 with a float64 input, for tests); the output has value's dtype.

Layout. Every per-point array keeps its largest axis minor: positions, bilinear weights,
masks and row indices are (K, N, G, Q) / (N, G, Q) with the Q pixels last, the gathered
rows, the sum and the scatter updates (N, G, Q, D) with the D channels last; the sum is
transposed to (N, Q, G, D) once, after the scan (free for G = 1). XLA:TPU stores arrays
in (r, 128) tiles of their two minor axes: with G minor, as (K, N, Q, G) had it, the
positions of a G = 2 branch took 64x their size (docs/hrvmamba.md, "DCNv4 on
accelerators").

Implementations (`impl`, IMPLS):

    jax       the pure-JAX scan above: any backend, exportable, differentiable
    cpu_ffi   `dcnv4_cpu.cc` through XLA's FFI (built with the other CPU kernels,
              cpu_kernels.py): per output row, each (pixel, group) sums its K points'
              corner rows in registers; no (N, G, Q, D) intermediate is written. XLA:CPU
              runs the gathers of the scan ~10x slower than this. Forward only: its
              backward is the pure-JAX backward at the same inputs (`jax.custom_vjp`).
              float32 sums as `jax` (bfloat16 / float16 inputs are cast to float32 first)
    auto      cpu_ffi on the CPU where it applies (not float64; the kernels built), else
              jax
"""

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from mamkpd_jax.kernels import batch_parallel, cpu_kernels

IMPLS = ("auto", "jax", "cpu_ffi")
TARGET = "mamkpd_dcnv4_forward"            # cpu_kernels.TARGETS


def output_size(size, kernel_size, stride, padding, dilation):
  """Output length of one spatial axis: (size + 2p - (dil*(k-1)+1)) // s + 1."""
  return (size + 2 * padding - (dilation * (kernel_size - 1) + 1)) // stride + 1


def _check_args(value, offset_mask, groups, kernel_size, stride, padding, dilation):
  """Raises ValueError naming the argument when shapes or parameters cannot work."""
  for name, number, low in (("groups", groups, 1), ("kernel_size", kernel_size, 1),
                            ("stride", stride, 1), ("padding", padding, 0),
                            ("dilation", dilation, 1)):
    if not isinstance(number, numbers.Integral) or number < low:
      raise ValueError(f"dcnv4: {name} must be an int >= {low}; got {number!r}")
  if value.ndim != 4:
    raise ValueError(f"dcnv4: value must be (N, H, W, G*D) (NHWC); got shape {value.shape}")
  if offset_mask.ndim != 4:
    raise ValueError("dcnv4: offset_mask must be (N, H_out, W_out, P); "
                     f"got shape {offset_mask.shape}")
  for name, array in (("value", value), ("offset_mask", offset_mask)):
    if not jnp.issubdtype(array.dtype, jnp.floating):
      raise ValueError(f"dcnv4: {name} must be a float array; got dtype {array.dtype}")
  batch, height, width, channels = value.shape
  if channels % groups:
    raise ValueError(f"dcnv4: value has {channels} channels, not divisible by "
                     f"groups={groups}")
  out_h, out_w = (output_size(size, kernel_size, stride, padding, dilation)
                  for size in (height, width))
  if out_h < 1 or out_w < 1:
    raise ValueError(f"dcnv4: value's map {height}x{width} is too small for kernel_size="
                     f"{kernel_size}, padding={padding}, dilation={dilation}")
  lanes = 3 * kernel_size**2 * groups
  expected = (batch, out_h, out_w)
  if offset_mask.shape[:3] != expected or offset_mask.shape[3] < lanes:
    raise ValueError(f"dcnv4: offset_mask has shape {offset_mask.shape}; expected "
                     f"({batch}, {out_h}, {out_w}, P) with P >= 3*K*G = {lanes} "
                     f"(K={kernel_size**2} kernel points, groups={groups})")


def split_offset_mask(offset_mask, groups, num_points, dtype=jnp.float32):
  """(N, H_out, W_out, P) -> dx, dy, m, each (K, N, G, Q=H_out*W_out) in `dtype`.

  Point-major, for the scan over kernel points, with the pixels minor (module docstring,
  "Layout"). Lanes past 3*K*G (DCNv4's padding to a multiple of 8) are dropped.
  """
  batch, out_h, out_w, _ = offset_mask.shape
  lanes = offset_mask[..., :3 * num_points * groups].astype(dtype)
  lanes = lanes.reshape(batch, out_h * out_w, groups, 3 * num_points)  # (N, Q, G, 3K)
  lanes = jnp.transpose(lanes, (3, 0, 2, 1))                           # (3K, N, G, Q)
  offsets = lanes[:2 * num_points]                                     # (2K, N, G, Q)
  return offsets[0::2], offsets[1::2], lanes[2 * num_points:]


def _grid_origin(out_size, stride, padding, dilation, kernel_size, offset_scale, dtype):
  """(out_size,) in `dtype`: where kernel point 0 sits (before offsets) along one axis.

  DCNv4 computes p0 = o*s - p + c (exact), then p0 - c*scale; the sampling position
  of point i is p0 - c*scale + (i*dil + delta)*scale.
  """
  centre = (dilation * (kernel_size - 1)) // 2
  p0 = jnp.arange(out_size, dtype=dtype) * stride - padding + centre
  return p0 - centre * offset_scale


def sampling_positions(dx, dy, out_h, out_w, kernel_size, stride, padding, dilation,
                       offset_scale):
  """x, y (K, N, G, Q): where each kernel point samples, in input pixels.

  dx, dy: (K, N, G, Q) offsets; query q = h_o*W_out + w_o; point k = i*kernel_size + j
  sits at grid offset (i*dilation, j*dilation) in (x, y).
  """
  grid = functools.partial(_grid_origin, stride=stride, padding=padding, dilation=dilation,
                           kernel_size=kernel_size, offset_scale=offset_scale,
                           dtype=dx.dtype)
  origin_x = jnp.tile(grid(out_w), out_h)                             # (Q,)
  origin_y = jnp.repeat(grid(out_h), out_w)
  points = jnp.arange(kernel_size**2)
  grid_x = (points // kernel_size * dilation).astype(dx.dtype)[:, None, None, None]
  grid_y = (points % kernel_size * dilation).astype(dx.dtype)[:, None, None, None]
  return (origin_x + (grid_x + dx) * offset_scale,
          origin_y + (grid_y + dy) * offset_scale)


def _gather(value_rows, rows):
  """value_rows (R, D) at rows (N, G, Q) int32 (in range) -> (N, G, Q, D)."""
  return value_rows.at[rows].get(mode="promise_in_bounds")


def _corners(x, y, height, width):
  """The four bilinear corners of positions x, y (N, G, Q) on an H x W map.

  Returns four (rows, weight, d weight/dx, d weight/dy) for the corners (y0, x0),
  (y0, x0+1), (y0+1, x0), (y0+1, x0+1). rows (N, G, Q) int32 index the (N*H*W*G, D) value
  rows (clipped into range); a corner outside the map gets weight and derivatives 0
  (zero padding). Weights are DCNv4's (1-ly)(1-lx), (1-ly)lx, ly(1-lx), ly*lx. Like
  DCNv4, a position is used only when -1 < x < W and -1 < y < H: that changes no value
  (outside it every corner is off the map or has weight 0) but zeroes the gradient at
  exactly x = -1 or y = -1, where every sampling point of the border pixels sits when
  the offsets are zero (their initial value in HRVMamba).
  """
  batch, groups, _ = x.shape
  x0, y0 = jnp.floor(x), jnp.floor(y)
  lx, ly = x - x0, y - y0
  hx, hy = 1 - lx, 1 - ly
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  image = jnp.arange(batch, dtype=jnp.int32)[:, None, None]
  group = jnp.arange(groups, dtype=jnp.int32)[:, None]
  sampled = (x > -1) & (x < width) & (y > -1) & (y < height)           # (N, G, Q)
  corners = []
  for cy, cx, weight, dw_dx, dw_dy in ((y0, x0, hy * hx, -hy, -hx),
                                       (y0, x0 + 1, hy * lx, hy, -lx),
                                       (y0 + 1, x0, ly * hx, -ly, hx),
                                       (y0 + 1, x0 + 1, ly * lx, ly, lx)):
    inside = sampled & (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height)
    pixel = jnp.clip(cy, 0, height - 1) * width + jnp.clip(cx, 0, width - 1)
    rows = (image * (height * width) + pixel) * groups + group
    corners.append((rows, *(jnp.where(inside, w, 0) for w in (weight, dw_dx, dw_dy))))
  return corners


def _sample_point(value_rows, x, y, mask, height, width):
  """mask * bilinear(V, y, x): (N, G, Q, D) in x's dtype; x, y, mask (N, G, Q)."""
  bilinear = sum(weight[..., None] * _gather(value_rows, rows).astype(x.dtype)
                 for rows, weight, _, _ in _corners(x, y, height, width))
  return mask[..., None] * bilinear


def _point_grads(value_rows, x, y, mask, d_out, height, width):
  """Gradients of one point's sum(d_out * mask * bilinear(V, y, x)).

  Returns four (rows (N, G, Q), update (N, G, Q, D)) pairs, one per corner, to
  scatter-add into d value, and d_x, d_y, d_mask (N, G, Q); d_out is (N, G, Q, D).
  """
  updates, d_x, d_y, d_mask = [], 0, 0, 0
  for rows, weight, dw_dx, dw_dy in _corners(x, y, height, width):
    corner = _gather(value_rows, rows).astype(x.dtype)                # (N, G, Q, D)
    along = jnp.einsum("ngqd,ngqd->ngq", corner, d_out,
                       precision=jax.lax.Precision.HIGHEST)            # d_out . V(corner)
    d_mask = d_mask + weight * along
    d_x = d_x + dw_dx * along
    d_y = d_y + dw_dy * along
    updates.append((rows, (mask * weight)[..., None] * d_out))
  return updates, mask * d_x, mask * d_y, d_mask


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _deform_sample(value_rows, x, y, masks, height, width):
  """sum_k masks[k] * bilinear(V, y[k], x[k]) -> (N, G, Q, D) in x's dtype.

  value_rows (N*H*W*G, D); x, y, masks (K, N, G, Q). A scan over the K points keeps one
  point's gathers alive at a time.
  """
  batch, groups, queries = x.shape[1:]
  def add_point(total, point):
    return total + _sample_point(value_rows, *point, height, width), None
  total = jnp.zeros((batch, groups, queries, value_rows.shape[1]), x.dtype)
  return jax.lax.scan(add_point, total, (x, y, masks))[0]


def _deform_sample_fwd(value_rows, x, y, masks, height, width):
  return _deform_sample(value_rows, x, y, masks, height, width), (value_rows, x, y, masks)


def _deform_sample_bwd(height, width, residuals, d_out):
  """Second scan over the points: re-gathers the corners (nothing per point was stored),
  scatter-adds into a float32 d value, and returns d x, d y, d masks (K, N, G, Q);
  d_out is (N, G, Q, D)."""
  value_rows, x, y, masks = residuals
  def point_grads(d_value, point):
    updates, d_x, d_y, d_mask = _point_grads(value_rows, *point, d_out, height, width)
    for rows, update in updates:
      d_value = d_value.at[rows].add(update, mode="promise_in_bounds")
    return d_value, (d_x, d_y, d_mask)
  d_value = jnp.zeros(value_rows.shape, x.dtype)
  d_value, (d_x, d_y, d_masks) = jax.lax.scan(point_grads, d_value, (x, y, masks))
  return d_value.astype(value_rows.dtype), d_x, d_y, d_masks


_deform_sample.defvjp(_deform_sample_fwd, _deform_sample_bwd)


def _dcnv4_jax(value, offset_mask, groups, kernel_size, stride, padding, dilation,
               offset_scale):
  """impl="jax": positions, then the scan over kernel points (_deform_sample)."""
  batch, height, width, channels = value.shape
  _, out_h, out_w, _ = offset_mask.shape
  # float32, or float64 when the caller enabled x64 and passes float64 (tests).
  dtype = jnp.result_type(jnp.float32, value.dtype, offset_mask.dtype)
  dx, dy, masks = split_offset_mask(offset_mask, groups, kernel_size**2, dtype)  # (K,N,G,Q)
  x, y = sampling_positions(dx, dy, out_h, out_w, kernel_size, stride, padding, dilation,
                            offset_scale)
  value_rows = value.reshape(batch * height * width * groups, channels // groups)
  out = _deform_sample(value_rows, x, y, masks, height, width)       # (N, G, Q, D)
  out = jnp.swapaxes(out, 1, 2)                                        # (N, Q, G, D)
  return out.reshape(batch, out_h, out_w, channels).astype(value.dtype)


def _ffi_call(value, offset_mask, groups, kernel_size, stride, padding, dilation,
              offset_scale):
  """The custom call: float32 value (n, H, W, C), offset_mask (n, H_out, W_out, P) ->
  (n, H_out, W_out, C) float32, at the caller's (per-device) batch n."""
  out_shape = (*offset_mask.shape[:3], value.shape[-1])
  call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(out_shape, jnp.float32),
                          vmap_method="sequential")
  return call(value, offset_mask, groups=groups, kernel_size=kernel_size, stride=stride,
              padding=padding, dilation=dilation, offset_scale=np.float32(offset_scale))


def _dcnv4_cpu_forward(value, offset_mask, params):
  cpu_kernels.load()
  f32 = lambda t: t.astype(jnp.float32)
  # Each device samples its own images (batch_parallel: else XLA gathers the batch).
  out = batch_parallel.batch_parallel(_ffi_call, (f32(value), f32(offset_mask)),
                                      (True, True), params)
  return out.astype(value.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dcnv4_cpu(value, offset_mask, params):
  return _dcnv4_cpu_forward(value, offset_mask, params)


def _dcnv4_cpu_fwd(value, offset_mask, params):
  return _dcnv4_cpu_forward(value, offset_mask, params), (value, offset_mask)


def _dcnv4_cpu_bwd(params, inputs, d_out):
  """The pure-JAX backward at the same inputs (its forward output is unused: dead code)."""
  _, vjp = jax.vjp(lambda v, om: _dcnv4_jax(v, om, *params), *inputs)
  return vjp(d_out)


_dcnv4_cpu.defvjp(_dcnv4_cpu_fwd, _dcnv4_cpu_bwd)


def cpu_kernel_applies(value, offset_mask):
  """Whether impl="cpu_ffi" can run these arrays here: the CPU backend, no float64
  (the kernel sums in float32), the kernels built."""
  return (jax.default_backend() == "cpu"
          and all(a.dtype in (jnp.float32, jnp.bfloat16, jnp.float16)
                  for a in (value, offset_mask))
          and cpu_kernels.available())


def resolve_impl(impl, value, offset_mask):
  """`impl` with "auto" replaced by what runs here; ValueError for an unknown name or a
  "cpu_ffi" that cannot run."""
  if impl not in IMPLS:
    raise ValueError(f"dcnv4: unknown impl {impl!r}; known: {IMPLS}")
  if impl == "auto":
    return "cpu_ffi" if cpu_kernel_applies(value, offset_mask) else "jax"
  if impl == "cpu_ffi":
    if jax.default_backend() != "cpu":
      raise ValueError(f"dcnv4: impl='cpu_ffi' runs on the CPU only; the default backend "
                       f"is {jax.default_backend()!r} (use 'auto' or 'jax')")
    if jnp.float64 in (value.dtype, offset_mask.dtype):
      raise ValueError("dcnv4: impl='cpu_ffi' sums in float32; float64 input needs "
                       "impl='jax'")
    cpu_kernels.load()                 # a KernelBuildError saying why, if it cannot build
  return impl


def dcnv4(value, offset_mask, *, groups, kernel_size=3, stride=1, padding=1, dilation=1,
          offset_scale=1.0, impl="auto"):
  """DCNv4's core op without value/output projections (HRVMamba's use), NHWC.

  Args:
    value: (N, H, W, G*D) the map to sample, any float dtype.
    offset_mask: (N, H_out, W_out, P) per query pixel: offsets and raw masks in DCNv4's
      lane layout (module docstring); P >= 3*K*G, lanes past 3*K*G are ignored.
    groups: G, channel groups sharing one set of offsets and masks.
    kernel_size, stride, padding, dilation: of the (square) regular grid.
    offset_scale: scales the offsets and the grid around the kernel centre.
    impl: "auto", "jax" or "cpu_ffi" (IMPLS, module docstring).

  Returns:
    (N, H_out, W_out, G*D) in value.dtype, accumulated in float32;
    H_out = (H + 2*padding - (dilation*(kernel_size-1) + 1)) // stride + 1.
  """
  value, offset_mask = jnp.asarray(value), jnp.asarray(offset_mask)
  _check_args(value, offset_mask, groups, kernel_size, stride, padding, dilation)
  params = (int(groups), int(kernel_size), int(stride), int(padding), int(dilation),
            float(offset_scale))
  if resolve_impl(impl, value, offset_mask) == "cpu_ffi":
    return _dcnv4_cpu(value, offset_mask, params)
  return _dcnv4_jax(value, offset_mask, *params)
