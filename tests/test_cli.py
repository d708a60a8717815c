"""The `mamkpd` console command: every subcommand runs through the installed entry point
(or `python -m mamkpd_jax.cli`) on tiny inputs (test_train's 64x64 open-field config,
the committed weights, the bundled open-field video); help text, backend-probing
noise, the missing-COCO error and export from shipped weights.
"""

import importlib
import io
import json
import logging
import os
import pathlib
import re
import subprocess
import sys
import tokenize

import numpy as np
import pytest

from mamkpd_jax import cli, inference
from test_train import cli_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
ENTRY_POINT = pathlib.Path(sys.executable).parent / "mamkpd"   # made by pip install -e .
DATA = REPO / "data/samples/dlc-openfield"
FRAME = DATA / "labeled-data/m4s1/img0100.png"                  # held out from training
VIDEO = DATA / "videos/m3v1mp4.mp4"                              # unlabelled demo video
WEIGHTS = "weights/mamkpd_tiny_openfield"


def mamkpd(*args, timeout=600):
  assert ENTRY_POINT.is_file(), f"{ENTRY_POINT} missing: `pip install -e .` installs it"
  return subprocess.run([str(ENTRY_POINT), *map(str, args)], cwd=REPO, capture_output=True,
                        text=True, timeout=timeout)


def test_help_lists_every_command_with_one_line():
  result = mamkpd("--help")
  assert result.returncode == 0, result.stderr
  listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")]
  assert listed == ["train", "eval", "predict", "track", "export", "benchmark", "convert"]
  assert listed == list(cli.COMMANDS)
  unknown = mamkpd("fly")
  assert unknown.returncode == 2 and "unknown command 'fly'" in unknown.stderr
  flags_help = mamkpd("export", "--help")
  assert flags_help.returncode == 0 and "--format" in flags_help.stdout
  script_help = subprocess.run([sys.executable, "main.py", "--help"], cwd=REPO,
                               capture_output=True, text=True, timeout=120)
  assert "--workdir" in script_help.stdout           # the wrapper shows the command's flags


def test_train_eval_and_export_a_tiny_run(tmp_path):
  """mamkpd train takes main.py's flags (config overrides included); eval and export
  then read its workdir."""
  workdir = tmp_path / "run"
  train = mamkpd("train", f"--workdir={workdir}", "--mode=train", *cli_flags(num_steps=2))
  assert train.returncode == 0, train.stderr[-3000:]
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2"]
  config = json.loads((workdir / "config.json").read_text())
  assert config["data"]["input_height"] == 64 and config["train"]["num_steps"] == 2

  evaluation = mamkpd("eval", f"--workdir={workdir}", *cli_flags(num_steps=2))
  assert evaluation.returncode == 0, evaluation.stderr[-3000:]
  metrics = json.loads((workdir / "eval/metrics_step2.json").read_text())
  assert metrics["step"] == 2 and 0 <= metrics["metrics"]["PCK@0.1"] <= 1

  output = tmp_path / "weights"
  export = mamkpd("export", f"--checkpoint={workdir}", f"--output={output}",
                  "--format=safetensors", "--nocheck")
  assert export.returncode == 0, export.stderr[-3000:]
  meta = json.loads((output / "model.json").read_text())
  assert meta["family"] == "mamkpd" and meta["input_size"] == [64, 64]
  assert (output / "model.safetensors").stat().st_size > 10_000
  missing = mamkpd("eval", f"--workdir={tmp_path / 'nothing'}", *cli_flags())
  assert missing.returncode != 0 and f"checkpoint path not found: {tmp_path / 'nothing'}" \
      in missing.stderr


def test_predict_with_the_committed_weights_and_no_training(tmp_path):
  """The labelled box of a held-out frame: every keypoint within 0.2 of the box's longer
  side of its label (the weights' held-out PCK@0.2 is 0.97)."""
  coco = json.loads((DATA / "openfield_coco.json").read_text())
  image = next(i for i in coco["images"] if i["file_name"].endswith(FRAME.name))
  label = next(a for a in coco["annotations"] if a["image_id"] == image["id"])
  boxes = tmp_path / "boxes.json"
  boxes.write_text(json.dumps([{"file_name": FRAME.name, "bbox": label["bbox"]}]))
  result = mamkpd("predict", f"--weights={WEIGHTS}", f"--input={FRAME}",
                  f"--boxes={boxes}", f"--output={tmp_path / 'out'}", "--fast_compile")
  assert result.returncode == 0, result.stderr[-3000:]
  (pose,) = json.loads((tmp_path / "out/predictions.json").read_text())
  predicted = np.reshape(pose["keypoints"], (-1, 3))[:, :2]
  labelled = np.reshape(label["keypoints"], (-1, 3))
  errors = np.linalg.norm(predicted - labelled[:, :2], axis=1)[labelled[:, 2] > 0]
  assert np.all(errors <= 0.2 * max(label["bbox"][2:])), errors
  assert (tmp_path / "out" / FRAME.name).stat().st_size > 1000
  both = mamkpd("predict", f"--weights={WEIGHTS}", "--checkpoint=/tmp", f"--input={FRAME}",
                f"--output={tmp_path}")
  assert both.returncode != 0 and "checkpoint" in both.stderr and "weights" in both.stderr


def test_benchmark_smoke_run():
  result = mamkpd("benchmark", "--variants=tiny", "--batch_sizes=1", "--dtypes=float32",
                  "--scan_impls=reference", "--input_height=64", "--input_width=64",
                  "--num_keypoints=4", "--repeats=1", "--warmup=0", "--peers=", "--json")
  assert result.returncode == 0, result.stderr[-3000:]
  (row,) = json.loads(result.stdout.strip().splitlines()[-1])["results"]
  assert row["batch"] == 1 and row["latency_ms"] > 0 and row["scan_impl"] == "reference"


def test_convert_names_its_input(tmp_path):
  result = mamkpd("convert", f"--input={tmp_path / 'authors.npz'}",
                  "--config=configs/coco_hrvmamba_tiny.py", f"--output={tmp_path / 'out'}")
  assert result.returncode != 0 and "authors.npz" in result.stderr
  assert not (tmp_path / "out").exists()


def test_track_the_bundled_video_with_the_background_detector(tmp_path):
  """The README's video command, on the first 12 frames: one mouse, one track id."""
  result = mamkpd("track", f"--weights={WEIGHTS}", f"--input={VIDEO}",
                  "--detector=background", "--max_tracks=1", "--max_frames=12",
                  "--fast_compile", f"--output={tmp_path}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert (tmp_path / "m3v1mp4.mp4").stat().st_size > 0
  poses = json.loads((tmp_path / "m3v1mp4.json").read_text())
  assert {pose["track_id"] for pose in poses} == {0}
  assert sorted({pose["frame_index"] for pose in poses}) == list(range(12))


def python_m(*args, timeout=600):
  """`python -m mamkpd_jax.cli ARGS`: the entry point without the installed script."""
  return subprocess.run([sys.executable, "-m", "mamkpd_jax.cli", *map(str, args)], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


def _docstring_literal(path):
  """The module docstring of a source file as written (escapes not applied)."""
  for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
    if token.type == tokenize.STRING:
      return token.string
  raise AssertionError(f"{path}: no docstring")


@pytest.mark.parametrize("name", sorted({c.module for c in cli.COMMANDS.values()}))
def test_help_examples_keep_their_line_breaks(name):
  """A `\\` at a line's end inside a docstring joins two lines of the help text: every
  source line of a command's docstring must stay a line of its help."""
  module = importlib.import_module(name)
  written = _docstring_literal(pathlib.Path(module.__file__))
  assert module.__doc__.count("\n") == written.count("\n"), name
  assert not re.search(r"\S {5,}--", module.__doc__), name    # a joined continuation


def test_track_help_through_python_m():
  result = python_m("track", "--help")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "--weights=weights/mamkpd_tiny_openfield \\\n        --input=" in result.stdout
  assert "--max_tracks" in result.stdout


def test_the_commands_import_together_as_a_library():
  """Importing a command defines no flags: all of them load in one program."""
  modules = [importlib.import_module(c.module) for c in cli.COMMANDS.values()]
  assert all(callable(module.main) for module in modules)
  from mamkpd_jax.commands import convert, export, predict, track, train
  assert callable(predict.predict) and callable(export.export)
  assert callable(track.run) and callable(train.run) and callable(convert.convert_checkpoint)


def test_backend_probing_lines_are_dropped_and_warnings_kept(caplog):
  logger = logging.getLogger(cli.BACKEND_LOGGER)
  cli.quiet_backend_probing()
  cli.quiet_backend_probing()                                    # idempotent
  try:
    with caplog.at_level(logging.DEBUG, logger=cli.BACKEND_LOGGER):
      logger.info("Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so")
      logger.info("Unable to initialize backend 'cuda': no GPU")
      logger.warning("An NVIDIA GPU may be present on this machine, but a CUDA-enabled "
                     "jaxlib is not installed. Falling back to cpu.")
      logger.info("Initializing backend 'cpu'")
    assert caplog.messages == [
        "An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib is not "
        "installed. Falling back to cpu.", "Initializing backend 'cpu'"]
  finally:
    logger.removeFilter(cli._PROBING_FILTER)                    # pylint: disable=protected-access
  assert len([f for f in logger.filters if f is cli._PROBING_FILTER]) == 0   # pylint: disable=protected-access


def test_coco_without_its_data_names_the_flags_and_layout(tmp_path):
  """`python main.py` and `mamkpd train` on COCO with no data/coco: the error names the
  missing file, the --config.data flags and the files expected; and no JAX backend
  probing line precedes it (a plain absl program on this machine shows whether JAX
  logs one here)."""
  assert not (REPO / "data/coco").exists()
  runs = [subprocess.run([sys.executable, "main.py", "--config=configs/coco_small.py",
                          f"--workdir={tmp_path / 'a'}"], cwd=REPO, capture_output=True,
                         text=True, timeout=300),
          python_m("train", "--config=configs/coco_small.py", f"--workdir={tmp_path / 'b'}")]
  for result in runs:
    assert result.returncode != 0
    for words in ("not found: data/coco/annotations/person_keypoints_train2017.json",
                  "--config.data.root=", "--config.data.train_ann=",
                  "data/coco/train2017/", "data/coco/val2017/",
                  "data/coco/annotations/person_keypoints_val2017.json"):
      assert words in result.stderr, (words, result.stderr[-3000:])
    assert "Unable to initialize backend" not in result.stderr
  plain = subprocess.run([sys.executable, "-c", "from absl import app; import jax; "
                          "app.run(lambda argv: print(jax.devices()))"],
                         capture_output=True, text=True, timeout=300)
  if "Unable to initialize backend" not in plain.stderr:
    pytest.skip("JAX probes no missing backend on this machine (the first half passed)")


@pytest.fixture(scope="module")
def shipped_estimator():
  return inference.load_estimator(weights=WEIGHTS,
                                  compiler_options=inference.FAST_COMPILE_CPU)


@pytest.mark.parametrize("fmt, files", [("safetensors", ["model.json", "model.safetensors"]),
                                        ("jax", ["model.jax_exported", "model.json"]),
                                        ("onnx", ["model.onnx"])])
def test_export_shipped_weights_in_every_format(shipped_estimator, tmp_path, fmt, files,
                                                 capsys):
  """`mamkpd export --weights` (export.run from the flags' values) in each format; each
  artefact reloaded gives the weights' heatmaps."""
  if fmt == "onnx":
    pytest.importorskip("jax2onnx")
    pytest.importorskip("onnxruntime")
  from mamkpd_jax.commands import export, model_flags
  source = model_flags.ModelSource(None, WEIGHTS, None)
  batch = 1 if fmt == "onnx" else None
  export.run(source, str(tmp_path), fmt, batch_size=batch, check=True)
  assert sorted(os.listdir(tmp_path)) == files
  diff = float(capsys.readouterr().out.split("max |heatmap difference| to the model ")[1]
               .split()[0])
  assert diff < 1e-3
  if fmt == "safetensors":
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["trained_from"]["weights"] == WEIGHTS
    crops = export.random_crops(shipped_estimator, 1)
    reloaded = inference.Estimator.from_pretrained(str(tmp_path),
                                                  compiler_options=inference.FAST_COMPILE_CPU)
    np.testing.assert_array_equal(reloaded.crop_heatmaps(crops),
                                  shipped_estimator.crop_heatmaps(crops))


def test_export_weights_flag_through_the_command(tmp_path):
  result = python_m("export", f"--weights={WEIGHTS}", f"--output={tmp_path}",
                    "--format=safetensors", "--nocheck")
  assert result.returncode == 0, result.stderr[-3000:]
  assert (tmp_path / "model.safetensors").stat().st_size > 10_000
  both = python_m("export", f"--weights={WEIGHTS}", "--checkpoint=/tmp",
                  f"--output={tmp_path / 'x'}")
  assert both.returncode != 0 and "checkpoint" in both.stderr and "weights" in both.stderr
