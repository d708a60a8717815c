"""scripts/gpu_check.py: the dry run writes every section's rows and the summary files;
a budget too small for an item skips it with the reason; results are never overwritten."""

import json
import pathlib
import subprocess
import sys

import pytest

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
  assert sections == {"environment", "correctness", "scan", "inference", "peers",
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
  for heading in ("## correctness", "## scan", "## inference", "## train_speed",
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
