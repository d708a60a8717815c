"""The whole model with scan_impl="pallas" (interpreted on CPU) against "reference"."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from conftest import jitted_forward, with_config

STEPS = 3


def train_losses(model, images, targets):
  """Losses of STEPS Adam steps on the heatmap MSE, in training mode (BN, drop path)."""
  optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer):
    loss_fn = lambda model: jnp.mean((model(images) - targets) ** 2)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  model.train()
  return [float(train_step(model, optimizer)) for _ in range(STEPS)]


def test_pallas_model_matches_reference(tiny_model):
  images = jax.random.normal(jax.random.key(4), (2, 64, 48, 3))
  pallas = with_config(tiny_model, scan_impl="pallas")
  np.testing.assert_allclose(jitted_forward()(pallas, images),
                             jitted_forward()(tiny_model, images), rtol=1e-4, atol=1e-5)


def test_pallas_model_trains_like_reference(tiny_model):
  images = jax.random.normal(jax.random.key(5), (2, 64, 48, 3))
  targets = jax.random.uniform(jax.random.key(6), (2, 16, 12, 17))
  reference = train_losses(with_config(tiny_model), images, targets)
  pallas = train_losses(with_config(tiny_model, scan_impl="pallas"), images, targets)
  assert reference[-1] < reference[0]                    # it does train
  np.testing.assert_allclose(pallas, reference, rtol=1e-5)
