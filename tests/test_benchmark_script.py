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
          "--num_keypoints=4", "--repeats=2", "--warmup=1", "--peers=", "--matmul_size=0",
          f"--output_dir={tmp_path}", "--json"]
  report = run_benchmark(args)
  assert {"device", "platform", "jax_version", "date", "command", "settings", "models",
          "roofline", "results", "peers", "peers_skipped"} <= set(report)
  sizes = report["models"]["tiny"]
  assert sizes["params"] > 0 and sizes["gmacs"] > 0 and sizes["gflops"] == sizes["gmacs"]
  assert report["roofline"] == []                    # --matmul_size=0: no roofline
  rows = {(r["dtype"], r["batch"]): r for r in report["results"]}
  assert set(rows) == {("float32", 2), ("bfloat16", 2)}
  for row in rows.values():
    assert row["latency_ms"] > 0 and row["compile_s"] > 0
    assert abs(row["images_per_s"] - row["batch"] / row["latency_ms"] * 1e3) < 0.02 * \
        row["images_per_s"]
    assert row["scan_impl"] == "reference" and row["interpret"] is False
    assert row["gmacs"] == sizes["gmacs"] and "pct_of_matmul" not in row
  assert report["peers"] == [] and report["peers_skipped"].startswith("no peers asked for")
  table = (tmp_path / "benchmark.md").read_text()
  assert "- peers: skipped: no peers asked for" in table
  assert "| MamKPD-tiny | jax | bfloat16 | inference | reference | 2 |" in table
  assert json.loads((tmp_path / "benchmark.json").read_text())["results"] == report["results"]
  assert (tmp_path / "benchmark.png").stat().st_size > 5000


def test_train_mode_and_identity_scan_share(tmp_path):
  """--modes=train times mamkpd_jax.training.train's step; identity (the registry's
  benchmark-only scan) gives each row its scan share."""
  args = ["--variants=tiny", "--batch_sizes=2", "--dtypes=float32",
          "--scan_impls=chunked,identity", "--modes=train", "--input_height=64",
          "--input_width=64", "--num_keypoints=4", "--repeats=2", "--warmup=1", "--peers=",
          "--matmul_size=0", "--json"]
  report = run_benchmark(args)
  assert report["peers"] == [] and report["peers_skipped"].startswith("no peers asked for")
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
          "--num_keypoints=4", "--repeats=2", "--warmup=1", "--peers=", "--matmul_size=256",
          "--json"]
  rows = {r["scan_impl"]: r for r in run_benchmark(args)["results"]}
  assert set(rows) == {"auto", "onnxruntime"}
  ort = rows["onnxruntime"]
  assert ort["mode"] == "inference" and ort["latency_ms"] > 0 and ort["export_s"] > 0
  assert ort["max_rel_diff_to_jax"] < 1e-4


def test_peers_and_roofline_rows_in_one_run(tmp_path):
  """The peers in PyTorch and ONNX Runtime, the roofline matmuls and our model in one
  run on tiny shapes: every row there, its numbers consistent with each other."""
  pytest.importorskip("torch")
  pytest.importorskip("onnxruntime")
  args = ["--variants=tiny", "--batch_sizes=1", "--dtypes=float32", "--scan_impls=auto",
          "--input_height=64", "--input_width=64", "--num_keypoints=4", "--repeats=1",
          "--warmup=0", "--matmul_size=256", "--peers=hrnet_w32,vitpose_b,rtmpose_m",
          "--peer_runtimes=torch,onnxruntime", f"--output_dir={tmp_path}", "--json"]
  report = run_benchmark(args)
  assert report["peers_skipped"] is None and not [p for p in report["peers"] if "error" in p]
  roof = {(r["runtime"], r["dtype"]): r for r in report["roofline"]}
  assert set(roof) == {(rt, dt) for rt in ("jax", "torch") for dt in ("float32", "bfloat16")}
  for row in roof.values():       # GMAC/s = n^3 / latency
    assert row["gmacs_per_s"] == pytest.approx(256 ** 3 / 1e9 / row["latency_ms"] * 1e3,
                                               rel=1e-3)
  peers = {(p["peer"], p["runtime"]): p for p in report["peers"]}
  assert set(peers) == {(name, rt) for name in ("hrnet_w32", "vitpose_b", "rtmpose_m")
                        for rt in ("torch", "onnxruntime")}
  ours = report["results"][0]
  assert ours["runtime"] == "jax" and ours["gmacs"] == report["models"]["tiny"]["gmacs"]
  for row in [ours, *peers.values()]:
    assert row["batch"] == 1 and row["ms_per_crop"] == pytest.approx(row["latency_ms"],
                                                                     rel=1e-3)
    assert row["gmacs_per_s"] == pytest.approx(row["gmacs"] * row["images_per_s"], rel=1e-3)
    assert row["pct_of_matmul"] == pytest.approx(
        100 * row["gmacs_per_s"] / row["matmul_gmacs_per_s"], rel=1e-3)
  # the same MACs in both runtimes; ONNX Runtime computes what torch does
  for name in ("hrnet_w32", "vitpose_b", "rtmpose_m"):
    assert peers[(name, "torch")]["gmacs"] == peers[(name, "onnxruntime")]["gmacs"] > 0
    assert peers[(name, "onnxruntime")]["max_rel_diff_to_torch"] < 1e-4
  # HRNet-W32's MACs scale with the pixels: 7.645 GMACs at 256x192 (test_peers.py)
  assert peers[("hrnet_w32", "torch")]["gmacs"] == pytest.approx(
      7.645 * 64 * 64 / (256 * 192), rel=0.02)
  ratio = ours["images_per_s"] / peers[("rtmpose_m", "onnxruntime")]["images_per_s"]
  assert ours["ratio_to_rtmpose_m_onnxruntime"] == pytest.approx(ratio, rel=1e-2)
  assert ours["ratio_to_hrnet_w32"] == pytest.approx(
      ours["images_per_s"] / peers[("hrnet_w32", "torch")]["images_per_s"], rel=1e-2)
  table = (tmp_path / "benchmark.md").read_text()
  assert "| 256x256 matmul | torch | bfloat16 |" in table
  assert "| RTMPose-m | onnxruntime | float32 | inference | - | 1 |" in table
  assert "x ViTPose-B (onnxruntime)" in table
  assert (tmp_path / "benchmark.png").stat().st_size > 5000


def test_markdown_shows_timed_failed_and_skipped_peers():
  """peers is one list (timed rows, error rows) with the reason for none apart."""
  from mamkpd_jax.commands import benchmark   # pylint: disable=import-outside-toplevel
  row = dict(model="MamKPD-tiny", variant="tiny", runtime="jax", dtype="float32",
             mode="inference", scan_impl="chunked", interpret=False, batch=2,
             latency_ms=10.0, images_per_s=200.0, ms_per_crop=5.0, gmacs=0.1,
             gmacs_per_s=20.0, matmul_gmacs_per_s=100.0, pct_of_matmul=20.0,
             ratio_to_hrnet_w32=2.0)
  report = dict(device="cpu", jax_version="0", date="today", command="mamkpd benchmark",
                settings=dict(input_size=[64, 64], num_keypoints=4, repeats=2, warmup=1),
                models={"tiny": dict(params=1e6, gflops=0.1, gmacs=0.1)},
                roofline=[dict(model="64x64 matmul", runtime="jax", dtype="float32",
                               latency_ms=1.0, gmacs_per_s=100.0)],
                results=[row],
                peers=[dict(model="HRNet-W32", peer="hrnet_w32", runtime="torch",
                            dtype="float32", batch=2, latency_ms=20.0, images_per_s=100.0,
                            params=28.5e6, ms_per_crop=10.0, gmacs=0.5, gmacs_per_s=50.0,
                            pct_of_matmul=50.0),
                       dict(model="ViTPose-B", peer="vitpose_b", runtime="onnxruntime",
                            error="RuntimeError('oom')")],
                peers_skipped=None)
  table = benchmark.markdown(report)
  assert "| 64x64 matmul | jax | float32 | 1.00 | 100.0 |" in table
  assert ("| MamKPD-tiny | jax | float32 | inference | chunked | 2 | 5.00 | 200.0 | 0.10 | "
          "20.0 | 20.0 | - |") in table
  assert ("| HRNet-W32 | torch | float32 | inference | - | 2 | 10.00 | 100.0 | 0.50 | 50.0 "
          "| 50.0 | - |") in table
  assert "| x HRNet-W32 (torch) |" in table and "x ViTPose" not in table
  assert "| MamKPD-tiny | jax | float32 | chunked | 2 | 2.00 |" in table
  assert "- HRNet-W32: 28.50M parameters, 0.50 GMACs per crop" in table
  assert "- ViTPose-B (onnxruntime): failed: RuntimeError('oom')" in table
  assert "skipped" not in table
  table = benchmark.markdown(dict(report, peers=[], peers_skipped="torch is not installed"))
  assert "- peers: skipped: torch is not installed" in table and "HRNet" not in table


def test_peers_skipped_without_torch_say_how_to_install():
  """Without torch no peer is built and the reason names the extra to install."""
  from mamkpd_jax.benchmarking import peers   # pylint: disable=import-outside-toplevel
  runs = peers.build_peers(["hrnet_w32"], ["torch"], 17, 256, 192, torch=None).runs
  assert runs.rows == [] and 'pip install "mamkpd-jax[peers]"' in runs.skipped


def test_peer_and_runtime_flags_are_checked():
  from mamkpd_jax.commands import benchmark   # pylint: disable=import-outside-toplevel
  benchmark.Settings(peers=("vit_b16",)).check()        # the old name of ViTPose-B
  with pytest.raises(ValueError, match="--peers: unknown peer.*'hrnet'.*rtmpose_m"):
    benchmark.Settings(peers=("hrnet",)).check()
  with pytest.raises(ValueError, match="--peer_runtimes: unknown.*'tensorrt'"):
    benchmark.Settings(peer_runtimes=("tensorrt",)).check()
  with pytest.raises(ValueError, match="multiples of 32.*64x48"):
    benchmark.Settings(input_size=(64, 48)).check()
  benchmark.Settings(input_size=(64, 48), peers=()).check()
  with pytest.raises(ValueError, match="--matmul_size"):
    benchmark.Settings(matmul_size=-1).check()


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
