"""The installed package: `mamkpd_jax.*` imports anywhere, no generic top-level names."""

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
# Where each generic top-level name would be imported from (none: not importable). Other
# distributions may own such names (sleap-io 0.9.5's wheel installs a top-level
# `scripts`); ours must not: no location inside this repository.
PROBE = """
import importlib.util, json
import mamkpd_jax.kernels, mamkpd_jax.data_pipelines, mamkpd_jax.models
specs = {n: importlib.util.find_spec(n) for n in ("kernels", "data_pipelines", "configs",
                                                  "scripts")}
print(json.dumps({n: [] if s is None else [s.origin or ""] + list(
    s.submodule_search_locations or []) for n, s in specs.items()}))
"""


def test_installed_names_outside_the_repository(tmp_path):
  result = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  locations = json.loads(result.stdout.strip().splitlines()[-1])
  ours = {name: [p for p in paths if p and pathlib.Path(p).resolve().is_relative_to(REPO)]
          for name, paths in locations.items()}
  assert ours == {"kernels": [], "data_pipelines": [], "configs": [], "scripts": []}
