"""`mamkpd benchmark`: throughput and latency of MamKPD and HRVMamba (and, when PyTorch
and timm are installed, of HRNet-W32 and ViT-B/16 beside them).

    mamkpd benchmark --variants=tiny --batch_sizes=1,4 --dtypes=float32 \\
        --scan_impls=auto,identity --input_height=64 --input_width=64 --repeats=2 --peers=
    mamkpd benchmark --variants=small,base,large --output_dir=benchmarks/DEVICE   # a GPU

For each variant, dtype, mode (the forward pass, or one training step) and batch size,
the scan implementations are timed in turns on random uint8 crops: compilation apart,
`--warmup` calls, then the median of `--repeats` calls; images/s = batch / latency.
`--scan_impls` takes "auto", the configurable scans (kernels.SCAN_IMPLS), the
benchmark-only "identity" (the scan taken out: each row then gets its `scan_share`) and
"onnxruntime" (the model exported to ONNX, float32 inference in ONNX Runtime, with
`max_rel_diff_to_jax`). On a CPU the Pallas scans run interpreted: their times there say
nothing about a GPU. `run(settings)` is the command from plain values.

Outputs: a table on stdout; with --json a last line holding one JSON object (device,
settings, models {variant: params, gflops}, results, peers, peers_skipped); with
--output_dir, benchmark.json, benchmark.md and benchmark.png (images/s against batch).
"""

import dataclasses
import datetime
import functools
import json
import os
import sys

import jax
from absl import app, flags, logging

from mamkpd_jax import kernels
from mamkpd_jax.benchmarking import models, plot
from mamkpd_jax.benchmarking import peers as peers_lib
from mamkpd_jax.benchmarking import scan as scan_lib
from mamkpd_jax.benchmarking import timing as timing_lib

FLAGS = flags.FLAGS

# The paper's figures (images/s, one RTX 4090, its batch not stated), for the table.
PAPER_THROUGHPUT = {"small": 2564, "base": 2439, "large": 1492, "hrnet_w32": 916,
                    "vit_b16": 944}


@dataclasses.dataclass(frozen=True)
class Settings:
  """What to time; the flags' values as plain ones."""

  variants: tuple[str, ...] = ("small", "base", "large")
  batch_sizes: tuple[int, ...] = (1, 32, 128)
  dtypes: tuple[str, ...] = ("float32", "bfloat16")
  scan_impls: tuple[str, ...] = ("reference", "pallas")
  modes: tuple[str, ...] = ("inference",)
  input_size: tuple[int, int] = (256, 192)            # (height, width)
  num_keypoints: int = 17
  timing: timing_lib.Timing = timing_lib.Timing()
  peers: tuple[str, ...] = ("hrnet_w32", "vit_b16")

  def check(self):
    """Raises ValueError naming the flag whose value cannot be run."""
    for mode in self.modes:
      if mode not in models.MODES:
        raise ValueError(f"--modes: unknown mode {mode!r}; known: {sorted(models.MODES)}")
    # the configurable scans, the benchmark-only ones (identity) and the ONNX export
    known = (kernels.AUTO, *kernels.scan_impls(benchmark_only=True), models.ONNXRUNTIME)
    for impl in self.scan_impls:
      if impl not in known:
        raise ValueError(f"--scan_impls: unknown {impl!r}; known: {', '.join(known)}")
    if (models.ONNXRUNTIME in self.scan_impls and
        ("inference" not in self.modes or "float32" not in self.dtypes)):
      raise ValueError("--scan_impls=onnxruntime times the exported float32 forward pass: "
                       "it needs 'inference' in --modes and 'float32' in --dtypes")



_DEFAULT = Settings()     # the flags' defaults


@functools.cache
def define_flags():
  """Defines `mamkpd benchmark`'s flags; the cli calls it before parsing (see cli.py)."""
  flags.DEFINE_list("variants", list(_DEFAULT.variants), "MamKPD variants (tiny, "
                    "small, base, large) and HRVMamba ones (hrvmamba-tiny, hrvmamba-small, "
                    "hrvmamba-base).")
  flags.DEFINE_list("batch_sizes", [str(b) for b in _DEFAULT.batch_sizes], "Batch sizes.")
  flags.DEFINE_list("dtypes", list(_DEFAULT.dtypes), "Computation dtypes.")
  flags.DEFINE_list("scan_impls", list(_DEFAULT.scan_impls), "Selective-scan "
                    "implementations, auto, identity (timing only) or onnxruntime (the "
                    "ONNX export).")
  flags.DEFINE_list("modes", list(_DEFAULT.modes), "inference (forward) and/or train (one "
                    "training step).")
  flags.DEFINE_integer("input_height", _DEFAULT.input_size[0], "Input crop height.")
  flags.DEFINE_integer("input_width", _DEFAULT.input_size[1], "Input crop width.")
  flags.DEFINE_integer("num_keypoints", _DEFAULT.num_keypoints, "Heatmaps (COCO: 17).")
  flags.DEFINE_integer("repeats", _DEFAULT.timing.repeats, "Timed calls (median reported).")
  flags.DEFINE_integer("warmup", _DEFAULT.timing.warmup, "Untimed calls after compilation.")
  flags.DEFINE_list("peers", list(_DEFAULT.peers), "PyTorch/timm peers; empty: none.")
  flags.DEFINE_string("output_dir", "", "Writes benchmark.{json,md,png} here.")
  flags.DEFINE_bool("json", False, "End stdout with one JSON object.")


# ------------------------------------------------------------------ MamKPD, HRVMamba


def benchmark_variant(variant, settings):
  """(sizes, rows) of one variant over dtypes x modes x batches x scan implementations;
  the implementations of one (dtype, mode, batch) are timed in turns, so their ratios
  hold on a noisy machine."""
  height, width = settings.input_size
  model = models.build_eval_model(variant, settings.num_keypoints)
  sizes = models.model_sizes(model, height, width)
  title = models.variant_title(variant)
  rows, onnxruntime = [], {}        # the ONNX Runtime session, converted once per variant
  for dtype in settings.dtypes:
    for mode in settings.modes:
      impls = [impl for impl in settings.scan_impls if impl != models.ONNXRUNTIME
               or (mode, dtype) == ("inference", "float32")]   # ORT: float32 forward only
      for batch in settings.batch_sizes:
        calls = {impl: impl_call(model, impl, dtype, mode, batch, settings, onnxruntime)
                 for impl in impls}
        timed = timing_lib.time_in_turns(calls, settings.timing)
        for impl in impls:
          row = dict(model=title, variant=variant, dtype=dtype, scan_impl=impl,
                     interpret=scan_lib.interpreted(impl),
                     **timing_lib.timing_row(batch, *timed[impl], mode=mode), **sizes)
          if impl == models.ONNXRUNTIME:
            row.update(onnxruntime_fields(model, onnxruntime, batch, settings))
          print(f"{title:<14} {dtype:<9} {mode:<9} {impl:<11} batch {batch:>4} "
                f"{row['latency_ms']:10.3f} ms {row['images_per_s']:10.1f} images/s "
                f"(compile {row['compile_s']:.1f} s)", flush=True)
          rows.append(row)
  models.add_scan_shares(rows)
  return sizes, rows


def impl_call(model, impl, dtype, mode, batch, settings, onnxruntime):
  """(call, sync) of one row: `model` with scan `impl` in `dtype`, or its ONNX export in
  ONNX Runtime (`onnxruntime` caches the session)."""
  height, width = settings.input_size
  if impl == models.ONNXRUNTIME:
    if "session" not in onnxruntime:
      onnxruntime["session"], onnxruntime["export_s"] = models.onnxruntime_session(
          model, height, width)
    return models.onnxruntime_call(onnxruntime["session"], batch, height, width)
  return models.model_call(models.with_scan(model, dtype, impl), batch, height, width, mode)


def onnxruntime_fields(model, onnxruntime, batch, settings):
  """An ONNX Runtime row's export seconds and its heatmaps' largest relative difference
  to JAX's."""
  return dict(export_s=round(onnxruntime["export_s"], 1),
              max_rel_diff_to_jax=models.onnxruntime_rel_diff(
                  onnxruntime["session"], model, batch, *settings.input_size))


# ------------------------------------------------------------------ report


def run(settings, command=None):
  """The report (a JSON-able dict) of timing `settings`; `command` is recorded in it
  (default: this process's command line)."""
  settings.check()
  device = jax.devices()[0]
  model_sizes, results = {}, []
  for variant in settings.variants:
    model_sizes[variant], rows = benchmark_variant(variant, settings)
    results += rows
  peers = peers_lib.run_peers(settings.peers, settings.batch_sizes, settings.num_keypoints,
                              *settings.input_size, settings.timing)
  peers_lib.add_ratios(results, peers.timed())
  return dict(
      device=device.device_kind, platform=device.platform, jax_version=jax.__version__,
      date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      command=command or " ".join(["python"] + sys.argv),
      settings=dict(input_size=list(settings.input_size),
                    num_keypoints=settings.num_keypoints, repeats=settings.timing.repeats,
                    warmup=settings.timing.warmup, modes=list(settings.modes),
                    input="uint8 RGB crops, normalised inside the model"),
      paper_images_per_s=PAPER_THROUGHPUT, models=model_sizes, results=results,
      peers=peers.rows, peers_skipped=peers.skipped)


def markdown(report):
  """The report as a markdown table with its header facts."""
  settings = report["settings"]
  height, width = settings["input_size"]
  peers = peers_lib.PeerRuns(report["peers"], report["peers_skipped"])
  peer_names = sorted({p["peer"] for p in peers.timed()})
  lines = [f"# MamKPD inference throughput, {report['device']}", "",
           f"JAX {report['jax_version']}, {report['date']}, input {height}x{width}, "
           f"K={settings['num_keypoints']}, median of {settings['repeats']} calls after "
           f"{settings['warmup']} warm-up (compile excluded).", "",
           f"Command: `{report['command']}`", ""]
  for variant, sizes in report["models"].items():
    paper = PAPER_THROUGHPUT.get(variant)
    lines.append(f"- {models.variant_title(variant)}: {sizes['params'] / 1e6:.2f}M "
                 f"parameters, {sizes['gflops']:.2f} GFLOPs"
                 + (f"; paper: {paper} images/s on one RTX 4090" if paper else ""))
  if peers.skipped:
    lines.append(f"- peers: skipped: {peers.skipped}")
  lines += [f"- {peer['model']}: failed: {peer['error']}" for peer in peers.failed()]
  lines += ["", "| model | dtype | mode | scan | batch | latency ms | images/s | "
            "x identity |" + "".join(f" x {peers_lib.PEER_NAMES[p]} |" for p in peer_names),
            "|---|---|---|---|---|---|---|---|" + "---|" * len(peer_names)]
  for row in report["results"]:
    lines.append(f"| {row['model']} | {row['dtype']} | {row['mode']} | {row['scan_impl']}"
                 f"{' (interpret)' if row['interpret'] else ''} | {row['batch']} | "
                 f"{row['latency_ms']:.3f} | {row['images_per_s']:.1f} | "
                 f"{row.get('x_identity', float('nan')):.2f} |"
                 + "".join(f" {row.get(f'ratio_to_{p}', float('nan')):.2f} |"
                           for p in peer_names))
  for peer in peers.timed():
    lines.append(f"| {peer['model']} | {peer['dtype']} | inference | - | {peer['batch']} | "
                 f"{peer['latency_ms']:.3f} | {peer['images_per_s']:.1f} | |"
                 + " |" * len(peer_names))
  return "\n".join(lines) + "\n"


def write_outputs(report, directory):
  """benchmark.json, benchmark.md and benchmark.png of `report` in `directory`."""
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "benchmark.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  with open(os.path.join(directory, "benchmark.md"), "w", encoding="utf-8") as f:
    f.write(markdown(report))
  height, width = report["settings"]["input_size"]
  plot.plot_throughput(
      report["results"], peers_lib.PeerRuns(report["peers"]).timed(),
      os.path.join(directory, "benchmark.png"),
      f"{report['device']}, JAX {report['jax_version']}, {height}x{width}")
  logging.info("wrote benchmark.{json,md,png} to %s", directory)


def settings_from_flags():
  return Settings(
      variants=tuple(FLAGS.variants), batch_sizes=tuple(int(b) for b in FLAGS.batch_sizes),
      dtypes=tuple(FLAGS.dtypes), scan_impls=tuple(FLAGS.scan_impls),
      modes=tuple(FLAGS.modes), input_size=(FLAGS.input_height, FLAGS.input_width),
      num_keypoints=FLAGS.num_keypoints,
      timing=timing_lib.Timing(warmup=FLAGS.warmup, repeats=FLAGS.repeats),
      peers=tuple(FLAGS.peers))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    settings = settings_from_flags()
    settings.check()
  except ValueError as error:
    raise app.UsageError(str(error)) from None
  report = run(settings)
  if FLAGS.output_dir:
    write_outputs(report, FLAGS.output_dir)
  if FLAGS.json:
    print(json.dumps(report))
