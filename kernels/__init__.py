"""Kernels (the selective scan, DCNv4), installed as `mamkpd_jax.kernels`.

`selective_scan` and `cross_selective_scan` (SS2D's four-direction scan of a map)
dispatch by name to an implementation (`SCAN_IMPLS`): "reference", pure JAX, or
"pallas", the Pallas kernels. Each fused kernel keeps a readable reference beside it.
`dcnv4` is DCNv4's deformable sampling (HRVMamba's local mixer), pure JAX.
"""

from mamkpd_jax.kernels.cross_scan import (NUM_DIRECTIONS, cross_merge, cross_scan,
                                           cross_selective_scan_reference,
                                           direction_tokens)
from mamkpd_jax.kernels.dcnv4 import dcnv4
from mamkpd_jax.kernels.selective_scan import (SCAN_IMPLS, cross_selective_scan,
                                               selective_scan)
from mamkpd_jax.kernels.selective_scan_pallas import (cross_selective_scan_pallas,
                                                      selective_scan_pallas)
from mamkpd_jax.kernels.selective_scan_ref import selective_scan_reference
