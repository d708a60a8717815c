"""`mamkpd benchmark`: throughput and latency of MamKPD and HRVMamba, beside the peers a
user would pick (HRNet-W32, ViTPose-B, RTMPose-m in PyTorch and ONNX Runtime, when torch
is installed) and the machine's matmul rate, all in one process.

    mamkpd benchmark --variants=tiny --batch_sizes=1,4 --dtypes=float32 \\
        --scan_impls=auto,identity --input_height=64 --input_width=64 --repeats=2 --peers=
    mamkpd benchmark --variants=base,large --batch_sizes=1,8 --dtypes=float32 \\
        --scan_impls=auto --peers=hrnet_w32,vitpose_b,rtmpose_m --repeats=5   # a CPU
    mamkpd benchmark --variants=small,base,large --output_dir=benchmarks/DEVICE   # a GPU

For each dtype, mode (the forward pass, or one training step) and batch size, every
variant's scan implementations, the peers (on the float32 inference group; see
benchmarking/peers.py) and a float32 JAX matmul are timed in turns on the same random
uint8 crops: compilation apart, `--warmup` calls, then the median of `--repeats` rounds
of one call each; images/s = batch / latency. `--scan_impls` takes "auto", the
configurable scans (kernels.SCAN_IMPLS), the benchmark-only "identity" (the scan taken
out: each row then gets its `scan_share`) and "onnxruntime" (the model exported to ONNX,
float32 inference in ONNX Runtime, with `max_rel_diff_to_jax`). On a CPU the Pallas scans
run interpreted: their times there say nothing about a GPU. `run(settings)` is the
command from plain values.

Every inference row (ours and the peers') carries ms_per_crop, gmacs (multiply-adds per
crop), gmacs_per_s (= gmacs x images/s) and pct_of_matmul: gmacs_per_s as a percentage
of matmul_gmacs_per_s, the rate of a `--matmul_size`^2 float32 matmul in JAX timed in
the same turns. The roofline rows (that matmul in float32 and bfloat16, in JAX and in
PyTorch when installed) are timed in turns among themselves first.

Outputs: a table on stdout; with --json a last line holding one JSON object (device,
settings, models {variant: params, gmacs, gflops}, roofline, results, peers,
peers_skipped; `gflops` is the same multiply-add count as `gmacs`, the name kept for
readers of older reports); with --output_dir, benchmark.json, benchmark.md and
benchmark.png (images/s and GMAC/s against batch).
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
from mamkpd_jax.benchmarking import models, plot, roofline
from mamkpd_jax.benchmarking import peers as peers_lib
from mamkpd_jax.benchmarking import scan as scan_lib
from mamkpd_jax.benchmarking import timing as timing_lib

FLAGS = flags.FLAGS

# The paper's figures (images/s, one RTX 4090, its batch not stated), for the table.
PAPER_THROUGHPUT = {"small": 2564, "base": 2439, "large": 1492, "hrnet_w32": 916,
                    "vitpose_b": 944}


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
  peers: tuple[str, ...] = tuple(peers_lib.PEER_NAMES)
  peer_runtimes: tuple[str, ...] = peers_lib.RUNTIMES
  matmul_size: int = roofline.MATMUL_SIZE            # 0: no roofline rows, no percentages

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
    peers = peers_lib.canonical_names(self.peers)
    peers_lib.check_runtimes(self.peer_runtimes)
    height, width = self.input_size
    if peers and self.peer_runtimes and (height % 32 or width % 32):
      raise ValueError(f"--peers: the peers need --input_height and --input_width that are "
                       f"multiples of 32 (got {height}x{width}); or pass --peers=")
    if self.matmul_size < 0:
      raise ValueError(f"--matmul_size must be >= 0, got {self.matmul_size}")

  def peer_dtype(self):
    """The dtype group the peers are timed in: float32 where asked for, else the first."""
    return "float32" if "float32" in self.dtypes else self.dtypes[0]



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
  flags.DEFINE_list("peers", list(_DEFAULT.peers), "Peers timed beside ours "
                    f"({', '.join(peers_lib.PEER_NAMES)}); empty: none. Needs torch: "
                    f"{peers_lib.INSTALL}.")
  flags.DEFINE_list("peer_runtimes", list(_DEFAULT.peer_runtimes), "Runtimes of the peers: "
                    "torch (PyTorch) and/or onnxruntime (their ONNX export, CPU).")
  flags.DEFINE_integer("matmul_size", _DEFAULT.matmul_size, "n of the n x n float32 and "
                       "bfloat16 matmuls timed as the roofline; 0: none.")
  flags.DEFINE_string("output_dir", "", "Writes benchmark.{json,md,png} here.")
  flags.DEFINE_bool("json", False, "End stdout with one JSON object.")


# ------------------------------------------------------------------ MamKPD, HRVMamba


@dataclasses.dataclass
class Variant:
  """One of our models, built once: its sizes, and its ONNX Runtime session once made."""

  name: str
  model: object
  sizes: dict
  onnxruntime: dict = dataclasses.field(default_factory=dict)

  @property
  def title(self):
    return models.variant_title(self.name)


def build_variant(name, settings):
  model = models.build_eval_model(name, settings.num_keypoints)
  sizes = models.model_sizes(model, *settings.input_size)
  return Variant(name, model, dict(sizes, gmacs=sizes["gflops"]))   # gflops: MACs, by name


def variant_impls(settings, mode, dtype):
  """The scan implementations timed in one (mode, dtype) group: ONNX Runtime only on the
  float32 forward pass."""
  return [impl for impl in settings.scan_impls if impl != models.ONNXRUNTIME
          or (mode, dtype) == ("inference", "float32")]


def impl_call(variant, impl, dtype, mode, batch, settings):
  """(call, sync) of one row: the variant with scan `impl` in `dtype`, or its ONNX export
  in ONNX Runtime (converted once per variant)."""
  height, width = settings.input_size
  if impl == models.ONNXRUNTIME:
    cache = variant.onnxruntime
    if "session" not in cache:
      cache["session"], cache["export_s"] = models.onnxruntime_session(variant.model, height,
                                                                       width)
    return models.onnxruntime_call(cache["session"], batch, height, width)
  return models.model_call(models.with_scan(variant.model, dtype, impl), batch, height,
                           width, mode)


def onnxruntime_fields(variant, batch, settings):
  """An ONNX Runtime row's export seconds and its heatmaps' largest relative difference
  to JAX's."""
  session = variant.onnxruntime["session"]
  return dict(export_s=round(variant.onnxruntime["export_s"], 1),
              max_rel_diff_to_jax=models.onnxruntime_rel_diff(
                  session, variant.model, batch, *settings.input_size))


def our_row(variant, impl, dtype, mode, batch, timed, settings, matmul_rate):
  row = dict(model=variant.title, variant=variant.name,
             runtime="onnxruntime" if impl == models.ONNXRUNTIME else "jax", dtype=dtype,
             scan_impl=impl, interpret=scan_lib.interpreted(impl),
             **timing_lib.timing_row(batch, *timed, mode=mode), **variant.sizes)
  if impl == models.ONNXRUNTIME:
    row.update(onnxruntime_fields(variant, batch, settings))
  if mode == "inference":
    row.update(roofline.rate_fields(row, variant.sizes["gmacs"], matmul_rate))
  print(f"{variant.title:<14} {dtype:<9} {mode:<9} {impl:<11} batch {batch:>4} "
        f"{row['latency_ms']:10.3f} ms {row['images_per_s']:10.1f} images/s "
        f"(compile {row['compile_s']:.1f} s)", flush=True)
  return row


def time_group(variants, peer_set, dtype, mode, batch, settings):
  """Our rows of one (dtype, mode, batch), the peers' added to peer_set: every variant's
  implementations, the peers (in their dtype group) and the reference matmul (inference)
  timed in turns, so their ratios hold on a noisy machine."""
  calls = {(v.name, impl): impl_call(v, impl, dtype, mode, batch, settings)
           for v in variants for impl in variant_impls(settings, mode, dtype)}
  if mode == "inference" and dtype == settings.peer_dtype():
    calls.update(peer_set.calls(batch))
  if mode == "inference" and settings.matmul_size:
    calls[roofline.REFERENCE] = roofline.jax_matmul_call(settings.matmul_size, "float32")
  timed = timing_lib.time_in_turns(calls, settings.timing)
  matmul_rate = (roofline.matmul_rate(settings.matmul_size, timed[roofline.REFERENCE][1])
                 if roofline.REFERENCE in timed else None)
  peer_set.add_rows(timed, batch, matmul_rate)
  return [our_row(v, impl, dtype, mode, batch, timed[(v.name, impl)], settings, matmul_rate)
          for v in variants for impl in variant_impls(settings, mode, dtype)]


def time_roofline(settings, torch):
  """The roofline rows: float32 and bfloat16 matmuls in JAX (and torch), in turns."""
  if not settings.matmul_size:
    return []
  calls = roofline.matmul_calls(settings.matmul_size, torch)
  timed = timing_lib.time_in_turns(calls, settings.timing)
  rows = [roofline.matmul_row(key, settings.matmul_size, *timed[key]) for key in calls]
  for row in rows:
    print(f"{row['model']:<14} {row['runtime']:<11} {row['dtype']:<9} "
          f"{row['latency_ms']:10.3f} ms {row['gmacs_per_s']:10.1f} GMAC/s", flush=True)
  return rows


# ------------------------------------------------------------------ report


def run(settings, command=None):
  """The report (a JSON-able dict) of timing `settings`; `command` is recorded in it
  (default: this process's command line)."""
  settings.check()
  device = jax.devices()[0]
  height, width = settings.input_size
  peer_set = peers_lib.build_peers(settings.peers, settings.peer_runtimes,
                                   settings.num_keypoints, height, width)
  roofline_rows = time_roofline(settings, peer_set.torch)
  variants = [build_variant(name, settings) for name in settings.variants]
  results = []
  for dtype in settings.dtypes:
    for mode in settings.modes:
      for batch in settings.batch_sizes:
        results += time_group(variants, peer_set, dtype, mode, batch, settings)
  models.add_scan_shares(results)
  peers_lib.add_ratios(results, peer_set.runs.timed())
  return dict(
      device=device.device_kind, platform=device.platform, jax_version=jax.__version__,
      torch_version=getattr(peer_set.torch, "__version__", None),
      date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      command=command or " ".join(["python"] + sys.argv),
      settings=dict(input_size=list(settings.input_size),
                    num_keypoints=settings.num_keypoints, repeats=settings.timing.repeats,
                    warmup=settings.timing.warmup, modes=list(settings.modes),
                    peer_runtimes=list(settings.peer_runtimes),
                    matmul_size=settings.matmul_size,
                    input="uint8 RGB crops, normalised inside the model (peers: the same "
                          "crops normalised, float32 NCHW)"),
      paper_images_per_s=PAPER_THROUGHPUT,
      models={v.name: v.sizes for v in variants}, roofline=roofline_rows, results=results,
      peers=peer_set.runs.rows, peers_skipped=peer_set.runs.skipped)


def _num(value, spec):
  """`value` formatted, or "-" where a row has no such field."""
  return "-" if value is None else format(value, spec)


def _row_cells(row, scan):
  return (f"| {row['model']} | {row.get('runtime', '-')} | {row['dtype']} | "
          f"{row.get('mode', 'inference')} | {scan} | {row['batch']} | "
          f"{_num(row.get('ms_per_crop'), '.2f')} | {row['images_per_s']:.1f} | "
          f"{_num(row.get('gmacs'), '.2f')} | {_num(row.get('gmacs_per_s'), '.1f')} | "
          f"{_num(row.get('pct_of_matmul'), '.1f')} |")


def _header_lines(report, peers):
  settings = report["settings"]
  height, width = settings["input_size"]
  torch_version = report.get("torch_version")
  lines = [f"# MamKPD inference throughput, {report['device']}", "",
           f"JAX {report['jax_version']}"
           + (f", PyTorch {torch_version}" if torch_version else "")
           + f", {report['date']}, input {height}x{width}, K={settings['num_keypoints']}, "
           f"median of {settings['repeats']} calls after {settings['warmup']} warm-up "
           "(compile excluded); the rows of one (dtype, mode, batch) timed in turns in one "
           "process, with a float32 JAX matmul whose rate `% matmul` is relative to.", "",
           f"Command: `{report['command']}`", ""]
  for variant, sizes in report["models"].items():
    paper = PAPER_THROUGHPUT.get(variant)
    lines.append(f"- {models.variant_title(variant)}: {sizes['params'] / 1e6:.2f}M "
                 f"parameters, {sizes.get('gmacs', sizes['gflops']):.2f} GMACs per crop"
                 + (f"; paper: {paper} images/s on one RTX 4090" if paper else ""))
  seen = set()
  for peer in peers.timed():
    if peer["peer"] not in seen:
      seen.add(peer["peer"])
      lines.append(f"- {peer['model']}: {peer['params'] / 1e6:.2f}M parameters, "
                   f"{_num(peer.get('gmacs'), '.2f')} GMACs per crop (torch's FlopCounterMode)")
  if peers.skipped:
    lines.append(f"- peers: skipped: {peers.skipped}")
  lines += [f"- {peer['model']} ({peer.get('runtime', 'torch')}): failed: {peer['error']}"
            for peer in peers.failed()]
  return lines


def _roofline_lines(report):
  rows = report.get("roofline") or []
  if not rows:
    return []
  lines = ["", "| roofline | runtime | dtype | ms | GMAC/s |", "|---|---|---|---:|---:|"]
  lines += [f"| {row['model']} | {row['runtime']} | {row['dtype']} | "
            f"{row['latency_ms']:.2f} | {row['gmacs_per_s']:.1f} |" for row in rows]
  return lines


def _ratio_lines(report, peers):
  """Our inference rows' images/s over each peer's (same batch, same turns)."""
  columns = list(dict.fromkeys((p["peer"], p.get("runtime", "torch"), p["model"])
                               for p in peers.timed()))
  if not columns:
    return []
  keys = [peers_lib.ratio_key(dict(peer=peer, runtime=runtime))
          for peer, runtime, _ in columns]
  lines = ["", "Our crops/s over each peer's, same batch, timed in turns:", "",
           "| model | runtime | dtype | scan | batch |"
           + "".join(f" x {title} ({runtime}) |" for _, runtime, title in columns),
           "|---|---|---|---|---:|" + "---:|" * len(columns)]
  for row in report["results"]:
    if row.get("mode", "inference") == "inference":
      lines.append(f"| {row['model']} | {row.get('runtime', 'jax')} | {row['dtype']} | "
                   f"{row['scan_impl']} | {row['batch']} |"
                   + "".join(f" {_num(row.get(key), '.2f')} |" for key in keys))
  return lines


def markdown(report):
  """The report as markdown: header facts, the roofline rows, every row (ours, then the
  peers), and our throughput as a ratio to each peer's."""
  peers = peers_lib.PeerRuns(report["peers"], report["peers_skipped"])
  lines = _header_lines(report, peers) + _roofline_lines(report)
  lines += ["", "| model | runtime | dtype | mode | scan | batch | ms/crop | crops/s | "
            "GMACs/crop | GMAC/s | % matmul | x identity |",
            "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  for row in report["results"]:
    scan = row["scan_impl"] + (" (interpret)" if row["interpret"] else "")
    lines.append(_row_cells(row, scan) + f" {_num(row.get('x_identity'), '.2f')} |")
  lines += [_row_cells(peer, "-") + " - |" for peer in peers.timed()]
  return "\n".join(lines + _ratio_lines(report, peers)) + "\n"


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
      f"{report['device']}, JAX {report['jax_version']}, {height}x{width}",
      roofline_rows=report.get("roofline"))
  logging.info("wrote benchmark.{json,md,png} to %s", directory)


def settings_from_flags():
  return Settings(
      variants=tuple(FLAGS.variants), batch_sizes=tuple(int(b) for b in FLAGS.batch_sizes),
      dtypes=tuple(FLAGS.dtypes), scan_impls=tuple(FLAGS.scan_impls),
      modes=tuple(FLAGS.modes), input_size=(FLAGS.input_height, FLAGS.input_width),
      num_keypoints=FLAGS.num_keypoints,
      timing=timing_lib.Timing(warmup=FLAGS.warmup, repeats=FLAGS.repeats),
      peers=tuple(FLAGS.peers), peer_runtimes=tuple(FLAGS.peer_runtimes),
      matmul_size=FLAGS.matmul_size)


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
