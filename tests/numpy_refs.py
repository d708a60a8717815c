"""Plain-numpy (float64) references the tests compare the JAX code against.

Written from the equations in ../shared/SPEC.md (DCNv4: ../shared/hrvmamba/SPEC.md §4),
independently of mamkpd_jax.
"""

import math

import numpy as np


def softplus(x):
  return np.logaddexp(0.0, x)


def selective_scan(u, delta, A, B, C, D, delta_bias, delta_softplus=True):
  """The recurrence token by token. u, delta (b, L, ch); A (ch, N); B, C (b, L, G, N)."""
  u, delta, A, B, C, D, delta_bias = (np.asarray(x, np.float64)
                                      for x in (u, delta, A, B, C, D, delta_bias))
  batch, length, channels = u.shape
  groups, d_state = B.shape[2:]
  group_of_channel = np.arange(channels) // (channels // groups)
  dt = delta + delta_bias
  if delta_softplus:
    dt = softplus(dt)
  h = np.zeros((batch, channels, d_state))
  y = np.zeros((batch, length, channels))
  for t in range(length):
    b_t = B[:, t, group_of_channel]                      # (b, ch, N)
    c_t = C[:, t, group_of_channel]
    h = np.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * u[:, t])[..., None] * b_t
    y[:, t] = (h * c_t).sum(-1) + D * u[:, t]
  return y


def token_orders(height, width):
  """Index of the row-major token visited at each step, per SS2D direction."""
  grid = np.arange(height * width).reshape(height, width)
  row, col = grid.reshape(-1), grid.T.reshape(-1)
  return [row, col, row[::-1], col[::-1]]


def conv_transpose_pytorch(x, weight, stride, padding):
  """PyTorch ConvTranspose2d, NHWC input, weight (C_in, C_out, kh, kw), no bias.

  out[o] += x[i] * w[k] for o = i * stride - padding + k.
  """
  n, h, w, _ = x.shape
  _, c_out, kh, kw = weight.shape
  out_h = (h - 1) * stride - 2 * padding + kh
  out_w = (w - 1) * stride - 2 * padding + kw
  out = np.zeros((n, out_h, out_w, c_out))
  for i in range(h):
    for j in range(w):
      for a in range(kh):
        for b in range(kw):
          oi, oj = i * stride - padding + a, j * stride - padding + b
          if 0 <= oi < out_h and 0 <= oj < out_w:
            out[:, oi, oj] += x[:, i, j] @ weight[:, :, a, b]
  return out


def mamkpd_params(cfg):
  """Parameter count per component of MamKPD, from the architecture description."""
  k = 4  # scan directions

  def layer_norm(d):
    return 2 * d

  def dw_conv(d, size):
    return size * size * d + d

  def block(d):
    di, n, r = int(cfg.ssm_ratio * d), cfg.d_state, math.ceil(d / 16)
    ss2d = (d * di * (2 if cfg.gate else 1)        # in_proj
            + dw_conv(di, cfg.d_conv)              # conv2d
            + k * (r + 2 * n) * di                 # x_proj_weight
            + k * di * r + k * di                  # dt_projs_weight, dt_projs_bias
            + k * di * n + k * di                  # A_logs, Ds
            + layer_norm(di) + di * d)             # out_norm, out_proj
    hidden = int(d * cfg.mlp_ratio)
    mlp = layer_norm(d) + (d * hidden + hidden) + (hidden * d + d) if hidden else 0
    return layer_norm(d) + ss2d + mlp

  def cmm(c_in, c_out):
    return (2 * dw_conv(c_in, cfg.cmm_kernel) + layer_norm(c_in)
            + c_in * c_out + c_out + 2 * c_out)

  counts = {}
  in_dim = 3
  if cfg.use_stem:
    ds = cfg.stem_dim
    counts["stem"] = 49 * 3 * ds + ds + 3 * layer_norm(ds) + 2 * dw_conv(ds, 3)
    in_dim = ds
  for i, (d, depth) in enumerate(zip(cfg.dims, cfg.depths)):
    counts[f"stage{i + 1}.cmm"] = cmm(in_dim, d)
    counts[f"stage{i + 1}.blocks"] = depth * block(d)
    counts[f"stage{i + 1}.norm"] = layer_norm(d)
    in_dim = d
  mid, out = cfg.decoder_dims
  counts["decoder"] = (16 * in_dim * mid + 2 * mid + 16 * mid * out + 2 * out
                       + out * cfg.num_keypoints + cfg.num_keypoints)
  counts["total"] = sum(counts.values())
  return counts


def dcnv4_positions(out_h, out_w, kernel_size, stride, padding, dilation, offset_scale,
                    dx, dy):
  """Sampling positions x, y (H_out, W_out, K) of one image and group, float64.

  dx, dy: (H_out, W_out, K) offsets; kernel point k = i*kernel_size + j is grid
  offset (i, j) in (x, y) (x-major).
  """
  centre = dilation * (kernel_size - 1) // 2
  x = np.zeros(dx.shape)
  y = np.zeros(dy.shape)
  for h_o in range(out_h):
    for w_o in range(out_w):
      for i in range(kernel_size):
        for j in range(kernel_size):
          k = i * kernel_size + j
          x[h_o, w_o, k] = (w_o * stride - padding + centre
                            + (i * dilation - centre + dx[h_o, w_o, k]) * offset_scale)
          y[h_o, w_o, k] = (h_o * stride - padding + centre
                            + (j * dilation - centre + dy[h_o, w_o, k]) * offset_scale)
  return x, y


def bilinear_zero_padded(image, y, x):
  """image (H, W, D) at one fractional (y, x); pixel centres at integers, zeros outside."""
  height, width, _ = image.shape
  y0, x0 = math.floor(y), math.floor(x)
  ly, lx = y - y0, x - x0
  total = np.zeros(image.shape[-1])
  for yy, xx, weight in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                         (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):
    if 0 <= yy < height and 0 <= xx < width:
      total += weight * image[yy, xx]
  return total


def dcnv4(value, offset_mask, groups, kernel_size=3, stride=1, padding=1, dilation=1,
          offset_scale=1.0):
  """DCNv4's core op (no projections), a plain loop; value (N, H, W, G*D) -> float64.

  offset_mask (N, H_out, W_out, P): per group g, lane 3Kg+2k is dx_k, 3Kg+2k+1 dy_k,
  3Kg+2K+k the raw mask m_k; lanes from 3KG on are never read.
  """
  value, offset_mask = np.asarray(value, np.float64), np.asarray(offset_mask, np.float64)
  batch, height, width, channels = value.shape
  _, out_h, out_w, _ = offset_mask.shape
  group_dim, num_points = channels // groups, kernel_size**2
  out = np.zeros((batch, out_h, out_w, channels))
  for n in range(batch):
    for g in range(groups):
      lanes = offset_mask[n, :, :, 3 * num_points * g:3 * num_points * (g + 1)]
      x, y = dcnv4_positions(out_h, out_w, kernel_size, stride, padding, dilation,
                             offset_scale, lanes[..., 0:2 * num_points:2],
                             lanes[..., 1:2 * num_points:2])
      image = value[n, :, :, g * group_dim:(g + 1) * group_dim]
      for h_o in range(out_h):
        for w_o in range(out_w):
          for k in range(num_points):
            out[n, h_o, w_o, g * group_dim:(g + 1) * group_dim] += (
                lanes[h_o, w_o, 2 * num_points + k]
                * bilinear_zero_padded(image, y[h_o, w_o, k], x[h_o, w_o, k]))
  return out
