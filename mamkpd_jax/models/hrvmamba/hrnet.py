"""HRNet skeleton of HRVMamba (docs/hrvmamba.md §6): stem, layer1 Bottlenecks, transitions, HR modules.

Containers are nnx.Lists indexed like the authors' nn.Sequential / nn.ModuleList, so a
checkpoint tensor's module path is ours unchanged (`transition1.1.0.0`, `fuse_layers.
0.1.1`, ...; hrvmamba/convert.py maps only the leaf names and layouts).

    HR module:  every branch runs its DVSS blocks; then each output i is
                y_i = ReLU(sum_j F_ij(x_j)),  F_ii = identity,
                F_ij (j > i) = 1x1 conv, BN, bilinear x2^(j-i) (align_corners=False),
                F_ij (j < i) = (i-j) x [dw 3x3/2 conv, BN, 1x1 conv, BN, ReLU but last]
    transition: a changed width: 3x3 conv, BN, ReLU; a new branch: 3x3/2 conv, BN, ReLU
                of the previous stage's last branch; unchanged: passed through (None).

Convs have no bias; BN eps 1e-5; convs kaiming-uniform, BN (1, 0).
"""

import jax
from flax import nnx

from mamkpd_jax.models import common
from mamkpd_jax.models.hrvmamba.dvss_block import DVSSBlock

BOTTLENECK_EXPANSION = 4


def conv_bn(in_dim, out_dim, kernel_size, dtype, rngs, stride=1):
  """[conv, BN] as the authors' nn.Sequential(conv, BN)."""
  return nnx.List([common.conv(in_dim, out_dim, kernel_size, dtype, rngs, stride=stride),
                   common.batch_norm(out_dim, dtype, rngs)])


def apply_conv_bn(layers, x):
  conv, bn = layers
  return bn(conv(x))


def upsample_bilinear(x, factor):
  """(N, H, W, C) -> (N, factor H, factor W, C), PyTorch's bilinear, align_corners=False.

  jax.image.resize uses half-pixel centres and renormalises the edge weights, which
  equals PyTorch's clamping of the source index at the border (tests/test_hrvmamba.py
  checks it against PyTorch's formula written in numpy).
  """
  n, h, w, c = x.shape
  return jax.image.resize(x, (n, h * factor, w * factor, c), "bilinear")


class Bottleneck(nnx.Module):
  """mmpose Bottleneck: 1x1, 3x3, 1x1 (x4 expansion) with BN, residual, ReLU."""

  def __init__(self, in_dim, mid_dim, *, dtype, rngs):
    out_dim = BOTTLENECK_EXPANSION * mid_dim
    self.conv1 = common.conv(in_dim, mid_dim, 1, dtype, rngs)
    self.bn1 = common.batch_norm(mid_dim, dtype, rngs)
    self.conv2 = common.conv(mid_dim, mid_dim, 3, dtype, rngs)
    self.bn2 = common.batch_norm(mid_dim, dtype, rngs)
    self.conv3 = common.conv(mid_dim, out_dim, 1, dtype, rngs)
    self.bn3 = common.batch_norm(out_dim, dtype, rngs)
    self.downsample = (conv_bn(in_dim, out_dim, 1, dtype, rngs) if in_dim != out_dim
                       else None)

  def __call__(self, x):
    identity = x if self.downsample is None else apply_conv_bn(self.downsample, x)
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = jax.nn.relu(self.bn2(self.conv2(y)))
    return jax.nn.relu(self.bn3(self.conv3(y)) + identity)


def make_transition(prev_widths, widths, dtype, rngs):
  """One entry per new-stage branch: None, [conv, BN] (width change) or [[conv/2, BN]]."""
  entries = []
  for i, width in enumerate(widths):
    if i < len(prev_widths):
      entries.append(None if prev_widths[i] == width
                     else conv_bn(prev_widths[i], width, 3, dtype, rngs))
    else:
      entries.append(nnx.List([conv_bn(prev_widths[-1], width, 3, dtype, rngs, stride=2)]))
  return nnx.List(entries)


def apply_transition(entries, features):
  """Previous stage's branch outputs -> the next stage's branch inputs."""
  out = []
  for i, entry in enumerate(entries):
    if i < len(features):
      out.append(features[i] if entry is None
                 else jax.nn.relu(apply_conv_bn(entry, features[i])))
    else:                                             # new branch from the last one
      out.append(jax.nn.relu(apply_conv_bn(entry[0], features[-1])))
  return out


def make_fuse_layer(i, j, widths, dtype, rngs):
  """F_ij of the module docstring (None for i == j)."""
  if j == i:
    return None
  if j > i:                                           # 1x1 conv + BN, then upsample
    return conv_bn(widths[j], widths[i], 1, dtype, rngs)
  steps = []
  for step in range(i - j):
    out_dim = widths[i] if step == i - j - 1 else widths[j]
    steps.append(nnx.List([
        common.depthwise_conv(widths[j], 3, dtype, rngs, stride=2, use_bias=False),
        common.batch_norm(widths[j], dtype, rngs),
        common.conv(widths[j], out_dim, 1, dtype, rngs),
        common.batch_norm(out_dim, dtype, rngs)]))
  return nnx.List(steps)


def apply_fuse_layer(i, j, layer, x):
  if j == i:
    return x
  if j > i:
    return upsample_bilinear(apply_conv_bn(layer, x), 2 ** (j - i))
  for step, (dw_conv, dw_bn, pw_conv, pw_bn) in enumerate(layer):
    x = pw_bn(pw_conv(dw_bn(dw_conv(x))))
    if step < len(layer) - 1:
      x = jax.nn.relu(x)
  return x


class HRModule(nnx.Module):
  """Parallel branches of DVSS blocks, then the multi-resolution fusion."""

  def __init__(self, widths, *, multiscale_output, drop_path_rates, model_config, dtype,
               rngs):
    self.branches = nnx.List([
        nnx.List([DVSSBlock(width, model_config=model_config, drop_path_rate=rate,
                            dtype=dtype, rngs=rngs) for rate in drop_path_rates])
        for width in widths])
    num_outputs = len(widths) if multiscale_output else 1
    self.fuse_layers = nnx.List([
        nnx.List([make_fuse_layer(i, j, widths, dtype, rngs) for j in range(len(widths))])
        for i in range(num_outputs)])

  def __call__(self, features):
    """[(N, H/2^b, W/2^b, widths[b])] per branch b -> same (or only branch 0)."""
    features = list(features)
    for b, blocks in enumerate(self.branches):
      features[b] = common.apply_sequence(blocks, features[b])   # identical blocks: one scan
    outputs = []
    for i, row in enumerate(self.fuse_layers):
      y = 0
      for j, layer in enumerate(row):
        y = y + apply_fuse_layer(i, j, layer, features[j])
      outputs.append(jax.nn.relu(y))
    return outputs
