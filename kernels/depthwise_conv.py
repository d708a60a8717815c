"""Depth-wise k x k convolution over a channels-last map, the pure-JAX form beside the
compiled CPU kernel (models.common.DepthwiseConv picks one).

    out[n, oh, ow, c] = bias[c] + sum_{i,j} x[n, oh*sh + i - ph, ow*sw + j - pw, c]
                                             * kernel[i, j, 0, c]          (zero padding)

* `shifted_sum`: pure JAX, k*k strided windows multiplied and added. XLA:CPU runs a
  grouped lax.conv ~20x slower than this; it runs on any backend and exports.
* `depthwise_conv_cpu`: `depthwise_conv_cpu.cc` through XLA's FFI (built with the other
  CPU kernels, cpu_kernels.py): one read of the input, one write of the output. Inside a
  model XLA fuses the shifted sum's multiply-adds with the ops that follow and then
  materialises every shifted window as an array of its own; the kernel never does.
  Float32 only; differentiable, its backward is the shifted sum's (`jax.custom_vjp`).
"""

import functools

import jax
import jax.numpy as jnp

from mamkpd_jax.kernels import batch_parallel, cpu_kernels
from mamkpd_jax.kernels.dcnv4 import output_size

TARGET = "mamkpd_depthwise_conv_forward"     # cpu_kernels.TARGETS
# Fewer channels than one vector of the kernel's (16): its per-pixel loop is then mostly
# overhead, and XLA's fused shifted sum is faster (HRVMamba's 4-channel split convs:
# ~6x in CPU time), so those stay pure JAX.
MIN_KERNEL_CHANNELS = 16


def _check(x, kernel, padding):
  """Raises ValueError unless x (N, H, W, C), kernel (kh, kw, 1, C), symmetric padding."""
  if x.ndim != 4 or kernel.ndim != 4 or kernel.shape[2] != 1 or \
      kernel.shape[3] != x.shape[3]:
    raise ValueError(f"depth-wise conv: x must be (N, H, W, C) and kernel (kh, kw, 1, C); "
                     f"got {x.shape} and {kernel.shape}")
  if any(p < 0 for p in padding):
    raise ValueError(f"depth-wise conv: padding must be >= 0, got {padding}")


def shifted_sum(x, kernel, bias, strides, padding):
  """x (N, H, W, C), kernel (kh, kw, 1, C), bias (C,) or None, strides (sh, sw), padding
  (ph, pw) on both sides -> (N, OH, OW, C), in x's dtype (pure JAX)."""
  _check(x, kernel, padding)
  (kernel_h, kernel_w), (stride_h, stride_w), (pad_h, pad_w) = (
      kernel.shape[:2], strides, padding)
  out_h = output_size(x.shape[1], kernel_h, stride_h, pad_h, 1)
  out_w = output_size(x.shape[2], kernel_w, stride_w, pad_w, 1)
  x = jnp.pad(x, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))      # (N, H', W', C)
  out = 0
  for i in range(kernel_h):
    for j in range(kernel_w):
      window = x[:, i:i + stride_h * (out_h - 1) + 1:stride_h,
                 j:j + stride_w * (out_w - 1) + 1:stride_w, :]           # (N, OH, OW, C)
      out = out + window * kernel[i, j, 0]
  if bias is not None:
    out = out + bias
  return out


def _ffi_call(x, kernel, bias, strides, padding, use_bias):
  """The custom call on float32 x (N, H, W, C), kernel (kh, kw, C), bias (C,), at x's
  own (per-device) batch."""
  out_shape = (x.shape[0], *map(output_size, x.shape[1:3], kernel.shape[:2], strides,
                                padding, (1, 1)), x.shape[3])
  call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(out_shape, jnp.float32),
                          vmap_method="sequential")
  return call(x, kernel, bias, stride_h=strides[0], stride_w=strides[1],
              pad_h=padding[0], pad_w=padding[1], use_bias=use_bias)


def _forward(x, kernel, bias, strides, padding):
  cpu_kernels.load()
  use_bias = bias is not None
  bias = bias if use_bias else jnp.zeros((x.shape[-1],), jnp.float32)
  # Each device convolves its own images (batch_parallel: else XLA gathers the batch).
  return batch_parallel.batch_parallel(
      _ffi_call, (x, kernel[:, :, 0], bias), (True, False, False),
      (strides, padding, use_bias))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _conv(x, kernel, bias, strides, padding):
  return _forward(x, kernel, bias, strides, padding)


def _conv_fwd(x, kernel, bias, strides, padding):
  return _forward(x, kernel, bias, strides, padding), (x, kernel, bias)


def _conv_bwd(strides, padding, inputs, cotangent):
  _, vjp = jax.vjp(functools.partial(shifted_sum, strides=strides, padding=padding),
                   *inputs)
  return vjp(cotangent)


_conv.defvjp(_conv_fwd, _conv_bwd)


def depthwise_conv_cpu(x, kernel, bias, strides, padding):
  """As `shifted_sum`, by the compiled CPU kernel: float32 x, kernel and bias (or None)."""
  _check(x, kernel, padding)
  if any(a is not None and a.dtype != jnp.float32 for a in (x, kernel, bias)):
    raise ValueError("the compiled depth-wise conv takes float32 only; use shifted_sum")
  return _conv(x, kernel, bias, tuple(strides), tuple(padding))


def cpu_kernel_applies(x, kernel, bias):
  """Whether `depthwise_conv_cpu` should run these arrays here: the CPU backend, float32,
  at least MIN_KERNEL_CHANNELS channels, the kernels built."""
  return (jax.default_backend() == "cpu" and x.shape[-1] >= MIN_KERNEL_CHANNELS
          and all(a is None or a.dtype == jnp.float32 for a in (x, kernel, bias))
          and cpu_kernels.available())
