"""What a device could do at best, to put a measured rate beside: its memory bandwidth."""

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
