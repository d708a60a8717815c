"""What a device could do at best, to put a measured rate beside: its memory bandwidth
(published), and its compute rate (measured: a large matmul in JAX, and in PyTorch when
installed, in float32 and bfloat16, GMAC/s). A model's GMAC/s as a percentage of the
same run's float32 matmul rate says how far it is from what the machine can do."""

import functools

# Published HBM bandwidth (GB/s) by device name fragment, most specific first.
PEAK_GBPS = [("H200", 4800.0), ("H100 PCIe", 2000.0), ("H100", 3350.0), ("A100", 2039.0)]


def peak_gbps(device_kind):
  """The device's published HBM bandwidth in GB/s, or None when unknown."""
  for fragment, gbps in PEAK_GBPS:
    if fragment in device_kind:
      return gbps
  return None


def fraction_of_peak(gbps, peak):
  """gbps / peak to 3 decimals, or None without a peak."""
  return round(gbps / peak, 3) if peak else None


# ------------------------------------------------------------------ compute: a matmul

MATMUL_SIZE = 2048          # n of the n x n x n matmul whose rate is the roofline
REFERENCE = ("matmul", "jax", "float32")   # the rate every model row is a percentage of


def matmul_gmacs(size):
  """Multiply-adds of one size x size by size x size matmul, in billions."""
  return size ** 3 / 1e9


@functools.lru_cache(maxsize=None)
def jax_matmul_call(size, dtype):
  """(call, sync) of a jitted size^2 matmul in `dtype` on JAX's default device (one per
  size and dtype: every group of a run times the same one)."""
  import jax                 # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp    # pylint: disable=g-import-not-at-top
  keys = jax.random.split(jax.random.key(0))
  a, b = (jax.random.normal(key, (size, size), jnp.float32).astype(dtype) for key in keys)
  matmul = jax.jit(jnp.matmul)
  return lambda: matmul(a, b), jax.block_until_ready


def torch_matmul_call(torch, size, dtype):
  """(call, sync) of torch.mm of two size^2 matrices in `dtype` (CUDA when there)."""
  cuda = torch.cuda.is_available()
  device = "cuda" if cuda else "cpu"
  generator = torch.Generator().manual_seed(0)
  a, b = (torch.randn(size, size, generator=generator).to(device, getattr(torch, dtype))
          for _ in range(2))

  def call():
    with torch.inference_mode():
      return torch.mm(a, b)
  return call, (lambda _: torch.cuda.synchronize()) if cuda else (lambda out: out)


def matmul_calls(size, torch=None, dtypes=("float32", "bfloat16")):
  """{("matmul", runtime, dtype): (call, sync)}: JAX's, and torch's when given."""
  calls = {("matmul", "jax", dtype): jax_matmul_call(size, dtype) for dtype in dtypes}
  if torch is not None:
    calls.update({("matmul", "torch", dtype): torch_matmul_call(torch, size, dtype)
                  for dtype in dtypes})
  return calls


def matmul_rate(size, latency_s):
  """GMAC/s of one size^3 matmul taking latency_s."""
  return float(f"{matmul_gmacs(size) / latency_s:.5g}")


def matmul_row(key, size, compile_s, latency_s):
  """A roofline row: the matmul `key` ("matmul", runtime, dtype), its time and GMAC/s."""
  _, runtime, dtype = key
  return dict(model=f"{size}x{size} matmul", runtime=runtime, dtype=dtype, size=size,
              gmacs=round(matmul_gmacs(size), 4), latency_ms=float(f"{latency_s * 1e3:.5g}"),
              gmacs_per_s=matmul_rate(size, latency_s), compile_s=round(compile_s, 2))


def rate_fields(row, gmacs, matmul_gmacs_per_s):
  """A timed row's compute rate: ms per crop, GMACs per crop, GMAC/s (= GMACs x crops/s)
  and its percentage of `matmul_gmacs_per_s` (JAX's float32 matmul timed in turns with
  it; None: not timed, no percentage)."""
  rate = gmacs * row["images_per_s"]
  fields = dict(ms_per_crop=float(f"{row['latency_ms'] / row['batch']:.5g}"),
                gmacs=round(gmacs, 4), gmacs_per_s=float(f"{rate:.5g}"))
  if matmul_gmacs_per_s:
    fields.update(matmul_gmacs_per_s=matmul_gmacs_per_s,
                  pct_of_matmul=float(f"{100 * rate / matmul_gmacs_per_s:.4g}"))
  return fields
