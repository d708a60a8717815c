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

(../shared/hrvmamba/SPEC.md §4, from DCNv4's `forward_kernel_dcn_reg`.)

How. Sampling is a row gather: V is viewed as (N*H*W*G, D) rows and each bilinear corner
of a kernel point reads one row per (query pixel, group). The op loops over the K kernel
points and accumulates into a float32 (N, H_out*W_out, G, D) sum; each point gathers its
four corners at once, (N, Q, 4, G, D), the largest array it makes. Each point is a
`jax.checkpoint`, so the backward pass recomputes its gather rather than storing it;
autodiff turns the gather into a scatter-add into V and the corner weights into the
offset and mask gradients. Positions, weights and the sum are float32 for float32,
bfloat16 or float16 inputs (float64 only under x64 with a float64 input, for tests), and
the output has the dtype of `value`.
"""

import functools

import jax
import jax.numpy as jnp


def output_size(size, kernel_size, stride, padding, dilation):
  """Output length of one spatial axis: (size + 2p - (dil*(k-1)+1)) // s + 1."""
  return (size + 2 * padding - (dilation * (kernel_size - 1) + 1)) // stride + 1


def _check_args(value, offset_mask, groups, kernel_size, stride, padding, dilation):
  """Raises ValueError naming the argument when shapes or parameters cannot work."""
  for name, number, low in (("groups", groups, 1), ("kernel_size", kernel_size, 1),
                            ("stride", stride, 1), ("padding", padding, 0),
                            ("dilation", dilation, 1)):
    if not isinstance(number, int) or number < low:
      raise ValueError(f"dcnv4: {name} must be an int >= {low}; got {number!r}")
  if value.ndim != 4:
    raise ValueError(f"dcnv4: value must be (N, H, W, G*D) (NHWC); got shape {value.shape}")
  if offset_mask.ndim != 4:
    raise ValueError("dcnv4: offset_mask must be (N, H_out, W_out, P); "
                     f"got shape {offset_mask.shape}")
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
  """(N, H_out, W_out, P) -> dx, dy, m, each (N, Q=H_out*W_out, G, K) in `dtype`.

  Lanes past 3*K*G (DCNv4's padding to a multiple of 8) are dropped.
  """
  batch, out_h, out_w, _ = offset_mask.shape
  lanes = offset_mask[..., :3 * num_points * groups].astype(dtype)
  lanes = lanes.reshape(batch, out_h * out_w, groups, 3 * num_points)  # (N, Q, G, 3K)
  offsets = lanes[..., :2 * num_points]                                # (N, Q, G, 2K)
  return offsets[..., 0::2], offsets[..., 1::2], lanes[..., 2 * num_points:]


def _grid_origin(out_size, stride, padding, dilation, kernel_size, offset_scale, dtype):
  """(out_size,) in `dtype`: where kernel point 0 sits (before offsets) along one axis.

  DCNv4 computes p0 = o*s - p + c (exact), then p0 - c*scale; the sampling position
  of point i is p0 - c*scale + (i*dil + delta)*scale.
  """
  centre = (dilation * (kernel_size - 1)) // 2
  p0 = jnp.arange(out_size, dtype=dtype) * stride - padding + centre
  return p0 - centre * offset_scale


def _sample_point(value_rows, x, y, mask, height, width):
  """One kernel point's contribution: mask * bilinear(V, y, x), in x's dtype.

  Args:
    value_rows: (N*H*W*G, D) value map as rows, one per (pixel, group).
    x, y: (N, Q, G) float32 (or float64) sampling positions in input pixels, pixel
      centres at integers.
    mask: (N, Q, G) raw weight of this point, x's dtype.
  Returns:
    (N, Q, G, D) in x's dtype.
  """
  batch, queries, groups = x.shape
  x0, y0 = jnp.floor(x), jnp.floor(y)
  lx, ly = x - x0, y - y0
  hx, hy = 1 - lx, 1 - ly
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  # Corners (y0, x0), (y0, x0+1), (y0+1, x0), (y0+1, x0+1), stacked on axis 2.
  corner_x = jnp.stack([x0, x0 + 1, x0, x0 + 1], axis=2)              # (N, Q, 4, G)
  corner_y = jnp.stack([y0, y0, y0 + 1, y0 + 1], axis=2)
  weights = jnp.stack([hy * hx, hy * lx, ly * hx, ly * lx], axis=2)   # (N, Q, 4, G)
  inside = (corner_x >= 0) & (corner_x < width) & (corner_y >= 0) & (corner_y < height)
  weights = jnp.where(inside, weights, 0.0)                           # zero padding
  pixel = (jnp.clip(corner_y, 0, height - 1) * width
           + jnp.clip(corner_x, 0, width - 1))                        # (N, Q, 4, G)
  image = jnp.arange(batch, dtype=jnp.int32)[:, None, None, None]
  group = jnp.arange(groups, dtype=jnp.int32)
  rows = (image * (height * width) + pixel) * groups + group          # (N, Q, 4, G)
  corners = value_rows.at[rows].get(mode="promise_in_bounds")         # (N, Q, 4, G, D)
  bilinear = jnp.sum(weights[..., None] * corners.astype(x.dtype), axis=2)
  return mask[..., None] * bilinear


def dcnv4(value, offset_mask, *, groups, kernel_size=3, stride=1, padding=1, dilation=1,
          offset_scale=1.0):
  """DCNv4's core op without value/output projections (HRVMamba's use), NHWC.

  Args:
    value: (N, H, W, G*D) the map to sample, any float dtype.
    offset_mask: (N, H_out, W_out, P) per query pixel: offsets and raw masks in DCNv4's
      lane layout (module docstring); P >= 3*K*G, lanes past 3*K*G are ignored.
    groups: G, channel groups sharing one set of offsets and masks.
    kernel_size, stride, padding, dilation: of the (square) regular grid.
    offset_scale: scales the offsets and the grid around the kernel centre.

  Returns:
    (N, H_out, W_out, G*D) in value.dtype, accumulated in float32;
    H_out = (H + 2*padding - (dilation*(kernel_size-1) + 1)) // stride + 1.
  """
  value, offset_mask = jnp.asarray(value), jnp.asarray(offset_mask)
  _check_args(value, offset_mask, groups, kernel_size, stride, padding, dilation)
  batch, height, width, channels = value.shape
  _, out_h, out_w, _ = offset_mask.shape
  group_dim = channels // groups
  num_points = kernel_size**2
  # float32, or float64 when the caller enabled x64 and passes float64 (tests).
  dtype = jnp.result_type(jnp.float32, value.dtype, offset_mask.dtype)
  dx, dy, masks = split_offset_mask(offset_mask, groups, num_points, dtype)  # (N, Q, G, K)
  grid = functools.partial(_grid_origin, stride=stride, padding=padding, dilation=dilation,
                           kernel_size=kernel_size, offset_scale=offset_scale, dtype=dtype)
  origin_x = jnp.tile(grid(out_w), out_h)[None, :, None]              # (1, Q, 1), q = h*W+w
  origin_y = jnp.repeat(grid(out_h), out_w)[None, :, None]
  value_rows = value.reshape(batch * height * width * groups, group_dim)
  sample = jax.checkpoint(functools.partial(_sample_point, height=height, width=width))
  out = jnp.zeros((batch, out_h * out_w, groups, group_dim), dtype)
  for k in range(num_points):
    i, j = divmod(k, kernel_size)                                     # x-major: k = i*ks + j
    x = origin_x + (i * dilation + dx[..., k]) * offset_scale         # (N, Q, G)
    y = origin_y + (j * dilation + dy[..., k]) * offset_scale
    out = out + sample(value_rows, x, y, masks[..., k])
  return out.reshape(batch, out_h, out_w, channels).astype(value.dtype)
