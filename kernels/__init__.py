"""Scan kernels for MamKPD, installed as `mamkpd_jax.kernels`.

`selective_scan` dispatches by name to an implementation with one shared signature
(`SCAN_IMPLS`); `cross_scan` / `cross_merge` are SS2D's four-direction token orders.
Each fused kernel keeps a readable pure-JAX reference beside it.
"""

from mamkpd_jax.kernels.cross_scan import NUM_DIRECTIONS, cross_merge, cross_scan
from mamkpd_jax.kernels.selective_scan import SCAN_IMPLS, selective_scan
from mamkpd_jax.kernels.selective_scan_ref import selective_scan_reference
