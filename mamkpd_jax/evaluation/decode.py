"""The one decode path of a top-down model: crops -> heatmaps -> keypoints in the image.

Evaluation (`evaluate.predict_dataset`), the `Estimator` and every exported artefact
(`export.serving`, and ONNX through it) call these functions, so the three agree by
construction:

    crop_heatmaps     (traced: inside jit / jax.export / ONNX conversion) the model's
                      heatmaps of the crops; with the flip test averaged with those of
                      their mirror images, flipped back by `codecs.flip_heatmaps` (one
                      function for numpy and traced arrays)
    to_image          (numpy, host) the codec's decode (argmax + sub-cell refinement)
                      mapped from input pixels to the image by `geometry.crop_to_image`
    argmax_keypoints  (traced, exported artefacts) the first step of the codec's decode,
                      argmax cell x codec.scale, in jnp; the sub-cell refinements (MSRA's
                      quarter shift, DARK's and UDP's blur and Newton step) stay in numpy
                      and OpenCV, so an artefact also returns its flip-averaged heatmaps,
                      which `to_image` decodes exactly as evaluation does
"""

import jax
import jax.numpy as jnp
import numpy as np

from mamkpd_jax.data_pipelines import codecs, geometry
from mamkpd_jax.models import forward_with_flip


def uses_udp(codec):
  """Whether crops are made with the UDP warp and mapped back with its inverse."""
  return isinstance(codec, codecs.UDPHeatmap)


def crop_heatmaps(model, crops, flip_test, flip_indices, flip_shift):
  """crops (B, H, W, 3) uint8 -> heatmaps (B, h, w, K), flip-averaged when flip_test.

  Traced (call it inside jit or export); `model` in inference mode. flip_indices and
  flip_shift: the dataset's left/right pairing and codec.flip_shift.
  """
  if not flip_test:
    return model(crops)
  heatmaps, mirrored = forward_with_flip(model, crops)            # (B, h, w, K) each
  return 0.5 * (heatmaps + codecs.flip_heatmaps(mirrored, flip_indices, flip_shift))


def to_image(heatmaps, codec, centers, scales):
  """Heatmaps (N, h, w, K) of crops -> keypoints (N, K, 2) in image pixels, scores (N, K).

  centers, scales: (N, 2) of the crops (transforms.BoxToCenterScale); numpy on the host.
  """
  heatmaps = np.asarray(heatmaps)
  if len(heatmaps) == 0:
    k = heatmaps.shape[-1] if heatmaps.ndim == 4 else 0
    return np.zeros((0, k, 2), np.float32), np.zeros((0, k), np.float32)
  in_crop, scores = codec.decode(heatmaps)                        # (N, K, 2), (N, K)
  in_image = geometry.crop_to_image(in_crop, np.asarray(centers), np.asarray(scales),
                                    codec.input_size, use_udp=uses_udp(codec))
  return in_image, scores


def argmax_keypoints(heatmaps, cell_scale):
  """(B, h, w, K) -> keypoints (B, K, 2) input px at the argmax cells x cell_scale (the
  first in row-major order, as the codec's), maxima (B, K). Traced; B may be symbolic.

  No sub-cell refinement and no zeroing of non-positive maxima (codec.decode does both).
  """
  batch, height, width, channels = heatmaps.shape
  flat = heatmaps.reshape(batch, height * width, channels)        # (B, h*w, K)
  index = jnp.argmax(flat, axis=1)                                # (B, K)
  row = jax.lax.div(index, width)          # index >= 0; % and // trip jax2onnx's symbolic B
  cells = jnp.stack([index - row * width, row], axis=-1)          # (B, K, 2) x, y
  return cells.astype(jnp.float32) * jnp.asarray(cell_scale, jnp.float32), flat.max(1)
