"""`mamkpd benchmark` (scripts/benchmark.py): inference throughput and latency of MamKPD
(and, when PyTorch and timm are there, peers).

For each variant, computation dtype, selective-scan implementation, mode and batch size
it times the forward pass (mode "inference") or one training step (mode "train":
mamkpd_jax.training.train's step, forward + backward + the paper's Adam update, on random
heatmap targets) on random uint8 crops (the model normalises them itself): the first
call compiles (reported apart, as compile_s), `--warmup` calls follow, then the median
of `--repeats` calls, each ended by `block_until_ready`. images/s = batch / median
latency. The implementations of one (variant, dtype, mode, batch) are timed in turns,
one call each per round (`benchmarking.time_in_turns`): on a shared machine a slow
minute then slows them alike, and their ratios (x identity, ORT / JAX) hold.

`--scan_impls` takes the keys of kernels.SCAN_IMPLS, "auto" (the model's default) and
`identity`: the selective scan replaced by y = D*u (cross-scan and merge kept), for
timing only (it is no SCAN_IMPLS entry, so no model can train with it). With identity
in the run every row also gets `scan_share`: 1 - identity's latency / the row's, the
share of the row's time the scan takes (same variant, dtype, mode and batch).
`onnxruntime` rows time the model exported to ONNX (`onnx_export.model_to_onnx`: scan
"onnx", no flip test) in ONNX Runtime on the CPU, float32 inference only, beside the
JAX rows of the same run; they also carry `export_s` and `max_rel_diff_to_jax` (needs
jax2onnx and onnxruntime: README, "Export to ONNX"). The README's ORT table:

    python scripts/benchmark.py --variants=tiny,base --batch_sizes=1,8 --dtypes=float32 \
        --scan_impls=auto,onnxruntime --peers= --repeats=10 --warmup=2 --json

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

import datetime
import json
import os
import sys

import jax
from absl import app, flags, logging

from mamkpd_jax import benchmarking, inference, kernels

_VARIANTS = flags.DEFINE_list("variants", ["small", "base", "large"], "MamKPD variants "
                              "(tiny, small, base, large) and HRVMamba ones (hrvmamba-tiny, "
                              "hrvmamba-small, hrvmamba-base).")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "32", "128"], "Batch sizes.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Computation dtypes.")
_SCAN_IMPLS = flags.DEFINE_list("scan_impls", ["reference", "pallas"],
                                "Selective-scan implementations, auto, identity "
                                "(timing only) or onnxruntime (the ONNX export).")
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
PEER_NAMES = benchmarking.PEER_NAMES
# --scan_impls values that are no model scan: rows timed some other way
NOT_MODEL_SCANS = (benchmarking.IDENTITY, benchmarking.ONNXRUNTIME)


def timing():
  return benchmarking.Timing(warmup=_WARMUP.value, repeats=_REPEATS.value)


# ------------------------------------------------------------------ MamKPD


def benchmark_variant(variant, batches):
  """(sizes, rows) of one variant over dtypes x modes x batches x scan implementations;
  the implementations of one (dtype, mode, batch) are timed in turns
  (`benchmarking.time_in_turns`), so their ratios hold on a noisy machine."""
  model = benchmarking.build_eval_model(variant, _KEYPOINTS.value)
  sizes = benchmarking.model_sizes(model, _HEIGHT.value, _WIDTH.value)
  title = benchmarking.variant_title(variant)
  rows = []
  onnxruntime = {}              # the ONNX Runtime session, converted once per variant
  for dtype in _DTYPES.value:
    for mode in _MODES.value:
      impls = [impl for impl in _SCAN_IMPLS.value if impl != benchmarking.ONNXRUNTIME
               or (mode, dtype) == ("inference", "float32")]   # ORT: float32 forward only
      for batch in batches:
        calls = {impl: impl_call(model, impl, dtype, mode, batch, onnxruntime)
                 for impl in impls}
        timed = benchmarking.time_in_turns(calls, timing())
        for impl in impls:
          row = dict(model=title, variant=variant, dtype=dtype, scan_impl=impl,
                     interpret=benchmarking.interpreted(impl),
                     **benchmarking.timing_row(batch, *timed[impl], mode=mode), **sizes)
          if impl == benchmarking.ONNXRUNTIME:
            row.update(onnxruntime_fields(model, onnxruntime, batch))
          print(f"{title:<14} {dtype:<9} {mode:<9} {impl:<11} batch {batch:>4} "
                f"{row['latency_ms']:10.3f} ms {row['images_per_s']:10.1f} images/s "
                f"(compile {row['compile_s']:.1f} s)", flush=True)
          rows.append(row)
  benchmarking.add_scan_shares(rows)
  return sizes, rows


def impl_call(model, impl, dtype, mode, batch, onnxruntime):
  """(call, sync) of one row: `model` with scan `impl` in `dtype` (identity: the reference
  traced with `identity_scan`), or its ONNX export in ONNX Runtime (`onnxruntime` caches
  the session)."""
  if impl == benchmarking.ONNXRUNTIME:
    if "session" not in onnxruntime:
      onnxruntime["session"], onnxruntime["export_s"] = benchmarking.onnxruntime_session(
          model, _HEIGHT.value, _WIDTH.value)
    return benchmarking.onnxruntime_call(onnxruntime["session"], batch, _HEIGHT.value,
                                         _WIDTH.value)
  scan_impl = "reference" if impl == benchmarking.IDENTITY else impl
  changed = inference.with_model_changes(model, dtype=dtype, scan_impl=scan_impl)
  return benchmarking.model_call(changed, batch, _HEIGHT.value, _WIDTH.value, mode, impl)


def onnxruntime_fields(model, onnxruntime, batch):
  """An ONNX Runtime row's export seconds and its heatmaps' largest relative difference
  to JAX's."""
  return dict(export_s=round(onnxruntime["export_s"], 1),
              max_rel_diff_to_jax=benchmarking.onnxruntime_rel_diff(
                  onnxruntime["session"], model, batch, _HEIGHT.value, _WIDTH.value))


# ------------------------------------------------------------------ peers (PyTorch)


def benchmark_peers(batches):
  """Peer rows, or {"skipped": why}."""
  if not _PEERS.value:
    return {"skipped": "no peers asked for (--peers=)"}
  try:
    torch, modules = benchmarking.torch_peers(_KEYPOINTS.value, _HEIGHT.value, _WIDTH.value)
  except ImportError:
    return {"skipped": "torch/timm not installed"}
  rows = []
  for name in _PEERS.value:
    if name not in modules:
      raise ValueError(f"unknown peer {name!r}; known: {sorted(modules)}")
    try:
      model, params = benchmarking.peer_model(torch, modules[name])
      for batch in batches:
        row = benchmarking.time_peer(torch, model, params, batch, _HEIGHT.value,
                                     _WIDTH.value, timing())
        rows.append(dict(model=PEER_NAMES[name], peer=name, **row))
        print(f"{PEER_NAMES[name]:<30} batch {row['batch']:>4} {row['latency_ms']:10.3f} ms "
              f"{row['images_per_s']:10.1f} images/s", flush=True)
    except Exception as error:    # pylint: disable=broad-except  (a peer must not stop us)
      logging.exception("peer %s failed", name)
      rows.append({"model": PEER_NAMES[name], "peer": name, "error": repr(error)})
  return rows


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
    lines.append(f"- {benchmarking.variant_title(variant)}: {sizes['params'] / 1e6:.2f}M parameters, "
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


def write_outputs(report, directory):
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "benchmark.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  with open(os.path.join(directory, "benchmark.md"), "w", encoding="utf-8") as f:
    f.write(markdown(report))
  benchmarking.plot_throughput(
      report["results"], report["peers"] if isinstance(report["peers"], list) else [],
      os.path.join(directory, "benchmark.png"),
      f"{report['device']}, JAX {report['jax_version']}, {_HEIGHT.value}x{_WIDTH.value}")
  logging.info("wrote benchmark.{json,md,png} to %s", directory)


def check_flags():
  for mode in _MODES.value:
    if mode not in benchmarking.MODES:
      raise ValueError(f"--modes: unknown mode {mode!r}; known: {sorted(benchmarking.MODES)}")
  for impl in _SCAN_IMPLS.value:
    if impl not in (*NOT_MODEL_SCANS, kernels.AUTO, *kernels.SCAN_IMPLS):
      raise ValueError(f"--scan_impls: unknown {impl!r}; known: {benchmarking.IDENTITY!r}, "
                       f"{benchmarking.ONNXRUNTIME!r}, {kernels.AUTO!r} or one of "
                       f"{sorted(kernels.SCAN_IMPLS)}")
  if (benchmarking.ONNXRUNTIME in _SCAN_IMPLS.value and
      ("inference" not in _MODES.value or "float32" not in _DTYPES.value)):
    raise ValueError("--scan_impls=onnxruntime times the exported float32 forward pass: "
                     "it needs 'inference' in --modes and 'float32' in --dtypes")


def run():
  check_flags()
  device = jax.devices()[0]
  batches = [int(b) for b in _BATCH_SIZES.value]
  models, results = {}, []
  for variant in _VARIANTS.value:
    models[variant], rows = benchmark_variant(variant, batches)
    results += rows
  peers = benchmark_peers(batches)
  if isinstance(peers, list):
    benchmarking.add_ratios(results, peers)
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

