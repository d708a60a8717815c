"""kernels.batch_parallel: over a batch sharded on two devices, each device runs the scan
kernel on its own images. Checked for the compiled CPU kernel and the Pallas kernel
(interpreted here, the same wrapper as on a GPU): no all-gather in the compiled forward
or gradient program, the output stays sharded, values and gradients equal the reference
on one device. Without the wrapper XLA gathered x, delta, B and C onto every device.
The compiled depth-wise conv likewise convolves each device's own images."""

import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import pytest

from mamkpd_jax.kernels import batch_parallel, selective_scan_cpu

TESTS = pathlib.Path(__file__).resolve().parent

# One process for every implementation (JAX's start and the reference compile once).
PROBE = """
import sys
import jax, jax.numpy as jnp
from mamkpd_jax import kernels
from mamkpd_jax.training import parallel
from scan_inputs import cross_inputs

inputs = cross_inputs(3, 4, 5, 6, 70, 2)            # batch 4: two images per device
mesh = parallel.make_mesh()
sharded = {n: jax.device_put(v, parallel.data_sharded(mesh)) if n in ("x", "delta", "B", "C")
           else v for n, v in inputs.items()}
loss = lambda kw, impl: jnp.sum(kernels.cross_selective_scan(**kw, impl=impl) ** 2)
want = kernels.cross_selective_scan(**inputs, impl="reference")
want_grads = jax.grad(lambda kw: loss(kw, "reference"))(inputs)
relative = lambda got, want: float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))
for impl in sys.argv[1:]:
  scan = jax.jit(lambda kw: kernels.cross_selective_scan(**kw, impl=impl))
  grad = jax.jit(jax.grad(lambda kw: loss(kw, impl)))
  y, grads = scan(sharded), grad(sharded)
  gathers = ["all-gather" in f.lower(sharded).compile().as_text() for f in (scan, grad)]
  grad_error = max(relative(grads[n], want_grads[n]) for n in want_grads)
  spec = lambda array: "/".join(map(str, array.sharding.spec)) or "replicated"
  print("RESULT", impl, jax.device_count(), spec(y), spec(grads["x"]), *gathers,
        relative(y, want), grad_error)
"""


def test_each_device_scans_its_own_images():
  impls = ["pallas"] + (["cpu_ffi"] if selective_scan_cpu.available() else [])
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
         "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
  result = subprocess.run([sys.executable, "-c", PROBE, *impls], env=env, cwd=TESTS,
                          capture_output=True, text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("RESULT")]
  assert [row[0] for row in rows] == impls
  for impl, devices, y_spec, grad_spec, forward_gathers, grad_gathers, error, grad_error in rows:
    assert (devices, y_spec, grad_spec) == ("2", "data", "data"), impl
    assert (forward_gathers, grad_gathers) == ("False", "False"), impl
    assert float(error) < 2e-5 and float(grad_error) < 1e-4, (impl, error, grad_error)


def test_sharding_rule_names_the_batch_factor_once():
  rule = batch_parallel._sharding_rule((4, 2, 3), (True, False, True), (4, 5))  # pylint: disable=protected-access
  assert rule == ("b x0d1 x0d2 x0d3, x1d0 x1d1, b x2d1 x2d2 -> "
                  "b y0d1 y0d2 y0d3, b y1d1 y1d2 y1d3 y1d4")


@pytest.mark.parametrize("batched", [(True,), (False, True)])
def test_flags_must_cover_the_arrays_and_start_per_image(batched):
  arrays = (jnp.zeros((2, 3)), jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match="batched must flag each of the 2 arrays"):
    batch_parallel.batch_parallel(lambda a, b: a + b, arrays, batched)


DEPTHWISE_PROBE = """
import jax, jax.numpy as jnp
from mamkpd_jax.kernels import depthwise_conv
from mamkpd_jax.training import parallel

x = jax.random.normal(jax.random.key(0), (4, 9, 7, 5))    # batch 4: two images per device
kernel, bias = jax.random.normal(jax.random.key(1), (3, 3, 1, 5)), jnp.ones(5)
mesh = parallel.make_mesh()
sharded = jax.device_put(x, parallel.data_sharded(mesh))
conv = jax.jit(lambda x: depthwise_conv.depthwise_conv_cpu(x, kernel, bias, (2, 2), (1, 1)))
want = depthwise_conv.shifted_sum(x, kernel, bias, (2, 2), (1, 1))
y = conv(sharded)
print("RESULT", jax.device_count(), "/".join(map(str, y.sharding.spec)),
      "all-gather" in conv.lower(sharded).compile().as_text(),
      float(jnp.max(jnp.abs(y - want))))
"""


def test_each_device_convolves_its_own_images():
  if not selective_scan_cpu.available():
    pytest.skip("no C++ compiler for the CPU kernels")
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  result = subprocess.run([sys.executable, "-c", DEPTHWISE_PROBE], env=env, cwd=TESTS,
                          capture_output=True, text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  (row,) = [line.split()[1:] for line in result.stdout.splitlines()
            if line.startswith("RESULT")]
  assert row[:3] == ["2", "data", "False"]
  assert float(row[3]) < 1e-5
