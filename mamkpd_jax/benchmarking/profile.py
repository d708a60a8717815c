"""Where a jitted CPU forward pass spends its time, by op class.

XLA:CPU runs a compiled program as a sequence of thunks (one per fusion, custom call,
convolution, ...), and JAX's profiler records each thunk as a trace event named after its
HLO instruction. `profile_call` traces a few calls, reads the Perfetto trace JSON, finds
each thunk's instruction in the compiled HLO text, and sums the thunk times per op class:

    scan                custom calls of the compiled CPU scan (cpu_ffi)
    matmul              fusions holding a dot (projections; norms fused into them count
                        here too, as XLA ran them in the same thunk)
    dense conv          convolutions with one feature group (the stem's 7x7, deconvs)
    depth-wise conv     the compiled CPU kernel's custom calls, grouped convolutions, and
                        fusions of the shifted windows of kernels.depthwise_conv's
                        pure-JAX form (pad/slice with multiply-adds)
    gathers (DCNv4)     the compiled DCNv4 kernel's custom calls and fusions holding a
                        gather (its pure-JAX bilinear sampling)
    norms / reductions  fusions holding a reduce (LayerNorm, BatchNorm statistics)
    layout copies       fusions of transposes, copies, pads, slices and concatenates only
    element-wise        every other fusion (activations, residual adds, gating)

Thunks inside loops (a `lax.scan` over a stage's blocks) are counted, the loop itself
not. A thunk's time is its own wall time; two thunks may run at once on XLA's thread pool,
so the class times can add up to more than the call's wall time (both are reported).
"""

import collections
import dataclasses
import glob
import gzip
import json
import os
import re
import tempfile

import jax

_COMPUTATION = re.compile(r"^(?:ENTRY )?%(\S+) .*?\{\n(.*?)^\}", re.S | re.M)
_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%(\S+) = .*?\s([a-z][a-z0-9-]*)\(")
_OPCODE = re.compile(r"= \S+ ([a-z][a-z0-9-]*)\(")
_CALLS = re.compile(r"calls=%([^,\s]+)")
_TARGET = re.compile(r'custom_call_target="([^"]+)"')
_CUSTOM_CALLS = {"mamkpd_cross_scan_forward": "scan",            # kernels.cpu_kernels.TARGETS
                 "mamkpd_depthwise_conv_forward": "depth-wise conv",
                 "mamkpd_dcnv4_forward": "gathers (DCNv4)"}
_LAYOUT_OPS = {"transpose", "copy", "bitcast", "parameter", "reverse", "reshape",
               "broadcast", "constant", "concatenate", "pad", "slice", "tuple",
               "get-tuple-element"}
# The executor's own events: a call's top-level run, its nested runs (loop bodies, thunks
# on the thread pool) and its wait for completion, on whichever threads they ran.
_EXECUTOR_EVENT = "ThunkExecutor::Execute"
# Thunks that run other thunks (a loop's body): their time is their body thunks' time.
_CONTAINERS = {"while", "conditional", "call"}

CLASSES = ("scan", "matmul", "dense conv", "depth-wise conv", "gathers (DCNv4)",
           "norms / reductions", "layout copies", "element-wise", "other")


@dataclasses.dataclass
class Profile:
  """Per-call milliseconds by op class, the call's wall time, and the top thunks."""

  calls: int
  wall_ms: float                       # per call: time while the executor was running
  class_ms: dict                       # {op class: ms per call}
  top: list                            # [(thunk name, op class, ms per call)], slowest first

  def rows(self):
    """[{op_class, ms, share}] in CLASSES order, share of the summed thunk time."""
    total = sum(self.class_ms.values()) or 1.0
    return [{"op_class": name, "ms": round(self.class_ms[name], 2),
             "share": round(self.class_ms[name] / total, 3)}
            for name in CLASSES if self.class_ms.get(name)]

  def markdown(self):
    lines = ["| op class | ms per call | share |", "|---|---:|---:|"]
    lines += [f"| {r['op_class']} | {r['ms']:.1f} | {100 * r['share']:.1f}% |"
              for r in self.rows()]
    lines.append(f"| (sum of thunks / wall) | {sum(self.class_ms.values()):.1f} / "
                 f"{self.wall_ms:.1f} | |")
    return "\n".join(lines)


def hlo_instructions(hlo_text):
  """({instruction name: its line}, {computation name: its body}), the instructions of
  every computation that runs as thunks: the entry and the bodies and conditions of its
  loops (a model's `lax.scan` over blocks), not the insides of fusions. Names are
  unique within an HLO module."""
  computations = {m.group(1): m.group(2) for m in _COMPUTATION.finditer(hlo_text)}
  fused = set(_CALLS.findall(hlo_text))            # bodies of fusions (calls=%...)
  lines = {}
  for name, body in computations.items():
    if name in fused:
      continue
    for line in body.splitlines():
      match = _INSTRUCTION.match(line)
      if match:
        lines[match.group(1)] = line
  return lines, computations


def op_class(line, computations):
  """The op class (CLASSES) of one entry instruction's HLO line."""
  target = _TARGET.search(line)
  if target:
    return _CUSTOM_CALLS.get(target.group(1), "other")
  called = _CALLS.search(line)
  body = computations.get(called.group(1), "") if called else line
  ops = set(_OPCODE.findall(body)) if called else {_INSTRUCTION.match(line).group(2)}
  if "convolution" in ops:
    return "depth-wise conv" if "feature_group_count" in body else "dense conv"
  if "dot" in ops:
    return "matmul"
  if "gather" in ops:
    return "gathers (DCNv4)"
  if ops & {"pad", "slice"} and "multiply" in ops and "reduce" not in ops:
    return "depth-wise conv"
  if "reduce" in ops:
    return "norms / reductions"
  if ops <= _LAYOUT_OPS:
    return "layout copies"
  return "element-wise" if called else "other"


def trace_events(trace_dir):
  """The complete ("X") events of the Perfetto trace JAX's profiler wrote in trace_dir."""
  (path,) = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"),
                      recursive=True)
  with gzip.open(path, "rt", encoding="utf-8") as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  return [e for e in events if e.get("ph") == "X"]


def summarize(events, hlo_text, calls, top=15):
  """Profile of `calls` calls from their trace events and the program's HLO text."""
  lines, computations = hlo_instructions(hlo_text)
  class_us, thunk_us, classes = collections.Counter(), collections.Counter(), {}
  running = []                                     # [(start us, end us)] of executor events
  for event in events:
    name = event["name"]
    if name.startswith(_EXECUTOR_EVENT):
      running.append((event.get("ts", 0), event.get("ts", 0) + event.get("dur", 0)))
    elif name in lines and _INSTRUCTION.match(lines[name]).group(2) not in _CONTAINERS:
      classes.setdefault(name, op_class(lines[name], computations))
      class_us[classes[name]] += event.get("dur", 0)
      thunk_us[name] += event.get("dur", 0)
  per_call = 1e-3 / calls
  return Profile(
      calls=calls, wall_ms=covered_us(running) * per_call,
      class_ms={name: us * per_call for name, us in class_us.items()},
      top=[(name, classes[name], round(us * per_call, 2))
           for name, us in thunk_us.most_common(top)])


def covered_us(intervals):
  """Length of the union of [start, end) intervals: the time the executor was running
  on any thread. (Its wait-for-completion event alone misses a program that finished on
  the calling thread before the wait began.)"""
  total, end = 0.0, float("-inf")
  for start, stop in sorted(intervals):
    if stop > end:
      total += stop - max(start, end)
      end = stop
  return total


def profile_call(jitted, *args, calls=3, warmup=2):
  """Profile of `calls` calls of `jitted(*args)` (a jax.jit function) on the CPU."""
  hlo_text = jitted.lower(*args).compile().as_text()
  for _ in range(warmup):
    jax.block_until_ready(jitted(*args))
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    try:
      for _ in range(calls):
        jax.block_until_ready(jitted(*args))
    finally:
      jax.profiler.stop_trace()
    events = trace_events(trace_dir)
  return summarize(events, hlo_text, calls)
