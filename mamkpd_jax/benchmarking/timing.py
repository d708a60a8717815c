"""How every benchmark times a call: compilation apart, warm-up, the median of repeats,
several implementations timed in turns; the rows they report; the crops they run on.

Light on purpose (the standard library and numpy): a script that only times things
imports no model, training or export code.
"""

import dataclasses
import statistics
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class Timing:
  """How each measurement is taken: `warmup` untimed calls, median of `repeats`."""

  warmup: int = 3
  repeats: int = 20


def time_in_turns(calls, timing, clock=time.perf_counter):
  """{name: (compile_s, median latency s)} of `calls` {name: (call, sync)}, timed in turns.

  Each call's first call (compilation) is timed apart, then `timing.warmup` untimed calls
  follow; then `timing.repeats` rounds call each of them once, in order. A slow minute of
  a shared machine therefore slows them all alike and their ratios hold.
  """
  compile_s = {}
  for name, (call, sync) in calls.items():
    start = clock()
    sync(call())
    compile_s[name] = clock() - start
    for _ in range(timing.warmup):
      sync(call())
  times = {name: [] for name in calls}
  for _ in range(timing.repeats):
    for name, (call, sync) in calls.items():
      start = clock()
      sync(call())
      times[name].append(clock() - start)
  return {name: (compile_s[name], statistics.median(times[name])) for name in calls}


def time_calls(call, sync, timing):
  """(compile_s, median latency s) of call(): first call, warm-up, median of repeats."""
  return time_in_turns({"call": (call, sync)}, timing)["call"]


def timing_row(batch, compile_s, latency_s, **fields):
  """latency and images/s to 5 significant digits (a fixed number of decimals would lose
  a slow row: an interpreted kernel at 0.07 images/s)."""
  return dict(fields, batch=batch, latency_ms=float(f"{latency_s * 1e3:.5g}"),
              images_per_s=float(f"{batch / latency_s:.5g}"), compile_s=round(compile_s, 2))


def random_crops(batch, height, width, seed=0):
  """(batch, height, width, 3) uint8 RGB crops: the same for every runtime, scan and
  export check that asks with the same arguments."""
  return np.random.default_rng(seed).integers(0, 256, (batch, height, width, 3), np.uint8)
