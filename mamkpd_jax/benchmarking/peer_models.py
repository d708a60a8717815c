"""The peers' architectures in plain PyTorch, written from their published definitions
(no mmcv, mmpose, timm or torchvision, whose wheels need not load beside a CPU torch):

    HRNet-W32   mmpose's td-hm_hrnet-w32 (backbones/hrnet.py, resnet.py's BasicBlock and
                Bottleneck; HeatmapHead with no deconvs: a 1x1 conv on the stride-4
                branch). Published: 28.5M parameters, 7.1 GFLOPs at 256x192.
    ViTPose-B   ViTPose's ViT-B/16 (models/backbones/vit.py: patch conv with padding 2,
                pos_embed's token slot added to every token, pre-norm blocks, last norm)
                and its classic head (two 4x4 stride-2 deconvs of 256 channels with BN
                and ReLU, a 1x1 conv). Published: ~90M parameters, 17.1 GFLOPs.
    RTMPose-m   mmpose's rtmpose-m_8xb256-420e_coco-256x192: CSPNeXt P5 (deepen 0.67,
                widen 0.75, expand 0.5, channel attention, SiLU; backbones/cspnext.py,
                utils/csp_layer.py, csp_darknet.py's SPPBottleneck) and the RTMCC head
                (7x7 conv, ScaleNorm + Linear over the flattened map, one GAU block,
                SimCC x and y classifiers at split ratio 2; heads/coord_cls_heads/
                rtmcc_head.py, utils/rtmcc_block.py). Published: 13.59M, 1.93 GFLOPs.

The "GFLOPs" all three publish are multiply-adds (mmcv/fvcore count one per MAC).
Inputs are normalised float (N, 3, H, W), H and W multiples of 32; outputs: heatmaps
(N, K, H/4, W/4), or RTMPose's (simcc_x (N, K, 2W), simcc_y (N, K, 2H)). Random
weights: these modules exist to be timed.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn(in_ch, out_ch, kernel, stride=1, groups=1, act=None):
  """mmcv's ConvModule: conv (no bias before a norm), BatchNorm, optional activation."""
  layers = [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch)]
  return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


# ------------------------------------------------------------------ HRNet-W32


class BasicBlock(nn.Module):
  """Two 3x3 conv-BN, residual, ReLU (mmpose's resnet.BasicBlock, expansion 1)."""

  expansion = 1

  def __init__(self, in_ch, out_ch, downsample=None):
    super().__init__()
    self.conv1 = conv_bn(in_ch, out_ch, 3, act=nn.ReLU)
    self.conv2 = conv_bn(out_ch, out_ch, 3)
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    return F.relu(self.conv2(self.conv1(x)) + identity)


class Bottleneck(nn.Module):
  """1x1, 3x3, 1x1 conv-BN to out_ch (= 4 x mid), residual, ReLU (resnet.Bottleneck)."""

  expansion = 4

  def __init__(self, in_ch, out_ch, downsample=None):
    super().__init__()
    mid = out_ch // self.expansion
    self.body = nn.Sequential(conv_bn(in_ch, mid, 1, act=nn.ReLU),
                              conv_bn(mid, mid, 3, act=nn.ReLU), conv_bn(mid, out_ch, 1))
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    return F.relu(self.body(x) + identity)


def residual_layer(block, in_ch, out_ch, num_blocks):
  """num_blocks blocks in_ch -> out_ch, the first with a 1x1 conv-BN shortcut if needed."""
  downsample = conv_bn(in_ch, out_ch, 1) if in_ch != out_ch else None
  return nn.Sequential(block(in_ch, out_ch, downsample),
                       *[block(out_ch, out_ch) for _ in range(num_blocks - 1)])


class HRModule(nn.Module):
  """Parallel branches of 4 blocks each, then every output branch sums all branches
  brought to its resolution (1x1 conv + nearest upsampling from lower ones, strided 3x3
  convs from higher ones), ReLU. With multiscale_output False only branch 0 is fused."""

  def __init__(self, block, channels, multiscale_output=True, num_blocks=4):
    super().__init__()
    self.branches = nn.ModuleList(residual_layer(block, c, c, num_blocks) for c in channels)
    n = len(channels)
    outputs = n if multiscale_output else 1
    self.fuse = nn.ModuleList(
        nn.ModuleList(self._fuse_layer(channels, j, i) for j in range(n))
        for i in range(outputs)) if n > 1 else None

  @staticmethod
  def _fuse_layer(channels, source, target):
    if source == target:
      return nn.Identity()
    if source > target:                    # lower resolution: 1x1 conv, upsample
      return nn.Sequential(conv_bn(channels[source], channels[target], 1),
                           nn.Upsample(scale_factor=2 ** (source - target), mode="nearest"))
    steps = []                             # higher resolution: strided 3x3 convs
    for k in range(target - source):
      last = k == target - source - 1
      steps.append(conv_bn(channels[source], channels[target] if last else channels[source],
                           3, stride=2, act=None if last else nn.ReLU))
    return nn.Sequential(*steps)

  def forward(self, xs):
    xs = [branch(x) for branch, x in zip(self.branches, xs)]
    if self.fuse is None:
      return xs
    return [F.relu(sum(layer(x) for layer, x in zip(layers, xs))) for layers in self.fuse]


def hrnet_transition(pre, cur):
  """mmpose's _make_transition_layer: per new branch a 3x3 conv-BN-ReLU where channels
  change, None where they do not, a strided conv chain from the last branch for a new one."""
  layers = []
  for i, channels in enumerate(cur):
    if i < len(pre):
      layers.append(conv_bn(pre[i], channels, 3, act=nn.ReLU) if channels != pre[i]
                    else nn.Identity())
    else:
      steps = [conv_bn(pre[-1], channels if j == i - len(pre) else pre[-1], 3, stride=2,
                       act=nn.ReLU) for j in range(i + 1 - len(pre))]
      layers.append(nn.Sequential(*steps))
  return nn.ModuleList(layers)


class HRNetPose(nn.Module):
  """HRNet-W32 (stage modules 1/1/4/3, widths 32/64/128/256) + a 1x1 heatmap conv on the
  stride-4 branch: (N, 3, H, W) -> (N, K, H/4, W/4)."""

  STAGES = ((1, (32, 64)), (4, (32, 64, 128)), (3, (32, 64, 128, 256)))  # (modules, widths)

  def __init__(self, num_keypoints=17):
    super().__init__()
    self.stem = nn.Sequential(conv_bn(3, 64, 3, 2, act=nn.ReLU),
                              conv_bn(64, 64, 3, 2, act=nn.ReLU))
    self.layer1 = residual_layer(Bottleneck, 64, 256, 4)
    pre = [256]
    self.transitions, self.stages = nn.ModuleList(), nn.ModuleList()
    for index, (modules, widths) in enumerate(self.STAGES):
      self.transitions.append(hrnet_transition(pre, widths))
      last_stage = index == len(self.STAGES) - 1
      self.stages.append(nn.Sequential(*[
          HRModule(BasicBlock, widths,
                   multiscale_output=not (last_stage and m == modules - 1))
          for m in range(modules)]))
      pre = list(widths)
    self.head = nn.Conv2d(32, num_keypoints, 1)

  def forward(self, x):
    y = [self.layer1(self.stem(x))]
    for transition, stage in zip(self.transitions, self.stages):
      # new branches grow from the lowest-resolution output (mmpose's y_list[-1])
      xs = [t(y[i] if i < len(y) else y[-1]) for i, t in enumerate(transition)]
      y = stage(xs)
    return self.head(y[0])


# ------------------------------------------------------------------ ViTPose-B


class VitBlock(nn.Module):
  """Pre-norm multi-head self-attention and GELU MLP, LayerNorm eps 1e-6, qkv bias."""

  def __init__(self, dim, heads, mlp_ratio=4):
    super().__init__()
    self.heads = heads
    self.norm1 = nn.LayerNorm(dim, eps=1e-6)
    self.qkv = nn.Linear(dim, 3 * dim)
    self.proj = nn.Linear(dim, dim)
    self.norm2 = nn.LayerNorm(dim, eps=1e-6)
    self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(),
                             nn.Linear(mlp_ratio * dim, dim))

  def attention(self, x):                                     # (B, N, C)
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]                          # (B, heads, N, C/heads)
    weights = (q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)
    out = weights.softmax(dim=-1) @ v
    return self.proj(out.transpose(1, 2).reshape(b, n, c))

  def forward(self, x):
    x = x + self.attention(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class ViTPose(nn.Module):
  """ViT-B/16 on an (H, W) crop + the classic two-deconv head:
  (N, 3, H, W) -> (N, K, H/4, W/4)."""

  def __init__(self, num_keypoints=17, height=256, width=192, dim=768, depth=12, heads=12,
               patch=16):
    super().__init__()
    self.patch_embed = nn.Conv2d(3, dim, patch, patch, padding=2)   # ViTPose's ratio=1
    self.pos_embed = nn.Parameter(torch.zeros(1, (height // patch) * (width // patch) + 1,
                                              dim))
    nn.init.trunc_normal_(self.pos_embed, std=0.02)
    self.blocks = nn.Sequential(*[VitBlock(dim, heads) for _ in range(depth)])
    self.last_norm = nn.LayerNorm(dim, eps=1e-6)
    deconvs = []
    for in_ch in (dim, 256):
      deconvs += [nn.ConvTranspose2d(in_ch, 256, 4, 2, 1, bias=False), nn.BatchNorm2d(256),
                  nn.ReLU(inplace=True)]
    self.head = nn.Sequential(*deconvs, nn.Conv2d(256, num_keypoints, 1))

  def forward(self, x):
    x = self.patch_embed(x)                                   # (B, C, H/16, W/16)
    b, c, hp, wp = x.shape
    x = x.flatten(2).transpose(1, 2)                          # (B, N, C)
    x = x + self.pos_embed[:, 1:] + self.pos_embed[:, :1]
    x = self.last_norm(self.blocks(x))
    return self.head(x.permute(0, 2, 1).reshape(b, c, hp, wp))


# ------------------------------------------------------------------ RTMPose-m


class ChannelAttention(nn.Module):
  """x * hardsigmoid(1x1 conv(global average of x))."""

  def __init__(self, channels):
    super().__init__()
    self.fc = nn.Conv2d(channels, channels, 1)

  def forward(self, x):
    return x * F.hardsigmoid(self.fc(F.adaptive_avg_pool2d(x, 1)))


class CSPNeXtBlock(nn.Module):
  """3x3 ConvModule, then a depth-wise separable 5x5 (dw conv-BN-SiLU, pw conv-BN-SiLU),
  plus the input when add_identity."""

  def __init__(self, channels, add_identity, kernel=5):
    super().__init__()
    self.conv1 = conv_bn(channels, channels, 3, act=nn.SiLU)
    self.depthwise = conv_bn(channels, channels, kernel, groups=channels, act=nn.SiLU)
    self.pointwise = conv_bn(channels, channels, 1, act=nn.SiLU)
    self.add_identity = add_identity

  def forward(self, x):
    out = self.pointwise(self.depthwise(self.conv1(x)))
    return out + x if self.add_identity else out


class CSPLayer(nn.Module):
  """Main 1x1 -> CSPNeXt blocks, short 1x1, concatenated, channel attention, final 1x1."""

  def __init__(self, in_ch, out_ch, num_blocks, add_identity, expand_ratio=0.5):
    super().__init__()
    mid = int(out_ch * expand_ratio)
    self.main_conv = conv_bn(in_ch, mid, 1, act=nn.SiLU)
    self.short_conv = conv_bn(in_ch, mid, 1, act=nn.SiLU)
    self.blocks = nn.Sequential(*[CSPNeXtBlock(mid, add_identity) for _ in range(num_blocks)])
    self.attention = ChannelAttention(2 * mid)
    self.final_conv = conv_bn(2 * mid, out_ch, 1, act=nn.SiLU)

  def forward(self, x):
    main = self.blocks(self.main_conv(x))
    return self.final_conv(self.attention(torch.cat((main, self.short_conv(x)), dim=1)))


class SPPBottleneck(nn.Module):
  """1x1 to half the channels, max pools 5/9/13 (stride 1) concatenated, 1x1 back."""

  def __init__(self, in_ch, out_ch, kernels=(5, 9, 13)):
    super().__init__()
    mid = in_ch // 2
    self.conv1 = conv_bn(in_ch, mid, 1, act=nn.SiLU)
    self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)
    self.conv2 = conv_bn(mid * (len(kernels) + 1), out_ch, 1, act=nn.SiLU)

  def forward(self, x):
    x = self.conv1(x)
    return self.conv2(torch.cat([x] + [pool(x) for pool in self.pools], dim=1))


def cspnext(deepen=0.67, widen=0.75, expand_ratio=0.5):
  """CSPNeXt P5 to its last stage (out_indices=(4,)): (N, 3, H, W) -> (N, 1024 widen,
  H/32, W/32)."""
  # (in, out, blocks, add_identity, spp) per stage: CSPNeXt.arch_settings["P5"]
  arch = ((64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False),
          (512, 1024, 3, False, True))
  stem = int(arch[0][0] * widen)
  layers = [conv_bn(3, stem // 2, 3, 2, act=nn.SiLU), conv_bn(stem // 2, stem // 2, 3,
                                                               act=nn.SiLU),
            conv_bn(stem // 2, stem, 3, act=nn.SiLU)]
  for in_ch, out_ch, blocks, add_identity, spp in arch:
    in_ch, out_ch = int(in_ch * widen), int(out_ch * widen)
    stage = [conv_bn(in_ch, out_ch, 3, 2, act=nn.SiLU)]
    stage += [SPPBottleneck(out_ch, out_ch)] if spp else []
    stage.append(CSPLayer(out_ch, out_ch, max(round(blocks * deepen), 1), add_identity,
                          expand_ratio))
    layers.append(nn.Sequential(*stage))
  return nn.Sequential(*layers)


class ScaleNorm(nn.Module):
  """x / max(|x| / sqrt(dim), eps) * g over the last axis."""

  def __init__(self, dim, eps=1e-5):
    super().__init__()
    self.scale, self.eps = dim ** -0.5, eps
    self.g = nn.Parameter(torch.ones(1))

  def forward(self, x):
    norm = torch.linalg.norm(x, dim=-1, keepdim=True) * self.scale
    return x / norm.clamp(min=self.eps) * self.g


class GAU(nn.Module):
  """RTMCCBlock as RTMPose configures it: self-attention gated attention unit, SiLU, no
  relative bias, no rotary encoding, scaled residual (in dims == out dims)."""

  def __init__(self, dims, expansion=2, s=128):
    super().__init__()
    self.e, self.s = dims * expansion, s
    self.ln = ScaleNorm(dims)
    self.uv = nn.Linear(dims, 2 * self.e + s, bias=False)
    self.gamma = nn.Parameter(torch.rand(2, s))
    self.beta = nn.Parameter(torch.rand(2, s))
    self.o = nn.Linear(self.e, dims, bias=False)
    self.res_scale = nn.Parameter(torch.ones(dims))

  def forward(self, x):                                       # (B, K, dims)
    uv = F.silu(self.uv(self.ln(x)))
    u, v, base = torch.split(uv, [self.e, self.e, self.s], dim=2)
    base = base.unsqueeze(2) * self.gamma[None, None, :] + self.beta   # (B, K, 2, s)
    q, k = torch.unbind(base, dim=2)
    kernel = torch.square(F.relu(torch.bmm(q, k.permute(0, 2, 1)) / math.sqrt(self.s)))
    return x * self.res_scale + self.o(u * torch.bmm(kernel, v))


class RTMPose(nn.Module):
  """CSPNeXt-m + RTMCC head: (N, 3, H, W) -> (simcc_x (N, K, 2W), simcc_y (N, K, 2H))."""

  def __init__(self, num_keypoints=17, height=256, width=192, hidden=256, split_ratio=2.0):
    super().__init__()
    self.backbone = cspnext()
    self.final_layer = nn.Conv2d(768, num_keypoints, 7, padding=3)
    tokens = (height // 32) * (width // 32)
    self.mlp = nn.Sequential(ScaleNorm(tokens), nn.Linear(tokens, hidden, bias=False))
    self.gau = GAU(hidden)
    self.cls_x = nn.Linear(hidden, int(width * split_ratio), bias=False)
    self.cls_y = nn.Linear(hidden, int(height * split_ratio), bias=False)

  def forward(self, x):
    feats = self.final_layer(self.backbone(x)).flatten(2)   # (B, K, H/32 * W/32)
    feats = self.gau(self.mlp(feats))                       # (B, K, hidden)
    return self.cls_x(feats), self.cls_y(feats)


def build(name, num_keypoints, height, width):
  """A peer module by name (peers.PEER_NAMES), random weights, eval mode."""
  if height % 32 or width % 32:
    raise ValueError(f"the peers need an input height and width that are multiples of 32 "
                     f"(--input_height/--input_width); got {height}x{width}")
  if name == "hrnet_w32":
    model = HRNetPose(num_keypoints)
  elif name == "vitpose_b":
    model = ViTPose(num_keypoints, height, width)
  elif name == "rtmpose_m":
    model = RTMPose(num_keypoints, height, width)
  else:
    raise ValueError(f"unknown peer {name!r}")
  return model.eval()
