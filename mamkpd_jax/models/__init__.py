"""The two model families in Flax NNX and what they share.

    models/common.py    shared: input normalisation, norms, depth-wise conv, MLP, DropPath,
                        typed-config helpers
    models/ss2d.py      shared: SS2D (four-direction selective scan), local mixer by choice
    models/stats.py     shared: parameter counts and FLOPs
    models/mamkpd/      MamKPD: stem, CMM, VSS blocks, encoder, deconvolution decoder
    models/hrvmamba/    HRVMamba: DCNv4 mixer, DVSS blocks, HRNet modules, converter

`config.model.name` ("mamkpd" | "hrvmamba") selects the family; `build_model` builds
either from its `config.model`.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from mamkpd_jax.models.hrvmamba import HRVMamba, HRVMambaConfig
from mamkpd_jax.models.mamkpd import (PAPER_SIZES, VARIANTS, MamKPD, ModelConfig,
                                      model_config)

# config.model.name -> (typed config class, model class).
FAMILIES = {
    "mamkpd": (ModelConfig, MamKPD),
    "hrvmamba": (HRVMambaConfig, HRVMamba),
}


def parse_model_config(config_model):
  """A `config.model` ConfigDict (or a typed config) -> the family's typed config.

  A config without `name` is MamKPD's (configs written before HRVMamba existed).
  """
  if any(isinstance(config_model, cls) for cls, _ in FAMILIES.values()):
    return config_model
  name = dict(config_model).get("name", "mamkpd")
  if name not in FAMILIES:
    raise ValueError(f"config.model.name={name!r}: unknown model family; "
                     f"known: {sorted(FAMILIES)}")
  return FAMILIES[name][0].from_config(config_model)


TITLES = {"mamkpd": "MamKPD", "hrvmamba": "HRVMamba"}


def model_title(config_model):
  """'MamKPD-base', 'HRVMamba-tiny', ... for a config.model (ConfigDict or typed)."""
  name = getattr(config_model, "name", None) or dict(config_model).get("name", "mamkpd")
  return f"{TITLES.get(name, name)}-{config_model.variant}"


def model_class(model_config):
  """The nnx.Module class a typed model config builds."""
  return FAMILIES[model_config.name][1]


# XLA:CPU spends ~0.25 s compiling each threefry random draw at the default
# optimisation level; initialisation runs once, so compile it at level 0 there
# (tiny model 17 s -> 7 s, MamKPD-B 11 s on 2 cores).
_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}
# Families initialised eagerly instead: HRVMamba-tiny's ~1,800 tensors made the one
# compiled init program take 407 s to build on the shared 2-core CPU, eager 87 s.
_EAGER_INIT = ("hrvmamba",)


def abstract_model(model_config):
  """The model's structure with shapes only (no arrays): graphdef and parameter shapes.

  HRVMamba is built for real instead (seconds to a minute): tracing its constructor
  costs quadratic time in Flax 0.12 / JAX 0.10 (each RNG-count update inside the trace
  formats an error message that walks the whole trace: tiny 197 s vs 87 s eager, on the
  loaded 2-core CPU).
  """
  model_config = parse_model_config(model_config)
  cls = model_class(model_config)
  if model_config.name in _EAGER_INIT:
    return cls(model_config, rngs=nnx.Rngs(0))
  return nnx.eval_shape(lambda: cls(model_config, rngs=nnx.Rngs(0)))


def build_model(model_config, seed=0):
  """The model a typed config or a `config.model` ConfigDict (validated) describes.

  MamKPD's initialisation runs as one compiled program, not hundreds of eager ops.
  """
  model_config = parse_model_config(model_config)
  cls = model_class(model_config)
  if model_config.name in _EAGER_INIT:
    return cls(model_config, rngs=nnx.Rngs(jax.random.key(seed)))
  graphdef, _ = nnx.split(abstract_model(model_config))

  def init_state(key):
    return nnx.split(cls(model_config, rngs=nnx.Rngs(key)))[1]

  options = _INIT_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
  state = jax.jit(init_state, compiler_options=options)(jax.random.key(seed))
  return nnx.merge(graphdef, state)


def forward_with_flip(model, crops):
  """Heatmaps of crops (B, ...) and of their mirror images (not flipped back), from one
  forward pass of 2B crops (one program, one launch; BatchNorm uses running statistics)."""
  both = model(jnp.concatenate([crops, crops[:, :, ::-1, :]]))      # (2B, h, w, K)
  # A reshape, not both[B:]: with a symbolic B, jax2onnx's tracing sizes that slice 0.
  both = both.reshape(2, crops.shape[0], *both.shape[1:])           # (2, B, h, w, K)
  return both[0], both[1]
