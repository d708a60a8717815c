"""`mamkpd benchmark`: a CPU smoke run reports the documented fields and files."""

import json
import pathlib
import subprocess
import sys

import pytest

from mamkpd_jax.models import ModelConfig, model_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_benchmark(args):
  """The JSON report of `mamkpd benchmark args` (which must include --json)."""
  result = subprocess.run([sys.executable, "-m", "mamkpd_jax.cli", "benchmark", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_cpu_smoke_run_reports_fields(tmp_path):
  # One batch size: each (dtype, batch) compiles the model anew (~12 s on 2 cores).
  args = ["--variants=tiny", "--batch_sizes=2", "--dtypes=float32,bfloat16",
          "--scan_impls=reference", "--input_height=64", "--input_width=64",
          "--num_keypoints=4", "--repeats=2", "--warmup=1", f"--output_dir={tmp_path}",
          "--json"]
  report = run_benchmark(args)
  assert {"device", "platform", "jax_version", "date", "command", "settings", "models",
          "results", "peers", "peers_skipped"} <= set(report)
  assert report["models"]["tiny"]["params"] > 0 and report["models"]["tiny"]["gflops"] > 0
  rows = {(r["dtype"], r["batch"]): r for r in report["results"]}
  assert set(rows) == {("float32", 2), ("bfloat16", 2)}
  for row in rows.values():
    assert row["latency_ms"] > 0 and row["compile_s"] > 0
    assert abs(row["images_per_s"] - row["batch"] / row["latency_ms"] * 1e3) < 0.02 * \
        row["images_per_s"]
    assert row["scan_impl"] == "reference" and row["interpret"] is False
  assert isinstance(report["peers"], list)          # always a list, the reason apart
  table = (tmp_path / "benchmark.md").read_text()
  if report["peers_skipped"]:          # torch/timm absent here (CI): said so, not hidden
    assert report["peers_skipped"] == "torch/timm not installed" and not report["peers"]
    assert "- peers: skipped: torch/timm not installed" in table
  assert "| MamKPD-tiny | bfloat16 | inference | reference | 2 |" in table
  assert json.loads((tmp_path / "benchmark.json").read_text())["results"] == report["results"]
  assert (tmp_path / "benchmark.png").stat().st_size > 5000


def test_train_mode_and_identity_scan_share(tmp_path):
  """--modes=train times mamkpd_jax.training.train's step; identity (the registry's
  benchmark-only scan) gives each row its scan share."""
  args = ["--variants=tiny", "--batch_sizes=2", "--dtypes=float32",
          "--scan_impls=chunked,identity", "--modes=train", "--input_height=64",
          "--input_width=64", "--num_keypoints=4", "--repeats=2", "--warmup=1", "--peers=",
          "--json"]
  report = run_benchmark(args)
  assert report["peers"] == [] and report["peers_skipped"] == "no peers asked for (--peers=)"
  rows = {r["scan_impl"]: r for r in report["results"]}
  assert set(rows) == {"chunked", "identity"}
  assert all(r["mode"] == "train" and r["latency_ms"] > 0 for r in rows.values())
  ratio = rows["chunked"]["latency_ms"] / rows["identity"]["latency_ms"]
  assert abs(rows["chunked"]["x_identity"] - ratio) < 0.01 * ratio
  assert rows["identity"]["scan_share"] == 0.0


def test_identity_is_no_model_scan():
  """identity is a benchmark override, not an implementation a model could train with."""
  config = model_config("tiny")
  config.scan_impl = "identity"
  with pytest.raises(ValueError, match="scan_impl='identity': available implementations"):
    ModelConfig.from_config(config)


def test_variant_names_cover_both_families():
  from mamkpd_jax.benchmarking import models   # pylint: disable=import-outside-toplevel
  assert models.variant_title("base") == "MamKPD-base"
  assert models.variant_title("hrvmamba-tiny") == "HRVMamba-tiny"
  config = models.variant_model_config("hrvmamba-base", 17)
  assert config.name == "hrvmamba" and tuple(config.widths) == (80, 160, 320, 640)
  with pytest.raises(ValueError, match="unknown HRVMamba variant 'huge'"):
    models.variant_model_config("hrvmamba-huge", 17)


def test_onnxruntime_rows_beside_jax():
  """--scan_impls=...,onnxruntime: the exported model timed in ONNX Runtime in the same
  run, its heatmaps checked against JAX's."""
  pytest.importorskip("jax2onnx")
  pytest.importorskip("onnxruntime")
  args = ["--variants=tiny", "--batch_sizes=1", "--dtypes=float32",
          "--scan_impls=auto,onnxruntime", "--input_height=64", "--input_width=64",
          "--num_keypoints=4", "--repeats=2", "--warmup=1", "--peers=", "--json"]
  rows = {r["scan_impl"]: r for r in run_benchmark(args)["results"]}
  assert set(rows) == {"auto", "onnxruntime"}
  ort = rows["onnxruntime"]
  assert ort["mode"] == "inference" and ort["latency_ms"] > 0 and ort["export_s"] > 0
  assert ort["max_rel_diff_to_jax"] < 1e-4


def test_markdown_shows_timed_failed_and_skipped_peers():
  """peers is one list (timed rows, error rows) with the reason for none apart."""
  from mamkpd_jax.commands import benchmark   # pylint: disable=import-outside-toplevel
  row = dict(model="MamKPD-tiny", variant="tiny", dtype="float32", mode="inference",
             scan_impl="chunked", interpret=False, batch=2, latency_ms=10.0,
             images_per_s=200.0, ratio_to_hrnet_w32=2.0)
  report = dict(device="cpu", jax_version="0", date="today", command="mamkpd benchmark",
                settings=dict(input_size=[64, 64], num_keypoints=4, repeats=2, warmup=1),
                models={"tiny": dict(params=1e6, gflops=0.1)}, results=[row],
                peers=[dict(model="HRNet-W32", peer="hrnet_w32", dtype="float32", batch=2,
                            latency_ms=20.0, images_per_s=100.0),
                       dict(model="ViT-B/16", peer="vit_b16", error="RuntimeError('oom')")],
                peers_skipped=None)
  table = benchmark.markdown(report)
  assert "| x HRNet-W32 |" in table and "x ViT" not in table
  assert "| MamKPD-tiny | float32 | inference | chunked | 2 | 10.000 | 200.0 | nan | 2.00 |" \
      in table
  assert "| HRNet-W32 | float32 | inference | - | 2 | 20.000 | 100.0 | | |" in table
  assert "- ViT-B/16: failed: RuntimeError('oom')" in table and "skipped" not in table
  table = benchmark.markdown(dict(report, peers=[], peers_skipped="torch/timm not installed"))
  assert "- peers: skipped: torch/timm not installed" in table and "HRNet" not in table


def test_onnxruntime_without_float32_inference_is_an_error():
  args = ["--variants=tiny", "--scan_impls=onnxruntime", "--modes=train", "--peers="]
  result = subprocess.run([sys.executable, "-m", "mamkpd_jax.cli", "benchmark", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode != 0
  assert "--scan_impls=onnxruntime" in result.stderr and "--modes" in result.stderr


def test_implementations_are_timed_in_turns():
  """time_in_turns: each call compiles and warms up alone, then the timed rounds call
  each once in order, and each gets the median of its own calls."""
  from mamkpd_jax import benchmarking
  log, clock = [], [0.0]

  def fake(name, seconds):
    def call():
      log.append(name)
      clock[0] += seconds
    return call, lambda out: out

  timed = benchmarking.time_in_turns({"a": fake("a", 0.5), "b": fake("b", 2.0)},
                                     benchmarking.Timing(warmup=1, repeats=3),
                                     clock=lambda: clock[0])
  assert log == ["a", "a", "b", "b"] + ["a", "b"] * 3
  assert timed == {"a": (0.5, 0.5), "b": (2.0, 2.0)}


@pytest.mark.parametrize("batch, latency_s", [(2, 27.3), (256, 0.00041), (1, 1.0)])
def test_timing_row_keeps_slow_and_fast_rows_exact(batch, latency_s):
  """images/s = batch / latency to 5 digits, however slow (an interpreted kernel took
  27 s for 2 crops, which 2 decimals rounded to 0.07: 4% off)."""
  from mamkpd_jax import benchmarking   # pylint: disable=import-outside-toplevel
  row = benchmarking.timing_row(batch, 1.234, latency_s)
  assert row["images_per_s"] == pytest.approx(batch / latency_s, rel=1e-4)
  assert row["latency_ms"] == pytest.approx(latency_s * 1e3, rel=1e-4)
  assert row["images_per_s"] == pytest.approx(batch / row["latency_ms"] * 1e3, rel=1e-4)
