"""Pieces shared by both model families: input normalisation, initialisers, norms,
depth-wise convs, the MLP and DropPath.

Initialisation follows VMamba's `_init_weights` (docs/scan.md, Initialisation): Dense kernels
truncated-normal std 0.02 with zero bias, LayerNorm (1, 0), convolutions PyTorch's
default kaiming-uniform(a=sqrt(5)) i.e. U(+-1/sqrt(fan_in)) (biases zero here).
"""

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from mamkpd_jax.data_pipelines import geometry
from mamkpd_jax.kernels import depthwise_conv as depthwise_kernels

LAYER_NORM_EPS = 1e-5  # PyTorch's nn.LayerNorm default, as in VMamba
BN_MOMENTUM = 0.9      # PyTorch momentum 0.1
BN_EPS = 1e-5          # PyTorch's nn.BatchNorm2d default

COMPUTE_DTYPES = ("float32", "bfloat16")
HEATMAP_STRIDE = geometry.HEATMAP_STRIDE     # both families' heatmaps: 1/4 of the input

# ImageNet statistics, RGB on the 0-255 scale (mmpose's data_preprocessor; both families).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

dense_init = nnx.initializers.truncated_normal(stddev=0.02)
head_init = nnx.initializers.normal(stddev=0.001)   # mmpose HeatmapHead convs
# kaiming_uniform(a=sqrt(5)): bound = sqrt(6 / ((1 + 5) * fan_in)) = 1 / sqrt(fan_in).
conv_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def normalize_images(images):
  """(N, H, W, 3) RGB 0-255, any real dtype -> float32 (images - mean) / std."""
  mean = jnp.asarray(PIXEL_MEAN, jnp.float32)
  return (images.astype(jnp.float32) - mean) * (1.0 / jnp.asarray(PIXEL_STD, jnp.float32))


def prepare_images(images, stride, dtype, family):
  """(N, H, W, 3) RGB 0-255 -> normalised (N, H, W, 3) in `dtype`; H, W multiples of stride.

  Raises ValueError naming the family and the expected shape for anything else.
  """
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"{family} expects (N, H, W, 3) images; got shape {images.shape}")
  height, width = images.shape[1:3]
  if height % stride or width % stride:
    raise ValueError(f"{family} input height and width must be multiples of {stride}; "
                     f"got {height}x{width}")
  return normalize_images(images).astype(compute_dtype(dtype))


def compute_dtype(name):
  """'float32' | 'bfloat16' -> the jnp dtype used for activations."""
  return jnp.dtype(name)


def layer_norm(num_features, dtype, rngs):
  """Channels-last LayerNorm, statistics in float32 whatever `dtype` is.

  Variance as E[(x - mean)^2] (as PyTorch), not Flax's default E[x^2] - mean^2, which
  cancels catastrophically for features with a large mean (mean 100, std 0.01: error 28
  against float64, 0.13 with this setting).
  """
  return nnx.LayerNorm(num_features, epsilon=LAYER_NORM_EPS, dtype=dtype,
                       use_fast_variance=False, rngs=rngs)


def batch_norm(num_features, dtype, rngs):
  return nnx.BatchNorm(num_features, momentum=BN_MOMENTUM, epsilon=BN_EPS, dtype=dtype,
                       use_fast_variance=False, rngs=rngs)   # as layer_norm


def dense(in_features, out_features, dtype, rngs, use_bias=True):
  return nnx.Linear(in_features, out_features, use_bias=use_bias, dtype=dtype,
                    kernel_init=dense_init, rngs=rngs)


DEPTHWISE_MODES = ("auto", "grouped", "shifted")


class DepthwiseConv(nnx.Conv):
  """nnx.Conv with feature_group_count == channels, computed by the fastest form here.

  Same parameters (`kernel` (k, k, 1, C), `bias`) and results in every form
  (kernels/depthwise_conv.py):

    auto      on a CPU the compiled kernel (float32; its backward the shifted sum's), or
              the pure-JAX shifted sum where it cannot run (bfloat16, no compiler); on a
              GPU or TPU the grouped lax.conv (cuDNN's)
    grouped   the grouped lax.conv everywhere (ONNX export: one Conv node, group=C)
    shifted   the pure-JAX shifted sum everywhere (jax.export artefacts: no custom call)

  `depthwise_conv_mode(mode)` sets the form for code traced within it.
  """

  mode = "auto"     # set by depthwise_conv_mode() while tracing

  def __call__(self, inputs):
    mode = DepthwiseConv.mode
    if mode == "grouped" or (mode == "auto" and jax.default_backend() != "cpu"):
      return super().__call__(inputs)
    dtype = self.dtype or jnp.result_type(inputs, self.kernel[...])
    x, kernel = inputs.astype(dtype), self.kernel[...].astype(dtype)
    bias = None if self.bias is None else self.bias[...].astype(dtype)
    strides, padding = self._strides_and_padding()
    if mode == "auto" and depthwise_kernels.cpu_kernel_applies(x, kernel, bias):
      return depthwise_kernels.depthwise_conv_cpu(x, kernel, bias, strides, padding)
    return depthwise_kernels.shifted_sum(x, kernel, bias, strides, padding)

  def _strides_and_padding(self):
    """((sh, sw), (ph, pw)) of this conv; only symmetric padding is supported."""
    kernel_h, kernel_w = self.kernel_size
    if isinstance(self.padding, str):                 # 'SAME' for the 1x1 case
      if self.padding != "SAME" or kernel_h % 2 == 0 or kernel_w % 2 == 0:
        raise ValueError(f"DepthwiseConv: unsupported padding {self.padding!r}")
      pad_h, pad_w = kernel_h // 2, kernel_w // 2
    else:
      (pad_h, pad_h_hi), (pad_w, pad_w_hi) = self.padding
      if (pad_h, pad_w) != (pad_h_hi, pad_w_hi):
        raise ValueError(f"DepthwiseConv: padding must be symmetric, got {self.padding}")
    strides = ((self.strides,) * 2 if isinstance(self.strides, int)
               else tuple(self.strides))
    return strides, (pad_h, pad_w)


@contextlib.contextmanager
def class_setting(cls, name, value, known, what):
  """Within: cls.name is `value`, one of `known` (else a ValueError naming `what`). For
  the settings read while a function is traced (jax.jit caches a trace: a function
  traced under one setting keeps it)."""
  if value not in known:
    raise ValueError(f"unknown {what} {value!r}; known: {known}")
  previous = getattr(cls, name)
  setattr(cls, name, value)
  try:
    yield
  finally:
    setattr(cls, name, previous)


def depthwise_conv_mode(mode):
  """Within: every DepthwiseConv traces in form `mode` (DEPTHWISE_MODES)."""
  return class_setting(DepthwiseConv, "mode", mode, DEPTHWISE_MODES, "depth-wise conv mode")


def compiled_kernels_allowed():
  """Whether code traced now may call this process's compiled CPU kernels: not while
  exports trace (they set a portable depth-wise form, "grouped" or "shifted")."""
  return DepthwiseConv.mode == "auto"


def depthwise_conv(channels, kernel_size, dtype, rngs, stride=1, use_bias=True):
  """Depth-wise k x k conv with PyTorch's symmetric padding k // 2 (exact halving)."""
  pad = kernel_size // 2
  return DepthwiseConv(channels, channels, (kernel_size, kernel_size), strides=stride,
                       padding=((pad, pad), (pad, pad)), feature_group_count=channels,
                       use_bias=use_bias, dtype=dtype, kernel_init=conv_init, rngs=rngs)


def conv(in_features, out_features, kernel_size, dtype, rngs, stride=1, use_bias=False):
  """Dense k x k conv with PyTorch's padding k // 2 (HRNet's convs have no bias)."""
  pad = kernel_size // 2
  return nnx.Conv(in_features, out_features, (kernel_size, kernel_size), strides=stride,
                  padding=((pad, pad), (pad, pad)), use_bias=use_bias, dtype=dtype,
                  kernel_init=conv_init, rngs=rngs)


def drop_path(rate, rngs):
  """Stochastic depth: drops a sample's whole residual branch ((N, H, W, C) input)."""
  return nnx.Dropout(rate, broadcast_dims=(1, 2, 3), rngs=rngs)


def dropout(rate, rngs):
  """nnx.Dropout, or None for rate 0 (no RNG state in the checkpoint)."""
  return nnx.Dropout(rate, rngs=rngs) if rate > 0 else None


def apply(module, x):
  """module(x), or x when the optional module is None."""
  return x if module is None else module(x)


def _same_structure(graphdef, state, module):
  """True when `module` splits to `graphdef` and a state of the same shapes and dtypes."""
  other_graphdef, other_state = nnx.split(module)
  if other_graphdef != graphdef:
    return False
  signature = lambda s: jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), s)
  return signature(other_state) == signature(state)


def _scan_modules(modules, x):
  """modules[-1](... modules[0](x)) for structurally identical modules, as one lax.scan.

  Their states are stacked along a new leading axis for the scan and the updated states
  (BatchNorm statistics, RNG counts) written back into each module, so the modules keep
  their own parameters and names (checkpoints are unchanged).
  """
  graphdef, _ = nnx.split(modules[0])
  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves),
                         *[nnx.split(m)[1] for m in modules])

  def body(carry, state):
    module = nnx.merge(graphdef, state)
    carry = module(carry)
    return carry, nnx.split(module)[1]

  x, new_states = jax.lax.scan(body, x, stacked)
  for index, module in enumerate(modules):
    nnx.update(module, jax.tree.map(lambda leaf: leaf[index], new_states))
  return x


def apply_sequence(modules, x):
  """modules[-1](... modules[0](x)), compiling each run of identical modules once.

  Consecutive modules with the same structure (graph, static attributes, state shapes)
  run as one `lax.scan` over their stacked states, so XLA compiles their body once
  instead of once per module: HRVMamba-tiny's 44 DVSS blocks compile as 13. The result
  equals the Python loop (tests/test_hrvmamba.py). `x` may be any pytree that each
  module maps to one of the same structure and shapes.
  """
  modules, start = list(modules), 0
  while start < len(modules):
    graphdef, state = nnx.split(modules[start])
    stop = start + 1
    while stop < len(modules) and _same_structure(graphdef, state, modules[stop]):
      stop += 1
    x = (modules[start](x) if stop - start == 1
         else _scan_modules(modules[start:stop], x))
    start = stop
  return x


def gelu(x):
  """The exact erf GELU of PyTorch's nn.GELU() (jax.nn.gelu defaults to tanh)."""
  return jax.nn.gelu(x, approximate=False)


class Mlp(nnx.Module):
  """fc1 -> GELU -> Dropout -> fc2 -> Dropout, channels-last (VMamba's Mlp)."""

  def __init__(self, dim, hidden, *, dtype, rngs, drop_rate=0.0):
    self.fc1 = dense(dim, hidden, dtype, rngs)
    self.fc2 = dense(hidden, dim, dtype, rngs)
    self.dropout = dropout(drop_rate, rngs)

  def __call__(self, x):
    x = apply(self.dropout, gelu(self.fc1(x)))       # (..., hidden)
    return apply(self.dropout, self.fc2(x))


def field_defaults(config_class):
  """{field: default} of a model-config dataclass (the fields that have one)."""
  return {f.name: f.default for f in dataclasses.fields(config_class)
          if f.default is not dataclasses.MISSING}


class TypedConfig:
  """Base of the families' frozen config dataclasses: parsing and the shared checks."""

  @classmethod
  def from_config(cls, config):
    """Validates `config.model` (a ConfigDict or dict) into this dataclass."""
    return typed_config(cls, config)

  def fail(self, field, why):
    raise ValueError(f"config.model.{field}={getattr(self, field)!r}: {why}")

  def validate_shared(self):
    """Fields both families have: keypoints, stochastic depth, scan, dtype."""
    from mamkpd_jax.kernels import AUTO, SCAN_IMPLS   # pylint: disable=g-import-not-at-top
    if self.num_keypoints < 1:
      self.fail("num_keypoints", "must be >= 1")
    if not 0.0 <= self.drop_path_rate < 1.0:
      self.fail("drop_path_rate", "must be in [0, 1)")
    if self.scan_impl != AUTO and self.scan_impl not in SCAN_IMPLS:
      self.fail("scan_impl", f"available implementations: {AUTO!r} (by backend) or one of "
                f"{sorted(SCAN_IMPLS)}")
    if self.dtype not in COMPUTE_DTYPES:
      self.fail("dtype", f"one of {COMPUTE_DTYPES}")


def typed_config(config_class, config):
  """Validates `config.model` (ConfigDict or dict) into the frozen `config_class`.

  `name` selects the family (models.build_model) and must be the class's; list values
  become tuples; unknown or missing fields are errors naming them.
  """
  values = dict(config)
  family = values.pop("name", config_class.name)
  if family != config_class.name:
    raise ValueError(f"config.model.name={family!r} does not describe a "
                     f"{config_class.name} model")
  names = {f.name for f in dataclasses.fields(config_class)}
  unknown = sorted(set(values) - names)
  if unknown:
    raise ValueError(f"config.model: unknown field(s) {unknown} for the {family} family; "
                     f"known: {sorted(names)}")
  values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
  try:
    model_config = config_class(**values)
  except TypeError as e:  # a missing required field
    raise ValueError(f"config.model: {e}") from None
  model_config.validate()
  return model_config
