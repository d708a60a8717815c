"""MamKPD: parameter counts against the paper, shapes, SS2D, decoder alignment, init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import numpy_refs
from conftest import cached_model, jitted_forward, make_config, with_dtype
from mamkpd_jax.models import PAPER_SIZES, MamKPD, common, stats
from mamkpd_jax.models.mamkpd.decoder import HeatmapDecoder
from mamkpd_jax.models.ss2d import DT_MAX, DT_MIN, SS2D


def abstract_model(config):
  """The model's structure and shapes without initialising (no compilation)."""
  return nnx.eval_shape(lambda: MamKPD(config, rngs=nnx.Rngs(0)))


# (variant, overrides): every paper row, the test row, and the optional SS2D parts.
PARAM_CASES = [
    ("tiny", {}),
    ("small", {}),
    ("base", {}),
    ("large", {}),
    ("tiny", {"gate": True, "mlp_ratio": 2.0, "d_state": 4}),     # z gate + MLP
    ("base", {"gate": True, "ssm_ratio": 1.0, "d_state": 16,      # setting (b)
              "decoder_dims": (256, 256)}),
]


@pytest.mark.parametrize("variant,overrides", PARAM_CASES)
def test_parameter_counts_per_component_match_formula(variant, overrides):
  config = make_config(variant, **overrides)
  assert stats.param_counts(abstract_model(config)) == numpy_refs.mamkpd_params(config)


@pytest.mark.parametrize("variant", ["base", "large"])
def test_parameter_counts_within_2_percent_of_paper(variant):
  total = stats.param_counts(abstract_model(make_config(variant)))["total"]
  paper_params, _ = PAPER_SIZES[variant]
  assert abs(total / paper_params - 1) < 0.02, total


# Paper Table 5 (ablations of MamKPD-B): (depths, dims, paper params).
TABLE5_ROWS = [
    ((2, 4, 6), (64, 128, 256), 3.2e6),       # (c)
    ((2, 4, 6), (192, 384, 768), 27.9e6),     # (d)
]


@pytest.mark.parametrize("depths,dims,paper_params", TABLE5_ROWS)
def test_table5_ablation_sizes_within_2_percent(depths, dims, paper_params):
  """Our inferred SS2D settings also land the paper's ablation rows."""
  config = make_config("base", depths=depths, dims=dims, stem_dim=dims[0],
                       decoder_dims=(dims[-1] // 2, dims[-1] // 4))
  total = stats.param_counts(abstract_model(config))["total"]
  assert abs(total / paper_params - 1) < 0.02, total


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tiny_forward_shape_and_dtype(tiny_model, dtype):
  model = with_dtype(tiny_model, dtype)
  images = jax.random.normal(jax.random.key(1), (2, 64, 48, 3))
  heatmaps = jitted_forward()(model, images)
  assert heatmaps.shape == (2, 16, 12, 17)
  assert heatmaps.dtype == jnp.float32
  assert bool(jnp.isfinite(heatmaps).all())


def test_model_normalises_rgb_input(tiny_model):
  """uint8 and float RGB give the same heatmaps; normalisation is mmpose's ImageNet one."""
  assert common.PIXEL_MEAN == (123.675, 116.28, 103.53)          # docs/conventions.md
  assert common.PIXEL_STD == (58.395, 57.12, 57.375)
  pixels = np.array([[[[255, 0, 10]]]], np.uint8)
  np.testing.assert_allclose(common.normalize_images(pixels)[0, 0, 0],
                             [(255 - 123.675) / 58.395, -116.28 / 57.12,
                              (10 - 103.53) / 57.375], rtol=1e-6)
  images = jax.random.randint(jax.random.key(7), (2, 64, 48, 3), 0, 256).astype(jnp.uint8)
  np.testing.assert_allclose(jitted_forward()(tiny_model, images),
                             jitted_forward()(tiny_model, images.astype(jnp.float32)),
                             rtol=1e-6, atol=1e-6)


def test_bfloat16_close_to_float32(tiny_model):
  images = jax.random.normal(jax.random.key(2), (2, 64, 48, 3))
  full = jitted_forward()(tiny_model, images)
  half = jitted_forward()(with_dtype(tiny_model, "bfloat16"), images)
  assert float(jnp.abs(full - half).max()) < 0.05 * float(jnp.abs(full).max())


@pytest.mark.parametrize("shape,message", [
    ((1, 60, 48, 3), "multiples of 16"),
    ((1, 64, 48, 1), r"\(N, H, W, 3\)"),
    ((64, 48, 3), r"\(N, H, W, 3\)"),
])
def test_bad_input_shapes_are_clear_errors(tiny_model, shape, message):
  with pytest.raises(ValueError, match=message):
    tiny_model(jnp.zeros(shape))


def test_drop_path_only_in_training():
  model = cached_model("tiny", drop_path_rate=0.5)
  images = jax.random.normal(jax.random.key(3), (4, 64, 48, 3))
  forward = jitted_forward()
  model.train()
  try:
    first, second = forward(model, images), forward(model, images)
  finally:
    model.eval()
  assert not np.allclose(first, second)            # a fresh draw each call
  np.testing.assert_array_equal(forward(model, images), forward(model, images))


def test_init_statistics():
  """VMamba's initialisation: A = -(1..N), D = 1, softplus(dt_bias) in [1e-3, 0.1]."""
  ss2d = SS2D(32, d_state=5, ssm_ratio=2.0, dt_rank=2, gate=False, d_conv=3,
              scan_impl="reference", dtype=jnp.float32, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(-jnp.exp(ss2d.A_logs[...]),
                             -np.tile(np.arange(1, 6), (4 * 64, 1)), rtol=1e-6)
  np.testing.assert_array_equal(ss2d.Ds[...], np.ones(4 * 64))
  dt = np.asarray(jax.nn.softplus(ss2d.dt_projs_bias[...]))
  assert dt.min() >= DT_MIN * (1 - 1e-4) and dt.max() <= DT_MAX * (1 + 1e-4)
  # log-uniform: about half the draws below the geometric mean 1e-2
  assert 0.4 < np.mean(dt < np.sqrt(DT_MIN * DT_MAX)) < 0.6
  assert np.abs(ss2d.x_proj_weight[...]).max() <= 64 ** -0.5
  assert np.abs(ss2d.dt_projs_weight[...]).max() <= 2 ** -0.5
  assert 0.015 < float(jnp.std(ss2d.in_proj.kernel[...])) < 0.025   # trunc-normal 0.02


def test_ss2d_scan_matches_per_direction_numpy():
  """SS2D's fused 4-direction scan equals 4 separate numpy scans, un-permuted and summed."""
  dim, d_state, height, width = 8, 2, 3, 4
  ss2d = SS2D(dim, d_state=d_state, ssm_ratio=1.0, dt_rank=1, gate=False, d_conv=3,
              scan_impl="reference", dtype=jnp.float32, rngs=nnx.Rngs(1))
  x = np.random.default_rng(5).standard_normal((2, height, width, dim)).astype(np.float32)
  got = np.asarray(ss2d._scan(jnp.asarray(x)))
  x_proj = np.asarray(ss2d.x_proj_weight[...], np.float64)          # (K, R+2N, D)
  dt_proj = np.asarray(ss2d.dt_projs_weight[...], np.float64)       # (K, D, R)
  dt_bias = np.asarray(ss2d.dt_projs_bias[...], np.float64)         # (K, D)
  a = -np.exp(np.asarray(ss2d.A_logs[...], np.float64)).reshape(4, dim, d_state)
  d_skip = np.asarray(ss2d.Ds[...], np.float64).reshape(4, dim)
  tokens = x.reshape(2, height * width, dim).astype(np.float64)
  expected = np.zeros_like(tokens)
  for k, order in enumerate(numpy_refs.token_orders(height, width)):
    u = tokens[:, order]                                             # (b, L, D)
    proj = u @ x_proj[k].T                                           # (b, L, R+2N)
    delta = proj[..., :1] @ dt_proj[k].T
    b_mat, c_mat = proj[..., 1:1 + d_state], proj[..., 1 + d_state:]
    y = numpy_refs.selective_scan(u, delta, a[k], b_mat[:, :, None], c_mat[:, :, None],
                                  d_skip[k], dt_bias[k])
    expected[:, order] += y
  np.testing.assert_allclose(got, expected.reshape(2, height, width, dim),
                             rtol=1e-4, atol=1e-5)


def test_deconv_matches_pytorch_convtranspose():
  """Our 4x4/2 deconvolution is PyTorch's ConvTranspose2d(k=4, s=2, p=1), weights mapped."""
  rng = np.random.default_rng(6)
  decoder = HeatmapDecoder(3, (2, 2), 1, dtype=jnp.float32, rngs=nnx.Rngs(0))
  torch_weight = rng.standard_normal((3, 2, 4, 4))                  # (C_in, C_out, kh, kw)
  decoder.deconv1.kernel[...] = jnp.asarray(torch_weight.transpose(2, 3, 1, 0), jnp.float32)
  x = rng.standard_normal((1, 3, 5, 3))
  got = decoder.deconv1(jnp.asarray(x, jnp.float32))
  expected = numpy_refs.conv_transpose_pytorch(x, torch_weight, stride=2, padding=1)
  assert got.shape == (1, 6, 10, 2)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


def test_decoder_keeps_a_peak_where_the_feature_is():
  """A lone stride-16 feature at cell (i, j) peaks on heatmap cells 4i+1..4i+2 (centre 4i+1.5)."""
  decoder = HeatmapDecoder(1, (1, 1), 1, dtype=jnp.float32, rngs=nnx.Rngs(0))
  decoder.eval()
  bilinear = np.outer([1, 3, 3, 1], [1, 3, 3, 1]).astype(np.float32) / 16   # symmetric
  for deconv in (decoder.deconv1, decoder.deconv2):
    deconv.kernel[...] = jnp.asarray(bilinear[:, :, None, None])
  decoder.final_layer.kernel[...] = jnp.ones((1, 1, 1, 1))
  features = np.zeros((1, 8, 6, 1), np.float32)
  i, j = 3, 2
  features[0, i, j, 0] = 1.0
  heatmap = np.asarray(decoder(jnp.asarray(features)))[0, :, :, 0]   # (32, 24)
  assert heatmap.shape == (32, 24)
  peak_rows, peak_cols = np.nonzero(heatmap == heatmap.max())
  assert set(peak_rows) == {4 * i + 1, 4 * i + 2} and set(peak_cols) == {4 * j + 1, 4 * j + 2}
  # symmetric about the centre 4i + 1.5: mirrored rows and columns are equal
  rows = heatmap[4 * i - 2:4 * i + 6, 4 * j + 1]
  np.testing.assert_allclose(rows, rows[::-1], rtol=1e-5)
