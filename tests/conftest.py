"""Shared fixtures: models are built (and their forward passes compiled) once per session.

Compiled programs are also kept in JAX's persistent compilation cache (a folder under
the system temp dir, per user), which the subprocess tests (main.py runs, two simulated
devices, two processes) inherit through the environment: the same step compiles once.
"""

import dataclasses
import functools
import math
import os
import tempfile

# Before JAX reads its configuration: shared by this process and its subprocesses.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"mamkpd-jax-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from mamkpd_jax.models import ModelConfig, build_model, model_config


def make_config(variant="tiny", **overrides):
  config = model_config(variant)
  for key, value in overrides.items():
    config[key] = value
  return ModelConfig.from_config(config)


@functools.lru_cache(maxsize=None)
def cached_model(variant, **overrides):
  """An eval-mode model per (variant, overrides), built once per test session."""
  model = build_model(make_config(variant, **overrides), seed=0)
  model.eval()
  return model


def with_config(model, **changes):
  """A copy of `model` (same parameters and state) with `changes` to its ModelConfig."""
  config = dataclasses.replace(model.config, **changes)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: type(model)(config, rngs=nnx.Rngs(0))))
  other = nnx.merge(graphdef, jax.tree.map(jnp.copy, nnx.state(model)))
  other.eval()
  return other


def with_dtype(model, dtype):
  """The same parameters in a model whose computation dtype is `dtype`."""
  return with_config(model, dtype=dtype)


@functools.lru_cache(maxsize=None)
def jitted_forward():
  """One jitted `model(images)`, shared so equal structures reuse the compilation."""
  return nnx.jit(lambda model, images: model(images))


def largest_intermediate(jaxpr):
  """Elements of the largest value any equation (at any nesting depth) produces."""
  largest = 0
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      largest = max(largest, math.prod(var.aval.shape) if hasattr(var.aval, "shape") else 0)
    for param in eqn.params.values():
      inner = getattr(param, "jaxpr", param)
      if hasattr(inner, "eqns"):
        largest = max(largest, largest_intermediate(inner))
  return largest


@pytest.fixture(scope="session")
def tiny_model():
  return cached_model("tiny")


@pytest.fixture(scope="session")
def key():
  return jax.random.key(0)


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory):
  """One workdir of test_inference.write_workdir (the tiny open-field model, a checkpoint
  at step 2), read (never written) by the inference, export, ONNX, predict and pretrained
  tests: written once per session instead of once per module."""
  from test_inference import write_workdir   # pylint: disable=g-import-not-at-top
  return write_workdir(tmp_path_factory.mktemp("trained_workdir"))
