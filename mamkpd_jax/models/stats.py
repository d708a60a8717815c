"""Model size and compute: parameters per component and FLOPs of one forward pass.

FLOPs come from XLA's cost analysis of the lowered forward pass, except for the
selective scan: XLA counts a loop body once, not once per iteration, and cannot see
inside a Pallas kernel. So the scan's own XLA count is subtracted and VMamba's hand
count put in its place (../shared/SPEC.md §1):

    scan multiply-adds per SS2D = 9 * B * L * (K * d_inner) * N  +  B * L * K * d_inner

Conventions. XLA counts 2 FLOPs per multiply-add (and 1 per elementwise op). The paper's
"GFLOPs", like fvcore's and mmcv's, count one multiply-add as one FLOP. `gmacs` is the
paper's convention (XLA's count halved, scan term as above); `xla_gflops` is XLA's own
(scan term doubled).
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mamkpd_jax import kernels
from mamkpd_jax.models.mamkpd.variants import ModelConfig

K = kernels.NUM_DIRECTIONS


def _size(leaves):
  return int(sum(np.prod(leaf.shape) for leaf in leaves))


def param_counts(model):
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


def forward_flops(model, height, width, batch=1):
  """{'xla_gflops', 'gmacs', 'scan_gmacs'} for one forward pass of `batch` images."""
  cfg = model.config
  graphdef, state = nnx.split(model)
  images = jax.ShapeDtypeStruct((batch, height, width, 3), jnp.float32)
  forward = lambda state, x: nnx.merge(graphdef, state)(x)
  total = jax.jit(forward).lower(state, images).cost_analysis()["flops"]
  scan_in_xla = sum(depth * _scan_xla_flops(cfg, batch, map_h, map_w, d_inner)
                    for map_h, map_w, d_inner, depth in scan_shapes(cfg, height, width))
  scan = scan_macs(cfg, height, width, batch)
  return {
      "xla_gflops": (total - scan_in_xla + 2 * scan) / 1e9,
      "gmacs": ((total - scan_in_xla) / 2 + scan) / 1e9,
      "scan_gmacs": scan / 1e9,
  }
