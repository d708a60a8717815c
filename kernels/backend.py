"""The one place that knows which Pallas GPU backend the kernels are built for.

Backend: Pallas's Triton lowering (`jax.experimental.pallas.triton`), chosen for the
reasons in kernels/README.md. Everything backend-specific lives here: the compiler
parameters that select it, its shape rules (power-of-two in-kernel arrays), and the
choice between compiled and interpreted execution. A Mosaic GPU version would add its
own `compiler_params` and tile rules here and leave the kernel modules' math alone.
"""

import jax
from jax.experimental.pallas import triton as plt

NAME = "triton"
MAX_D_STATE = 16          # state sizes the kernels are tiled for (padded to a power of 2)
CHUNK = 16                # tokens per unrolled chunk; the backward's checkpoint stride


def next_power_of_two(n):
  return 1 << max(0, (int(n) - 1).bit_length())


def channel_tile(per_group, padded_d_state):
  """Channels per program: a power of two (Triton), smaller when the state is large.

  The backward keeps CHUNK states of (padded_d_state, tile) float32 in registers, so
  the tile shrinks as d_state grows: 64 channels for N <= 4, 32 above.
  """
  limit = 64 if padded_d_state <= 4 else 32
  return min(limit, next_power_of_two(per_group))


def num_warps(padded_d_state, tile):
  """One warp per 128 state elements, 1 to 4 (untuned: no GPU has measured it yet)."""
  return max(1, min(4, padded_d_state * tile // 128))


def resolve_interpret(interpret):
  """None -> interpret when the default backend is the CPU (tests, CI, laptops)."""
  if interpret is None:
    return jax.default_backend() == "cpu"
  return bool(interpret)


def compiler_params(padded_d_state, tile):
  """Parameters that select the Triton backend for a `pallas_call`.

  Passed in interpret mode too, so tests exercise the exact production call.
  """
  return plt.CompilerParams(num_warps=num_warps(padded_d_state, tile), num_stages=1)
