"""Kernels (the selective scan, DCNv4), installed as `mamkpd_jax.kernels`.

`selective_scan` and `cross_selective_scan` (SS2D's four-direction scan of a map)
dispatch by name to an implementation of `SCAN_REGISTRY`, each declaring what it can
do: "reference", "chunked" and "onnx" (loop-free, for ONNX export), pure JAX; "cpu_ffi",
SS2D's scan as one compiled CPU kernel (XLA FFI); the Pallas kernels "pallas_triton",
"pallas_mosaic" (Mosaic GPU), "pallas" (the default GPU backend); and the benchmark-only
"identity". "auto" picks by backend (`resolve_impl`). Each fused kernel keeps a readable
reference beside it; `tolerances` says how close to it a kernel must come.
`dcnv4` is DCNv4's deformable sampling (HRVMamba's local mixer). `depthwise_conv` is a
depth-wise conv, pure JAX beside a compiled CPU kernel; `cpu_kernels` builds, caches and
registers the compiled CPU kernels (C++, XLA FFI).
"""

from mamkpd_jax.kernels.cross_scan import (NUM_DIRECTIONS, LowRankDelta, as_delta,
                                           cross_merge, cross_scan,
                                           cross_selective_scan_reference,
                                           direction_tokens)
from mamkpd_jax.kernels.dcnv4 import dcnv4
from mamkpd_jax.kernels.selective_scan import (AUTO, CPU_ONLY_IMPLS, LOW_RANK_DELTA_IMPLS,
                                               PURE_JAX_IMPLS, SCAN_IMPLS, SCAN_REGISTRY,
                                               ScanImpl, cross_selective_scan,
                                               portable_impl, resolve_impl, runs_on,
                                               scan_impls, selective_scan)
from mamkpd_jax.kernels.selective_scan_cpu import cross_selective_scan_cpu
from mamkpd_jax.kernels.selective_scan_chunked import (cross_selective_scan_chunked,
                                                       selective_scan_chunked)
from mamkpd_jax.kernels.selective_scan_onnx import (cross_selective_scan_onnx,
                                                    selective_scan_onnx)
from mamkpd_jax.kernels.selective_scan_pallas import (cross_selective_scan_pallas,
                                                      selective_scan_pallas)
from mamkpd_jax.kernels.selective_scan_ref import selective_scan_reference
