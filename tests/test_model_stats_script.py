"""scripts/model_stats.py: the command-line contract (--json, config overrides)."""

import json
import pathlib
import subprocess
import sys

from conftest import make_config
from mamkpd_jax.models import stats

import numpy_refs

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_OVERRIDES = [  # the tiny test variant, through command-line overrides
    "--config.model.variant=tiny", "--config.model.depths=(1,1,1)",
    "--config.model.dims=(16,32,64)", "--config.model.stem_dim=16",
    "--config.model.decoder_dims=(32,16)", "--config.data.input_height=64",
    "--config.data.input_width=48",
]


def run_script(*args):
  return subprocess.run([sys.executable, "scripts/model_stats.py", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600)


def test_json_report_of_a_tiny_config():
  result = run_script("--config=configs/coco_base.py", "--json", *TINY_OVERRIDES)
  assert result.returncode == 0, result.stderr
  report = json.loads(result.stdout.strip().splitlines()[-1])
  config = make_config("tiny")
  assert report["variant"] == "tiny"
  assert report["params"] == numpy_refs.mamkpd_params(config)["total"]
  assert report["params_per_component"] == numpy_refs.mamkpd_params(config)
  assert report["input_shape"] == [64, 48, 3]
  assert report["output_shape"] == [16, 12, 17]
  scan = stats.scan_macs(config, 64, 48) / 1e9
  assert report["scan_gflops"] == round(scan, 4)
  assert report["gflops"] > scan and isinstance(report["gflops"], float)


def test_impossible_config_is_a_clear_error():
  result = run_script("--config=configs/coco_base.py", "--config.model.dims=(96,192)")
  assert result.returncode != 0
  assert "config.model.dims" in result.stderr and "three stages" in result.stderr
