"""What a device could do at best, to put a measured rate beside: its memory bandwidth
(published; a TPU's bfloat16 matmul peak too), and its compute rate (measured: a large
matmul in JAX, and in PyTorch when installed, in float32 and bfloat16, GMAC/s). A model's GMAC/s as a percentage of the
same run's float32 matmul rate says how far it is from what the machine can do."""

import dataclasses
import functools

# Published HBM bandwidth (GB/s) by device name fragment, most specific first.
PEAK_GBPS = [("H200", 4800.0), ("H100 PCIe", 2000.0), ("H100", 3350.0), ("A100", 2039.0)]


def peak_gbps(device_kind):
  """The device's published HBM bandwidth in GB/s, or None when unknown."""
  for fragment, gbps in PEAK_GBPS:
    if fragment in device_kind:
      return gbps
  return None


@dataclasses.dataclass(frozen=True)
class TpuChip:
  """Google's published per-chip figures for one TPU generation (no float32 matmul peak
  is published for any of them: the run measures it)."""

  name: str
  bf16_tflops: float            # peak bfloat16 matmul TFLOP/s per chip
  hbm_gbps: float               # HBM bandwidth per chip, GB/s
  tensor_cores: int             # TensorCores per chip (a JAX device holds one or all)
  source: str                   # the page both numbers are from


_V5E = TpuChip("v5e", 197.0, 819.0, 1, "https://cloud.google.com/tpu/docs/v5e")
_V5P = TpuChip("v5p", 459.0, 2765.0, 2, "https://cloud.google.com/tpu/docs/v5p")
_V6E = TpuChip("v6e (Trillium)", 918.0, 1638.0, 1, "https://cloud.google.com/tpu/docs/v6e")
# By `jax.Device.device_kind`, matched exactly ("TPU v5" is v5p, "TPU v5 lite" v5e): the
# strings of JAX's own table, jax/_src/tpu_info.py `chip_version_from_device_kind`
# (JAX 0.12.1). Each chip's numbers from its Cloud TPU system-architecture page
# (docs/gpu.md): v3 123 TFLOP/s, 900 GB/s; v4 275 TFLOP/s, 1200 GB/s; v5e 197, 819; v5p
# 459, 2765; v6e 918, 1638; TPU7x (Ironwood) 2307, 7380. Kinds not here ("TPU v2",
# "TPU v4 lite", "TPU7", later ones) are unknown: the run reports only what it measures.
TPU_CHIPS = {
    "TPU v3": TpuChip("v3", 123.0, 900.0, 2, "https://cloud.google.com/tpu/docs/v3"),
    "TPU v4": TpuChip("v4", 275.0, 1200.0, 2, "https://cloud.google.com/tpu/docs/v4"),
    "TPU v5 lite": _V5E, "TPU v5e": _V5E,
    "TPU v5": _V5P, "TPU v5p": _V5P,
    "TPU v6 lite": _V6E, "TPU v6e": _V6E,
    "TPU7x": TpuChip("TPU7x (Ironwood)", 2307.0, 7380.0, 2,
                     "https://cloud.google.com/tpu/docs/tpu7x"),
}
# TensorCores one JAX device holds when the device does not say (`num_cores`): v4 and
# v5p run both as one device (megacore); v3 and TPU7x show each TensorCore as a device
# (JAX's jax/_src/tpu_info.py, `get_tpu_info_for_chip`).
_DEFAULT_CORES_PER_DEVICE = {"v3": 1, "TPU7x (Ironwood)": 1}


def published_peaks(device):
  """The published peaks of one JAX `device` (its share of its chip on a TPU):
  {hbm_gbps, bf16_tflops, f32_tflops, source}, None for what is not published.

  A TPU's from TPU_CHIPS; a GPU's bandwidth from PEAK_GBPS (no GPU matmul
  peak is tabled: the run measures it). float32 peaks are never published.
  """
  kind = device.device_kind
  if device.platform != "tpu":
    gbps = peak_gbps(kind)
    return dict(hbm_gbps=gbps, bf16_tflops=None, f32_tflops=None,
                source="benchmarking/roofline.py PEAK_GBPS" if gbps else
                f"unknown device kind {kind!r}: measured rates only")
  chip = TPU_CHIPS.get(kind)
  if chip is None:
    return dict(hbm_gbps=None, bf16_tflops=None, f32_tflops=None,
                source=f"unknown TPU kind {kind!r} (not in TPU_CHIPS): measured rates only")
  cores = getattr(device, "num_cores", None) or _DEFAULT_CORES_PER_DEVICE.get(
      chip.name, chip.tensor_cores)
  share = min(cores, chip.tensor_cores) / chip.tensor_cores      # of the chip, per device
  return dict(hbm_gbps=chip.hbm_gbps * share, bf16_tflops=chip.bf16_tflops * share,
              f32_tflops=None, source=f"{chip.name}: {chip.source}"
              + (f" (x {share:g}: one of {chip.tensor_cores} TensorCores per device)"
                 if share < 1 else ""))


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
