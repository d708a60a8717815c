"""The installed package: `mamkpd_jax.*` imports anywhere, no generic top-level names."""

import subprocess
import sys

PROBE = """
import importlib.util
import mamkpd_jax.kernels, mamkpd_jax.data_pipelines, mamkpd_jax.models
print([importlib.util.find_spec(n) for n in ("kernels", "data_pipelines", "configs", "scripts")])
"""


def test_installed_names_outside_the_repository(tmp_path):
  result = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "[None, None, None, None]"
