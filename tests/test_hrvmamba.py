"""HRVMamba: exact sizes, the authors' tensor manifests, FLOPs, the pieces whose layout
a float32 comparison with the authors' model would catch, and the checkpoint converter.

Each variant is built once (models.abstract_model; HRVMamba builds eagerly: 9-21 s per
variant on 2 idle-ish cores). The converter's per-tensor perturbation test (a compiled
tiny forward and ~180 perturbed runs: 281 s on the 2-core CPU) is opt-in:
MAMKPD_SLOW_TESTS=1 pytest tests/test_hrvmamba.py.
"""

import functools
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mamkpd_jax import config_lib, models
from mamkpd_jax.models import hrvmamba, stats
from mamkpd_jax.models.hrvmamba import convert, dvss_block, hrnet

# The authors' state_dict manifests (origin: tests/data/hrvmamba/README.md).
MANIFEST_DIR = os.environ.get(
    "HRVMAMBA_MANIFESTS", os.path.join(os.path.dirname(__file__), "data", "hrvmamba"))
VARIANTS = ("tiny", "small", "base")
slow = pytest.mark.skipif(not os.environ.get("MAMKPD_SLOW_TESTS"),
                          reason="slow (minutes of CPU): set MAMKPD_SLOW_TESTS=1")


def read_manifest(variant):
  """[(name, shape)] of state_dict_<variant>.tsv (the authors' tensors)."""
  path = os.path.join(MANIFEST_DIR, f"state_dict_{variant}.tsv")
  if not os.path.isfile(path):
    pytest.skip(f"{path} not available")
  rows = []
  with open(path, encoding="utf-8") as f:
    next(f)
    for line in f:
      name, shape, _ = line.rstrip("\n").split("\t")
      rows.append((name, tuple(int(d) for d in shape.split(",")) if shape else ()))
  return rows


@functools.lru_cache(maxsize=None)
def abstract(variant, **overrides):
  config = hrvmamba.model_config(variant)
  config.update(overrides)
  return models.abstract_model(config)


def param_count(model):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_counts_are_the_authors_exactly(variant):
  counts = stats.param_counts(abstract(variant))
  assert counts["total"] == hrvmamba.PAPER_SIZES[variant][0]
  # docs/hrvmamba.md §2 per-component table (independent of the total).
  expected_stage4 = {"tiny": 1_218_912, "small": 4_670_592, "base": 28_554_528}[variant]
  assert counts["stem"] == 38_848 and counts["stage4"] == expected_stage4


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_manifest_tensor_maps_to_exactly_one_variable(variant):
  """Names, shapes (after the layout rule) and element counts, both directions.

  num_batches_tracked (int64 scalar per BN) is the one exception: Flax's BatchNorm uses
  a fixed momentum, and PyTorch reads the counter only when momentum=None (unused).
  """
  model = abstract(variant)
  rows = read_manifest(variant)
  zeros = {name: np.broadcast_to(np.float32(0), shape) for name, shape in rows}
  converted = convert.convert_state_dict(zeros, model)    # raises on any mismatch
  counted = [(n, s) for n, s in rows if not n.endswith("num_batches_tracked")]
  assert len(converted) == len(counted) == len(
      nnx.to_flat_state(nnx.state(model, (nnx.Param, nnx.BatchStat))))
  assert (sum(int(np.prod(s)) for _, s in counted)
          == sum(a.size for a in converted.values()))


def test_converter_refuses_unknown_missing_and_misshapen_tensors():
  model = abstract("tiny")
  rows = dict(read_manifest("tiny"))
  zeros = {name: np.zeros(shape, np.float32) for name, shape in rows.items()}
  block = "backbone.stage2.0.branches.0.0"
  old_tiny = {**zeros, f"{block}.op.se.fc1.weight": np.zeros((4, 32), np.float32),
              f"{block}.cpe1.weight": np.zeros((16, 1, 3, 3), np.float32)}
  with pytest.raises(convert.ConversionError, match="7222bc4.*se.fc1.weight"):
    convert.convert_state_dict(old_tiny, model)
  missing = dict(zeros)
  del missing[f"{block}.op.conv2d.offset_mask.bias"]
  with pytest.raises(convert.ConversionError, match="no checkpoint tensor: "
                     "stage2.0.branches.0.0.op.conv2d.offset_mask.bias"):
    convert.convert_state_dict(missing, model)
  wrong = {**zeros, "head.final_layer.weight": np.zeros((16, 16, 1, 1), np.float32)}
  with pytest.raises(convert.ConversionError, match="head.final_layer.weight"):
    convert.convert_state_dict(wrong, model)
  # mmpose's {"state_dict": ...} wrapper is unwrapped.
  num_batch_counters = sum(name.endswith("num_batches_tracked") for name in rows)
  assert len(convert.convert_state_dict({"state_dict": zeros, "meta": {}}, model)) == (
      len(rows) - num_batch_counters)


@pytest.mark.parametrize("variant", VARIANTS)
def test_flops_by_hand_match_the_authors_count(variant):
  cfg = models.parse_model_config(hrvmamba.model_config(variant))
  macs = stats.hrvmamba_macs(cfg, 256, 192)
  assert macs["total"] / 1e9 == pytest.approx(hrvmamba.PAPER_SIZES[variant][1], rel=0.02)
  # docs/hrvmamba.md §3 by module (G), tiny / small / base, and the 384x288 totals.
  by_module = {"tiny": (0.136, 0.129, 0.076, 0.413, 0.252, 2.4725),
               "small": (0.136, 0.447, 0.230, 1.305, 0.822, 7.4495),
               "base": (0.136, 0.447, 1.183, 6.955, 4.492, 32.0490)}[variant]
  got = [macs[k] / 1e9 for k in ("stem", "layer1", "stage2", "stage3", "stage4")]
  np.testing.assert_allclose(got, by_module[:5], rtol=5e-3)
  assert stats.hrvmamba_macs(cfg, 384, 288)["total"] / 1e9 == pytest.approx(
      by_module[5], rel=1e-3)


def pytorch_bilinear_upsample(x, factor):
  """F.interpolate(scale_factor=factor, mode='bilinear', align_corners=False) in numpy,
  written from PyTorch's area_pixel_compute_source_index (NHWC, float64)."""
  def axis_weights(size):
    out = np.arange(size * factor)
    src = np.maximum((out + 0.5) / factor - 0.5, 0.0)     # negative sources clamp to 0
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, size - 1)
    return i0, i1, src - i0
  h0, h1, lh = axis_weights(x.shape[1])
  w0, w1, lw = axis_weights(x.shape[2])
  lh, lw = lh[None, :, None, None], lw[None, None, :, None]
  top = (1 - lw) * x[:, h0][:, :, w0] + lw * x[:, h0][:, :, w1]
  bottom = (1 - lw) * x[:, h1][:, :, w0] + lw * x[:, h1][:, :, w1]
  return (1 - lh) * top + lh * bottom


@pytest.mark.parametrize("factor,shape", [(2, (2, 4, 3, 5)), (4, (1, 3, 5, 2)),
                                          (8, (1, 2, 2, 3)), (2, (1, 1, 1, 2))])
def test_upsampling_is_pytorch_bilinear_align_corners_false(factor, shape):
  x = np.random.default_rng(0).normal(size=shape)
  got = hrnet.upsample_bilinear(jnp.asarray(x, jnp.float32), factor)
  np.testing.assert_allclose(got, pytorch_bilinear_upsample(x, factor), atol=2e-6)


def test_channel_shuffle_and_esinb_split_follow_the_authors():
  channels = 12
  x = np.arange(channels)[None]
  # torch: x.view(B, 4, C/4, ...).transpose(1, 2).reshape(B, C)
  torch_order = x.reshape(1, 4, channels // 4).transpose(0, 2, 1).reshape(1, channels)
  np.testing.assert_array_equal(dvss_block.channel_shuffle(x), torch_order)
  assert [int(v) for v in dvss_block.channel_shuffle(x)[0, :5]] == [0, 3, 6, 9, 1]
  assert dvss_block.esinb_split_sizes(18) == [6, 4, 4, 4]
  assert dvss_block.esinb_split_sizes(16) == [4, 4, 4, 4]


def test_drop_path_rates_grow_along_the_module_sequence():
  cfg = models.parse_model_config(hrvmamba.model_config("base"))
  rates = cfg.block_drop_path_rates()
  flat = [r for stage in rates for module in stage for r in module]
  np.testing.assert_allclose(flat, np.linspace(0, 0.2, 14))
  assert [len(stage) for stage in rates] == [1, 4, 2]


def test_family_selection_and_bad_config():
  config = config_lib.coco("small", family="hrvmamba")
  assert config.model.name == "hrvmamba" and config.data.codec == "msra"
  assert config.train.optimizer == "adamw" and config.train.weight_decay == 0.01
  assert models.model_title(config.model) == "HRVMamba-small"
  assert isinstance(models.parse_model_config(config.model), hrvmamba.HRVMambaConfig)
  assert models.model_title(config_lib.coco("base").model) == "MamKPD-base"
  config.model.name = "hrnet"
  with pytest.raises(ValueError, match="config.model.name='hrnet'"):
    models.parse_model_config(config.model)
  bad = hrvmamba.model_config("tiny")
  bad.widths = (16, 32, 64, 130)
  with pytest.raises(ValueError, match="config.model.widths"):
    models.parse_model_config(bad)
  bad = hrvmamba.model_config("tiny")
  bad.dims = (1, 2, 3)
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['dims'\]"):
    models.parse_model_config(bad)


def test_input_size_must_be_a_multiple_of_32():
  with pytest.raises(ValueError, match="multiples of 32"):
    abstract("tiny")(jnp.zeros((1, 48, 32, 3)))


def random_state_dict(rows, seed=0):
  """Random tensors under the manifest's names: BN variances positive, offsets small."""
  rng = np.random.default_rng(seed)
  state_dict = {}
  for name, shape in rows:
    if name.endswith("num_batches_tracked"):
      state_dict[name] = np.int64(7)
    elif name.endswith("running_var"):
      state_dict[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    else:
      scale = 0.05 if "offset_mask" in name else 0.3
      state_dict[name] = (scale * rng.standard_normal(shape)).astype(np.float32)
  return state_dict


@slow
def test_converted_model_output_depends_on_every_kind_of_tensor():
  """Nothing converted is silently unused: perturbing one tensor changes the heatmaps.

  One tensor of every kind (its name with the indices blanked: each rule at each place
  of the network) plus a random sample of the rest, each perturbed alone.
  """
  rows = read_manifest("tiny")
  state_dict = random_state_dict(rows)
  model = convert.load_state_dict(nnx.clone(abstract("tiny")), state_dict)
  model.eval()
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
  images = jax.random.uniform(jax.random.key(0), (1, 32, 32, 3), maxval=255.0)
  reference = np.asarray(forward(state, images))
  assert reference.shape == (1, 8, 8, 17) and np.isfinite(reference).all()

  kinds = {}
  for name, _ in rows:
    if not name.endswith("num_batches_tracked"):
      kinds.setdefault(re.sub(r"\.\d+", ".#", name), []).append(name)
  rng = np.random.default_rng(1)
  chosen = [names[rng.integers(len(names))] for names in kinds.values()]
  chosen += list(rng.choice([n for n, _ in rows if n not in chosen
                             and not n.endswith("num_batches_tracked")], 20, replace=False))
  unused = []
  for name in chosen:
    perturbed = dict(state_dict)
    perturbed[name] = state_dict[name] + np.float32(0.5)
    convert.load_state_dict(model, perturbed)
    if np.allclose(np.asarray(forward(nnx.state(model), images)), reference,
                   rtol=0, atol=1e-7):
      unused.append(name)
  assert not unused, f"heatmaps do not depend on {unused}"
  assert len(kinds) > 100


def test_model_from_state_dict_rejects_a_mamkpd_config():
  with pytest.raises(ValueError, match="HRVMamba"):
    convert.model_from_state_dict({}, config_lib.coco("tiny").model)


@pytest.mark.parametrize("width,height_width", [(16, (5, 6)), (80, (4, 3))])
def test_dvss_block_matches_the_spec_equations_in_numpy(width, height_width):
  """One DVSS block (random weights, non-square map; width 80 has offset_mask_dw) against
  numpy_refs.dvss_block, which takes the weights in the authors' layout through the
  converter's rules: float32 round-off."""
  import numpy_refs   # pylint: disable=g-import-not-at-top
  cfg = models.parse_model_config(hrvmamba.model_config("tiny"))
  block = dvss_block.DVSSBlock(width, model_config=cfg, drop_path_rate=0.0,
                               dtype=jnp.float32, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  # Torch-layout weights of this block (names as the authors'), converted into ours.
  torch_params = {}
  for path, var in nnx.to_flat_state(nnx.state(block, nnx.Param)):
    name = ".".join(map(str, path))
    shape = tuple(var.shape)
    scale = 0.2 if "offset_mask" in name else 0.4
    torch_params[name] = (scale * rng.standard_normal(shape)).astype(np.float32)
  converted = {}
  for name, value in torch_params.items():
    module_path, _, leaf = name.rpartition(".")
    module = convert._module_at(block, module_path)   # pylint: disable=protected-access
    rule = next(r for (t, n), r in convert.RULES.items()
                if r is not None and r[0] == leaf and isinstance(module, t))
    inverse = {"kernel": (lambda w: np.transpose(w, (3, 2, 0, 1)) if w.ndim == 4 else w.T)}
    torch_name = module_path + "." + {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)
    converted[torch_name] = inverse.get(leaf, lambda w: w)(value)
    assert rule[1](converted[torch_name]).shape == value.shape
  state = nnx.state(block, nnx.Param)
  for path, var in nnx.to_flat_state(state):
    var.set_value(jnp.asarray(torch_params[".".join(map(str, path))]))
  nnx.update(block, state)
  height, width_px = height_width
  x = rng.standard_normal((2, height, width_px, width)).astype(np.float32)
  got = nnx.jit(lambda b, x: b(x))(block, jnp.asarray(x))
  want = numpy_refs.dvss_block(x.transpose(0, 3, 1, 2), converted,
                               groups=cfg.dt_rank(width)).transpose(0, 2, 3, 1)
  scale = np.abs(want).max()
  # float32 round-off: docs/hrvmamba.md §8 measures 3e-5 (relative to max) for the whole float32 model.
  np.testing.assert_allclose(np.asarray(got) / scale, want / scale, atol=2e-5)


class _ConvBN(nnx.Module):
  """conv 3x3 + BN + ReLU: a tiny stand-in for a repeated HR block (batch statistics)."""

  def __init__(self, width, rngs, kernel_size=3):
    self.layers = hrnet.conv_bn(width, width, kernel_size, jnp.float32, rngs)

  def __call__(self, x):
    return jax.nn.relu(hrnet.apply_conv_bn(self.layers, x)) + x


def test_apply_sequence_scans_identical_modules_like_a_loop():
  """One lax.scan over identical modules == the Python loop: outputs, batch statistics
  (train mode) and parameter gradients; a differing module breaks the run."""
  from mamkpd_jax.models import common
  rngs = nnx.Rngs(3)
  modules = [_ConvBN(4, rngs) for _ in range(3)] + [_ConvBN(4, rngs, kernel_size=1),
                                                    _ConvBN(4, rngs)]
  x = jax.random.normal(jax.random.key(1), (2, 5, 6, 4))

  def run(apply):
    chain = nnx.clone(nnx.List(modules))
    def loss(chain):
      y = apply(list(chain), x)
      return jnp.sum(y ** 2), y
    (_, y), grads = nnx.value_and_grad(loss, has_aux=True)(chain)
    return chain, (y, nnx.state(chain, nnx.BatchStat), grads)

  def loop(modules, x):
    for module in modules:
      x = module(x)
    return x

  _, expected = run(loop)
  chain, got = run(common.apply_sequence)
  for want, have in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-4)   # float32 sums
  # each scanned module got its own batch statistics back
  means = [m.layers[1].mean[...] for m in list(chain)[:3]]
  assert not np.allclose(means[0], means[1]) and not np.allclose(means[0], 0)
  graphdef, state = nnx.split(nnx.List(modules))
  traced = lambda state: common.apply_sequence(list(nnx.merge(graphdef, state)), x)
  jaxpr = jax.make_jaxpr(traced)(state)
  assert sum(eqn.primitive.name == "scan" for eqn in jaxpr.eqns) == 1


def test_block_graph_is_hashable():
  """Evaluation and inference key compiled functions by the graph definition."""
  config = models.parse_model_config(config_lib.openfield("tiny", family="hrvmamba").model)
  block = dvss_block.DVSSBlock(16, model_config=config, drop_path_rate=0.0,
                               dtype=jnp.float32, rngs=nnx.Rngs(0))
  assert isinstance(hash(nnx.split(block)[0]), int)


@slow
def test_every_scan_implementation_gives_the_same_heatmaps():
  """A small HRVMamba (widths 8-32, one module and block per stage, 32x32) with each
  pure-JAX scan and the Pallas kernels (interpreted on the CPU): the same heatmaps."""
  from mamkpd_jax import inference
  from mamkpd_jax.models.hrvmamba import dcn
  config = hrvmamba.model_config("tiny", num_keypoints=2)
  config.update(widths=(8, 16, 24, 32), num_modules=(1, 1, 1), num_blocks=1)
  model = models.build_model(config, seed=0)
  model.eval()
  # DCNv4's offset/mask Linear is zero-initialised (upstream): make it sample for real.
  for index, (_, module) in enumerate(model.iter_modules()):
    if isinstance(module, dcn.DCNv4Mixer):
      kernel = module.offset_mask.kernel
      kernel[...] = 0.1 * jax.random.normal(jax.random.key(index), kernel.shape)
  images = jax.random.uniform(jax.random.key(0), (1, 32, 32, 3), maxval=255.0)
  heatmaps = {}
  for impl in ("reference", "chunked", "pallas_triton"):
    changed = inference.with_model_changes(model, scan_impl=impl)
    heatmaps[impl] = np.asarray(nnx.jit(lambda m, x: m(x))(changed, images))
  assert np.abs(heatmaps["reference"]).max() > 0
  for impl in ("chunked", "pallas_triton"):
    np.testing.assert_allclose(heatmaps[impl], heatmaps["reference"], rtol=1e-4, atol=1e-5,
                               err_msg=impl)


def test_dcnv4_cpu_kernel_gives_the_same_heatmaps_and_gradients():
  """A small HRVMamba (widths 16-64, one module and block per stage, 32x32, batch 2)
  with DCNv4 sampled by the compiled CPU kernel and by the pure-JAX op: the same
  heatmaps and parameter gradients; export contexts trace the pure-JAX op."""
  from mamkpd_jax.kernels import cpu_kernels
  from mamkpd_jax.models import common
  from mamkpd_jax.models.hrvmamba import dcn
  if jax.default_backend() != "cpu" or not cpu_kernels.available():
    pytest.skip("the compiled CPU kernels need the CPU backend and a C++ compiler")
  config = hrvmamba.model_config("tiny", num_keypoints=2)
  config.update(widths=(16, 32, 48, 64), num_modules=(1, 1, 1), num_blocks=1)
  model = models.build_model(config, seed=0)
  model.eval()
  # DCNv4's offset/mask Linear is zero-initialised (upstream): make it sample for real.
  for index, (_, module) in enumerate(nnx.iter_modules(model)):
    if isinstance(module, dcn.DCNv4Mixer):
      kernel = module.offset_mask.kernel
      kernel[...] = 0.1 * jax.random.normal(jax.random.key(index), kernel.shape)
  images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), maxval=255.0)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  def new_loss():    # a new function per use: jit and make_jaxpr cache traces by function
    return lambda p: jnp.sum(nnx.merge(graphdef, p, rest)(images) ** 2)
  results = {}
  for impl in ("cpu_ffi", "jax"):
    with dcn.dcnv4_impl(impl):
      results[impl] = jax.jit(jax.value_and_grad(new_loss()))(params)
      traced = str(jax.make_jaxpr(new_loss())(params))
    assert ("mamkpd_dcnv4_forward" in traced) == (impl == "cpu_ffi")
  (got, got_grads), (want, want_grads) = results["cpu_ffi"], results["jax"]
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for got_leaf, want_leaf in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-4,
                               atol=1e-4 * np.abs(want_leaf).max() + 1e-12)
  with common.depthwise_conv_mode("shifted"):                  # as jax.export traces
    assert dcn.sampling_impl() == "jax"
    assert "mamkpd_dcnv4_forward" not in str(jax.make_jaxpr(new_loss())(params))
  with pytest.raises(ValueError, match="unknown DCNv4 impl 'fast'"):
    with dcn.dcnv4_impl("fast"):
      pass
