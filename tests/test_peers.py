"""The peers (benchmarking/peer_models.py) against their published sizes, and their ONNX
Runtime export against PyTorch; the rate fields every benchmark row carries."""

import numpy as np
import pytest

from mamkpd_jax.benchmarking import peers, roofline

torch = pytest.importorskip("torch")
# pylint: disable-next=g-import-not-at-top,wrong-import-position
from mamkpd_jax.benchmarking import peer_models


def sizes(model, height=256, width=192):
  """(parameters in millions, GMACs of one crop) by torch's FlopCounterMode."""
  return (sum(p.numel() for p in model.parameters()) / 1e6,
          peers.peer_gmacs(torch, model, height, width))


# HRNet's repository (whose table mmpose copies) divides its MAC count by 1024^3:
# "7.1 GFLOPs" there are 7.1 x 2^30 = 7.62e9 MACs.
GIB = 2 ** 30 / 1e9


def test_hrnet_w32_matches_mmpose_published_size():
  params, gmacs = sizes(peer_models.build("hrnet_w32", 17, 256, 192))
  assert params == pytest.approx(28.5, rel=0.01)             # mmpose / HRNet: 28.5M
  assert gmacs == pytest.approx(7.1 * GIB, rel=0.01)         # 7.1 "GFLOPs"


def test_vitpose_b_matches_published_size():
  """ViTPose's 86M and 17.1 GFLOPs are its ViT-B backbone's; the head adds ~4.2M
  parameters (two deconvs) and ~1.4 GMACs."""
  model = peer_models.build("vitpose_b", 17, 256, 192)
  params, gmacs = sizes(model)
  head_params = sum(p.numel() for p in model.head.parameters()) / 1e6
  assert params == pytest.approx(90.0, rel=0.01)
  assert params - head_params == pytest.approx(86.0, rel=0.01)
  # the head by hand: deconvs (in x out x 4 x 4 per input pixel), then the 1x1 conv
  head_gmacs = (768 * 256 * 16 * 16 * 12 + 256 * 256 * 16 * 32 * 24 + 256 * 17 * 64 * 48) / 1e9
  assert gmacs - head_gmacs == pytest.approx(17.1, rel=0.01)


def test_rtmpose_m_matches_published_size():
  params, gmacs = sizes(peer_models.build("rtmpose_m", 17, 256, 192))
  assert params == pytest.approx(13.59, rel=0.005)           # RTMPose README: 13.59M
  assert gmacs == pytest.approx(1.93, rel=0.02)              # 1.93 "GFLOPs"


@pytest.mark.parametrize("name", ["hrnet_w32", "vitpose_b", "rtmpose_m"])
def test_onnxruntime_output_equals_torch_at_another_batch(name):
  """The export (traced at batch 1) runs at batch 3 and gives torch's outputs."""
  pytest.importorskip("onnxruntime")
  torch.manual_seed(0)
  model = peer_models.build(name, 5, 64, 64)
  session, export_s = peers.onnxruntime_session(torch, model, 64, 64)
  assert export_s > 0
  x = peers.normalised_crops(3, 64, 64)                      # (3, 3, 64, 64)
  with torch.inference_mode():
    want = [w.numpy() for w in peers.outputs(model(torch.from_numpy(x)))]
  got = session.run(None, {"input": x})
  shapes = {"rtmpose_m": [(3, 5, 128), (3, 5, 128)]}.get(name, [(3, 5, 16, 16)])
  assert [g.shape for g in got] == [w.shape for w in want] == shapes
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * np.abs(w).max())


def test_crops_are_ours_normalised_channels_first():
  crops = peers.normalised_crops(2, 32, 64)
  from mamkpd_jax.benchmarking import timing   # pylint: disable=import-outside-toplevel
  raw = timing.random_crops(2, 32, 64).astype(np.float32)
  assert crops.shape == (2, 3, 32, 64) and crops.dtype == np.float32
  np.testing.assert_allclose(crops[1, 2], (raw[1, :, :, 2] - 103.53) / 57.375, rtol=1e-6)


def test_peers_need_multiples_of_32():
  with pytest.raises(ValueError, match="multiples of 32.*64x48"):
    peer_models.build("hrnet_w32", 17, 64, 48)


def test_rate_fields_are_consistent():
  row = dict(batch=8, latency_ms=400.0, images_per_s=20.0)
  fields = roofline.rate_fields(row, 2.5, 100.0)
  assert fields == dict(ms_per_crop=50.0, gmacs=2.5, gmacs_per_s=50.0,
                        matmul_gmacs_per_s=100.0, pct_of_matmul=50.0)
  assert "pct_of_matmul" not in roofline.rate_fields(row, 2.5, None)
  assert roofline.matmul_rate(2048, 0.055) == pytest.approx(2048 ** 3 / 1e9 / 0.055,
                                                            rel=1e-4)
