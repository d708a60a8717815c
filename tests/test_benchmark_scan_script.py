"""scripts/benchmark_scan.py: runs on CPU and reports the documented fields."""

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_cpu_smoke_run_reports_fields():
  args = ["--variants=base", "--stages=3", "--batch_sizes=1", "--passes=forward",
          "--repeats=1", "--warmup=0", "--json"]
  result = subprocess.run([sys.executable, "scripts/benchmark_scan.py", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert {"device", "jax_version", "date", "command", "peak_gbps"} <= set(report)
  rows = {row["impl"]: row for row in report["results"]}
  assert set(rows) == {"pallas", "reference"}
  for row in rows.values():
    assert (row["height"], row["width"], row["d_inner"], row["d_state"]) == (16, 12, 768, 1)
    assert row["ms"] > 0 and row["gbps"] > 0
  # bfloat16 u, delta, B, C; float32 merged output: 192 tokens x (4 x (2x768 + 2) x 2 + 768 x 4)
  assert rows["reference"]["min_gbytes"] == round(192 * (4 * 1538 * 2 + 3072) / 1e9, 4)
  assert rows["pallas"]["interpret"] is True
