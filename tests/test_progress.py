"""mamkpd_jax.progress: the one progress reporter of training (steps, images/s) and of
video and image runs (frames/s), timed with a fake clock."""

import ast
import pathlib

from mamkpd_jax import progress

PACKAGE = pathlib.Path(progress.__file__).parent


class FakeClock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_frames_every_n_with_rate_and_eta(capsys):
  clock = FakeClock()
  reporter = progress.Progress(10, every=4, clock=clock)
  lines = []
  for _ in range(10):
    clock.now += 0.5                         # 2 frames/s
    lines.append(reporter.add(1))
  assert [line for line in lines if line] == [
      "4/10 frames, 2.0 frames/s, ETA 0:00:03",
      "8/10 frames, 2.0 frames/s, ETA 0:00:01",
      "10/10 frames, 2.0 frames/s, ETA 0:00:00"]
  assert capsys.readouterr().out.splitlines() == [line for line in lines if line]


def test_unknown_total_has_no_eta():
  clock = FakeClock()
  reporter = progress.Progress(0, every=3, clock=clock)
  clock.now += 1.5
  assert reporter.add(3) == "3/? frames, 2.0 frames/s"


def test_steps_rate_in_images_over_the_last_interval_only():
  """A training step is `per_unit` images; the rate covers the interval since the last
  reading, and restart_clock leaves a pause (evaluation) out of it."""
  clock = FakeClock()
  reporter = progress.Progress(1000, unit="steps", rate_unit="images", per_unit=32,
                               start=100, clock=clock)
  clock.now += 60.0                          # compilation: slow first interval
  assert reporter.read(110).rate == 10 * 32 / 60.0
  clock.now += 4.0
  reading = reporter.read(150)               # 40 steps of 32 images in 4 s
  assert reading.rate == 320.0 and reading.eta_s == 850 * 32 / 320.0
  assert reporter.line(reading) == "150/1000 steps, 320.0 images/s, ETA 0:01:25"
  clock.now += 500.0                         # evaluation
  reporter.restart_clock(150)
  clock.now += 2.0
  assert reporter.read(170).rate == 20 * 32 / 2.0


def test_eta_format():
  assert progress.format_eta(3725.9) == "1:02:05"
  assert progress.format_eta(-3) == "0:00:00"


def test_progress_is_defined_once():
  """No other module of the package defines its own Progress class."""
  defined = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.ClassDef) and node.name == "Progress"]
  assert defined == ["progress.py"]
