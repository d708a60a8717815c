"""`selective_scan`: one entry point, the implementation chosen by name.

The Pallas kernel (issue 3) registers itself in `SCAN_IMPLS` under "pallas" with the same
signature; until then only "reference" exists. An unknown name is an error, never a
silent fallback to another implementation.
"""

from mamkpd_jax.kernels import selective_scan_ref

SCAN_IMPLS = {
    "reference": selective_scan_ref.selective_scan_reference,
}


def _check_shapes(u, delta, A, B, C, D, delta_bias):
  """Raises ValueError naming the argument whose shape does not fit the others."""
  if u.ndim != 3:
    raise ValueError(f"u must be (batch, L, channels); got shape {u.shape}")
  batch, length, channels = u.shape
  if B.ndim != 4:
    raise ValueError(f"B must be (batch, L, G, N); got shape {B.shape}")
  groups, d_state = B.shape[2], B.shape[3]
  expected = {
      "delta": (batch, length, channels),
      "A": (channels, d_state),
      "B": (batch, length, groups, d_state),
      "C": (batch, length, groups, d_state),
      "D": (channels,),
      "delta_bias": (channels,),
  }
  given = {"delta": delta, "A": A, "B": B, "C": C, "D": D, "delta_bias": delta_bias}
  for name, shape in expected.items():
    if tuple(given[name].shape) != shape:
      raise ValueError(
          f"selective_scan: {name} has shape {tuple(given[name].shape)}, expected {shape} "
          f"for u of shape {u.shape} and B of shape {B.shape}")
  if groups < 1 or channels % groups:
    raise ValueError(
        f"selective_scan: channels ({channels}) must be divisible by the number of "
        f"B/C groups G ({groups})")


def selective_scan(u, delta, A, B, C, D, delta_bias, *, delta_softplus=True,
                   impl="reference"):
  """Runs the selective scan (math in `selective_scan_ref`).

  Args:
    u, delta: (batch, L, channels), float32 or bfloat16.
    A: (channels, N) float32.
    B, C: (batch, L, G, N); channel c uses group c // (channels // G).
    D, delta_bias: (channels,) float32.
    delta_softplus: apply softplus to delta + delta_bias.
    impl: a key of `SCAN_IMPLS`.

  Returns:
    (batch, L, channels) float32.
  """
  if impl not in SCAN_IMPLS:
    raise ValueError(
        f"selective_scan: unknown impl {impl!r}; available: {sorted(SCAN_IMPLS)}")
  _check_shapes(u, delta, A, B, C, D, delta_bias)
  return SCAN_IMPLS[impl](u, delta, A, B, C, D, delta_bias, delta_softplus=delta_softplus)
