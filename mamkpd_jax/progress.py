"""One progress reporter for long loops: training steps, video frames, image batches.

It counts work done against a total (unknown: None) and measures the rate over the
interval since its previous reading, so a slow start (compilation) or a pause left out
with `restart_clock` (evaluation, a checkpoint wait) does not linger in later lines.
The rate may count something other than the loop's unit: a training step is
`per_unit` = global-batch images. Lines read "12/100 frames, 3.4 frames/s, ETA 0:00:26".
"""

import dataclasses
import time

from absl import logging


@dataclasses.dataclass(frozen=True)
class Reading:
  """One measurement: done of total, items per second since the previous one, time left."""

  done: int
  total: int | None
  rate: float                     # rate units (per_unit items per unit) per second
  eta_s: float | None             # None when the total is unknown


def format_eta(seconds):
  """H:MM:SS of a duration in seconds (rounded down)."""
  seconds = max(int(seconds), 0)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
  """Work done against a total: rate, time left, a line every `every` units."""

  def __init__(self, total, every=1, unit="frames", rate_unit=None, per_unit=1, start=0,
               clock=time.perf_counter):
    self.total, self.every, self.unit = total or None, max(int(every), 1), unit
    self.rate_unit, self.per_unit, self.clock = rate_unit or unit, per_unit, clock
    self.done = start
    self.mark_done, self.mark_time = start, clock()

  def read(self, done=None):
    """A Reading at `done` (default: what `add` counted); starts the next interval."""
    self.done = self.done if done is None else done
    now = self.clock()
    units = max(self.done - self.mark_done, 1)
    rate = units * self.per_unit / max(now - self.mark_time, 1e-9)
    eta = None
    if self.total:
      eta = max(self.total - self.done, 0) * self.per_unit / max(rate, 1e-9)
    self.mark_done, self.mark_time = self.done, now
    return Reading(self.done, self.total, rate, eta)

  def restart_clock(self, done=None):
    """Leaves the time until now out of the next rate (it was not spent on this work)."""
    self.done = self.done if done is None else done
    self.mark_done, self.mark_time = self.done, self.clock()

  def line(self, reading):
    """'12/100 frames, 3.4 frames/s, ETA 0:00:26' (no ETA when the total is unknown)."""
    text = (f"{reading.done}/{reading.total or '?'} {self.unit}, {reading.rate:.1f} "
            f"{self.rate_unit}/s")
    return text + (f", ETA {format_eta(reading.eta_s)}" if reading.eta_s is not None else "")

  def add(self, count):
    """Counts `count` more units; logs and prints a line when a multiple of `every` is
    passed or the total reached. Returns that line, or None."""
    before, self.done = self.done, self.done + count
    if self.done // self.every == before // self.every and self.done != self.total:
      return None
    text = self.line(self.read())
    logging.info("%s", text)
    print(text, flush=True)
    return text
