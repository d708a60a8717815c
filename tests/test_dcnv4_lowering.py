"""How kernels/dcnv4.py's pure-JAX DCNv4 (impl="jax") lowers for TPU and for CUDA.

docs/hrvmamba.md ("DCNv4 on accelerators") records the structure these tests pin, so a
change to it is seen before a TPU or GPU run: per call, the forward is one scan over the
K = 9 kernel points with four row gathers (one per bilinear corner, rows of D
contiguous channels) and no scatter; the custom VJP adds a second scan that re-gathers
the four corners, contracts d_out with them over D and scatter-adds four float32
updates into d value. No intermediate is larger than the largest input (a
(N, Q, K, 4, D) corner tensor would be), and every large array in the scans has the
pixels Q or the channels D as its minor axis, never the groups G or the points K (which
XLA:TPU would pad to 128 lanes: 64x for G = 2). Lowering needs no TPU or GPU
(mamkpd_jax/benchmarking/lowering.py); the counts are read from the StableHLO
text by scripts/dcnv4_hlo.py; the call sites (`dcn.call_sites`) are checked against docs/hrvmamba.md §4.
"""

import importlib.util
import math
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from mamkpd_jax.benchmarking.lowering import lower_for_cuda, lower_for_tpu
from mamkpd_jax.kernels.dcnv4 import dcnv4
from mamkpd_jax.models.hrvmamba import dcn

REPO = pathlib.Path(__file__).resolve().parents[1]
LOWER = {"tpu": lower_for_tpu, "cuda": lower_for_cuda}
BATCH, HEIGHT, WIDTH, GROUPS, GROUP_DIM = 1, 8, 6, 4, 8
LANES = 112                                   # 3*K*G = 108 rounded up to a multiple of 8
CORNERS, POINTS = 4, 9


def load_script():
  spec = importlib.util.spec_from_file_location("dcnv4_hlo", REPO / "scripts/dcnv4_hlo.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


HLO = load_script()


def inputs(dtype=jnp.float32, batch=BATCH, height=HEIGHT, width=WIDTH, groups=GROUPS,
           group_dim=GROUP_DIM, lanes=LANES):
  return (jax.ShapeDtypeStruct((batch, height, width, groups * group_dim), dtype),
          jax.ShapeDtypeStruct((batch, height, width, lanes), dtype))


def forward(value, offset_mask):
  return dcnv4(value, offset_mask, groups=GROUPS, impl="jax")


def gradient(value, offset_mask):
  loss = lambda v, om: jnp.sum(jnp.square(forward(v, om).astype(jnp.float32)))
  return jax.grad(loss, argnums=(0, 1))(value, offset_mask)


def check_row_gathers(facts, count, dtype, batch=BATCH, height=HEIGHT, width=WIDTH,
                      groups=GROUPS, group_dim=GROUP_DIM):
  """`count` gathers, each of whole rows of D channels from the (N*H*W*G, D) value rows
  into (N, G, Q, D); no tensor larger than the largest input."""
  assert facts["ops"]["gather"] == count, facts["ops"]
  rows = batch * height * width * groups
  for operand, operand_dtype, slice_sizes, result in facts["gathers"]:
    assert operand == (rows, group_dim) and operand_dtype == dtype
    assert slice_sizes == (1, group_dim)
    assert result == (batch, groups, height * width, group_dim)
  assert facts["largest"] <= max(facts["inputs"]), (facts["largest"], facts["inputs"])


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
def test_forward_is_one_scan_of_four_corner_gathers(platform):
  facts = HLO.stablehlo_facts(LOWER[platform](forward, *inputs()))
  check_row_gathers(facts, CORNERS, "f32")
  assert facts["ops"]["while"] == 1                       # the scan over the K points
  assert facts["ops"]["scatter"] == 0 and facts["ops"]["dot_general"] == 0
  assert facts["ops"]["custom_call"] == 0                 # no kernel: XLA's own ops


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
@pytest.mark.parametrize("dtype, name", [(jnp.float32, "f32"), (jnp.bfloat16, "bf16")])
def test_backward_regathers_and_scatter_adds_float32_rows(platform, dtype, name):
  facts = HLO.stablehlo_facts(LOWER[platform](gradient, *inputs(dtype)))
  check_row_gathers(facts, 2 * CORNERS, name)             # rows are read at value's dtype
  assert facts["ops"]["while"] == 2                       # forward scan, backward scan
  assert facts["ops"]["dot_general"] == CORNERS           # d_out . V(corner), over D
  assert facts["ops"]["scatter"] == CORNERS
  rows = BATCH * HEIGHT * WIDTH * GROUPS
  update = (BATCH, GROUPS, HEIGHT * WIDTH, GROUP_DIM)
  assert facts["scatters"] == [((rows, GROUP_DIM), "f32", update, ("add",))] * CORNERS


def test_every_gather_and_scatter_runs_once_per_kernel_point():
  """In the jaxpr, each gather and scatter-add sits in a scan of length K = 9."""
  found = []
  def walk(jaxpr, length):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in ("gather", "scatter-add"):
        found.append((eqn.primitive.name, length))
      for param in eqn.params.values():
        inner = getattr(param, "jaxpr", param)
        if hasattr(inner, "eqns"):
          walk(inner, eqn.params["length"] if eqn.primitive.name == "scan" else length)
  walk(jax.make_jaxpr(gradient)(*inputs()).jaxpr, None)
  assert sorted(found) == [("gather", POINTS)] * 8 + [("scatter-add", POINTS)] * 4


def test_cpu_compiles_the_gathers_into_the_point_loops():
  """XLA:CPU's optimised HLO keeps both scans as loops of 9 and the gathers and scatters
  as such (the gathers fused with the bilinear weighting)."""
  text = jax.jit(gradient).lower(*inputs()).compile().as_text()
  facts = HLO.compiled_facts(text)
  assert facts["ops"]["gather"] == 2 * CORNERS and facts["ops"]["scatter"] == CORNERS
  assert facts["ops"]["while"] == 2 and facts["trip_counts"] == [POINTS, POINTS]
  assert facts["gathers_fused"] == 2 * CORNERS


def test_a_materialised_corner_tensor_fails_the_checks():
  """The checks have teeth: one gather of all K*4 corners, (N, Q, 36, G, D), fails them."""
  def materialised(value, offset_mask):
    rows = value.reshape(-1, GROUP_DIM)                                  # (N*H*W*G, D)
    pixel = offset_mask[..., :POINTS * CORNERS].astype(jnp.int32)        # (N, H, W, 36)
    index = pixel.reshape(BATCH, HEIGHT * WIDTH, POINTS * CORNERS, 1) * GROUPS
    index = jnp.clip(index + jnp.arange(GROUPS), 0, rows.shape[0] - 1)   # (N, Q, 36, G)
    return rows[index].sum(axis=2).reshape(value.shape)                  # (N,Q,36,G,D)
  facts = HLO.stablehlo_facts(lower_for_tpu(materialised, *inputs()))
  with pytest.raises(AssertionError):
    check_row_gathers(facts, CORNERS, "f32")
  assert facts["largest"] > 2 * max(facts["inputs"])


def check_lanes(text, batch=BATCH, queries=HEIGHT * WIDTH, groups=GROUPS,
                group_dim=GROUP_DIM):
  """No array in the scans of >= N*Q*G elements has a minor axis other than Q or D."""
  shapes = HLO.scan_body_shapes(text)
  assert ((batch, groups, queries, group_dim), "f32") in shapes  # the body was found
  sparse = HLO.lane_sparse(shapes, batch * queries * groups, (queries, group_dim))
  assert not sparse, f"arrays with G or K minor in the scans: {sparse}"


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
@pytest.mark.parametrize("function", [forward, gradient])
def test_scan_arrays_keep_pixels_or_channels_minor(platform, function):
  """Positions, weights, masks and row indices (K, N, G, Q) / (N, G, Q); corners, sum and
  scatter updates (N, G, Q, D). Q = 48, D = 8, G = 4, K = 9 here: all distinct."""
  check_lanes(LOWER[platform](function, *inputs()))


def test_hrvmamba_branch_with_two_groups_keeps_pixels_minor():
  """Branch 1 of HRVMamba-T at batch 8 (G = 2, Q = 768, D = 32), forward+backward, in
  bfloat16: where (K, N, Q, G) positions took 64x their size on XLA:TPU."""
  site = dcn.call_sites("tiny")[1]
  text = lower_for_tpu(HLO.gradient_fn(site.groups), *site.inputs(8, jnp.bfloat16))
  check_lanes(text, batch=8, queries=site.height * site.width, groups=site.groups,
              group_dim=site.channels // site.groups)


def test_a_groups_minor_scan_fails_the_lane_check():
  """The check has teeth: a scan over (3K, N, Q, G) point arrays (the layout before
  (K, N, G, Q)) is caught, as is one over (Q, N, G, 3K); one over (3K, N, G, Q) is not."""
  def sparse_in_scan_over(order):
    def fn(value, offset_mask):
      lanes = offset_mask[..., :3 * POINTS * GROUPS].reshape(
          BATCH, HEIGHT * WIDTH, GROUPS, 3 * POINTS)                    # (N, Q, G, 3K)
      body = lambda total, point: (total + jnp.sum(jnp.sin(point)), None)
      return jax.lax.scan(body, jnp.zeros(()), jnp.transpose(lanes, order))[0] + \
          jnp.sum(value)
    shapes = HLO.scan_body_shapes(lower_for_tpu(fn, *inputs()))
    return HLO.lane_sparse(shapes, BATCH * HEIGHT * WIDTH * GROUPS,
                           (HEIGHT * WIDTH, GROUP_DIM))
  assert {((27, 1, 48, 4), "f32"), ((1, 48, 4), "f32")} <= set(sparse_in_scan_over(
      (3, 0, 1, 2)))                               # carried (3K, N, Q, G), one point's
  assert ((48, 1, 4, 27), "f32") in sparse_in_scan_over((1, 0, 2, 3))  # (Q, N, G, 3K)
  assert sparse_in_scan_over((3, 0, 2, 1)) == []


def test_hrvmamba_tiny_call_sites_match_the_docs():
  """docs/hrvmamba.md §4, §6: DCNv4 on d_inner = 2C channels, G = ceil(C/16) groups of
  D = 32, P = 8*ceil(27G/8) lanes, maps 64x48 .. 8x6 at 256x192; 2 blocks per branch per
  module, modules (1, 4, 2) over stages with 2, 3, 4 branches."""
  sites = dcn.call_sites("tiny")
  assert [(s.height, s.width) for s in sites] == [(64, 48), (32, 24), (16, 12), (8, 6)]
  assert [s.channels for s in sites] == [32, 64, 128, 256]
  assert [s.groups for s in sites] == [1, 2, 4, 8]
  assert [s.lanes for s in sites] == [32, 56, 112, 216]
  assert [s.calls for s in sites] == [14, 14, 12, 4]


def test_hrvmamba_tiny_largest_map_gathers_128_byte_rows():
  """Branch 0 at batch 8 (the most rows per call): rows of D = 32 float32 channels."""
  site = dcn.call_sites("tiny")[0]
  value, offset_mask = site.inputs(8, jnp.float32)
  fn = lambda v, om: jax.grad(lambda a, b: jnp.sum(jnp.square(dcnv4(
      a, b, groups=site.groups, impl="jax"))), argnums=(0, 1))(v, om)
  facts = HLO.stablehlo_facts(lower_for_tpu(fn, value, offset_mask))
  check_row_gathers(facts, 2 * CORNERS, "f32", batch=8, height=64, width=48, groups=1,
                    group_dim=32)
  assert facts["scatters"][0][:2] == ((8 * 64 * 48, 32), "f32")
  assert math.prod(value.shape) == max(facts["inputs"]) == facts["largest"]


def test_script_reports_every_branch():
  result = subprocess.run(
      [sys.executable, "scripts/dcnv4_hlo.py", "--platforms=tpu", "--batch=1"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert "DCNv4 calls per forward branch 0 14, branch 1 14, branch 2 12, branch 3 4 " \
         "(total 44)" in result.stdout
  assert result.stdout.count("fwd+bwd tpu   gather 8, scatter 4, while 2") == 4
  assert "row 32xf32 = 128 B" in result.stdout


@pytest.mark.parametrize("values, message", [
    (dict(batch=["0"]), "--batch"),
    (dict(batch=["two"]), "--batch"),
    (dict(dtype=["float16"]), "--dtype"),
    (dict(platforms=["rocm"]), "--platforms"),
    (dict(input=["250", "192"]), "multiples of 32"),
])
def test_script_rejects_bad_arguments(values, message):
  flags = dict(variant="tiny", batch=["1"], dtype=["float32"], platforms=["tpu"],
               input=["256", "192"], tpu_topology=None)
  with pytest.raises(ValueError, match=message):
    HLO.parse({**flags, **values})


def test_bad_variant_and_text_are_named():
  with pytest.raises(ValueError, match="unknown HRVMamba variant 'huge'"):
    dcn.call_sites("huge")
  with pytest.raises(ValueError, match="not a StableHLO module"):
    HLO.stablehlo_facts("HloModule jit_f")
  with pytest.raises(ValueError, match="not a StableHLO module"):
    HLO.scan_body_shapes("HloModule jit_f")
