"""Plain-numpy (float64) references the tests compare the JAX code against.

Written from the equations in docs/scan.md and docs/architecture.md (DCNv4: docs/hrvmamba.md §4),
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


def cross_selective_scan(x, delta, A, B, C, D, delta_bias, delta_softplus=True):
  """SS2D's scan: each direction's tokens scanned (`selective_scan`), then every output
  put back at its row-major token and the four summed. x (b, H, W, P); delta
  (b, H, W, 4, P); A (4P, N); B, C (b, H, W, 4, N); D, delta_bias (4P,)."""
  batch, height, width, per_group = x.shape
  length = height * width
  tokens = np.asarray(x, np.float64).reshape(batch, length, per_group)
  out = np.zeros((batch, length, per_group))
  for k, order in enumerate(token_orders(height, width)):
    part = slice(k * per_group, (k + 1) * per_group)
    per_token = lambda t: np.asarray(t, np.float64)[:, :, :, k].reshape(batch, length, -1)
    y = selective_scan(tokens[:, order], per_token(delta)[:, order], A[part],
                       per_token(B)[:, order, None], per_token(C)[:, order, None],
                       D[part], delta_bias[part], delta_softplus)
    out[:, order] += y
  return out.reshape(batch, height, width, per_group)


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


# ------------------------------------------------- HRVMamba's DVSS block, NCHW, PyTorch layout


def layer_norm_channels(x, weight, bias, eps=1e-5):
  """LayerNorm2d: over the channels of (B, C, H, W)."""
  mean = x.mean(1, keepdims=True)
  var = x.var(1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * weight[None, :, None, None] + bias[None, :, None, None]


def depthwise_conv_nchw(x, weight, bias, padding):
  """nn.Conv2d(groups=C) with weight (C, 1, k, k), stride 1."""
  _, _, height, width = x.shape
  k = weight.shape[-1]
  padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
  out = np.zeros(x.shape)
  for i in range(k):
    for j in range(k):
      out += padded[:, :, i:i + height, j:j + width] * weight[None, :, 0, i, j, None, None]
  return out + bias[None, :, None, None]


def gelu_erf(x):
  from scipy.special import erf   # pylint: disable=g-import-not-at-top
  return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def linear2d(x, weight, bias=None):
  """1x1 conv / Linear2d with weight (out, in) on (B, C, H, W)."""
  out = np.einsum("oc,bchw->bohw", weight, x)
  return out if bias is None else out + bias[None, :, None, None]


def dvss_block(x, p, groups):
  """docs/hrvmamba.md §5 (HRVmambaBlock, v05_noz SS2D with DCNv4), x (B, C, H, W), float64.

  p: PyTorch-named tensors of one block ('conv2d.0.weight', 'op.in_proj.weight', ...).
  """
  x = np.asarray(x, np.float64)
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  batch, channels, height, width = x.shape
  # ESInB
  y = layer_norm_channels(x, p["norm0.weight"], p["norm0.bias"])
  q = channels // 4
  sizes = [q + channels % 4, q, q, q]
  starts = np.cumsum([0] + sizes)
  y = np.concatenate([depthwise_conv_nchw(y[:, starts[i]:starts[i + 1]],
                                          p[f"conv2d.{i}.weight"], p[f"conv2d.{i}.bias"],
                                          padding=i + 1) for i in range(4)], axis=1)
  y = y.reshape(batch, 4, channels // 4, height, width).transpose(0, 2, 1, 3, 4)
  x = gelu_erf(y.reshape(batch, channels, height, width)) + x
  # SS2D
  u = linear2d(layer_norm_channels(x, p["norm.weight"], p["norm.bias"]),
               p["op.in_proj.weight"])                                   # (B, D, H, W)
  d_inner, length = u.shape[1], height * width
  v = u.transpose(0, 2, 3, 1)                                            # NHWC
  t = v
  if "op.conv2d.offset_mask_dw.weight" in p:
    t = depthwise_conv_nchw(u, p["op.conv2d.offset_mask_dw.weight"],
                            p["op.conv2d.offset_mask_dw.bias"], 1).transpose(0, 2, 3, 1)
  offset_mask = t @ p["op.conv2d.offset_mask.weight"].T + p["op.conv2d.offset_mask.bias"]
  z = dcnv4(v, offset_mask, groups).transpose(0, 3, 1, 2)               # (B, D, H, W)
  a = z / (1.0 + np.exp(-z))
  rows = a.reshape(batch, d_inner, length)
  cols = a.transpose(0, 1, 3, 2).reshape(batch, d_inner, length)
  xs = np.stack([rows, cols, rows[..., ::-1], cols[..., ::-1]], axis=1)  # (B, 4, D, L)
  x_dbl = np.einsum("kcd,bkdl->bkcl", p["op.x_proj_weight"], xs)
  rank = p["op.dt_projs_weight"].shape[-1]
  d_state = p["op.A_logs"].shape[-1]
  dts = np.einsum("kdr,bkrl->bkdl", p["op.dt_projs_weight"], x_dbl[:, :, :rank])
  b_m = x_dbl[:, :, rank:rank + d_state].transpose(0, 3, 1, 2)           # (B, L, 4, N)
  c_m = x_dbl[:, :, rank + d_state:].transpose(0, 3, 1, 2)
  ys = selective_scan(xs.reshape(batch, 4 * d_inner, length).transpose(0, 2, 1),
                      dts.reshape(batch, 4 * d_inner, length).transpose(0, 2, 1),
                      -np.exp(p["op.A_logs"]), b_m, c_m, p["op.Ds"],
                      p["op.dt_projs_bias"].reshape(-1))                 # (B, L, 4D)
  ys = ys.transpose(0, 2, 1).reshape(batch, 4, d_inner, length)
  row_sum = ys[:, 0] + ys[:, 2, :, ::-1]
  col_sum = ys[:, 1] + ys[:, 3, :, ::-1]
  y = (row_sum.reshape(batch, d_inner, height, width)
       + col_sum.reshape(batch, d_inner, width, height).transpose(0, 1, 3, 2))
  y = layer_norm_channels(y, p["op.out_norm.weight"], p["op.out_norm.bias"])
  x = x + linear2d(y, p["op.out_proj.weight"])
  # MLP
  h = gelu_erf(linear2d(layer_norm_channels(x, p["norm2.weight"], p["norm2.bias"]),
                        p["mlp.fc1.weight"], p["mlp.fc1.bias"]))
  return x + linear2d(h, p["mlp.fc2.weight"], p["mlp.fc2.bias"])
