"""benchmarking.profile: thunk times from JAX's profiler, summed per op class."""

import jax
import jax.numpy as jnp
import pytest

from mamkpd_jax.benchmarking import profile

_HLO = """HloModule m

%fused_dot (p0: f32[4,4], p1: f32[4,4]) -> f32[4,4] {
  %p0 = f32[4,4]{1,0} parameter(0)
  %p1 = f32[4,4]{1,0} parameter(1)
  ROOT %dot.1 = f32[4,4]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_norm (p0: f32[4,4]) -> f32[4] {
  %p0 = f32[4,4]{1,0} parameter(0)
  %c = f32[] constant(0)
  ROOT %reduce.1 = f32[4]{0} reduce(%p0, %c), dimensions={1}, to_apply=%add
}

%fused_copy (p0: f32[4,4]) -> f32[4,4] {
  %p0 = f32[4,4]{1,0} parameter(0)
  ROOT %transpose.1 = f32[4,4]{0,1} transpose(%p0), dimensions={1,0}
}

%fused_windows (p0: f32[4,4]) -> f32[2,2] {
  %p0 = f32[4,4]{1,0} parameter(0)
  %slice.1 = f32[2,2]{1,0} slice(%p0), slice={[0:2], [0:2]}
  ROOT %multiply.1 = f32[2,2]{1,0} multiply(%slice.1, %slice.1)
}

ENTRY %main (a: f32[4,4]) -> f32[4,4] {
  %a = f32[4,4]{1,0} parameter(0)
  %fusion.1 = f32[4,4]{1,0} fusion(%a, %a), kind=kCustom, calls=%fused_dot
  %fusion.2 = f32[4]{0} fusion(%fusion.1), kind=kInput, calls=%fused_norm
  %fusion.3 = f32[4,4]{1,0} fusion(%fusion.1), kind=kLoop, calls=%fused_copy
  %fusion.4 = f32[2,2]{1,0} fusion(%a), kind=kLoop, calls=%fused_windows
  %ffi_call.1 = f32[4,4]{1,0} custom-call(%a), custom_call_target="mamkpd_cross_scan_forward"
  %ffi_call.2 = f32[4,4]{1,0} custom-call(%a), custom_call_target="mamkpd_depthwise_conv_forward"
  ROOT %tanh.1 = f32[4,4]{1,0} tanh(%fusion.3)
}
"""


def test_op_classes_of_hlo_instructions():
  lines, computations = profile.hlo_instructions(_HLO)
  classes = {name: profile.op_class(line, computations) for name, line in lines.items()}
  assert classes == {"a": "layout copies", "fusion.1": "matmul",
                     "fusion.2": "norms / reductions", "fusion.3": "layout copies",
                     "fusion.4": "depth-wise conv", "ffi_call.1": "scan",
                     "ffi_call.2": "depth-wise conv", "tanh.1": "other"}


def test_summarize_sums_per_class_and_per_call():
  events = [{"name": "fusion.1", "dur": 3000}, {"name": "fusion.1", "dur": 1000},
            {"name": "ffi_call.1", "dur": 4000}, {"name": "unknown", "dur": 99},
            {"name": profile._EXECUTOR_EVENT, "ts": 0, "dur": 4000},
            {"name": profile._EXECUTOR_EVENT, "ts": 1000, "dur": 5000},   # nested: overlaps
            {"name": profile._EXECUTOR_EVENT + " (wait for completion)", "ts": 7000,
             "dur": 4000}]
  result = profile.summarize(events, _HLO, calls=2)
  assert result.class_ms == {"matmul": 2.0, "scan": 2.0}
  assert result.wall_ms == 5.0                          # (6000 + 4000) us over 2 calls
  assert [r["share"] for r in result.rows()] == [0.5, 0.5]
  assert result.top[0] == ("fusion.1", "matmul", 2.0)
  assert "| matmul | 2.0 | 50.0% |" in result.markdown()


def test_covered_time_is_the_union_of_intervals():
  assert profile.covered_us([]) == 0
  assert profile.covered_us([(5, 9), (0, 2), (1, 3), (6, 7)]) == 3 + 4
  assert profile.covered_us([(0, 10), (2, 4)]) == 10


def test_profile_of_a_traced_call_finds_its_thunks():
  x = jnp.ones((64, 64))
  f = jax.jit(lambda x: jnp.tanh(x @ x).sum(axis=1))
  result = profile.profile_call(f, x, calls=2, warmup=1)
  assert result.calls == 2 and result.wall_ms > 0
  assert "matmul" in result.class_ms
  assert sum(r["share"] for r in result.rows()) == pytest.approx(1.0, abs=0.01)


_LOOP_HLO = """HloModule loop

%body (p: (s32[], f32[4])) -> (s32[], f32[4]) {
  %p = (s32[], f32[4]) parameter(0)
  %x = f32[4]{0} get-tuple-element(%p), index=1
  %ffi_call.7 = f32[4]{0} custom-call(%x), custom_call_target="mamkpd_cross_scan_forward"
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %t = (s32[], f32[4]) tuple(%i, %ffi_call.7)
}

ENTRY %main (a: f32[4]) -> f32[4] {
  %a = f32[4]{0} parameter(0)
  %init = (s32[], f32[4]) tuple(%c, %a)
  %while.1 = (s32[], f32[4]) while(%init), condition=%cond, body=%body
  ROOT %r = f32[4]{0} get-tuple-element(%while.1), index=1
}
"""


def test_thunks_inside_loops_count_and_the_loop_does_not():
  events = [{"name": "while.1", "dur": 9000}, {"name": "ffi_call.7", "dur": 3000},
            {"name": "ffi_call.7", "dur": 3000}]
  result = profile.summarize(events, _LOOP_HLO, calls=1)
  assert result.class_ms == {"scan": 6.0}


def test_profile_model_script_profiles_both_forms_and_times_them_in_turns():
  """scripts/profile_model.py on a tiny model: one profile per depth-wise form, both
  timed in turns, in its JSON line."""
  import json                                            # pylint: disable=g-import-not-at-top
  import pathlib                                         # pylint: disable=g-import-not-at-top
  import subprocess                                      # pylint: disable=g-import-not-at-top
  import sys                                             # pylint: disable=g-import-not-at-top
  script = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "profile_model.py"
  result = subprocess.run(
      [sys.executable, str(script), "--variant=tiny", "--batch=1", "--input_height=32",
       "--input_width=32", "--calls=3", "--repeats=1", "--depthwise=shifted",
       "--depthwise=auto", "--json"], capture_output=True, text=True, timeout=600,
      check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert [p["depthwise"] for p in report["profiles"]] == ["shifted", "auto"]
  assert set(report["in_turns"]) == {"shifted", "auto"}
  for profile_row in report["profiles"]:
    assert profile_row["wall_ms"] > 0
    assert abs(sum(r["share"] for r in profile_row["rows"]) - 1) < 0.01
