"""How close a scan implementation must come to the reference scan.

The kernel tests and `scripts/gpu_check.py` (the same comparison on a GPU) take their
tolerances from here, so a CPU pass and a GPU pass mean the same thing. Both sides
compute in float32 from the same inputs, so outputs agree to float32 round-off;
bfloat16 gradients are rounded to bfloat16 on both sides (relative step 2^-8).

The absolute tolerance scales with the largest reference value (`atol`): a gradient
that is near zero in places is judged against the size of the whole array.
"""

import numpy as np

OUTPUT_RTOL = 2e-5                                       # y, float32 and bfloat16 inputs
GRAD_RTOL = {"float32": 2e-5, "bfloat16": 2e-2}          # by the inputs' dtype name


def grad_rtol(dtype):
  """GRAD_RTOL of a dtype given as a name, a numpy dtype or a jnp scalar type."""
  return GRAD_RTOL[np.dtype(dtype).name]


def atol(want, rtol):
  """rtol times the largest |want| (1e-6 at least, for an all-zero reference)."""
  return rtol * max(float(np.abs(np.asarray(want, np.float32)).max(initial=0.0)), 1e-6)


def tolerance_ratio(got, want, rtol):
  """max |got - want| / (atol + rtol * |want|): at most 1 exactly where `assert_close`
  passes, so a row can say how much room a kernel had."""
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  return float(np.max(np.abs(got - want) / (atol(want, rtol) + rtol * np.abs(want))))


def assert_close(got, want, rtol, name=""):
  """np.testing.assert_allclose with rtol and `atol(want, rtol)`."""
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  np.testing.assert_allclose(got, want, rtol=rtol, atol=atol(want, rtol), err_msg=name)
