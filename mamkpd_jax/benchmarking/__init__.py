"""What the benchmarks share, one module per concern; none of them holds flags, so one
process can use them all (`mamkpd benchmark`, scripts/benchmark_scan.py,
scripts/gpu_check.py).

    timing.py     Timing, time_in_turns, time_calls, timing_row, random_crops (light:
                  no model, training or export code)
    roofline.py   the device's peak memory bandwidth; the matmul roofline (GMAC/s)
    scan.py       SS2D's scan alone: stage shapes, inputs, byte model, rows, tolerances
    models.py     whole models: forward pass and train step timed, ONNX Runtime rows,
                  the scan's share (the benchmark-only "identity" scan)
    peers.py      HRNet-W32, ViTPose-B, RTMPose-m timed in PyTorch and ONNX Runtime
                  (optional: torch)
    peer_models.py  their architectures in plain PyTorch
    plot.py       images/s against batch size

Only the light modules are imported here; `from mamkpd_jax.benchmarking import models`
and the others bring in what they need.
"""

from mamkpd_jax.benchmarking.timing import Timing, time_in_turns, timing_row
