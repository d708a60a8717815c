"""Plain-numpy (float64) references the tests compare the JAX code against.

Written from the equations in ../shared/SPEC.md, independently of mamkpd_jax.
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
