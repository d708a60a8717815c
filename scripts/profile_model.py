"""Where a model's CPU forward pass spends its time, by op class (matmuls, depth-wise
convs, norms, element-wise, layout copies, the scan): mamkpd_jax/benchmarking/profile.py.

    python scripts/profile_model.py --variant=base --batch=8 --json
    python scripts/profile_model.py --variant=base --depthwise=shifted,auto   # both forms
    python scripts/profile_model.py --variant=tiny --batch=1 --input_height=64 \
        --input_width=48 --calls=1                                        # a smoke run

Prints, per depth-wise conv form, the table (ms per call by op class, share of the summed
thunk time) and the slowest thunks; with several forms, also their forward passes timed
in turns (benchmarking.timing) and the ratio to the first. With --json a last line holds
one JSON object (device, jax_version, date, command, settings, profiles [{depthwise,
wall_ms, rows, top}], in_turns {form: ms}).
"""

import datetime
import functools
import json
import sys

import jax
from absl import app, flags
from flax import nnx

from mamkpd_jax.benchmarking import models
from mamkpd_jax.benchmarking import profile as profile_lib
from mamkpd_jax.benchmarking import timing as timing_lib
from mamkpd_jax.models import common

_VARIANT = flags.DEFINE_string("variant", "base", "A benchmark variant (tiny, small, "
                               "base, large, hrvmamba-tiny, ...).")
_BATCH = flags.DEFINE_integer("batch", 8, "Batch size.")
_HEIGHT = flags.DEFINE_integer("input_height", 256, "Input crop height.")
_WIDTH = flags.DEFINE_integer("input_width", 192, "Input crop width.")
_SCAN = flags.DEFINE_string("scan_impl", "auto", "Selective-scan implementation.")
_DEPTHWISE = flags.DEFINE_multi_enum("depthwise", ["auto"], list(common.DEPTHWISE_MODES),
                                     "Depth-wise conv forms (models.common."
                                     "depthwise_conv_mode); several: profiled and timed "
                                     "in turns.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Calls timed in turns (several forms).")
_CALLS = flags.DEFINE_integer("calls", 3, "Profiled calls (after 2 warm-up calls).")
_JSON = flags.DEFINE_bool("json", False, "End stdout with one JSON object.")


def compiled_forward(variant, batch, height, width, scan_impl, depthwise):
  """(forward, state, crops): the jitted eval-mode forward pass traced with depth-wise
  form `depthwise`, its parameters and random uint8 crops."""
  model = models.with_scan(models.build_eval_model(variant, 17), "float32", scan_impl)
  graphdef, state = nnx.split(model)
  crops = timing_lib.random_crops(batch, height, width)
  with common.depthwise_conv_mode(depthwise):
    forward = jax.jit(lambda state, images: nnx.merge(graphdef, state)(images))
    forward.lower(state, crops)          # traced in this form (jit caches the trace)
  return forward, state, crops


def report(variant, batch, height, width, scan_impl, forms, calls, repeats):
  """{form: Profile} and, with several forms, {form: ms per call timed in turns}."""
  compiled = {form: compiled_forward(variant, batch, height, width, scan_impl, form)
              for form in forms}
  profiles = {form: profile_lib.profile_call(*compiled[form], calls=calls)
              for form in forms}
  in_turns = {}
  if len(forms) > 1:
    calls_by_form = {form: (functools.partial(forward, state, crops), jax.block_until_ready)
                     for form, (forward, state, crops) in compiled.items()}
    timed = timing_lib.time_in_turns(calls_by_form, timing_lib.Timing(2, repeats))
    in_turns = {form: round(seconds * 1e3, 2) for form, (_, seconds) in timed.items()}
  return profiles, in_turns


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  forms = list(dict.fromkeys(_DEPTHWISE.value))
  profiles, in_turns = report(_VARIANT.value, _BATCH.value, _HEIGHT.value, _WIDTH.value,
                              _SCAN.value, forms, _CALLS.value, _REPEATS.value)
  for form, result in profiles.items():
    print(f"{models.variant_title(_VARIANT.value)}, batch {_BATCH.value}, "
          f"{_HEIGHT.value}x{_WIDTH.value}, scan {_SCAN.value}, depth-wise {form}: "
          f"{result.wall_ms:.1f} ms per call (profiled)")
    print(result.markdown())
    for name, op_class, ms in result.top:
      print(f"  {name:<32} {op_class:<20} {ms:8.2f} ms")
  for form, ms in in_turns.items():
    print(f"in turns: depth-wise {form:<8} {ms:9.2f} ms per call, "
          f"x{in_turns[forms[0]] / ms:.2f} against {forms[0]}")
  if _JSON.value:
    print(json.dumps(dict(
        device=jax.devices()[0].device_kind, jax_version=jax.__version__,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=" ".join(["python"] + sys.argv),
        settings=dict(variant=_VARIANT.value, batch=_BATCH.value,
                      input_size=[_HEIGHT.value, _WIDTH.value], scan_impl=_SCAN.value,
                      calls=_CALLS.value, repeats=_REPEATS.value),
        profiles=[dict(depthwise=form, wall_ms=round(result.wall_ms, 2),
                       rows=result.rows(),
                       top=[dict(thunk=n, op_class=c, ms=ms) for n, c, ms in result.top])
                  for form, result in profiles.items()],
        in_turns=in_turns)))


if __name__ == "__main__":
  app.run(main)
