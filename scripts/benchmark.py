"""Inference throughput and latency of MamKPD (and, when PyTorch and timm are there, peers).

For each variant, computation dtype, selective-scan implementation, mode and batch size
it times the forward pass (mode "inference") or one training step (mode "train":
mamkpd_jax.train's step, forward + backward + the paper's Adam update, on random
heatmap targets) on random uint8 crops (the model normalises them itself): the first
call compiles (reported apart, as compile_s), `--warmup` calls follow, then the median
of `--repeats` calls, each ended by `block_until_ready`. images/s = batch / median
latency.

`--scan_impls` takes the keys of kernels.SCAN_IMPLS, "auto" (the model's default) and
`identity`: the selective scan replaced by y = D*u (cross-scan and merge kept), for
timing only (it is no SCAN_IMPLS entry, so no model can train with it). With identity
in the run every row also gets `scan_share`: 1 - identity's latency / the row's, the
share of the row's time the scan takes (same variant, dtype, mode and batch).

    python scripts/benchmark.py --variants=base,large --batch_sizes=1,4,8 \
        --dtypes=float32 --scan_impls=reference,chunked,identity --modes=inference,train \
        --peers= --repeats=5 --warmup=1 --json                  # the CPU table (README)

Parameters and GFLOPs (multiply-adds, the paper's convention) come from
mamkpd_jax/models/stats.py.

    python scripts/benchmark.py --json --output_dir=benchmarks/h100        # a GPU
    python scripts/benchmark.py --variants=tiny --batch_sizes=1,4 --scan_impls=reference \
        --input_height=64 --input_width=64 --repeats=2 --peers= --json     # a CPU smoke run

On a CPU the "pallas" scan runs in interpret mode (correct but very slow, timings
meaningless): use --scan_impls=reference there. Peers (--peers=hrnet_w32,vit_b16: an
HRNet-W32 from timm's features_only backbone with a 1x1 head on its stride-4 branch, and
a ViT-B/16 with SimpleBaseline's two-deconvolution head, ViTPose-B's) run in PyTorch
with fp16 autocast (AMP) and channels-last on CUDA, float32 on a CPU; without torch and
timm they are reported as skipped. Our rows then carry images/s as a ratio to each peer
at the same batch size.

Outputs: stdout table; with --json the last stdout line is one JSON object (device,
platform, jax_version, date, command, settings, models {variant: params, gflops},
results [...], peers [...] or {"skipped": why}); with --output_dir, benchmark.json,
benchmark.md (a markdown table) and benchmark.png (images/s against batch size).
"""

import contextlib
import datetime
import json
import os
import statistics
import sys
import time

from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from flax import nnx

from mamkpd_jax import config_lib, inference, kernels, optim, train
from mamkpd_jax.models import ModelConfig, build_model, model_config, stats
from mamkpd_jax.models.variants import HEATMAP_STRIDE

_VARIANTS = flags.DEFINE_list("variants", ["small", "base", "large"], "MamKPD variants.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "32", "128"], "Batch sizes.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Computation dtypes.")
_SCAN_IMPLS = flags.DEFINE_list("scan_impls", ["reference", "pallas"],
                                "Selective-scan implementations.")
_MODES = flags.DEFINE_list("modes", ["inference"], "inference (forward) and/or train "
                           "(one training step).")
_HEIGHT = flags.DEFINE_integer("input_height", 256, "Input crop height.")
_WIDTH = flags.DEFINE_integer("input_width", 192, "Input crop width.")
_KEYPOINTS = flags.DEFINE_integer("num_keypoints", 17, "Heatmaps (COCO: 17).")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed calls (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed calls after compilation.")
_PEERS = flags.DEFINE_list("peers", ["hrnet_w32", "vit_b16"], "PyTorch/timm peers; empty: "
                           "none.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "", "Writes benchmark.{json,md,png} here.")
_JSON = flags.DEFINE_bool("json", False, "End stdout with one JSON object.")

# The paper's figures (images/s, one RTX 4090, its batch not stated), for the table.
PAPER_THROUGHPUT = {"small": 2564, "base": 2439, "large": 1492, "hrnet_w32": 916,
                    "vit_b16": 944}
PEER_NAMES = {"hrnet_w32": "HRNet-W32", "vit_b16": "ViT-B/16 + deconv (ViTPose-B)"}


# ------------------------------------------------------------------ timing


def time_calls(call, sync):
  """(compile_s, median latency s) of call(): first call, warm-up, median of repeats."""
  start = time.perf_counter()
  sync(call())
  compile_s = time.perf_counter() - start
  for _ in range(_WARMUP.value):
    sync(call())
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    sync(call())
    times.append(time.perf_counter() - start)
  return compile_s, statistics.median(times)


def timing_row(batch, compile_s, latency_s, **fields):
  return dict(fields, batch=batch, latency_ms=round(latency_s * 1e3, 4),
              images_per_s=round(batch / latency_s, 2), compile_s=round(compile_s, 2))


# ------------------------------------------------------------------ MamKPD

IDENTITY = "identity"   # benchmark-only scan: y = D*u; never a SCAN_IMPLS entry
MODES = ("inference", "train")


def identity_scan(x, delta, A, B, C, D, delta_bias, **unused):
  """`cross_selective_scan` with the scan taken out: each direction's y = D*u, merged."""
  del delta, A, B, C, delta_bias, unused
  batch, height, width, per_group = x.shape
  skip = D.reshape(kernels.NUM_DIRECTIONS, per_group) * kernels.cross_scan(x).astype(
      jnp.float32)                                                     # (b, L, K, P)
  return kernels.cross_merge(skip, height, width)


def scan_override(impl):
  """A context in which SS2D's scan is `identity_scan` (impl "identity"), else nothing."""
  if impl != IDENTITY:
    return contextlib.nullcontext()
  return mock.patch.object(kernels, "cross_selective_scan", identity_scan)


def build(variant):
  """An eval-mode MamKPD-`variant` (float32, reference scan), random parameters."""
  config = model_config(variant, num_keypoints=_KEYPOINTS.value)
  model = build_model(ModelConfig.from_config(config), seed=0)
  model.eval()
  return model


def model_sizes(model):
  flops = stats.forward_flops(model, _HEIGHT.value, _WIDTH.value)
  return {"params": stats.param_counts(model)["total"], "gflops": round(flops["gmacs"], 4)}


def inference_call(model, images):
  """() -> heatmaps: the jitted forward pass of eval-mode `model` on `images`."""
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda state, images: nnx.merge(graphdef, state)(images))
  return lambda: forward(state, images)


def train_call(model, images):
  """() -> metrics: one step of mamkpd_jax.train (the paper's Adam), state carried over."""
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


def time_model(model, batches, mode):
  """Rows of one (dtype, scan_impl) model over batch sizes, in `mode`."""
  rng = np.random.default_rng(0)
  rows = []
  for batch in batches:
    images = jax.device_put(rng.integers(0, 256, (batch, _HEIGHT.value, _WIDTH.value, 3),
                                         np.uint8))
    call = (train_call if mode == "train" else inference_call)(model, images)
    compile_s, latency = time_calls(call, jax.block_until_ready)
    rows.append(timing_row(batch, compile_s, latency, mode=mode))
  return rows


def add_scan_shares(rows):
  """scan_share = 1 - identity latency / row latency, when identity was timed alike."""
  identity = {(r["variant"], r["dtype"], r["mode"], r["batch"]): r["latency_ms"]
              for r in rows if r["scan_impl"] == IDENTITY}
  for row in rows:
    base = identity.get((row["variant"], row["dtype"], row["mode"], row["batch"]))
    if base is not None:
      row["scan_share"] = round(1 - base / row["latency_ms"], 3)
      row["x_identity"] = round(row["latency_ms"] / base, 3)


def benchmark_variant(variant, batches):
  """(sizes, rows) of one variant over dtypes x scan implementations x batches."""
  model = build(variant)
  sizes = model_sizes(model)
  interpret = jax.default_backend() == "cpu"
  rows = []
  for dtype in _DTYPES.value:
    for mode in _MODES.value:
      for impl in _SCAN_IMPLS.value:
        changed = inference.with_model_changes(
            model, dtype=dtype, scan_impl="reference" if impl == IDENTITY else impl)
        with scan_override(impl):
          timed = time_model(changed, batches, mode)
        for row in timed:
          row = dict(model=f"MamKPD-{variant}", variant=variant, dtype=dtype,
                     scan_impl=impl, interpret=impl == "pallas" and interpret, **row,
                     **sizes)
          print(f"MamKPD-{variant:<6} {dtype:<9} {mode:<9} {impl:<10} batch "
                f"{row['batch']:>4} {row['latency_ms']:10.3f} ms "
                f"{row['images_per_s']:10.1f} images/s (compile {row['compile_s']:.1f} s)",
                flush=True)
          rows.append(row)
  add_scan_shares(rows)
  return sizes, rows


# ------------------------------------------------------------------ peers (PyTorch)


def _torch_peers():
  """The peers' module constructors, or an ImportError."""
  import timm    # pylint: disable=g-import-not-at-top
  import torch   # pylint: disable=g-import-not-at-top
  num_keypoints, height, width = _KEYPOINTS.value, _HEIGHT.value, _WIDTH.value

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


def time_peer(torch, module, batches):
  cuda = torch.cuda.is_available()
  device = torch.device("cuda" if cuda else "cpu")
  model = module().to(device).eval().to(memory_format=torch.channels_last)
  params = sum(p.numel() for p in model.parameters())
  sync = (lambda _: torch.cuda.synchronize()) if cuda else (lambda _: None)
  rows = []
  for batch in batches:
    x = torch.randn(batch, 3, _HEIGHT.value, _WIDTH.value, device=device)
    x = x.to(memory_format=torch.channels_last)

    def call(x=x):
      with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16,
                                                  enabled=cuda):
        return model(x)

    compile_s, latency = time_calls(call, sync)
    rows.append(timing_row(batch, compile_s, latency, params=params,
                           dtype="float16 AMP" if cuda else "float32",
                           device=torch.cuda.get_device_name() if cuda else "cpu"))
  return rows


def benchmark_peers(batches):
  """Peer rows, or {"skipped": why}."""
  if not _PEERS.value:
    return {"skipped": "no peers asked for (--peers=)"}
  try:
    torch, modules = _torch_peers()
  except ImportError:
    return {"skipped": "torch/timm not installed"}
  rows = []
  for name in _PEERS.value:
    if name not in modules:
      raise ValueError(f"unknown peer {name!r}; known: {sorted(modules)}")
    try:
      for row in time_peer(torch, modules[name], batches):
        rows.append(dict(model=PEER_NAMES[name], peer=name, **row))
        print(f"{PEER_NAMES[name]:<30} batch {row['batch']:>4} {row['latency_ms']:10.3f} ms "
              f"{row['images_per_s']:10.1f} images/s", flush=True)
    except Exception as error:    # pylint: disable=broad-except  (a peer must not stop us)
      logging.exception("peer %s failed", name)
      rows.append({"model": PEER_NAMES[name], "peer": name, "error": repr(error)})
  return rows


def add_ratios(rows, peers):
  """Each inference row gets images/s divided by each peer's at the same batch."""
  if not isinstance(peers, list):
    return
  for row in (r for r in rows if r["mode"] == "inference"):
    for peer in peers:
      if peer.get("batch") == row["batch"] and peer.get("images_per_s"):
        row[f"ratio_to_{peer['peer']}"] = round(row["images_per_s"] / peer["images_per_s"], 3)


# ------------------------------------------------------------------ report


def markdown(report):
  """The report as a markdown table with its header facts."""
  lines = [f"# MamKPD inference throughput, {report['device']}", "",
           f"JAX {report['jax_version']}, {report['date']}, input "
           f"{_HEIGHT.value}x{_WIDTH.value}, K={_KEYPOINTS.value}, median of "
           f"{_REPEATS.value} calls after {_WARMUP.value} warm-up (compile excluded).", "",
           f"Command: `{report['command']}`", ""]
  for variant, sizes in report["models"].items():
    paper = PAPER_THROUGHPUT.get(variant)
    lines.append(f"- MamKPD-{variant}: {sizes['params'] / 1e6:.2f}M parameters, "
                 f"{sizes['gflops']:.2f} GFLOPs" + (f"; paper: {paper} images/s on one "
                                                     "RTX 4090" if paper else ""))
  peers = report["peers"]
  peer_names = sorted({p["peer"] for p in peers if "images_per_s" in p}) \
      if isinstance(peers, list) else []
  if not isinstance(peers, list):
    lines.append(f"- peers: skipped: {peers['skipped']}")
  for peer in peers if isinstance(peers, list) else []:
    if "error" in peer:
      lines.append(f"- {peer['model']}: failed: {peer['error']}")
  lines += ["", "| model | dtype | mode | scan | batch | latency ms | images/s | "
            "x identity |" + "".join(f" x {PEER_NAMES[p]} |" for p in peer_names),
            "|---|---|---|---|---|---|---|---|" + "---|" * len(peer_names)]
  for row in report["results"]:
    lines.append(f"| {row['model']} | {row['dtype']} | {row['mode']} | {row['scan_impl']}"
                 f"{' (interpret)' if row['interpret'] else ''} | {row['batch']} | "
                 f"{row['latency_ms']:.3f} | {row['images_per_s']:.1f} | "
                 f"{row.get('x_identity', float('nan')):.2f} |"
                 + "".join(f" {row.get(f'ratio_to_{p}', float('nan')):.2f} |"
                           for p in peer_names))
  for peer in peers if isinstance(peers, list) else []:
    if "images_per_s" in peer:
      lines.append(f"| {peer['model']} | {peer['dtype']} | inference | - | "
                   f"{peer['batch']} | {peer['latency_ms']:.3f} | "
                   f"{peer['images_per_s']:.1f} | |"
                   + " |" * len(peer_names))
  return "\n".join(lines) + "\n"


def plot(report, path):
  """images/s against batch size, one line per (model, dtype, scan); peers dashed."""
  import matplotlib   # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt   # pylint: disable=g-import-not-at-top

  series = {}
  for row in report["results"]:
    series.setdefault((row["model"], row["dtype"], f"{row['scan_impl']} {row['mode']}", "-"),
                      []).append(row)
  for peer in report["peers"] if isinstance(report["peers"], list) else []:
    if "images_per_s" in peer:
      series.setdefault((peer["model"], peer["dtype"], "", "--"), []).append(peer)
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
  for (name, dtype, impl, style), rows in series.items():
    label = " ".join(s for s in (name, dtype, impl) if s)
    ax.plot([r["batch"] for r in rows], [r["images_per_s"] for r in rows], style,
            marker="o", label=label)
  ax.set_xscale("log", base=2)
  batches = sorted({r["batch"] for rows in series.values() for r in rows})
  ax.set_xticks(batches, [str(b) for b in batches])
  ax.set_yscale("log")
  ax.set_xlabel("batch size")
  ax.set_ylabel("images / s")
  ax.set_title(f"{report['device']}, JAX {report['jax_version']}, "
               f"{_HEIGHT.value}x{_WIDTH.value}", fontsize=9)
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def write_outputs(report, directory):
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "benchmark.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  with open(os.path.join(directory, "benchmark.md"), "w", encoding="utf-8") as f:
    f.write(markdown(report))
  plot(report, os.path.join(directory, "benchmark.png"))
  logging.info("wrote benchmark.{json,md,png} to %s", directory)


def run():
  for mode in _MODES.value:
    if mode not in MODES:
      raise ValueError(f"--modes: unknown mode {mode!r}; known: {MODES}")
  for impl in _SCAN_IMPLS.value:
    if impl not in (IDENTITY, kernels.AUTO, *kernels.SCAN_IMPLS):
      raise ValueError(f"--scan_impls: unknown {impl!r}; known: {IDENTITY!r}, "
                       f"{kernels.AUTO!r} or one of {sorted(kernels.SCAN_IMPLS)}")
  device = jax.devices()[0]
  batches = [int(b) for b in _BATCH_SIZES.value]
  models, results = {}, []
  for variant in _VARIANTS.value:
    models[variant], rows = benchmark_variant(variant, batches)
    results += rows
  peers = benchmark_peers(batches)
  add_ratios(results, peers)
  return dict(
      device=device.device_kind, platform=device.platform, jax_version=jax.__version__,
      date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      command=" ".join(["python"] + sys.argv),
      settings=dict(input_size=[_HEIGHT.value, _WIDTH.value], num_keypoints=_KEYPOINTS.value,
                    repeats=_REPEATS.value, warmup=_WARMUP.value, modes=_MODES.value,
                    input="uint8 RGB crops, normalised inside the model"),
      paper_images_per_s=PAPER_THROUGHPUT, models=models, results=results, peers=peers)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  report = run()
  if _OUTPUT_DIR.value:
    write_outputs(report, _OUTPUT_DIR.value)
  if _JSON.value:
    print(json.dumps(report))


if __name__ == "__main__":
  app.run(main)
