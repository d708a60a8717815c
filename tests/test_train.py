"""Training, checkpoints and evaluation end to end, on the tiny model at 64x64.

One 4-step run (checkpoints at steps 2 and 4, evaluation at the end) is shared by most
tests; the subprocess tests run main.py itself (two simulated devices, two processes).
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from flax import nnx

from mamkpd_jax import config_lib
from mamkpd_jax.evaluation import evaluate
from mamkpd_jax.training import checkpointing, optim, parallel, train
from mamkpd_jax.training import workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILE = REPO / "configs" / "sample_openfield.py"
# Small, fast and deterministic: 64x64 crops, batch 4, no Grain worker processes.
TINY = {
    "data.root": str(REPO / "data/samples/dlc-openfield"),
    "data.input_height": 64, "data.input_width": 64, "data.num_workers": 0,
    "batch_size": 4, "train.warmup_steps": 2, "train.log_every_steps": 1,
    "train.checkpoint_every_steps": 2, "train.keep_checkpoints": 3,
    "train.eval_every_epochs": 0, "eval.batch_size": 8,
}
STEPS = 4


@pytest.fixture(autouse=True)
def parsed_flags():
  """Grain reads absl flags; outside app.run they must be marked parsed."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def set_field(config, dotted, value):
  *parents, leaf = dotted.split(".")
  for name in parents:
    config = config[name]
  config[leaf] = value


def tiny_config(num_steps=STEPS, **overrides):
  config = config_lib.load_config_file(str(CONFIG_FILE))
  for dotted, value in {**TINY, "train.num_steps": num_steps, **overrides}.items():
    set_field(config, dotted.replace("__", "."), value)
  return config


def cli_flags(num_steps=STEPS, **overrides):
  """The same config as command-line overrides for main.py."""
  values = {**TINY, "train.num_steps": num_steps, **overrides}
  return [f"--config={CONFIG_FILE}"] + [f"--config.{k}={v}" for k, v in values.items()]


def saved_params(workdir, step):
  """{path: array} of the model parameters in workdir's checkpoint `step`."""
  config = tiny_config()
  model = train.build_model(train.parse_model_config(config.model))
  checkpointing.load_model_state(os.path.join(workdir, "checkpoints"), step, model, config)
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in
          jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))}


def run_main(args, env_extra=None, timeout=600):
  env = {**os.environ, **(env_extra or {})}
  return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A finished 4-step run with its final evaluation: (workdir, metrics)."""
  workdir = str(tmp_path_factory.mktemp("trained"))
  metrics = train.train_and_evaluate(tiny_config(), workdir)
  return workdir, metrics


# ------------------------------------------------------------------ the shared run


def test_run_writes_checkpoints_metrics_and_curve(trained):
  workdir, metrics = trained
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  assert set(metrics) >= {"AP", "AR", "PCK@0.1"} and 0 <= metrics["PCK@0.1"] <= 1
  metrics_path, predictions_path = workdir_lib.Workdir(workdir, None, None).eval_paths(4)
  assert os.path.exists(metrics_path) and os.path.exists(predictions_path)
  picture = predictions_path.replace(".json", ".png")
  assert os.path.getsize(picture) > 1000
  frame = cv2.imread(str(next((REPO / TINY["data.root"]).rglob("*.png"))))
  tile_height = round(frame.shape[0] * 480 / frame.shape[1])
  assert cv2.imread(picture).shape == (2 * tile_height, 2 * 480, 3)   # 4 frames, 2 by 2
  floor = json.loads(pathlib.Path(metrics_path).read_text())["mean_pose_floor"]
  assert set(floor) == {"PCK@0.1"} and 0 <= floor["PCK@0.1"] <= 1
  scalars = workdir_lib.read_scalars(workdir)
  assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4]
  assert os.path.getsize(os.path.join(workdir, "learning_curve.png")) > 1000
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  assert os.path.exists(os.path.join(workdir, "config.json"))


def test_resumed_run_ends_equal_to_uninterrupted(trained, tmp_path):
  """Stopped after 2 steps, re-run to 4: the same parameters as the run that never stopped."""
  workdir = str(tmp_path / "resumed")
  train.train_and_evaluate(tiny_config(num_steps=2), workdir, evaluate_during_training=False)
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["2"]
  train.train_and_evaluate(tiny_config(num_steps=STEPS), workdir,
                           evaluate_during_training=False)
  want, got = saved_params(trained[0], STEPS), saved_params(workdir, STEPS)
  assert want.keys() == got.keys()
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  # The second run's config differed (num_steps): kept beside the first, not over it.
  configs = [n for n in os.listdir(workdir) if n.startswith("config")]
  assert len(configs) == 2


def test_eval_mode_reproduces_the_final_evaluation(trained, tmp_path):
  workdir, metrics = trained
  out = str(tmp_path / "eval_only")
  again = evaluate.evaluate(tiny_config(), out, checkpoint=workdir)
  assert again.keys() == metrics.keys()
  for name in metrics:
    assert again[name] == pytest.approx(metrics[name], abs=1e-6), name


def test_workdir_of_another_model_is_a_clear_error(trained, tmp_path):
  workdir = str(tmp_path / "other")
  shutil.copytree(trained[0], workdir)
  config = tiny_config(**{"model.dims": (16, 32, 48)})
  with pytest.raises(checkpointing.CheckpointMismatchError, match="model"):
    train.train_and_evaluate(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]


def test_init_from_skips_a_head_of_another_keypoint_count(trained):
  config = tiny_config(**{"model.num_keypoints": 17})
  _, state, _ = train.create_trainer(config, steps_per_epoch=5, mesh=parallel.make_mesh())
  model = state["model"]
  fresh_head = np.asarray(model["decoder"]["final_layer"]["kernel"][...])
  loaded = checkpointing.restore_params_for_finetuning(trained[0], state)
  np.testing.assert_array_equal(model["decoder"]["final_layer"]["kernel"][...], fresh_head)
  saved = saved_params(trained[0], STEPS)
  np.testing.assert_array_equal(model["stem"]["conv1"]["kernel"][...],
                                saved["['stem']['conv1']['kernel'].value"])
  total = len(jax.tree.leaves(checkpointing.to_saveable({"model": model})))
  assert loaded == total - 2           # all but the head's kernel and bias


def test_nan_loss_stops_naming_step_and_keeps_last_good_checkpoint(trained, tmp_path,
                                                                    monkeypatch):
  workdir = str(tmp_path / "nan")
  shutil.copytree(trained[0], workdir)
  monkeypatch.setattr(train, "keypoint_mse", lambda *args: jnp.float32(jnp.nan))
  with pytest.raises(train.NonFiniteError, match="loss = nan at step 5"):
    train.train_and_evaluate(tiny_config(num_steps=6), workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]


# --------------------------------------------------------------- subprocess runs


def test_two_devices_match_one_at_the_same_global_batch(trained, tmp_path):
  workdir = str(tmp_path / "two_devices")
  result = run_main([f"--workdir={workdir}", "--mode=train", *cli_flags(num_steps=2)],
                    {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  assert result.returncode == 0, result.stderr[-3000:]
  assert "over 2 devices" in result.stderr
  want, got = saved_params(trained[0], 2), saved_params(workdir, 2)
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=2e-4, atol=2e-6, err_msg=name)


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run_two_processes(args):
  """main.py `args` as JAX processes 0 and 1 on localhost (jax.distributed); both must
  succeed. Returns their stderr texts."""
  address = f"localhost:{free_port()}"
  env = {**os.environ, "XLA_FLAGS": ""}
  procs = [subprocess.Popen([sys.executable, str(REPO / "main.py"), *args,
                             f"--coordinator_address={address}", "--num_processes=2",
                             f"--process_id={i}"], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
           for i in range(2)]
  errors = [p.communicate(timeout=600)[1] for p in procs]
  for proc, err in zip(procs, errors):
    assert proc.returncode == 0, err[-3000:]
  assert "JAX process 1 of 2" in errors[1]
  return errors


def test_two_processes_train_one_step_together(tmp_path):
  """jax.distributed on localhost: each process loads half of every batch."""
  workdir = str(tmp_path / "two_processes")
  errors = run_two_processes([f"--workdir={workdir}", "--mode=train",
                              *cli_flags(num_steps=1)])
  assert "global batch 4 over 2 devices" in errors[0]
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["1"]


def test_two_processes_evaluate_together_as_one(trained, tmp_path):
  """Each process predicts half of every batch; the gathered keypoints give process 0
  the metrics json of a one-process evaluation. Only process 0 writes files."""
  workdir = str(tmp_path / "eval_two_processes")
  errors = run_two_processes([f"--workdir={workdir}", "--mode=eval",
                              f"--checkpoint={trained[0]}", *cli_flags()])
  assert "metrics written to" in errors[0] and "metrics written to" not in errors[1]
  assert sorted(os.listdir(os.path.join(workdir, "eval"))) == [
      "metrics_step4.json", "predictions_step4.json", "predictions_step4.png"]
  paths = [workdir_lib.Workdir(w, None, None).eval_paths(STEPS)[0] for w in (trained[0],
                                                                              workdir)]
  want, got = (json.loads(pathlib.Path(p).read_text()) for p in paths)
  assert got.keys() == want.keys()
  for key in want:
    if key != "metrics":
      assert got[key] == want[key], key
  for name, value in want["metrics"].items():
    assert got["metrics"][name] == pytest.approx(value, abs=1e-6), name


def test_main_reports_bad_input_by_name(tmp_path):
  result = run_main([f"--workdir={tmp_path}", *cli_flags(
      **{"data.train_ann": "missing.json"})])
  assert result.returncode != 0
  assert "missing.json" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------- unit checks


def test_check_finite_names_first_bad_quantity():
  train.check_finite([(1, {"loss": 1.0, "grad_norm": 2.0})])
  with pytest.raises(train.NonFiniteError, match="grad_norm = inf at step 3"):
    train.check_finite([(2, {"loss": 1.0, "grad_norm": 1.0}),
                        (3, {"loss": 1.0, "grad_norm": np.inf})])


def test_paper_schedule_warms_up_then_steps_down():
  schedule = optim.learning_rate_schedule(config_lib.train_config("paper"), 10)
  assert float(schedule(0)) == pytest.approx(1e-6, rel=1e-4)
  assert float(schedule(250)) == pytest.approx(0.5005e-3, rel=1e-3)
  assert float(schedule(500)) == pytest.approx(1e-3)
  assert float(schedule(1699)) == pytest.approx(1e-3)
  assert float(schedule(1700)) == pytest.approx(1e-4)
  assert float(schedule(2000)) == pytest.approx(1e-5)


def test_vitpose_decays_weights_only():
  config = tiny_config()
  model = train.build_model(train.parse_model_config(config.model))
  mask = optim.weight_decay_mask(nnx.state(model, nnx.Param))
  flat = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_leaves_with_path(mask)}
  assert flat["['decoder']['deconv1']['kernel'].value"]
  assert not flat["['decoder']['bn1']['scale'].value"]
  assert not any(v for k, v in flat.items() if "A_logs" in k or "Ds" in k or "bias" in k)


def test_best_metric_falls_back_to_pck():
  config = tiny_config(**{"eval.best_metric": "PCKh"})
  assert train.best_metric(config, {"PCK@0.1": 0.7}) == {"best": 0.7}
  with pytest.raises(ValueError, match="best_metric"):
    train.best_metric(config, {"AP": 0.5})


def test_eval_steps_include_the_last():
  config = tiny_config(**{"train.eval_every_epochs": 2})
  assert train.eval_steps(config, steps_per_epoch=5, total_steps=25) == {10, 20, 25}


# ------------------------------------------------------- crashes and corrupt checkpoints


def _largest_file(directory):
  files = [p for p in pathlib.Path(directory).rglob("*") if p.is_file()]
  return max(files, key=lambda p: p.stat().st_size)


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(trained, tmp_path, caplog):
  """Step 4's largest state file truncated: resumes from 2, says so, ends bit-exact."""
  workdir = str(tmp_path / "corrupt")
  shutil.copytree(trained[0], workdir)
  victim = _largest_file(os.path.join(workdir, "checkpoints", "4", "state"))
  with open(victim, "r+b") as f:
    f.truncate(victim.stat().st_size // 2)
  caplog.set_level("INFO")
  train.train_and_evaluate(tiny_config(), workdir, evaluate_during_training=False)
  assert "checkpoint step 4 in" in caplog.text and "is unusable" in caplog.text
  assert f"resumed from {workdir}/checkpoints/2" in caplog.text
  assert os.path.isdir(os.path.join(workdir, checkpointing.UNUSABLE_DIR, "4"))
  want, got = saved_params(trained[0], STEPS), saved_params(workdir, STEPS)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_no_usable_checkpoint_is_an_error_not_a_fresh_start(trained, tmp_path):
  workdir = str(tmp_path / "all_corrupt")
  shutil.copytree(trained[0], workdir)
  for step in ("2", "4"):
    (pathlib.Path(workdir) / "checkpoints" / step / "meta" / "metadata").write_text("{")
  with pytest.raises(checkpointing.CheckpointUnusableError, match=r"steps \[4, 2\]"):
    train.train_and_evaluate(tiny_config(), workdir, evaluate_during_training=False)


def _run_until(args, pattern):
  """Runs main.py until a stderr line contains `pattern`, then SIGKILLs it (None: never
  killed; the run ended). Returns the stderr read."""
  proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), *args], cwd=REPO,
                          env=dict(os.environ), text=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
  lines = []
  for line in proc.stderr:
    lines.append(line)
    if pattern and pattern in line:
      proc.send_signal(signal.SIGKILL)
      break
  proc.wait(timeout=600)
  return proc.returncode, "".join(lines)


# Moments to kill at, one run each: while compiling the first step, between two steps,
# while an asynchronous checkpoint is being written.
KILL_AT = ["training tiny on", "step 2/4", "checkpoint: step 3 ->"]


def test_sigkill_at_chosen_moments_then_rerun_is_bit_exact(trained, tmp_path):
  """The same command re-run after each kill -9 ends where the uninterrupted run did."""
  workdir = str(tmp_path / "killed")
  args = [f"--workdir={workdir}", *cli_flags(**{"train.checkpoint_every_steps": 1})]
  for pattern in KILL_AT:
    returncode, log = _run_until(args, pattern)
    assert returncode == -signal.SIGKILL, log[-3000:]
  returncode, log = _run_until(args, None)
  assert returncode == 0, log[-3000:]
  assert "resumed from" in log
  want, got = saved_params(trained[0], STEPS), saved_params(workdir, STEPS)
  assert want.keys() == got.keys()
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  want_metrics, got_metrics = (
      json.loads(pathlib.Path(workdir_lib.Workdir(w, None, None).eval_paths(STEPS)[0])
                 .read_text()) for w in (trained[0], workdir))
  assert got_metrics == want_metrics


def test_data_that_changed_is_an_error_and_moves_no_checkpoint(trained, tmp_path):
  """A position Grain cannot restore into other data is not damage: nothing set aside."""
  workdir = str(tmp_path / "other_data")
  shutil.copytree(trained[0], workdir)
  with pytest.raises(ValueError, match="does not match"):
    train.train_and_evaluate(tiny_config(**{"data.contiguous_split": 0.7}), workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  assert not os.path.exists(os.path.join(workdir, checkpointing.UNUSABLE_DIR))
