"""The peers we are timed beside, in PyTorch: HRNet-W32 (timm's features_only backbone,
a 1x1 head on its stride-4 branch, HRNet's pose head) and ViT-B/16 with SimpleBaseline's
two-deconvolution head (ViTPose-B). fp16 autocast (AMP) and channels-last on CUDA,
float32 on a CPU. torch and timm are optional: without them the peers are skipped and
the report says why.
"""

import dataclasses

from absl import logging

from mamkpd_jax.benchmarking import timing as timing_lib

PEER_NAMES = {"hrnet_w32": "HRNet-W32", "vit_b16": "ViT-B/16 + deconv (ViTPose-B)"}


@dataclasses.dataclass
class PeerRuns:
  """What the peers gave: their rows (a failed peer's row has "error" instead of times)
  and, when none ran at all, why."""

  rows: list = dataclasses.field(default_factory=list)
  skipped: str | None = None

  def timed(self):
    return [row for row in self.rows if "images_per_s" in row]

  def failed(self):
    return [row for row in self.rows if "error" in row]


def torch_peers(num_keypoints, height, width):
  """(torch, {name: module constructor}), or an ImportError without torch and timm."""
  import timm    # pylint: disable=g-import-not-at-top
  import torch   # pylint: disable=g-import-not-at-top

  class HRNetPose(torch.nn.Module):
    """HRNet-W32 branches (timm), 1x1 head on the stride-4 branch (HRNet's pose head)."""

    def __init__(self):
      super().__init__()
      self.backbone = timm.create_model("hrnet_w32", features_only=True,
                                        feature_location="", out_indices=(1,))
      channels = self.backbone.feature_info.channels()[0]
      self.head = torch.nn.Conv2d(channels, num_keypoints, 1)

    def forward(self, x):
      return self.head(self.backbone(x)[0])

  class ViTPose(torch.nn.Module):
    """ViT-B/16 at the crop size, tokens -> (C, H/16, W/16), two deconvs, 1x1 head."""

    def __init__(self):
      super().__init__()
      self.backbone = timm.create_model("vit_base_patch16_224", img_size=(height, width),
                                        num_classes=0, global_pool="")
      dim = self.backbone.num_features
      layers = []
      for in_ch in (dim, 256):
        layers += [torch.nn.ConvTranspose2d(in_ch, 256, 4, 2, 1, bias=False),
                   torch.nn.BatchNorm2d(256), torch.nn.ReLU(inplace=True)]
      self.head = torch.nn.Sequential(*layers, torch.nn.Conv2d(256, num_keypoints, 1))

    def forward(self, x):
      tokens = self.backbone.forward_features(x)[:, self.backbone.num_prefix_tokens:]
      grid = tokens.transpose(1, 2).reshape(x.shape[0], -1, height // 16, width // 16)
      return self.head(grid)

  return torch, {"hrnet_w32": HRNetPose, "vit_b16": ViTPose}


def peer_model(torch, module):
  """(eval-mode channels-last model on CUDA when there, its parameter count)."""
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  model = module().to(device).eval().to(memory_format=torch.channels_last)
  return model, sum(p.numel() for p in model.parameters())


def time_peer(torch, model, params, batch, height, width, timing):
  """One timing_row of a peer: fp16 autocast (AMP) on CUDA, float32 on a CPU."""
  cuda = torch.cuda.is_available()
  device = next(model.parameters()).device
  sync = (lambda _: torch.cuda.synchronize()) if cuda else (lambda _: None)
  x = torch.randn(batch, 3, height, width, device=device)
  x = x.to(memory_format=torch.channels_last)

  def call():
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16,
                                                enabled=cuda):
      return model(x)

  compile_s, latency = timing_lib.time_calls(call, sync, timing)
  return timing_lib.timing_row(batch, compile_s, latency, params=params,
                               dtype="float16 AMP" if cuda else "float32",
                               device=torch.cuda.get_device_name() if cuda else "cpu")


def run_peers(names, batches, num_keypoints, height, width, timing):
  """PeerRuns of peers `names` at each batch size. A peer that fails gets an error row
  and the others go on; an unknown name is a ValueError naming the known ones."""
  unknown = sorted(set(names) - set(PEER_NAMES))
  if unknown:
    raise ValueError(f"unknown peer(s) {unknown}; known: {sorted(PEER_NAMES)}")
  if not names:
    return PeerRuns(skipped="no peers asked for (--peers=)")
  try:
    torch, modules = torch_peers(num_keypoints, height, width)
  except ImportError:
    return PeerRuns(skipped="torch/timm not installed")
  runs = PeerRuns()
  for name in names:
    try:
      model, params = peer_model(torch, modules[name])
      for batch in batches:
        row = time_peer(torch, model, params, batch, height, width, timing)
        runs.rows.append(dict(model=PEER_NAMES[name], peer=name, **row))
        print(f"{PEER_NAMES[name]:<30} batch {row['batch']:>4} {row['latency_ms']:10.3f} ms "
              f"{row['images_per_s']:10.1f} images/s", flush=True)
    except Exception as error:    # pylint: disable=broad-except  (a peer must not stop us)
      logging.exception("peer %s failed", name)
      runs.rows.append({"model": PEER_NAMES[name], "peer": name, "error": repr(error)})
  return runs


def add_ratios(rows, peer_rows):
  """Each of our inference rows gets images/s divided by each peer's at the same batch."""
  for row in (r for r in rows if r.get("mode", "inference") == "inference"):
    for peer in peer_rows:
      if peer.get("batch") == row["batch"] and peer.get("images_per_s"):
        row[f"ratio_to_{peer['peer']}"] = round(row["images_per_s"] / peer["images_per_s"], 3)
