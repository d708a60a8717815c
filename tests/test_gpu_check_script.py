"""scripts/gpu_check.py: the dry run writes every section's rows and the summary files;
a budget too small for an item skips it with the reason; results are never overwritten."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from mamkpd_jax.benchmarking import roofline
from mamkpd_jax.models.hrvmamba import dcn

REPO = pathlib.Path(__file__).resolve().parents[1]
UNTIMED = {"pallas_mosaic"}       # the dry run checks it but does not time it (interpreted)


def run_gpu_check(*args):
  return subprocess.run([sys.executable, "scripts/gpu_check.py", "--dry_run", *args],
                        cwd=REPO, capture_output=True, text=True, timeout=1800)


def read_rows(directory):
  return [json.loads(line) for line in (directory / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
  """The whole dry run (a budget that fits everything on a busy CPU): (directory, rows)."""
  directory = tmp_path_factory.mktemp("gpu_check") / "out"
  result = run_gpu_check(f"--output_dir={directory}", "--budget_s=3600")
  assert result.returncode == 0, result.stderr[-3000:]
  return directory, read_rows(directory)


def test_dry_run_writes_every_section(dry_run):
  directory, rows = dry_run
  from mamkpd_jax import kernels
  sections = {row["section"] for row in rows}
  assert sections == {"environment", "correctness", "scan", "dcnv4", "inference", "peers",
                      "train_speed", "train_real"}
  failed = [row for row in rows if row["status"] == "failed"]
  assert not failed, failed
  env = json.loads((directory / "environment.json").read_text())
  assert env["platform"] == "cpu" and env["dry_run"] is True
  assert env["scan_impls"] == sorted(kernels.SCAN_IMPLS)
  assert (directory / "nvidia-smi.txt").exists()
  # Every kernel matches the reference within the tests' tolerances (interpret mode).
  checks = [r for r in rows if r["section"] == "correctness"]
  assert {r["impl"] for r in checks} == set(kernels.SCAN_IMPLS) - {"reference"}
  assert all(r["passed"] and r["worst_ratio"] <= 1 and set(r["ratios"]) ==
             {"y", "d_x", "d_delta", "d_A", "d_B", "d_C", "d_D", "d_delta_bias"}
             for r in checks)
  # The scan: each implementation, both passes, bytes over time; the interpreted Mosaic
  # GPU kernel is checked above but not timed (a skipped row says why).
  for section in ("scan", "inference"):
    skipped = [r for r in rows if r["section"] == section and r["status"] == "skipped"]
    assert {r["impl"] for r in skipped} == UNTIMED, skipped
    assert all("not timed in a dry run" in r["reason"] for r in skipped)
  scans = [r for r in rows if r["section"] == "scan" and r["status"] == "ok"]
  assert {(r["impl"], r["pass_name"]) for r in scans} == {
      (impl, p) for impl in set(kernels.SCAN_IMPLS) - UNTIMED
      for p in ("forward", "forward_backward")}
  for r in scans:
    assert r["ms"] > 0 and r["gbps"] > 0
    if r["pass_name"] == "forward":     # bfloat16 u, delta, B, C; float32 merged output
      tokens, p, n = r["batch"] * r["height"] * r["width"], r["d_inner"], r["d_state"]
      min_bytes = tokens * (4 * (2 * p + 2 * n) * 2 + 4 * p)
      assert r["gbps"] == pytest.approx(min_bytes / 1e9 / (r["ms"] / 1e3), rel=0.01)
  # DCNv4 beside the depth-wise conv: HRVMamba-T's branches 0 and 1 at 32x32 (8x8 and
  # 4x4 maps), batch 1; each ratio is its two times' (to their rounding).
  dcn = [r for r in rows if r["section"] == "dcnv4"]
  assert [(r["status"], r["branch"], r["height"], r["channels"], r["groups"], r["batch"])
          for r in dcn] == [("ok", 0, 8, 32, 1, 1), ("ok", 1, 4, 64, 2, 1)]
  for r in dcn:
    for pass_name in ("forward", "forward_backward"):
      dcnv4_ms, conv_ms = r[f"dcnv4_{pass_name}_ms"], r[f"conv_{pass_name}_ms"]
      assert dcnv4_ms > 0 and conv_ms > 0
      assert r[f"ratio_{pass_name}"] == pytest.approx(dcnv4_ms / conv_ms, abs=0.01)
    assert r["conv_form"] == "grouped lax.conv" and "ftz_atomics_flag" not in r  # no GPU
  speeds = [r for r in rows if r["section"] == "inference" and r["status"] == "ok"]
  # every implementation but "onnx" (export only: its unrolled scan is not a serving path)
  assert {r["scan_impl"] for r in speeds} == set(kernels.SCAN_IMPLS) - {"onnx"} - UNTIMED
  assert all(r["images_per_s"] == pytest.approx(r["batch"] / r["latency_ms"] * 1e3, rel=0.01)
             for r in speeds)
  train_speed = [r for r in rows if r["section"] == "train_speed"]
  assert train_speed and all(r["images_per_s"] > 0 for r in train_speed)
  real = [r for r in rows if r["section"] == "train_real"]
  assert [r["stage"] for r in real] == ["probe", "run"]
  assert 0 <= real[-1]["PCK@0.1"] <= 1 and real[-1]["steps"] >= 2
  summary = (directory / "summary.md").read_text()
  for heading in ("## correctness", "## scan", "## dcnv4", "## inference", "## train_speed",
                  "## train_real"):
    assert heading in summary
  assert (directory / "inference.png").stat().st_size > 5000
  assert (directory / "learning_curve.png").exists()


def test_budget_skips_with_reason_and_output_never_overwritten(dry_run):
  directory, _ = dry_run
  result = run_gpu_check(f"--output_dir={directory}")
  assert result.returncode != 0 and "not empty" in result.stderr

  other = directory.parent / "no_time"
  result = run_gpu_check(f"--output_dir={other}", "--budget_s=0", "--sections=scan")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = read_rows(other)
  assert [r["section"] for r in rows][0] == "environment"
  scans = [r for r in rows if r["section"] == "scan" and r["impl"] not in UNTIMED]
  assert scans and all(r["status"] == "skipped" and "time budget" in r["reason"]
                       for r in scans)
  assert "skipped" in (other / "summary.md").read_text()


def test_unknown_section_is_an_error_naming_it(tmp_path):
  result = run_gpu_check(f"--output_dir={tmp_path}", "--sections=scan,speed")
  assert result.returncode != 0 and "speed" in result.stderr and "correctness" in result.stderr


def test_dcnv4_section_times_the_jax_op_and_the_grouped_conv(gpu_check):
  """What the dcnv4 section times: DCNv4's pure-JAX op, equal to the float64 numpy loop
  of docs/hrvmamba.md §4 on the section's inputs, and one grouped lax.conv (3x3,
  feature_group_count = C), the form a GPU or TPU runs; forward+backward returns the
  output and a gradient for every argument."""
  import jax
  import numpy_refs
  from mamkpd_jax.models import common
  site = dcn.call_sites("tiny", 32, 32)[1]        # 4x4, C = 64, G = 2
  calls = gpu_check.dcnv4_calls(site, 2, "float32")
  fn, (value, offset_mask) = calls["dcnv4_forward"]
  want = numpy_refs.dcnv4(np.float64(value), np.float64(offset_mask), groups=site.groups)
  np.testing.assert_allclose(fn(value, offset_mask), want, rtol=1e-5, atol=1e-5)
  with common.depthwise_conv_mode("grouped"):
    jaxprs = {name: str(jax.make_jaxpr(fn)(*args)) for name, (fn, args) in calls.items()}
  for name in ("conv_forward", "conv_forward_backward"):
    assert "conv_general_dilated" in jaxprs[name]
    assert f"feature_group_count={site.channels}" in jaxprs[name], name
  for name in ("dcnv4_forward", "dcnv4_forward_backward"):
    assert "scan" in jaxprs[name] and "mamkpd_dcnv4_forward" not in jaxprs[name]
  out, grads = calls["dcnv4_forward_backward"][0](*calls["dcnv4_forward_backward"][1])
  assert out.shape == value.shape and [g.shape for g in grads] == [value.shape,
                                                                   offset_mask.shape]


@pytest.mark.parametrize("backend, version, xla_flags, want", [
    ("gpu", "0.10.2", "", dict(cas_atomics_jaxlib=True, ftz_atomics_flag=False)),
    ("gpu", "0.11.0", "--xla_backend_extra_options=-nvptx-allow-ftz-atomics",
     dict(cas_atomics_jaxlib=True, ftz_atomics_flag=True)),
    ("gpu", "0.10.1", "", dict(cas_atomics_jaxlib=False, ftz_atomics_flag=False)),
    ("gpu", "0.11.1", "", dict(cas_atomics_jaxlib=False, ftz_atomics_flag=False)),
    ("gpu", "0.12.1.dev20270101", "", dict(cas_atomics_jaxlib=False, ftz_atomics_flag=False)),
    ("tpu", "0.10.2", "", {}),
    ("cpu", "0.10.2", "-nvptx-allow-ftz-atomics", {}),
])
def test_dcnv4_rows_record_the_gpu_atomics_setting(gpu_check, monkeypatch, backend, version,
                                                   xla_flags, want):
  """jaxlib 0.10.2 to 0.11.0 emit CAS-loop float32 atomics (jax-ml/jax#38806); on a GPU
  the rows say whether this jaxlib is one and whether XLA_FLAGS has the workaround."""
  import jaxlib
  monkeypatch.setattr(jaxlib, "__version__", version)
  fields = gpu_check._atomics_fields(backend, xla_flags)
  assert fields == ({**want, "jaxlib": version} if want else {})


# ------------------------------------------------------------------ the TPU branch, faked
# scripts/gpu_check.py imported in this process with JAX's backend and devices faked as
# a Cloud TPU's (the script reads them through _backend() and _devices()).

GPU_ONLY = {"pallas_triton", "pallas_mosaic", "cpu_ffi"}


@pytest.fixture(scope="module")
def gpu_check():
  """The script as a module (it defines its flags only when run as a script)."""
  import importlib.util
  import os
  with pytest.MonkeyPatch.context() as patch:   # its import-time cache setting stays there
    patch.setenv("JAX_COMPILATION_CACHE_DIR", os.environ.get("JAX_COMPILATION_CACHE_DIR", ""))
    spec = importlib.util.spec_from_file_location("gpu_check_under_test",
                                                  REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    patch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
  return module


class FakeDevice:
  """What the script reads of a jax.Device."""

  def __init__(self, device_kind, platform="tpu", num_cores=None, device_id=0):
    self.device_kind, self.platform, self.id = device_kind, platform, device_id
    self.process_index, self.coords, self.core_on_chip = 0, (device_id, 0, 0), 0
    if num_cores is not None:
      self.num_cores = num_cores


# Google's per-chip figures (cloud.google.com/tpu/docs/<v4, v5e, v5p, v6e, tpu7x>), by hand;
# a JAX device is one chip except on TPU7x, where each of its 2 TensorCores is one.
@pytest.mark.parametrize("kind, num_cores, hbm_gbps, bf16_tflops, page", [
    ("TPU v4", 2, 1200, 275, "v4"),
    ("TPU v5 lite", 1, 819, 197, "v5e"),            # not v5p, whose kind is "TPU v5"
    ("TPU v5", 2, 2765, 459, "v5p"),
    ("TPU v5p", 2, 2765, 459, "v5p"),
    ("TPU v6 lite", 1, 1638, 918, "v6e"),
    ("TPU7x", 1, 7380 / 2, 2307 / 2, "tpu7x"),
    ("TPU7x", None, 7380 / 2, 2307 / 2, "tpu7x"),   # no num_cores: JAX's one core per device
])
def test_tpu_peaks_by_device_kind(gpu_check, kind, num_cores, hbm_gbps, bf16_tflops, page):
  peaks = roofline.published_peaks(FakeDevice(kind, num_cores=num_cores))
  assert peaks["hbm_gbps"] == pytest.approx(hbm_gbps)
  assert peaks["bf16_tflops"] == pytest.approx(bf16_tflops)
  assert peaks["f32_tflops"] is None                 # never published: measured instead
  assert f"https://cloud.google.com/tpu/docs/{page}" in peaks["source"]


def test_tpu_table_agrees_with_jax_own(gpu_check):
  """JAX's hardware table (jax._src.tpu_info, JAX >= 0.11) is a second source: within 15%
  (it rounds, and lists v5p at 2.46 TB/s where Google's page says 2765 GB/s)."""
  tpu_info = pytest.importorskip("jax._src.tpu_info")
  for kind, chip in roofline.TPU_CHIPS.items():
    version = tpu_info.chip_version_from_device_kind(kind)
    assert version is not None, kind                 # the kind strings are JAX's
    info = tpu_info.get_tpu_info_for_chip(version, 1)
    cores = version.num_physical_tensor_cores_per_chip
    assert chip.tensor_cores == cores, kind
    assert chip.hbm_gbps * 1e9 == pytest.approx(info.mem_bw_bytes_per_second * cores, rel=0.15)
    assert chip.bf16_tflops * 1e12 == pytest.approx(info.bf16_ops_per_second * cores, rel=0.15)


def test_unknown_kinds_report_measured_rates_only(gpu_check):
  for device in (FakeDevice("TPU v99"), FakeDevice("TPU v2"), FakeDevice("TPU v4 lite")):
    peaks = roofline.published_peaks(device)
    assert (peaks["hbm_gbps"], peaks["bf16_tflops"]) == (None, None)
    assert "unknown TPU kind" in peaks["source"] and device.device_kind in peaks["source"]
    rates = {"copy_gbps": 700.0, "matmul_bfloat16_tflops": 150.0, "matmul_float32_tflops": 50.0}
    assert set(gpu_check.fractions(peaks, rates).values()) == {None}   # no fraction of unknown
  known = roofline.published_peaks(FakeDevice("TPU v5 lite", num_cores=1))
  assert gpu_check.fractions(known, rates) == {
      "copy_of_hbm_peak": round(700 / 819, 3), "matmul_bfloat16_of_peak": round(150 / 197, 3),
      "matmul_float32_of_peak": None}
  # A GPU keeps its bandwidth from benchmarking.roofline.
  gpu = roofline.published_peaks(FakeDevice("NVIDIA H100 80GB HBM3", platform="gpu"))
  assert gpu["hbm_gbps"] == 3350.0 and gpu["bf16_tflops"] is None


def test_tpu_run_has_every_section_and_only_tpu_scans(gpu_check, monkeypatch,
                                                      tmp_path):
  """The whole kit on a faked v6e host with no time left: every item is listed and skipped
  (nothing is compiled), so the rows say what a TPU would run."""
  devices = [FakeDevice("TPU v6 lite", num_cores=1, device_id=i) for i in range(4)]
  monkeypatch.setattr(gpu_check, "_backend", lambda: "tpu")
  monkeypatch.setattr(gpu_check, "_devices", lambda: devices)

  def no_command(command):
    raise AssertionError(f"ran {command} on a TPU")

  monkeypatch.setattr(gpu_check, "_command_output", no_command)
  assert gpu_check.choose_plan(dry_run=False) is gpu_check.GPU_PLAN
  recorder = gpu_check.Recorder(str(tmp_path))
  gpu_check.run_sections(gpu_check.DRY_RUN_PLAN, gpu_check.Budget(0), recorder,
                         gpu_check.SECTIONS)
  rows = read_rows(tmp_path)
  assert {r["section"] for r in rows} == set(gpu_check.SECTIONS)
  from mamkpd_jax import kernels
  tpu_impls = set(kernels.runs_on("tpu"))
  assert "pallas_tpu" in tpu_impls and not tpu_impls & GPU_ONLY

  env = json.loads((tmp_path / "environment.json").read_text())
  assert (env["platform"], env["device"], env["device_count"]) == ("tpu", "TPU v6 lite", 4)
  assert env["driver"] is None and env["scan_impls"] == sorted(tpu_impls)
  assert (env["peak_gbps"], env["peak_bf16_tflops"]) == (1638.0, 918.0)
  assert env["measured"]["copy_gbps"] > 0 and env["measured"]["matmul_float32_tflops"] > 0
  assert not (tmp_path / "nvidia-smi.txt").exists()
  assert (tmp_path / "tpu-devices.txt").read_text().count("TPU v6 lite") == 4

  def impls(section):
    return {r["impl"] for r in rows if r["section"] == section}

  assert impls("correctness") == tpu_impls - {"reference"}
  assert impls("scan") == tpu_impls
  assert impls("inference") == tpu_impls - {"onnx"}
  timed = [r for r in rows if r["section"] not in ("environment", "peers")]
  assert timed and all(r["status"] == "skipped" and "time budget" in r["reason"]
                       for r in timed)
  [peers] = [r for r in rows if r["section"] == "peers"]
  assert peers["status"] == "skipped" and "TPU" in peers["reason"]
  summary = (tmp_path / "summary.md").read_text()
  assert "# gpu_check: TPU v6 lite" in summary and "libtpu" in summary
  assert "HBM 1638.0 GB/s" in summary and "driver" not in summary
