"""The paper's variants at full size: 256x192 forward passes and the paper's FLOPs.

The slowest module of the suite (about three minutes on 2 CPU cores): each variant is
built once and compiled once per dtype.
"""

import jax
import jax.numpy as jnp
import pytest

from conftest import cached_model, jitted_forward, with_dtype
from mamkpd_jax.models import PAPER_SIZES, stats

BATCH = 2


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("variant", ["small", "base", "large"])
def test_full_size_forward_is_finite(variant, dtype):
  model = with_dtype(cached_model(variant), dtype)
  images = jax.random.normal(jax.random.key(0), (BATCH, 256, 192, 3))
  heatmaps = jitted_forward()(model, images)
  assert heatmaps.shape == (BATCH, 64, 48, 17)
  assert heatmaps.dtype == jnp.float32
  assert bool(jnp.isfinite(heatmaps).all())


@pytest.mark.parametrize("variant", ["base", "large"])
def test_gflops_within_15_percent_of_paper(variant):
  """Multiply-adds (the paper's convention), XLA cost analysis + hand-counted scan."""
  flops = stats.forward_flops(cached_model(variant), 256, 192)
  _, paper_gflops = PAPER_SIZES[variant]
  assert abs(flops["gmacs"] / paper_gflops - 1) < 0.15, flops
  assert flops["xla_gflops"] == pytest.approx(2 * flops["gmacs"], rel=0.1)
