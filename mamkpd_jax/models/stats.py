"""Model size and compute: parameters per component and FLOPs of one forward pass.

MamKPD and HRVMamba differ in how FLOPs are counted (each as its authors count them):
MamKPD below; HRVMamba by hand, `hrvmamba_macs` (its docstring).

MamKPD.
FLOPs come from XLA's cost analysis of the lowered forward pass, except for the
selective scan: XLA counts a loop body once, not once per iteration, and cannot see
inside a Pallas kernel. So the scan's own XLA count is subtracted and VMamba's hand
count put in its place (docs/scan.md, Counting FLOPs):

    scan multiply-adds per SS2D = 9 * B * L * (K * d_inner) * N  +  B * L * K * d_inner

Conventions. XLA counts 2 FLOPs per multiply-add (and 1 per elementwise op). The paper's
"GFLOPs", like fvcore's and mmcv's, count one multiply-add as one FLOP. `gmacs` is the
paper's convention (XLA's count halved, scan term as above); `xla_gflops` is XLA's own
(scan term doubled).
"""

from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mamkpd_jax import kernels
from mamkpd_jax.models import common
from mamkpd_jax.models.mamkpd.variants import ModelConfig

K = kernels.NUM_DIRECTIONS


def _size(leaves):
  return int(sum(np.prod(leaf.shape) for leaf in leaves))


def param_counts(model):
  """{component: parameter count} in forward order, plus 'total' (either family)."""
  if model.config.name == "hrvmamba":
    return _hrvmamba_param_counts(model)
  return _mamkpd_param_counts(model)


HRVMAMBA_COMPONENTS = (("stem", ("conv1", "bn1", "conv2", "bn2")), ("layer1", ("layer1",)),
                       ("transition1", ("transition1",)), ("stage2", ("stage2",)),
                       ("transition2", ("transition2",)), ("stage3", ("stage3",)),
                       ("transition3", ("transition3",)), ("stage4", ("stage4",)),
                       ("head", ("head",)))


def _hrvmamba_param_counts(model):
  """As the table of docs/hrvmamba.md §2: stem, layer1, transitions, stages, head."""
  params = nnx.state(model, nnx.Param)
  counts = {name: _size(jax.tree.leaves([params[a] for a in attrs if a in params]))
            for name, attrs in HRVMAMBA_COMPONENTS}
  counts["total"] = _size(jax.tree.leaves(params))
  assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
  return counts


def _mamkpd_param_counts(model):
  """{component: parameter count} in the paper's Figure 2 order, plus 'total'.

  Components: stem, then per stage `stage{i}.cmm`, `stage{i}.blocks`, `stage{i}.norm`,
  then decoder. Only nnx.Param counts (BatchNorm running statistics do not).
  """
  params = nnx.state(model, nnx.Param)
  counts = {}
  if model.stem is not None:
    counts["stem"] = _size(jax.tree.leaves(params["stem"]))
  for i, _ in enumerate(model.encoder.stages):
    stage = params["encoder"]["stages"][i]
    for part in ("cmm", "blocks", "norm"):
      counts[f"stage{i + 1}.{part}"] = _size(jax.tree.leaves(stage[part]))
  counts["decoder"] = _size(jax.tree.leaves(params["decoder"]))
  counts["total"] = _size(jax.tree.leaves(params))
  assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
  return counts


def scan_shapes(model_config: ModelConfig, height, width):
  """[(map height, map width, d_inner, number of SS2D blocks)] per stage."""
  shapes = []
  for i, (dim, depth) in enumerate(zip(model_config.dims, model_config.depths)):
    stride = 4 * 2 ** i
    shapes.append((height // stride, width // stride, model_config.d_inner(dim), depth))
  return shapes


def scan_macs(model_config: ModelConfig, height, width, batch=1):
  """VMamba's hand count of the selective scans of one forward pass (multiply-adds)."""
  n = model_config.d_state
  total = 0
  for map_h, map_w, d_inner, depth in scan_shapes(model_config, height, width):
    tokens, channels = batch * map_h * map_w, K * d_inner
    total += depth * (9 * tokens * channels * n + tokens * channels)
  return total


def _scan_xla_flops(model_config, batch, map_h, map_w, d_inner):
  """What XLA's cost analysis counts for one SS2D scan op of this shape."""
  n, act = model_config.d_state, jnp.dtype(model_config.dtype)
  channels = K * d_inner
  args = (jax.ShapeDtypeStruct((batch, map_h, map_w, d_inner), act),
          jax.ShapeDtypeStruct((batch, map_h, map_w, K, d_inner), act),
          jax.ShapeDtypeStruct((channels, n), jnp.float32),
          jax.ShapeDtypeStruct((batch, map_h, map_w, K, n), act),
          jax.ShapeDtypeStruct((batch, map_h, map_w, K, n), act),
          jax.ShapeDtypeStruct((channels,), jnp.float32),
          jax.ShapeDtypeStruct((channels,), jnp.float32))
  fn = lambda *a: kernels.cross_selective_scan(*a, impl=model_config.scan_impl)
  return jax.jit(fn).lower(*args).cost_analysis()["flops"]


def _dt_proj_outside(scan_op):
  """`scan_op` with SS2D's dt_proj applied before it (an einsum XLA counts), not inside
  the chunked scan's loop, where XLA's cost analysis counts a loop body once."""
  def scan(x, delta, *args, **kwargs):
    if isinstance(delta, kernels.LowRankDelta):
      delta = delta.einsum()
    return scan_op(x, delta, *args, **kwargs)
  return scan


def forward_flops(model, height, width, batch=1):
  """{'xla_gflops', 'gmacs', 'scan_gmacs'} for one forward pass of `batch` images.

  HRVMamba: xla_gflops is None (counted by hand, `hrvmamba_macs`).
  """
  cfg = model.config
  if cfg.name == "hrvmamba":
    macs = hrvmamba_macs(cfg, height, width, batch)
    return {"xla_gflops": None, "gmacs": macs["total"] / 1e9,
            "scan_gmacs": macs["scan"] / 1e9,
            "gmacs_per_component": {k: v / 1e9 for k, v in macs.items()}}
  graphdef, state = nnx.split(model)
  images = jax.ShapeDtypeStruct((batch, height, width, 3), jnp.float32)
  forward = lambda state, x: nnx.merge(graphdef, state)(x)
  # depth-wise convs as pure JAX: XLA counts no flops in a custom call (the CPU kernel)
  with mock.patch.object(kernels, "cross_selective_scan",
                         _dt_proj_outside(kernels.cross_selective_scan)), \
      common.depthwise_conv_mode("shifted"):
    total = jax.jit(forward).lower(state, images).cost_analysis()["flops"]
  scan_in_xla = sum(depth * _scan_xla_flops(cfg, batch, map_h, map_w, d_inner)
                    for map_h, map_w, d_inner, depth in scan_shapes(cfg, height, width))
  scan = scan_macs(cfg, height, width, batch)
  return {
      "xla_gflops": (total - scan_in_xla + 2 * scan) / 1e9,
      "gmacs": ((total - scan_in_xla) / 2 + scan) / 1e9,
      "scan_gmacs": scan / 1e9,
  }


# ------------------------------------------------------------------ HRVMamba, by hand

# fvcore's costs as the HRVMamba authors count (docs/hrvmamba.md §3): convs and
# Linears their multiply-adds (no bias), LayerNorm 5 and eval BatchNorm 2 per element,
# bilinear upsampling 4 per output element, DCNv4 36 per output element (9 points x 4
# corners), the scan 9 L D N + L D over the 4 directions; activations, adds and the
# cross-scan/merge uncounted.
LN_COST, BN_COST, UPSAMPLE_COST, DCN_COST = 5, 2, 4, 36


def _conv(tokens, in_dim, out_dim, kernel=1, groups=1):
  """Multiply-adds of a conv producing `tokens` output pixels (bias not counted)."""
  return tokens * out_dim * (in_dim // groups) * kernel * kernel


def _conv_bn(tokens, in_dim, out_dim, kernel=1, groups=1):
  return _conv(tokens, in_dim, out_dim, kernel, groups) + BN_COST * tokens * out_dim


def dvss_block_macs(cfg, width, tokens):
  """One DVSS block at `tokens` = H * W pixels (docs/hrvmamba.md §3 per-block terms)."""
  from mamkpd_jax.models.hrvmamba import dcn, dvss_block   # pylint: disable=g-import-not-at-top
  d_inner, rank, n = cfg.d_inner(width), cfg.dt_rank(width), cfg.d_state
  sizes = dvss_block.esinb_split_sizes(width)
  esinb = sum(_conv(tokens, s, s, k, groups=s)
              for s, k in zip(sizes, dvss_block.ESINB_KERNELS))
  norms = LN_COST * tokens * (3 * width + d_inner)        # norm0, norm, norm2, out_norm
  offset_dw = _conv(tokens, d_inner, d_inner, 3, groups=d_inner) if (
      dcn.has_offset_dw_conv(width)) else 0
  ss2d = (_conv(tokens, width, d_inner)                    # in_proj
          + offset_dw + _conv(tokens, d_inner, dcn.offset_mask_width(rank))
          + DCN_COST * tokens * d_inner
          + K * _conv(tokens, d_inner, rank + 2 * n)       # x_proj
          + K * _conv(tokens, rank, d_inner)               # dt_projs
          + _conv(tokens, d_inner, width))                 # out_proj
  scan = 9 * tokens * K * d_inner * n + tokens * K * d_inner
  mlp_hidden = int(width * cfg.mlp_ratio)
  mlp = _conv(tokens, width, mlp_hidden) + _conv(tokens, mlp_hidden, width)
  return esinb + norms + ss2d + scan + mlp, scan


def _hr_module_macs(cfg, widths, tokens, num_outputs):
  """Branches (blocks) and fuse layers of one HR module; tokens[b] pixels of branch b."""
  total = scan = 0
  for width, count in zip(widths, tokens):
    block, block_scan = dvss_block_macs(cfg, width, count)
    total, scan = total + cfg.num_blocks * block, scan + cfg.num_blocks * block_scan
  for i in range(num_outputs):
    for j in range(len(widths)):
      if j > i:                                            # 1x1 conv, BN, upsample
        total += _conv_bn(tokens[j], widths[j], widths[i])
        total += UPSAMPLE_COST * tokens[i] * widths[i]
      for step in range(i - j):                            # dw 3x3/2, BN, 1x1, BN
        out_dim = widths[i] if step == i - j - 1 else widths[j]
        at = tokens[j + step + 1]
        total += _conv_bn(at, widths[j], widths[j], 3, groups=widths[j])
        total += _conv_bn(at, widths[j], out_dim)
  return total, scan


def hrvmamba_macs(cfg, height, width, batch=1):
  """{component: multiply-adds} of one HRVMamba forward pass, plus 'scan' and 'total'."""
  from mamkpd_jax.models.hrvmamba import hrnet   # pylint: disable=g-import-not-at-top
  tokens = [batch * (height // 2 ** (b + 2)) * (width // 2 ** (b + 2)) for b in range(4)]
  stem_tokens = batch * (height // 2) * (width // 2)
  macs = {"stem": _conv_bn(stem_tokens, 3, cfg.stem_dim, 3)
                  + _conv_bn(tokens[0], cfg.stem_dim, cfg.stem_dim, 3)}
  mid, layer1 = cfg.layer1_width, 0
  in_dim = cfg.stem_dim
  for _ in range(cfg.num_bottlenecks):
    out_dim = hrnet.BOTTLENECK_EXPANSION * mid
    layer1 += (_conv_bn(tokens[0], in_dim, mid) + _conv_bn(tokens[0], mid, mid, 3)
               + _conv_bn(tokens[0], mid, out_dim))
    if in_dim != out_dim:
      layer1 += _conv_bn(tokens[0], in_dim, out_dim)      # downsample
    in_dim = out_dim
  macs["layer1"] = layer1
  prev, scan = [in_dim], 0
  for s, modules in enumerate(cfg.num_modules):
    widths = cfg.widths[:s + 2]
    transition = 0
    for i, w in enumerate(widths):
      if i >= len(prev):
        transition += _conv_bn(tokens[i], prev[-1], w, 3)
      elif prev[i] != w:
        transition += _conv_bn(tokens[i], prev[i], w, 3)
    macs[f"transition{s + 1}"] = transition
    stage = 0
    for m in range(modules):
      last = s == len(cfg.num_modules) - 1 and m == modules - 1
      module, module_scan = _hr_module_macs(cfg, widths, tokens, 1 if last else len(widths))
      stage, scan = stage + module, scan + module_scan
    macs[f"stage{s + 2}"] = stage
    prev = widths
  macs["head"] = _conv(tokens[0], cfg.widths[0], cfg.num_keypoints)
  macs["total"] = sum(macs.values())
  macs["scan"] = scan
  return macs
