"""What the benchmark scripts share: timing, the scan's stage shapes and byte model, the
model and peer timings, and the kernels' tolerances against the reference.

scripts/benchmark.py (model throughput), scripts/benchmark_scan.py (the scan alone) and
scripts/gpu_check.py (all of it on one GPU, with correctness) call these; they hold no
flags, so one process can use them all.

Byte model of the scan (minimum traffic of a fused op; activations in their dtype,
outputs float32):
  forward:  per direction read u and delta (P channels each) and B, C (N each);
            write the merged y once (P channels, float32).
  backward: the forward's reads again (recomputation), read dy once, write du once,
            d(delta) per direction (float32), dB and dC per direction.
"""

import contextlib
import dataclasses
import statistics
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mamkpd_jax import config_lib, inference, kernels
from mamkpd_jax.export import onnx_export
from mamkpd_jax.training import optim, train
from mamkpd_jax.models import ModelConfig, build_model, model_config, model_title, stats
from mamkpd_jax.models.hrvmamba import variants as hrvmamba_variants
from mamkpd_jax.models.mamkpd.variants import HEATMAP_STRIDE

K = kernels.NUM_DIRECTIONS
# Published HBM bandwidth (GB/s) by device name fragment, most specific first.
PEAK_GBPS = [("H200", 4800.0), ("H100 PCIe", 2000.0), ("H100", 3350.0), ("A100", 2039.0)]

# A kernel against the reference scan (tests/test_pallas_scan.py's tolerances): both
# compute in float32 from the same inputs, so outputs agree to float32 round-off;
# bfloat16 gradients are rounded to bfloat16 on both sides (relative step 2^-8).
OUTPUT_RTOL = 2e-5
GRAD_RTOL = {"float32": 2e-5, "bfloat16": 2e-2}


@dataclasses.dataclass(frozen=True)
class Timing:
  """How each measurement is taken: `warmup` untimed calls, median of `repeats`."""

  warmup: int = 3
  repeats: int = 20


def time_in_turns(calls, timing, clock=time.perf_counter):
  """{name: (compile_s, median latency s)} of `calls` {name: (call, sync)}, timed in turns.

  Each call's first call (compilation) is timed apart, then `timing.warmup` untimed calls
  follow; then `timing.repeats` rounds call each of them once, in order. A slow minute of
  a shared machine therefore slows them all alike and their ratios hold: on the 2-core
  VM of 2026-12-02 one MamKPD-B row, timed alone, read 138, 238 and 180 ms in three runs
  within 15 minutes.
  """
  compile_s = {}
  for name, (call, sync) in calls.items():
    start = clock()
    sync(call())
    compile_s[name] = clock() - start
    for _ in range(timing.warmup):
      sync(call())
  times = {name: [] for name in calls}
  for _ in range(timing.repeats):
    for name, (call, sync) in calls.items():
      start = clock()
      sync(call())
      times[name].append(clock() - start)
  return {name: (compile_s[name], statistics.median(times[name])) for name in calls}


def time_calls(call, sync, timing):
  """(compile_s, median latency s) of call(): first call, warm-up, median of repeats."""
  return time_in_turns({"call": (call, sync)}, timing)["call"]


def timing_row(batch, compile_s, latency_s, **fields):
  """latency and images/s to 5 significant digits (a fixed number of decimals would lose
  a slow row: an interpreted kernel at 0.07 images/s)."""
  return dict(fields, batch=batch, latency_ms=float(f"{latency_s * 1e3:.5g}"),
              images_per_s=float(f"{batch / latency_s:.5g}"), compile_s=round(compile_s, 2))


def peak_gbps(device_kind):
  """The device's published HBM bandwidth in GB/s, or None when unknown."""
  for fragment, gbps in PEAK_GBPS:
    if fragment in device_kind:
      return gbps
  return None


# ------------------------------------------------------------------ the scan alone


def scan_stage_shape(variant, stage, batch, height, width):
  """(batch, H, W, d_inner, d_state) of the SS2D scans in `stage` (1-3) of `variant`."""
  config = ModelConfig.from_config(model_config(variant))
  stride = 4 * 2 ** (stage - 1)
  return (batch, height // stride, width // stride,
          config.d_inner(config.dims[stage - 1]), config.d_state)


def scan_inputs(shape, dtype):
  """Random `cross_selective_scan` arguments (x, delta, A, B, C, D, delta_bias)."""
  batch, height, width, per_group, d_state = shape
  keys = jax.random.split(jax.random.key(0), 5)
  act = lambda key, *s: jax.random.normal(key, s, jnp.float32).astype(dtype)
  channels = K * per_group
  return (act(keys[0], batch, height, width, per_group),
          act(keys[1], batch, height, width, K, per_group),
          -jnp.tile(jnp.arange(1, d_state + 1, dtype=jnp.float32), (channels, 1)),
          act(keys[2], batch, height, width, K, d_state),
          act(keys[3], batch, height, width, K, d_state),
          jnp.ones((channels,), jnp.float32),
          jnp.full((channels,), -4.0, jnp.float32))


def scan_min_bytes(shape, dtype, pass_name):
  """The byte model of the module docstring."""
  batch, height, width, p, n = shape
  tokens, act = batch * height * width, jnp.dtype(dtype).itemsize
  forward = tokens * (K * (2 * p + 2 * n) * act + 4 * p)
  if pass_name == "forward":
    return forward
  backward = forward - tokens * 4 * p + tokens * (4 * p + 4 * p + K * (4 * p + 2 * n * 4))
  return forward + backward


def interpreted(impl):
  """Whether scan `impl` runs its Pallas kernels in interpret mode here (on a CPU)."""
  takes_interpret = impl in kernels.SCAN_IMPLS and kernels.SCAN_IMPLS[impl].takes_interpret
  return takes_interpret and jax.default_backend() == "cpu"


def scan_row(shape, dtype, pass_name, impl, seconds, peak):
  """One timing of the scan: ms, minimum GB, GB/s that implies, fraction of `peak`."""
  gbytes = scan_min_bytes(shape, dtype, pass_name) / 1e9
  gbps = gbytes / seconds
  return dict(batch=shape[0], height=shape[1], width=shape[2], d_inner=shape[3],
              d_state=shape[4], impl=impl, dtype=dtype, pass_name=pass_name,
              ms=round(seconds * 1e3, 4), min_gbytes=round(gbytes, 4), gbps=float(f"{gbps:.4g}"),
              fraction_of_peak=round(gbps / peak, 3) if peak else None,
              interpret=interpreted(impl))


def scan_fn(impl, pass_name):
  """jit of the fused SS2D scan ("forward") or of the gradient of every input."""
  scan = lambda *a: kernels.cross_selective_scan(*a, impl=impl)
  if pass_name == "forward":
    return jax.jit(scan)
  return jax.jit(jax.grad(lambda *a: jnp.sum(scan(*a)), argnums=tuple(range(7))))


def scan_values_and_grads_fn(impl):
  """jit of args -> (y, gradients of sum(w * y) for every argument), w fixed, random."""

  def values_and_grads(*args):
    scan = lambda *a: kernels.cross_selective_scan(*a, impl=impl)
    y = scan(*args)
    weights = jax.random.normal(jax.random.key(7), y.shape, jnp.float32)
    grads = jax.grad(lambda *a: jnp.sum(weights * scan(*a)), argnums=tuple(range(7)))(*args)
    return y, grads

  return jax.jit(values_and_grads)


def tolerance_ratio(got, want, rtol):
  """max |got - want| / (rtol * (|want| + max |want|)): at most 1 where
  np.testing.assert_allclose(got, want, rtol, atol=rtol * max|want|) passes."""
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  atol = rtol * max(float(np.abs(want).max()), 1e-6)
  return float(np.max(np.abs(got - want) / (atol + rtol * np.abs(want))))


# ------------------------------------------------------------------ MamKPD inference


HRVMAMBA_PREFIX = "hrvmamba-"   # benchmark variant names of the second family


def variant_model_config(variant, num_keypoints):
  """config.model of a benchmark variant: a MamKPD variant ("base"), or "hrvmamba-tiny",
  "hrvmamba-small", "hrvmamba-base"."""
  if variant.startswith(HRVMAMBA_PREFIX):
    return hrvmamba_variants.model_config(variant[len(HRVMAMBA_PREFIX):], num_keypoints)
  return model_config(variant, num_keypoints=num_keypoints)


def variant_title(variant):
  """'MamKPD-base', 'HRVMamba-tiny', ... of a benchmark variant name."""
  return model_title(variant_model_config(variant, num_keypoints=17))


def build_eval_model(variant, num_keypoints):
  """An eval-mode model of benchmark `variant` (float32, its default scan), random
  parameters."""
  model = build_model(variant_model_config(variant, num_keypoints), seed=0)
  model.eval()
  return model


def model_sizes(model, height, width):
  flops = stats.forward_flops(model, height, width)
  return {"params": stats.param_counts(model)["total"], "gflops": round(flops["gmacs"], 4)}


def inference_call(model, images):
  """() -> heatmaps: the jitted forward pass of eval-mode `model` on `images`."""
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda state, images: nnx.merge(graphdef, state)(images))
  return lambda: forward(state, images)


def train_call(model, images):
  """() -> metrics: one step of mamkpd_jax.training.train (the paper's Adam), state carried over."""
  graphdef, state = nnx.split(model)
  model = nnx.merge(graphdef, jax.tree.map(jnp.copy, state))   # the step donates its state
  model.train()
  optimizer, _ = optim.make_nnx_optimizer(model, config_lib.train_config(), 1)
  (model_graphdef, model_state), (opt_graphdef, opt_state) = (nnx.split(model),
                                                              nnx.split(optimizer))
  step = jax.jit(train.make_train_step(model_graphdef, opt_graphdef), donate_argnums=0)
  heatmap_shape = (images.shape[1] // HEATMAP_STRIDE, images.shape[2] // HEATMAP_STRIDE,
                   model.config.num_keypoints)                        # (h, w, K)
  rng = np.random.default_rng(1)
  batch = {"image": images,
           "heatmaps": jnp.asarray(rng.random((images.shape[0], *heatmap_shape)),
                                   jnp.float32),
           "keypoint_weights": jnp.ones((images.shape[0], heatmap_shape[-1]), jnp.float32)}
  carried = {"state": {"model": model_state, "opt": opt_state}}

  def call():
    carried["state"], metrics = step(carried["state"], batch)
    return metrics
  return call


MODES = {"inference": inference_call, "train": train_call}


def random_crops(batch, height, width):
  """(batch, height, width, 3) uint8, the same for every runtime and scan."""
  return np.random.default_rng(0).integers(0, 256, (batch, height, width, 3), np.uint8)


def model_call(model, batch, height, width, mode="inference", impl=None):
  """(call, sync) of the forward pass (or a train step) on `random_crops`, for
  `time_in_turns`; `impl` "identity" traces it with `identity_scan` (`scan_override`)."""
  call = MODES[mode](model, jax.device_put(random_crops(batch, height, width)))

  def traced_with_override():            # jit traces on the first call
    with scan_override(impl):
      return call()
  return traced_with_override, jax.block_until_ready


def time_model(model, batch, height, width, timing, mode="inference"):
  """One timing_row of the forward pass (or a train step) on random uint8 crops."""
  compile_s, latency = time_calls(*model_call(model, batch, height, width, mode), timing)
  return timing_row(batch, compile_s, latency, mode=mode)


# ------------------------------------------------------------------ ONNX Runtime

ONNXRUNTIME = "onnxruntime"   # benchmark row: the model exported to ONNX, run by ORT


def onnxruntime_session(model, height, width, threads=None):
  """(ONNX Runtime session, export seconds) of model's forward pass (crops -> heatmaps,
  no flip test), converted with scan "onnx" and a dynamic batch; needs jax2onnx and
  onnxruntime (README, "Export to ONNX")."""
  start = time.perf_counter()
  proto = onnx_export.model_to_onnx(
      inference.with_model_changes(model, scan_impl=onnx_export.SCAN_IMPL), (height, width))
  export_s = time.perf_counter() - start
  return onnx_export.onnx_session(proto.SerializeToString(), threads), export_s


def onnxruntime_call(session, batch, height, width):
  """(call, sync) of the ONNX Runtime session's forward pass on `random_crops`, for
  `time_in_turns` (ONNX Runtime returns when done: sync does nothing)."""
  crops = random_crops(batch, height, width)
  return lambda: onnx_export.run_onnx(session, crops), lambda out: out


def onnxruntime_rel_diff(session, model, batch, height, width):
  """max |ORT - JAX| / max |JAX| of the heatmaps (JAX: model's own scan) on the crops."""
  crops = random_crops(batch, height, width)
  want = np.asarray(jax.jit(model.__call__)(crops))
  got = onnx_export.run_onnx(session, crops)["heatmaps"]
  return float(np.abs(got - want).max() / np.abs(want).max())


# ------------------------------------------------------------------ the scan's share

IDENTITY = "identity"   # benchmark-only scan: y = D*u; never a SCAN_IMPLS entry


def identity_scan(x, delta, A, B, C, D, delta_bias, **unused):
  """`cross_selective_scan` with the scan taken out: each direction's y = D*u, merged.

  What SS2D computes per token for the scan is part of the model, not of the scan, so it
  stays: x_proj (dts, B, C) and dt_proj (delta = dts @ weight, which the chunked scan
  forms inside its loop, so a `LowRankDelta` arrives here unapplied) enter the result
  times zero. Without that, XLA drops the unused matmuls (forward and backward), and the
  "model without its scan" would also lack them: at MamKPD-B, batch 4, 256x192, ~780 M
  multiply-adds of x_proj and ~680 M of dt_proj per inference. (Before 2026-12-01 the
  identity rows lacked both; from the third session of 2026-12-01 they had x_proj; dt_proj
  since the fourth.)
  """
  del A, delta_bias, unused
  batch, height, width, per_group = x.shape
  delta = kernels.as_delta(delta)                  # (b, H, W, K, P), as the reference gets it
  kept = sum(jnp.sum(t.astype(jnp.float32), axis=(-2, -1)) for t in (B, C))  # (b, H, W)
  skip = D.reshape(kernels.NUM_DIRECTIONS, per_group) * kernels.cross_scan(x).astype(
      jnp.float32)                                                     # (b, L, K, P)
  unused_inputs = jnp.sum(delta.astype(jnp.float32), axis=-2) + kept[..., None]
  return kernels.cross_merge(skip, height, width) + 0.0 * unused_inputs  # (b, H, W, P)


def scan_override(impl):
  """A context in which SS2D's scan is `identity_scan` (impl "identity"), else nothing."""
  if impl != IDENTITY:
    return contextlib.nullcontext()
  return mock.patch.object(kernels, "cross_selective_scan", identity_scan)


def add_scan_shares(rows):
  """scan_share = 1 - identity latency / row latency, when identity was timed alike."""
  identity = {(r["variant"], r["dtype"], r["mode"], r["batch"]): r["latency_ms"]
              for r in rows if r["scan_impl"] == IDENTITY}
  for row in rows:
    base = identity.get((row["variant"], row["dtype"], row["mode"], row["batch"]))
    if base is not None:
      row["scan_share"] = round(1 - base / row["latency_ms"], 3)
      row["x_identity"] = round(row["latency_ms"] / base, 3)


# ------------------------------------------------------------------ peers (PyTorch)

PEER_NAMES = {"hrnet_w32": "HRNet-W32", "vit_b16": "ViT-B/16 + deconv (ViTPose-B)"}


def torch_peers(num_keypoints, height, width):
  """(torch, {name: module constructor}), or an ImportError without torch and timm."""
  import timm    # pylint: disable=g-import-not-at-top
  import torch   # pylint: disable=g-import-not-at-top

  class HRNetPose(torch.nn.Module):
    """HRNet-W32 branches (timm), 1x1 head on the stride-4 branch (HRNet's pose head)."""

    def __init__(self):
      super().__init__()
      self.backbone = timm.create_model("hrnet_w32", features_only=True,
                                        feature_location="", out_indices=(1,))
      channels = self.backbone.feature_info.channels()[0]
      self.head = torch.nn.Conv2d(channels, num_keypoints, 1)

    def forward(self, x):
      return self.head(self.backbone(x)[0])

  class ViTPose(torch.nn.Module):
    """ViT-B/16 at the crop size, tokens -> (C, H/16, W/16), two deconvs, 1x1 head."""

    def __init__(self):
      super().__init__()
      self.backbone = timm.create_model("vit_base_patch16_224", img_size=(height, width),
                                        num_classes=0, global_pool="")
      dim = self.backbone.num_features
      layers = []
      for in_ch in (dim, 256):
        layers += [torch.nn.ConvTranspose2d(in_ch, 256, 4, 2, 1, bias=False),
                   torch.nn.BatchNorm2d(256), torch.nn.ReLU(inplace=True)]
      self.head = torch.nn.Sequential(*layers, torch.nn.Conv2d(256, num_keypoints, 1))

    def forward(self, x):
      tokens = self.backbone.forward_features(x)[:, self.backbone.num_prefix_tokens:]
      grid = tokens.transpose(1, 2).reshape(x.shape[0], -1, height // 16, width // 16)
      return self.head(grid)

  return torch, {"hrnet_w32": HRNetPose, "vit_b16": ViTPose}


def peer_model(torch, module):
  """(eval-mode channels-last model on CUDA when there, its parameter count)."""
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  model = module().to(device).eval().to(memory_format=torch.channels_last)
  return model, sum(p.numel() for p in model.parameters())


def time_peer(torch, model, params, batch, height, width, timing):
  """One timing_row of a peer: fp16 autocast (AMP) on CUDA, float32 on a CPU."""
  cuda = torch.cuda.is_available()
  device = next(model.parameters()).device
  sync = (lambda _: torch.cuda.synchronize()) if cuda else (lambda _: None)
  x = torch.randn(batch, 3, height, width, device=device)
  x = x.to(memory_format=torch.channels_last)

  def call():
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16,
                                                enabled=cuda):
      return model(x)

  compile_s, latency = time_calls(call, sync, timing)
  return timing_row(batch, compile_s, latency, params=params,
                    dtype="float16 AMP" if cuda else "float32",
                    device=torch.cuda.get_device_name() if cuda else "cpu")


def add_ratios(rows, peers):
  """Each of our inference rows gets images/s divided by each peer's at the same batch."""
  for row in (r for r in rows if r.get("mode", "inference") == "inference"):
    for peer in peers:
      if peer.get("batch") == row["batch"] and peer.get("images_per_s"):
        row[f"ratio_to_{peer['peer']}"] = round(row["images_per_s"] / peer["images_per_s"], 3)


# ------------------------------------------------------------------ plot


def plot_throughput(rows, peers, path, title):
  """images/s against batch size, one line per (model, dtype, scan, mode); peers dashed."""
  from matplotlib.figure import Figure   # no pyplot: leaves the caller's backend alone

  series = {}
  for row in rows:
    scan = f"{row['scan_impl']} {row.get('mode', 'inference')}"
    series.setdefault((row["model"], row["dtype"], scan, "-"), []).append(row)
  for peer in peers:
    if "images_per_s" in peer:
      series.setdefault((peer["model"], peer["dtype"], "", "--"), []).append(peer)
  fig = Figure(figsize=(7, 4.5), dpi=110)
  ax = fig.subplots()
  for (name, dtype, impl, style), points in series.items():
    points = sorted(points, key=lambda r: r["batch"])
    label = " ".join(s for s in (name, dtype, impl) if s)
    ax.plot([r["batch"] for r in points], [r["images_per_s"] for r in points], style,
            marker="o", label=label)
  ax.set_xscale("log", base=2)
  batches = sorted({r["batch"] for points in series.values() for r in points})
  ax.set_xticks(batches, [str(b) for b in batches])
  ax.set_yscale("log")
  ax.set_xlabel("batch size")
  ax.set_ylabel("images / s")
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
