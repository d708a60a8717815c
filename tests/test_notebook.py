"""notebooks/demo.ipynb runs top to bottom (a short training, so that it cannot rot)."""

import os
import pathlib

import nbformat
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_demo_notebook_executes(tmp_path, monkeypatch):
  # The kernel inherits the environment: a few steps at 64x64 instead of 200 at 128.
  monkeypatch.setenv("MAMKPD_DEMO_STEPS", "4")
  monkeypatch.setenv("MAMKPD_DEMO_INPUT", "64")
  monkeypatch.setenv("MAMKPD_DEMO_WORKDIR", str(tmp_path / "demo"))
  notebook = nbformat.read(REPO / "notebooks" / "demo.ipynb", as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == "code"
             for o in cell.get("outputs", [])]
  assert not [o for o in outputs if o.get("output_type") == "error"]
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 3             # the bundled weights' prediction, heatmaps, curve
  assert os.path.exists(tmp_path / "demo" / "checkpoints" / "4")
  printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
  assert "same keypoints: True" in printed       # exported, reloaded, predicts the same
