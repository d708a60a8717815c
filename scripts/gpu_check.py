"""One command that turns an available GPU or TPU into committed evidence (about 7 minutes).

    python scripts/gpu_check.py                       # on a GPU or a Cloud TPU VM:
                                                      #   benchmarks/<date>-<device>/
    python scripts/gpu_check.py --dry_run             # the same code on a CPU, tiny shapes
    python scripts/gpu_check.py --sections=environment,correctness --budget_s=120

The same sections run on a GPU and on a TPU (JAX's default backend decides); each takes
the scan implementations that run there (`kernels.runs_on(backend)`: on a TPU the pure-JAX
scans and the Pallas TPU kernel, never the GPU kernels). Sections, in this order (each
one's rows are written the moment they exist, so a run killed half-way still leaves its
files):
  environment   device, driver (GPU) or libtpu (TPU), JAX / jaxlib / Python versions,
                `nvidia-smi` (GPU) or the device list (TPU); the published peaks of the
                device kind (HBM GB/s, bfloat16 TFLOP/s; roofline.TPU_CHIPS, GPU: HBM only) and the
                measured ones: a copy's GB/s and a square matmul's TFLOP/s
  correctness   every scan implementation that runs here against "reference" on the
                device: MamKPD-B/L stage shapes at batch 8, float32 and bfloat16,
                the output and the gradient of every input, tests' tolerances
  scan          the fused SS2D scan alone, stage 1 of MamKPD-B at batch 64: forward and
                forward+backward, ms, GB/s implied by the minimum bytes, fraction of the
                published HBM peak (none where unknown) and of the measured copy
  dcnv4         HRVMamba-T's DCNv4 (kernels/dcnv4.py, impl="jax") at each branch's shape
                (docs/hrvmamba.md §10), batch 8 and 64, bfloat16 and float32: forward and
                forward+backward ms beside a depth-wise 3x3 conv of the same map (the
                grouped lax.conv a GPU or TPU runs), and their ratio; on a GPU also
                whether XLA_FLAGS has -nvptx-allow-ftz-atomics and whether the jaxlib is
                one whose float32 scatter-add atomics are CAS loops (0.10.2 to 0.11.0)
  inference     MamKPD-S/B/L (then HRVMamba-T/S/B, first to be skipped when the budget
                is short) images/s and latency, bfloat16 and float32, batch 1/64/256,
                each scan implementation
  peers         HRNet-W32, ViTPose-B, RTMPose-m (PyTorch, when importable), same batches;
                skipped on a TPU (PyTorch would run them on the host CPU)
  train_speed   images/s of MamKPD-B train steps (mamkpd_jax/training/train.py), global batch 64,
                synthetic data, bfloat16 and float32
  train_real    about 2 minutes of training MamKPD-tiny on the bundled open-field video
                (configs/sample_openfield.py), then its held-out PCK@0.1

`--budget_s` (default 420 s, compilation included) is shared out between the sections
in proportion to SHARES; what would not fit in its section's share is skipped and the
row says so. An implementation that fails to compile or run is recorded with its error
and skipped for the rest of that section; nothing aborts the run.

Outputs in --output_dir (default benchmarks/<date>-<device>, a new folder each run):
results.jsonl (one json object per row: section, status ok / failed / skipped, fields),
environment.json, nvidia-smi.txt (tpu-devices.txt on a TPU), summary.md (rewritten after
every section), inference.png (images/s against batch), learning_curve.png (train_real).
Run it on one host (a single-host TPU VM: v5e/v6e up to 8 chips, v4-8, v5p-8).
"""

import dataclasses
import datetime
import functools
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

# A second compilation of the same program (train_real's probe, then its run) is a
# cache hit. Before JAX reads its configuration; an existing setting is kept.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"mamkpd-jax-cache-{os.getuid()}"))

import jax
import numpy as np
from absl import app, flags, logging

from mamkpd_jax import config_lib, kernels
from mamkpd_jax.benchmarking import models, plot, roofline
from mamkpd_jax.benchmarking import peers as peers_lib
from mamkpd_jax.benchmarking import scan as scan_lib
from mamkpd_jax.benchmarking import timing as timing_lib
from mamkpd_jax.models.hrvmamba import dcn as hrvmamba_dcn
from mamkpd_jax.training import checkpointing, train, workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("environment", "correctness", "scan", "dcnv4", "inference", "peers",
            "train_speed", "train_real")
# Each section's share of the time budget (environment needs none). Time a section
# leaves unused passes on to the next ones.
SHARES = {"environment": 0.0, "correctness": 0.18, "scan": 0.08, "dcnv4": 0.08,
          "inference": 0.3, "peers": 0.08, "train_speed": 0.1, "train_real": 0.36}
# jaxlib releases whose XLA:GPU emits float32 scatter-add atomics as compare-and-swap
# loops (jax-ml/jax#38806, openxla/xla#46225; docs/hrvmamba.md §10): DCNv4's backward
# is such a scatter-add. The flag below restores native atomics.
CAS_ATOMICS_JAXLIB = ((0, 10, 2), (0, 11, 0))
FTZ_ATOMICS_FLAG = "-nvptx-allow-ftz-atomics"

FLAGS = flags.FLAGS


@functools.cache
def define_flags():
  """The script's flags (defined when it runs, not on import: tests import it)."""
  flags.DEFINE_float("budget_s", 420.0, "Seconds for the whole run, compilation included; "
                     "what would not fit is skipped and said so.")
  flags.DEFINE_bool("dry_run", False, "Tiny shapes and few repeats: the same code path on "
                    "a CPU in under 2 minutes.")
  flags.DEFINE_list("sections", list(SECTIONS), f"A subset of {SECTIONS}.")
  flags.DEFINE_string("output_dir", "", "Default: benchmarks/<date>-<device> (-dry_run "
                      "appended with --dry_run); never overwritten.")


@dataclasses.dataclass(frozen=True)
class Plan:
  """The shapes and sizes each section runs at."""

  input_size: tuple[int, int]                      # (height, width) of the crops
  correctness_variants: tuple[str, ...]
  correctness_stages: tuple[int, ...]
  correctness_batch: int
  scan_variant: str                                # stage 1 of it, at scan_batch
  scan_batch: int
  inference_variants: tuple[str, ...]              # in the order they run
  batches: tuple[int, ...]                         # inference and peers, in that order
  train_variant: str
  train_batch: int
  real_train_s: float                              # train_real's training time
  real_input_size: int                             # train_real's square crop
  real_batch: int
  real_num_workers: int                            # Grain worker processes
  real_probe_steps: int                            # steps timed to size the run
  real_max_steps: int
  timing: timing_lib.Timing
  dtypes: tuple[str, ...] = ("bfloat16", "float32")
  dcnv4_variant: str = "tiny"                      # HRVMamba variant whose branches run
  dcnv4_branches: tuple[int, ...] = (0, 1, 2, 3)   # of its branches, these
  dcnv4_batches: tuple[int, ...] = (8, 64)
  num_keypoints: int = 17
  untimed_impls: tuple[str, ...] = ()              # checked for correctness, never timed
  dry_run: bool = False                            # timings meaningless (tiny shapes, CPU)
  matmul_size: int = 8192                          # n of the measured n x n x n matmul
  copy_mib: int = 1024                             # MiB of the array the copy reads


# A GPU's and a TPU's plan: the same shapes on either accelerator.
GPU_PLAN = Plan(input_size=(256, 192), correctness_variants=("base", "large"),
                correctness_stages=(1, 2, 3), correctness_batch=8, scan_variant="base",
                scan_batch=64, inference_variants=("base", "small", "large", "hrvmamba-tiny",
                                                    "hrvmamba-small", "hrvmamba-base"),
                batches=(64, 256, 1), train_variant="base", train_batch=64,
                real_train_s=120.0, real_input_size=128, real_batch=16, real_num_workers=4,
                real_probe_steps=30, real_max_steps=20000,
                timing=timing_lib.Timing(warmup=2, repeats=10))
DRY_RUN_PLAN = Plan(input_size=(32, 32), correctness_variants=("tiny",),
                    correctness_stages=(1,), correctness_batch=1, scan_variant="tiny",
                    scan_batch=2, inference_variants=("tiny",), batches=(2,),
                    train_variant="tiny", train_batch=2, real_train_s=5.0,
                    real_input_size=32, real_batch=8, real_num_workers=0,
                    real_probe_steps=2, real_max_steps=4,
                    timing=timing_lib.Timing(warmup=0, repeats=1), dtypes=("float32",),
                    # Interpreted on a CPU, the Mosaic GPU kernel takes ~20 s per call and
                    # its compile ~25 s: a third of the dry run's time for a meaningless
                    # number. Its correctness row still runs the kernel.
                    untimed_impls=("pallas_mosaic",), dry_run=True, matmul_size=256,
                    copy_mib=8, dcnv4_branches=(0, 1), dcnv4_batches=(1,))


# ------------------------------------------------------------------ the device


def _backend():
  """JAX's default backend ("cpu", "gpu", "tpu"); tests fake it."""
  return jax.default_backend()


def _devices():
  """The devices this process sees; tests fake them."""
  return jax.devices()


def measured_rates(plan):
  """What the device achieves here, each the median of plan.timing's repeats: a
  plan.copy_mib MiB float32 copy (GB/s) and a plan.matmul_size^3 matmul in bfloat16 and
  float32 (TFLOP/s, at JAX's default precision, as the models run)."""
  rates = dict(copy_mib=plan.copy_mib, copy_gbps=_copy_gbps(plan.copy_mib, plan.timing),
               matmul_size=plan.matmul_size)
  for dtype in ("bfloat16", "float32"):
    rates[f"matmul_{dtype}_tflops"] = _matmul_tflops(plan.matmul_size, dtype, plan.timing)
  return rates


def _copy_gbps(mib, timing):
  """GB/s of y = x + 1 over `mib` MiB of float32: x read once, y written once."""
  import jax.numpy as jnp   # pylint: disable=g-import-not-at-top
  x = jnp.zeros((mib * 2 ** 20 // 4,), jnp.float32)
  add_one = jax.jit(lambda a: a + 1)
  _, seconds = timing_lib.time_calls(lambda: add_one(x), jax.block_until_ready, timing)
  return float(f"{2 * x.nbytes / seconds / 1e9:.4g}")


def _matmul_tflops(size, dtype, timing):
  """TFLOP/s of a size^3 matmul in `dtype` (not roofline's cached call: these arrays are
  freed when it returns)."""
  import jax.numpy as jnp   # pylint: disable=g-import-not-at-top
  a, b = (jax.random.normal(key, (size, size), jnp.float32).astype(dtype)
          for key in jax.random.split(jax.random.key(0)))
  matmul = jax.jit(jnp.matmul)
  _, seconds = timing_lib.time_calls(lambda: matmul(a, b), jax.block_until_ready, timing)
  return float(f"{2 * roofline.matmul_gmacs(size) / seconds / 1e3:.4g}")


def fractions(peaks, rates):
  """Measured over published, where both exist (None otherwise; never a guess)."""
  pairs = {"copy_of_hbm_peak": ("copy_gbps", "hbm_gbps"),
           "matmul_bfloat16_of_peak": ("matmul_bfloat16_tflops", "bf16_tflops"),
           "matmul_float32_of_peak": ("matmul_float32_tflops", "f32_tflops")}
  return {name: roofline.fraction_of_peak(rates.get(got), peaks.get(peak))
          if rates.get(got) else None for name, (got, peak) in pairs.items()}


# ------------------------------------------------------------------ budget and records


class Budget:
  """Deadlines: the run's, and each section's share of what is left when it starts."""

  def __init__(self, total_s):
    self.total_s = total_s
    self.end = time.monotonic() + total_s
    self.section_end = self.end

  def start_section(self, name, sections_left):
    left = max(self.end - time.monotonic(), 0.0)
    shares = sum(SHARES[s] for s in sections_left)
    fraction = SHARES[name] / shares if shares else 1.0
    self.section_end = time.monotonic() + left * fraction

  def left(self):
    """Seconds left in the current section."""
    return self.section_end - time.monotonic()

  def skip_reason(self, estimate_s):
    """Why an item estimated to take estimate_s must be skipped, or None if it fits."""
    if self.left() <= 0 or (estimate_s is not None and estimate_s > self.left()):
      return (f"time budget: this section has {max(self.left(), 0):.0f} s left, the item "
              f"needs about {estimate_s or 0:.0f} s (--budget_s={self.total_s:g})")
    return None


class Recorder:
  """results.jsonl, one line per row, flushed at once; summary.md after each section."""

  def __init__(self, directory):
    self.directory = directory
    self.rows = []

  def path(self, name):
    return os.path.join(self.directory, name)

  def add(self, section, status, **fields):
    row = {"section": section, "status": status, **fields}
    self.rows.append(row)
    with open(self.path("results.jsonl"), "a", encoding="utf-8") as f:
      f.write(json.dumps(row) + "\n")
    logging.info("%s", row)
    return row

  def section_rows(self, section, status="ok"):
    return [r for r in self.rows if r["section"] == section and r["status"] == status]


def run_items(section, items, budget, recorder):
  """Runs (description, fn) items in order; fn() returns a row's fields.

  An item is skipped when the section's time cannot hold it (the estimate is the
  longest item so far in this section), or when it needs an implementation that failed
  earlier in this section; an exception is recorded as a failed row.
  """
  longest = None
  failed_impls = {}                     # impl -> the error that made it fail
  for fields, fn in items:
    impl = fields.get("impl")
    if impl in failed_impls:
      recorder.add(section, "skipped", **fields,
                   reason=f"{impl} failed earlier in this section: {failed_impls[impl]}")
      continue
    reason = budget.skip_reason(longest)
    if reason:
      recorder.add(section, "skipped", **fields, reason=reason)
      continue
    start = time.monotonic()
    try:
      row = recorder.add(section, "ok", **{**fields, **fn()})
      print(f"[{section}] {row}", flush=True)
    except Exception as error:   # pylint: disable=broad-except  (one failure must not stop us)
      message = f"{type(error).__name__}: {str(error)[:400]}"
      logging.error("%s %s failed:\n%s", section, fields, traceback.format_exc())
      recorder.add(section, "failed", **fields, error=message)
      if impl is not None and impl != "reference":
        failed_impls[impl] = message
    longest = max(longest or 0.0, time.monotonic() - start)


# ------------------------------------------------------------------ sections


def environment(plan, budget, recorder):
  """Device, versions, published and measured peaks: environment.json, and nvidia-smi.txt
  (GPU; CPU) or tpu-devices.txt (TPU, where there is no nvidia-smi)."""
  del budget
  import jaxlib   # pylint: disable=g-import-not-at-top
  devices = _devices()
  device = devices[0]
  tpu = device.platform == "tpu"
  driver = None
  if tpu:
    listing_name, listing = "tpu-devices.txt", "\n".join(map(_describe, devices))
  else:
    smi = shutil.which("nvidia-smi")
    listing_name = "nvidia-smi.txt"
    listing = _command_output([smi]) if smi else "nvidia-smi: not found on PATH"
    if smi:
      driver = _command_output([smi, "--query-gpu=driver_version", "--format=csv,noheader"])
  with open(recorder.path(listing_name), "w", encoding="utf-8") as f:
    f.write(listing + "\n")
  peaks = roofline.published_peaks(device)
  try:
    rates = measured_rates(plan)
  except Exception as error:   # pylint: disable=broad-except  (e.g. out of memory)
    logging.error("measuring the copy and matmul rates failed:\n%s", traceback.format_exc())
    rates = dict(error=f"{type(error).__name__}: {str(error)[:400]}")
  info = dict(device=device.device_kind, platform=device.platform,
              device_count=len(devices), driver=driver,
              libtpu=_libtpu_version() if tpu else None, jax=jax.__version__,
              jaxlib=jaxlib.__version__, python=platform.python_version(),
              host=platform.platform(), scan_impls=sorted(_impls_here()),
              peak_gbps=peaks["hbm_gbps"], peak_bf16_tflops=peaks["bf16_tflops"],
              peak_f32_tflops=peaks["f32_tflops"], peak_source=peaks["source"],
              measured=rates, fractions=fractions(peaks, rates),
              date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              command=" ".join(["python"] + sys.argv), dry_run=plan.dry_run)
  with open(recorder.path("environment.json"), "w", encoding="utf-8") as f:
    json.dump(info, f, indent=1)
  recorder.add("environment", "ok", **info)


def _describe(device):
  """One line per TPU device: id, kind, process, chip coordinates, TensorCores."""
  return (f"{device.id}: {device.device_kind}, process {device.process_index}, coords "
          f"{getattr(device, 'coords', None)}, core_on_chip "
          f"{getattr(device, 'core_on_chip', None)}, num_cores "
          f"{getattr(device, 'num_cores', None)}")


def _libtpu_version():
  for name in ("libtpu", "libtpu-nightly"):
    try:
      return f"{name} {importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
      continue
  return None


def _command_output(command):
  try:
    return subprocess.run(command, capture_output=True, text=True, timeout=30,
                          check=False).stdout.strip()
  except (OSError, subprocess.SubprocessError) as error:
    return f"{command[0]} failed: {error}"


def _impls_here():
  """The configurable scans that run on this backend: `kernels.runs_on` (the CPU kernel
  only on a CPU, the GPU kernels only on a GPU, the TPU kernel only on a TPU; all of the
  Pallas kernels on a CPU, interpreted)."""
  return list(kernels.runs_on(_backend()))


def _kernel_impls():
  return [name for name in _impls_here() if name != "reference"]


def _timed_impls(plan, section, recorder, exclude=()):
  """The implementations `section` times; a skipped row for each of plan.untimed_impls."""
  impls = [name for name in _impls_here() if name not in exclude]
  for name in impls:
    if name in plan.untimed_impls:
      recorder.add(section, "skipped", impl=name, reason="not timed in a dry run: its "
                   "kernel runs interpreted here (correctness checks it)")
  return [name for name in impls if name not in plan.untimed_impls]


def correctness(plan, budget, recorder):
  """Each kernel against the reference: y and every gradient, as a fraction of the
  tolerance (<= 1 passes, as the kernel tests' kernels.tolerances.assert_close)."""
  reference_fn = scan_lib.scan_values_and_grads_fn("reference")
  items = []
  for dtype in plan.dtypes:
    for variant in plan.correctness_variants:
      for stage in plan.correctness_stages:
        shape = scan_lib.scan_stage_shape(variant, stage, plan.correctness_batch,
                                              *plan.input_size)
        expected = {}        # the reference's (y, grads), computed once per shape

        for impl in _kernel_impls():

          def check(shape=shape, dtype=dtype, impl=impl, expected=expected):
            args = scan_lib.scan_inputs(shape, dtype)
            if not expected:
              expected["value"] = jax.device_get(reference_fn(*args))
            got = jax.device_get(scan_lib.scan_values_and_grads_fn(impl)(*args))
            ratios = scan_lib.tolerance_ratios(got, expected["value"], dtype)
            worst = max(ratios, key=ratios.get)
            return dict(passed=ratios[worst] <= 1.0, worst=worst,
                        worst_ratio=round(ratios[worst], 4),
                        ratios={k: round(v, 4) for k, v in ratios.items()},
                        interpret=scan_lib.interpreted(impl))

          items.append((dict(impl=impl, variant=variant, stage=stage, dtype=dtype,
                             shape=list(shape)), check))
  run_items("correctness", items, budget, recorder)


def scan(plan, budget, recorder):
  """The fused SS2D scan alone at stage 1 of plan.scan_variant, each implementation;
  its GB/s as a fraction of the published HBM peak (None where unknown) and of the
  copy measured by `environment`."""
  peak = roofline.published_peaks(_devices()[0])["hbm_gbps"]
  copy_gbps = _env_row(recorder).get("measured", {}).get("copy_gbps")
  shape = scan_lib.scan_stage_shape(plan.scan_variant, 1, plan.scan_batch,
                                    *plan.input_size)
  dtype = "bfloat16"
  impls = _timed_impls(plan, "scan", recorder)
  items = []
  for pass_name in ("forward", "forward_backward"):
    for impl in impls:

      def measure(impl=impl, pass_name=pass_name):
        args = scan_lib.scan_inputs(shape, dtype)
        fn = scan_lib.scan_fn(impl, pass_name)
        compile_s, seconds = timing_lib.time_calls(lambda: fn(*args),
                                                   jax.block_until_ready, plan.timing)
        row = scan_lib.scan_row(shape, dtype, pass_name, impl, seconds, peak)
        return dict({k: v for k, v in row.items() if k not in ("impl", "pass_name")},
                    fraction_of_copy=roofline.fraction_of_peak(row["gbps"], copy_gbps),
                    compile_s=round(compile_s, 2))

      items.append((dict(impl=impl, variant=plan.scan_variant, stage=1,
                         pass_name=pass_name), measure))
  run_items("scan", items, budget, recorder)


def dcnv4(plan, budget, recorder):
  """DCNv4 (impl="jax") against a depth-wise 3x3 conv of the same (N, H, W, C), per
  HRVMamba branch, batch and dtype: forward and forward+backward, timed in turns."""
  gpu_fields = _atomics_fields(_backend(), os.environ.get("XLA_FLAGS", ""))
  sites = [site for site in hrvmamba_dcn.call_sites(plan.dcnv4_variant, *plan.input_size)
           if site.index in plan.dcnv4_branches]
  model = models.variant_title(f"hrvmamba-{plan.dcnv4_variant}")
  items = []
  for dtype in plan.dtypes:
    for batch in plan.dcnv4_batches:
      for site in sites:
        fields = dict(model=model, branch=site.index, height=site.height,
                      width=site.width, channels=site.channels, groups=site.groups,
                      batch=batch, dtype=dtype, **gpu_fields)
        items.append((fields, functools.partial(_time_dcnv4_and_conv, site, batch, dtype,
                                                plan.timing)))
  run_items("dcnv4", items, budget, recorder)


def _atomics_fields(backend, xla_flags):
  """On a GPU: the jaxlib version, whether it emits CAS-loop float32 atomics
  (CAS_ATOMICS_JAXLIB) and whether XLA_FLAGS has FTZ_ATOMICS_FLAG; elsewhere nothing."""
  if backend != "gpu":
    return {}
  import jaxlib   # pylint: disable=g-import-not-at-top
  version = tuple(int(n) for n in re.findall(r"\d+", jaxlib.__version__)[:3])
  low, high = CAS_ATOMICS_JAXLIB
  return dict(jaxlib=jaxlib.__version__, cas_atomics_jaxlib=low <= version <= high,
              ftz_atomics_flag=FTZ_ATOMICS_FLAG in xla_flags)


def _dcnv4_inputs(site, batch, dtype):
  """value (N, H, W, C), offset_mask (N, H, W, P) with offsets uniform in +-1 pixel
  (around the 3x3 window, as HRVMamba's start at 0) and standard-normal masks, and a
  cotangent (N, H, W, C), all in `dtype`."""
  import jax.numpy as jnp   # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(site.index)
  shape, points = (batch, site.height, site.width), hrvmamba_dcn.KERNEL_POINTS
  value, cotangent = (rng.normal(size=(*shape, site.channels)) for _ in range(2))
  offset_mask = rng.uniform(-1.0, 1.0, (*shape, site.lanes))
  for g in range(site.groups):                     # group g's masks: lanes 3Kg+2K .. 3Kg+3K
    masks = slice(3 * points * g + 2 * points, 3 * points * (g + 1))
    offset_mask[..., masks] = rng.normal(size=(*shape, points))
  return [jnp.asarray(a, dtype) for a in (value, offset_mask, cotangent)]


def _vjp_call(fn):
  """jit of (*args, cotangent) -> the output and every argument's gradient."""
  def forward_backward(*args):
    out, vjp = jax.vjp(fn, *args[:-1])
    return out, vjp(args[-1])
  return jax.jit(forward_backward)


def dcnv4_calls(site, batch, dtype):
  """{name: (jitted fn, args)}: DCNv4 (impl="jax") and HRVMamba's depth-wise 3x3 conv
  (models.common.depthwise_conv: C channels, bias) of the same (N, H, W, C) map, forward
  and forward+backward (the output and the gradient of every argument). Trace them
  within common.depthwise_conv_mode("grouped"): the grouped lax.conv a GPU or TPU runs."""
  from flax import nnx   # pylint: disable=g-import-not-at-top
  from mamkpd_jax.kernels.dcnv4 import dcnv4 as dcnv4_op   # pylint: disable=g-import-not-at-top
  from mamkpd_jax.models import common   # pylint: disable=g-import-not-at-top
  value, offset_mask, cotangent = _dcnv4_inputs(site, batch, dtype)
  sample = lambda v, om: dcnv4_op(v, om, groups=site.groups, impl="jax")
  module = common.depthwise_conv(site.channels, 3, np.dtype(value.dtype), nnx.Rngs(0))
  graphdef, params = nnx.split(module)
  conv = lambda p, x: nnx.merge(graphdef, p)(x)
  return {"dcnv4_forward": (jax.jit(sample), (value, offset_mask)),
          "dcnv4_forward_backward": (_vjp_call(sample), (value, offset_mask, cotangent)),
          "conv_forward": (jax.jit(conv), (params, value)),
          "conv_forward_backward": (_vjp_call(conv), (params, value, cotangent))}


def _time_dcnv4_and_conv(site, batch, dtype, timing):
  """ms of DCNv4 and of the depth-wise conv, forward and forward+backward, in turns."""
  from mamkpd_jax.models import common   # pylint: disable=g-import-not-at-top
  calls = dcnv4_calls(site, batch, dtype)
  with common.depthwise_conv_mode("grouped"):      # traced on the first call, in here
    results = timing_lib.time_in_turns(
        {name: (functools.partial(fn, *args), jax.block_until_ready)
         for name, (fn, args) in calls.items()}, timing)
  ms = {f"{name}_ms": float(f"{seconds * 1e3:.4g}")
        for name, (_, seconds) in results.items()}
  return dict(ms, conv_form="grouped lax.conv",
              ratio_forward=round(ms["dcnv4_forward_ms"] / ms["conv_forward_ms"], 2),
              ratio_forward_backward=round(ms["dcnv4_forward_backward_ms"]
                                           / ms["conv_forward_backward_ms"], 2),
              compile_s=round(sum(c for c, _ in results.values()), 2))


def inference_speed(plan, budget, recorder):
  """images/s and latency of each variant x dtype x scan implementation x batch."""
  height, width = plan.input_size
  impls = _timed_impls(plan, "inference", recorder, exclude=("onnx",))   # onnx: export-only
  items = []
  built = {}                             # variant -> (eval-mode model, sizes)
  for dtype in plan.dtypes:              # most wanted first: what the budget cuts is last
    for variant in plan.inference_variants:
      for batch in plan.batches:
        for impl in impls:

          def measure(variant=variant, dtype=dtype, impl=impl, batch=batch):
            if variant not in built:
              model = models.build_eval_model(variant, plan.num_keypoints)
              built[variant] = (model, models.model_sizes(model, height, width))
            model, sizes = built[variant]
            row = models.time_model(models.with_scan(model, dtype, impl), batch, height,
                                    width, plan.timing)
            return dict(row, **sizes, interpret=scan_lib.interpreted(impl))

          items.append((dict(model=models.variant_title(variant), variant=variant,
                             dtype=dtype,
                             scan_impl=impl, impl=impl, batch=batch), measure))
  run_items("inference", items, budget, recorder)


def peers(plan, budget, recorder):
  """HRNet-W32, ViTPose-B and RTMPose-m in PyTorch at the same input and batches."""
  if _backend() == "tpu":
    recorder.add("peers", "skipped", reason="on a TPU PyTorch would run the peers on the "
                 "host CPU: no comparable numbers")
    return
  height, width = plan.input_size
  try:
    torch, modules = peers_lib.torch_peers(plan.num_keypoints, height, width)
  except ImportError as error:
    recorder.add("peers", "skipped", reason=f"torch not importable: {error}")
    return
  items = []
  built = {}
  for name, module in modules.items():
    for batch in plan.batches:

      def measure(name=name, module=module, batch=batch):
        if name not in built:
          built[name] = peers_lib.peer_model(torch, module)
        return peers_lib.time_peer(torch, *built[name], batch, height, width, plan.timing)

      items.append((dict(model=peers_lib.PEER_NAMES[name], peer=name, batch=batch),
                    measure))
  run_items("peers", items, budget, recorder)
  peers_lib.add_ratios(recorder.section_rows("inference"), recorder.section_rows("peers"))


def train_speed(plan, budget, recorder):
  """images/s of training.train's step on synthetic batches (no input pipeline), timed
  as `mamkpd benchmark --modes=train` times it (benchmarking.models.train_call)."""
  height, width = plan.input_size
  items = []
  for dtype in plan.dtypes:

    def measure(dtype=dtype):
      model = models.build_eval_model(plan.train_variant, plan.num_keypoints)
      model = models.with_scan(model, dtype, kernels.AUTO)
      return models.time_model(model, plan.train_batch, height, width, plan.timing,
                               mode="train")

    items.append((dict(model=models.variant_title(plan.train_variant), dtype=dtype,
                       input_size=list(plan.input_size)), measure))
  run_items("train_speed", items, budget, recorder)


def train_real(plan, budget, recorder):
  """MamKPD-tiny on the open-field video for about plan.real_train_s, then PCK@0.1.

  A short probe run measures the steps/s (its compilation is then a cache hit for the
  real run), which sets the real run's steps. The sample config's learning-rate decays
  (epochs 120 and 140 of 150) are dropped: a 2-minute run keeps the rate after warm-up.
  """
  workdir_root = tempfile.mkdtemp(prefix="gpu_check_train_")
  base = config_lib.load_config_file(os.path.join(REPO, "configs", "sample_openfield.py"))
  base.data.input_height = base.data.input_width = plan.real_input_size
  base.batch_size = plan.real_batch
  base.data.num_workers = plan.real_num_workers

  def run_config(num_steps):
    config = base.copy_and_resolve_references()
    config.train.num_steps = num_steps
    config.train.log_every_steps = max(1, min(25, num_steps // 3))
    config.train.checkpoint_every_steps = num_steps
    config.train.eval_every_epochs = 0          # evaluate once, after the last step
    config.train.lr_decay_epochs = ()           # so the probe's step is the run's step
    return config

  def probe():
    workdir = os.path.join(workdir_root, "probe")
    start = time.monotonic()
    train.train_and_evaluate(run_config(plan.real_probe_steps), workdir,
                             evaluate_during_training=False)
    rates = workdir_lib.read_scalars(workdir)["train/images_per_s"]
    return dict(probe_steps=plan.real_probe_steps, probe_s=round(time.monotonic() - start, 1),
                images_per_s=round(rates[-1][1], 2))

  def real_run():
    probes = recorder.section_rows("train_real")
    if not probes:
      raise RuntimeError("the probe run did not finish: no steps/s to size the run")
    images_per_s = probes[-1]["images_per_s"]
    seconds = min(plan.real_train_s, 0.8 * budget.left())
    steps = int(np.clip(seconds * images_per_s / plan.real_batch, plan.real_probe_steps,
                        plan.real_max_steps))
    config = run_config(steps)
    workdir = os.path.join(workdir_root, "run")
    start = time.monotonic()
    metrics = train.train_and_evaluate(config, workdir)
    elapsed = time.monotonic() - start
    curve = os.path.join(workdir, "learning_curve.png")
    if os.path.exists(curve):
      shutil.copy(curve, recorder.path("learning_curve.png"))
    return dict(steps=steps, batch=plan.real_batch, input_size=plan.real_input_size,
                planned_train_s=round(seconds, 1), wall_s=round(elapsed, 1),
                **{k: round(float(v), 4) for k, v in metrics.items()})

  config_name = "configs/sample_openfield.py (MamKPD-tiny)"
  run_items("train_real", [(dict(stage="probe", config=config_name), probe),
                           (dict(stage="run", config=config_name), real_run)],
            budget, recorder)
  shutil.rmtree(workdir_root, ignore_errors=True)


SECTION_FNS = {"environment": environment, "correctness": correctness, "scan": scan,
               "dcnv4": dcnv4, "inference": inference_speed, "peers": peers,
               "train_speed": train_speed, "train_real": train_real}


# ------------------------------------------------------------------ summary


COLUMNS = {
    "correctness": ("impl", "variant", "stage", "dtype", "shape", "passed", "worst",
                    "worst_ratio", "interpret"),
    "scan": ("impl", "pass_name", "dtype", "batch", "height", "width", "d_inner", "ms",
             "min_gbytes", "gbps", "fraction_of_peak", "fraction_of_copy", "compile_s",
             "interpret"),
    "dcnv4": ("model", "branch", "height", "width", "channels", "groups", "batch", "dtype",
              "dcnv4_forward_ms", "conv_forward_ms", "ratio_forward",
              "dcnv4_forward_backward_ms", "conv_forward_backward_ms",
              "ratio_forward_backward", "compile_s", "jaxlib", "cas_atomics_jaxlib",
              "ftz_atomics_flag"),
    "inference": ("model", "dtype", "scan_impl", "batch", "latency_ms", "images_per_s",
                  "compile_s", "ratio_to_hrnet_w32", "ratio_to_vit_b16", "interpret"),
    "peers": ("model", "dtype", "batch", "latency_ms", "images_per_s", "params"),
    "train_speed": ("model", "dtype", "batch", "input_size", "latency_ms", "images_per_s",
                    "compile_s"),
    "train_real": ("stage", "config", "probe_steps", "images_per_s", "steps", "batch",
                   "input_size", "wall_s", "PCK@0.1", "AP"),
}


def _table(rows, columns):
  columns = [c for c in columns if any(c in r for r in rows)]
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  for row in rows:
    lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
  return lines


def summary_markdown(recorder):
  env = _env_row(recorder)
  lines = [f"# gpu_check: {env.get('device', '?')}", ""]
  if env:
    runtime = (f"{env.get('libtpu') or 'libtpu ?'}" if env["platform"] == "tpu"
               else f"driver {env['driver']}")
    lines += [f"JAX {env['jax']} (jaxlib {env['jaxlib']}), Python {env['python']}, "
              f"{runtime}, {env['device_count']} device(s), {env['date']}.", "",
              _peaks_line(env), "",
              f"Command: `{env['command']}`" + (" (dry run: tiny shapes, timings "
                                                "meaningless)" if env["dry_run"] else ""),
              ""]
  for section in SECTIONS[1:]:
    rows = [r for r in recorder.rows if r["section"] == section]
    if not rows:
      continue
    lines += [f"## {section}", ""]
    done = [r for r in rows if r["status"] == "ok"]
    if done:
      lines += _table(done, COLUMNS[section]) + [""]
    for row in rows:
      if row["status"] != "ok":
        what = ", ".join(f"{k}={row[k]}" for k in row
                         if k not in ("section", "status", "reason", "error", "shape"))
        why = row.get("reason") or row.get("error")
        lines.append(f"- {row['status']}: " + (f"{what}: {why}" if what else why))
    lines.append("")
  return "\n".join(lines) + "\n"


def _peaks_line(env):
  """Published peaks per device (or "unknown") beside the measured rates."""
  measured = env.get("measured", {})
  published = (f"published per device: HBM {env['peak_gbps'] or 'unknown'} GB/s, bfloat16 "
               f"matmul {env['peak_bf16_tflops'] or 'unknown'} TFLOP/s "
               f"({env['peak_source']})")
  if "error" in measured:
    return f"Peaks {published}; measuring failed: {measured['error']}"
  return (f"Peaks {published}; measured: copy {measured.get('copy_gbps')} GB/s, "
          f"{measured.get('matmul_size')}^3 matmul bfloat16 "
          f"{measured.get('matmul_bfloat16_tflops')} / float32 "
          f"{measured.get('matmul_float32_tflops')} TFLOP/s; fractions "
          f"{env.get('fractions')}.")


def _env_row(recorder):
  return next((r for r in recorder.rows if r["section"] == "environment"), {})


def write_summary(recorder):
  with open(recorder.path("summary.md"), "w", encoding="utf-8") as f:
    f.write(summary_markdown(recorder))
  rows, peer_rows = recorder.section_rows("inference"), recorder.section_rows("peers")
  if not rows:
    return
  try:
    plot.plot_throughput(rows, peer_rows, recorder.path("inference.png"),
                         f"{_devices()[0].device_kind}, JAX {jax.__version__}")
  except ImportError as error:       # matplotlib missing on a lent machine: no png
    logging.warning("inference.png not written: %s", error)


# ------------------------------------------------------------------ main


def output_directory(output_dir, dry_run):
  """`output_dir`, or a new benchmarks/<date>-<device>[-dry_run][-N] (never reused)."""
  if output_dir:
    if os.path.exists(output_dir) and os.listdir(output_dir):
      raise app.UsageError(f"--output_dir={output_dir} is not empty; results are never "
                           "written over earlier ones: give a new folder")
    return output_dir
  device = re.sub(r"[^A-Za-z0-9]+", "-", _devices()[0].device_kind).strip("-").lower()
  name = f"{datetime.date.today().isoformat()}-{device}" + ("-dry_run" if dry_run else "")
  path, n = os.path.join(REPO, "benchmarks", name), 1
  while os.path.exists(path):
    n += 1
    path = os.path.join(REPO, "benchmarks", f"{name}-{n}")
  return path


def choose_plan(dry_run):
  """The dry run's tiny plan, or the accelerator plan (the same on a GPU and a TPU)."""
  return DRY_RUN_PLAN if dry_run else GPU_PLAN


def run_sections(plan, budget, recorder, sections):
  """Runs `sections` (environment always first) in SECTIONS order, writing the summary
  after each."""
  chosen = [s for s in SECTIONS if s in sections or s == "environment"]
  for i, section in enumerate(chosen):
    budget.start_section(section, chosen[i:])
    start = time.monotonic()
    SECTION_FNS[section](plan, budget, recorder)
    logging.info("section %s took %.1f s", section, time.monotonic() - start)
    write_summary(recorder)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  unknown = sorted(set(FLAGS.sections) - set(SECTIONS))
  if unknown:
    raise app.UsageError(f"--sections: unknown {unknown}; known: {list(SECTIONS)}")
  if _backend() == "cpu" and not FLAGS.dry_run:
    logging.warning("no GPU or TPU: JAX runs on the CPU; full shapes there take hours. "
                    "Did you mean --dry_run?")
  checkpointing.quiet_orbax_logs()
  plan = choose_plan(FLAGS.dry_run)
  directory = output_directory(FLAGS.output_dir, FLAGS.dry_run)
  os.makedirs(directory, exist_ok=True)
  print(f"gpu_check: writing to {directory}", flush=True)
  recorder = Recorder(directory)
  run_sections(plan, Budget(FLAGS.budget_s), recorder, FLAGS.sections)
  print(summary_markdown(recorder))
  print(f"gpu_check: wrote {sorted(os.listdir(directory))} to {directory}", flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
