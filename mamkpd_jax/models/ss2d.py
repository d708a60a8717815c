"""SS2D, VMamba's 2D selective-scan operator (docs/scan.md).

    x (N, H, W, d)
      -> in_proj            Dense d -> d_inner (x2 with the z gate), no bias
      -> conv2d             the local mixer, then SiLU: a 3x3 depth-wise conv (+bias)
                            by default (MamKPD, VMamba); HRVMamba passes its DCNv4
      -> x_proj_weight[k]   per token, for each direction k: dt (R), B (N_s), C (N_s)
      -> dt_projs_weight[k] dt (R) -> delta (d_inner), + dt_projs_bias[k] inside the scan
      -> cross_selective_scan   direction k visits the tokens in its order (row-major,
                            column-major, and both reversed), runs the selective scan
                            with its own B, C, and the four outputs are summed back
                            in row-major order: (N, H, W, d_inner) float32
      -> out_norm           LayerNorm(d_inner); x SiLU(z) if gated
      -> out_proj           Dense d_inner -> d, no bias; Dropout (drop_rate)

Parameter names and layouts mirror VMamba's PyTorch module, so weights convert by a
name table: x_proj_weight (K, R + 2N, d_inner), dt_projs_weight (K, d_inner, R),
dt_projs_bias (K, d_inner), A_logs (K * d_inner, N), Ds (K * d_inner,).
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mamkpd_jax import kernels
from mamkpd_jax.models import common

K = kernels.NUM_DIRECTIONS
DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 0.1, 1e-4


def a_log_init(channels, d_state):
  """S4D-real: A = -(1, 2, ..., N) for every channel, stored as log."""
  return jnp.log(jnp.tile(jnp.arange(1, d_state + 1, dtype=jnp.float32), (channels, 1)))


def dt_bias_init(key, shape):
  """Inverse softplus of dt ~ exp(U[log 1e-3, log 0.1]), dt >= 1e-4 (mamba's dt init)."""
  log_dt = jax.random.uniform(key, shape, minval=np.log(DT_MIN), maxval=np.log(DT_MAX))
  dt = jnp.maximum(jnp.exp(log_dt), DT_FLOOR)
  return dt + jnp.log(-jnp.expm1(-dt))       # softplus(result) == dt


def uniform_init(key, shape, bound):
  return jax.random.uniform(key, shape, minval=-bound, maxval=bound, dtype=jnp.float32)


class SS2D(nnx.Module):
  """Four-direction selective scan over a channels-last 2D map."""

  def __init__(self, dim, *, d_state, ssm_ratio, dt_rank, gate, scan_impl, dtype, rngs,
               d_conv=3, mixer=None, drop_rate=0.0):
    """`mixer(d_inner, dtype, rngs)` builds the local mixer, (N, H, W, d_inner) -> same;
    None: a d_conv x d_conv depth-wise conv."""
    d_inner = int(ssm_ratio * dim)
    self.d_inner, self.d_state, self.dt_rank = d_inner, d_state, dt_rank
    self.gate, self.scan_impl, self.dtype = gate, scan_impl, dtype

    self.in_proj = common.dense(dim, d_inner * (2 if gate else 1), dtype, rngs,
                                use_bias=False)
    if mixer is None:
      self.conv2d = common.depthwise_conv(d_inner, d_conv, dtype, rngs)
    else:
      self.conv2d = mixer(d_inner, dtype, rngs)
    self.x_proj_weight = nnx.Param(uniform_init(
        rngs.params(), (K, dt_rank + 2 * d_state, d_inner), d_inner ** -0.5))
    self.dt_projs_weight = nnx.Param(uniform_init(
        rngs.params(), (K, d_inner, dt_rank), dt_rank ** -0.5))
    self.dt_projs_bias = nnx.Param(dt_bias_init(rngs.params(), (K, d_inner)))
    self.A_logs = nnx.Param(a_log_init(K * d_inner, d_state))
    self.Ds = nnx.Param(jnp.ones((K * d_inner,), jnp.float32))
    self.out_norm = common.layer_norm(d_inner, dtype, rngs)
    self.out_proj = common.dense(d_inner, dim, dtype, rngs, use_bias=False)
    self.dropout = common.dropout(drop_rate, rngs)

  def _scan(self, x):
    """(N, H, W, d_inner) after conv -> (N, H, W, d_inner) float32 merged scan output.

    x_proj and dt_proj act per token, so they are applied in row-major order for all
    four directions at once; the scan op visits each direction's order itself.
    """
    # x_proj as one 2-D matmul over the tokens (an ONNX Gemm; an einsum exports as ONNX
    # Runtime's slow Einsum). dt_proj is left to the scan (kernels.LowRankDelta): the
    # chunked scan applies it per token, the others materialise it as one matmul.
    batch, height, width, _ = x.shape
    tokens = x.reshape(-1, self.d_inner)                              # (N*H*W, Di)
    x_proj = self.x_proj_weight[...].astype(self.dtype)               # (K, R+2Ns, Di)
    x_dbl = (tokens @ x_proj.reshape(-1, self.d_inner).T).reshape(
        batch, height, width, K, -1)                                  # (N, H, W, K, R+2Ns)
    dts, B, C = jnp.split(x_dbl, [self.dt_rank, self.dt_rank + self.d_state], axis=-1)
    delta = kernels.LowRankDelta(                                     # (N, H, W, K, Di)
        dts, self.dt_projs_weight[...].astype(self.dtype))            # dt_proj, not applied
    return kernels.cross_selective_scan(
        x, delta,
        -jnp.exp(self.A_logs[...]),                                   # A (K*Di, Ns)
        B, C,                                                         # (N, H, W, K, Ns)
        self.Ds[...],
        self.dt_projs_bias[...].reshape(K * self.d_inner),
        delta_softplus=True, impl=self.scan_impl)                     # (N, H, W, Di) f32

  def __call__(self, x):
    """(N, H, W, dim) -> (N, H, W, dim) in the compute dtype."""
    x = self.in_proj(x)                                               # (N, H, W, Di[*2])
    if self.gate:
      x, z = jnp.split(x, 2, axis=-1)
    x = jax.nn.silu(self.conv2d(x))
    y = self.out_norm(self._scan(x))                                  # (N, H, W, Di)
    if self.gate:
      y = y * jax.nn.silu(z)
    return common.apply(self.dropout, self.out_proj(y))
