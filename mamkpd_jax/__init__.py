"""mamkpd-jax: MamKPD, a Mamba-based real-time 2D keypoint detector, in JAX/Flax NNX."""

__version__ = "0.1.0"
