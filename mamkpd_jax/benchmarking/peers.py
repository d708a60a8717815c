"""The peers we are timed beside: HRNet-W32, ViTPose-B and RTMPose-m (peer_models.py,
plain PyTorch from their published definitions), each in PyTorch and in ONNX Runtime.

PyTorch: eval mode, inference_mode, float32 in PyTorch's default layout on a CPU; fp16
autocast (AMP) and channels-last on CUDA. ONNX Runtime: the same module (float32, CPU)
exported by torch.onnx's TorchScript exporter (`dynamo=False`: the default dynamo
exporter needs onnxscript, which torch does not install) with a dynamic batch, run on the
CPU execution provider with the session settings of our own ONNX rows
(export.onnx_export.onnx_session). Both take the crops of timing.random_crops,
normalised with ImageNet's mean and std, as (N, 3, H, W).

torch is optional (the "peers" extra: torch, onnx, onnxruntime): without it the peers
are skipped and the report says how to install them. On a loaded machine PyTorch's
OpenMP threads wait on each other at every operator's barrier and its rows slow down
far more than the others (a torch_threads field is in each row).
"""

import copy
import dataclasses
import functools
import io
import time
import warnings

import numpy as np
from absl import logging

from mamkpd_jax.benchmarking import roofline
from mamkpd_jax.benchmarking import timing as timing_lib
from mamkpd_jax.models import common

PEER_NAMES = {"hrnet_w32": "HRNet-W32", "vitpose_b": "ViTPose-B", "rtmpose_m": "RTMPose-m"}
ALIASES = {"vit_b16": "vitpose_b"}     # the name ViTPose-B had before it was built as such
RUNTIMES = ("torch", "onnxruntime")
INSTALL = 'pip install "mamkpd-jax[peers]"'
ONNX_OPSET = 17
MEAN = np.array(common.PIXEL_MEAN, np.float32)    # ImageNet, as our models normalise
STD = np.array(common.PIXEL_STD, np.float32)


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


def canonical_names(names):
  """`names` with aliases resolved; an unknown name is a ValueError naming the known."""
  names = tuple(ALIASES.get(name, name) for name in names)
  unknown = sorted(set(names) - set(PEER_NAMES))
  if unknown:
    raise ValueError(f"--peers: unknown peer(s) {unknown}; known: {sorted(PEER_NAMES)}")
  return tuple(dict.fromkeys(names))


def check_runtimes(runtimes):
  unknown = sorted(set(runtimes) - set(RUNTIMES))
  if unknown:
    raise ValueError(f"--peer_runtimes: unknown {unknown}; known: {', '.join(RUNTIMES)}")


def import_torch():
  """torch, or None when it is not installed."""
  try:
    import torch   # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return torch


def torch_peers(num_keypoints, height, width):
  """(torch, {name: () -> eval-mode module}), or an ImportError without torch."""
  import torch   # pylint: disable=g-import-not-at-top
  from mamkpd_jax.benchmarking import peer_models   # pylint: disable=g-import-not-at-top
  return torch, {name: functools.partial(peer_models.build, name, num_keypoints, height,
                                         width) for name in PEER_NAMES}


def peer_model(torch, module):
  """(eval-mode model, its parameter count): on CUDA, when there, in channels-last."""
  model = module().eval()
  if torch.cuda.is_available():
    model = model.to("cuda").to(memory_format=torch.channels_last)
  return model, sum(p.numel() for p in model.parameters())


def normalised_crops(batch, height, width):
  """timing_lib.random_crops as the peers take them: (N, 3, H, W) float32, normalised."""
  crops = (timing_lib.random_crops(batch, height, width).astype(np.float32) - MEAN) / STD
  return np.ascontiguousarray(crops.transpose(0, 3, 1, 2))


def outputs(result):
  """A peer's output as a tuple of arrays (RTMPose gives two)."""
  return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def torch_call(torch, model, batch, height, width):
  """(call, sync) of the PyTorch forward pass: AMP fp16 on CUDA, float32 on a CPU."""
  cuda = torch.cuda.is_available()
  device = next(model.parameters()).device
  x = torch.from_numpy(normalised_crops(batch, height, width)).to(device)
  if cuda:
    x = x.to(memory_format=torch.channels_last)

  def call():
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16,
                                                enabled=cuda):
      return model(x)
  return call, (lambda _: torch.cuda.synchronize()) if cuda else (lambda out: out)


def torch_fields(torch):
  cuda = torch.cuda.is_available()
  return dict(runtime="torch", dtype="float16 AMP" if cuda else "float32",
              device=torch.cuda.get_device_name() if cuda else "cpu",
              torch_version=torch.__version__, torch_threads=torch.get_num_threads())


def time_peer(torch, model, params, batch, height, width, timing):
  """One timing_row of a peer's PyTorch forward pass, timed alone."""
  compile_s, latency = timing_lib.time_calls(
      *torch_call(torch, model, batch, height, width), timing)
  return timing_lib.timing_row(batch, compile_s, latency, params=params,
                               **torch_fields(torch))


def peer_gmacs(torch, model, height, width):
  """Multiply-adds of one crop's forward pass, in billions: torch's FlopCounterMode
  (convolutions, transposed ones, matmuls; 2 FLOPs per MAC) on a copy of the model on
  the meta device (shapes only, nothing computed)."""
  from torch.utils import flop_counter   # pylint: disable=g-import-not-at-top
  meta = copy.deepcopy(model).to("meta")
  with torch.inference_mode(), flop_counter.FlopCounterMode(display=False) as counter:
    meta(torch.empty(1, 3, height, width, device="meta"))
  return counter.get_total_flops() / 2e9


def _cpu_copy(torch, model):
  if next(model.parameters()).device.type == "cpu":
    return model
  return copy.deepcopy(model).to("cpu").to(memory_format=torch.contiguous_format).float()


def onnx_bytes(torch, model, height, width):
  """The model's float32 forward pass as ONNX (opset ONNX_OPSET, dynamic batch)."""
  cpu = _cpu_copy(torch, model)
  x = torch.from_numpy(normalised_crops(1, height, width))
  with torch.inference_mode():
    names = [f"output{i}" for i in range(len(outputs(cpu(x))))]
  buffer = io.BytesIO()
  with warnings.catch_warnings():        # the TorchScript exporter's deprecation notice
    warnings.simplefilter("ignore")
    torch.onnx.export(cpu, (x,), buffer, dynamo=False, input_names=["input"],
                      output_names=names, opset_version=ONNX_OPSET,
                      dynamic_axes={name: {0: "batch"} for name in ["input", *names]})
  return buffer.getvalue()


def onnxruntime_session(torch, model, height, width):
  """(ONNX Runtime session, export seconds); ImportError (naming the install line)
  without onnxruntime."""
  from mamkpd_jax.export import onnx_export   # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  proto = onnx_bytes(torch, model, height, width)
  export_s = time.perf_counter() - start
  return onnx_export.onnx_session(proto), export_s


def onnxruntime_call(session, batch, height, width):
  """(call, sync) of the session on the normalised crops (it returns when done)."""
  feed = {session.get_inputs()[0].name: normalised_crops(batch, height, width)}
  return lambda: session.run(None, feed), lambda out: out


def max_rel_diff(torch, model, session, height, width, batch=2):
  """max |ORT - torch| / max |torch| over the outputs, float32 CPU, on `batch` crops."""
  cpu = _cpu_copy(torch, model)
  x = normalised_crops(batch, height, width)
  with torch.inference_mode():
    want = [w.numpy() for w in outputs(cpu(torch.from_numpy(x)))]
  got = session.run(None, {session.get_inputs()[0].name: x})
  return max(float(np.abs(g - w).max() / np.abs(w).max()) for g, w in zip(got, want))


@dataclasses.dataclass
class Peer:
  """One built peer: its module and, when asked for, its ONNX Runtime session."""

  name: str
  model: object
  params: int
  gmacs: float
  session: object = None
  onnx_fields: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PeerSet:
  """The peers of one run, built once, called at each batch in turns with our models."""

  torch: object = None
  peers: list = dataclasses.field(default_factory=list)
  runtimes: tuple = RUNTIMES
  input_size: tuple = (256, 192)
  runs: PeerRuns = dataclasses.field(default_factory=PeerRuns)

  def calls(self, batch):
    """{("peer", name, runtime): (call, sync)} of every built peer and runtime."""
    height, width = self.input_size
    calls = {}
    for peer in self.peers:
      if "torch" in self.runtimes:
        calls[("peer", peer.name, "torch")] = torch_call(self.torch, peer.model, batch,
                                                         height, width)
      if peer.session is not None:
        calls[("peer", peer.name, "onnxruntime")] = onnxruntime_call(peer.session, batch,
                                                                     height, width)
    return calls

  def add_rows(self, timed, batch, matmul_gmacs_per_s):
    """Appends (and prints) the rows of this batch's peer calls in `timed`."""
    for peer in self.peers:
      for runtime in RUNTIMES:
        if ("peer", peer.name, runtime) not in timed:
          continue
        row = timing_lib.timing_row(batch, *timed[("peer", peer.name, runtime)],
                                    model=PEER_NAMES[peer.name], peer=peer.name,
                                    params=peer.params, **torch_fields(self.torch))
        if runtime == "onnxruntime":
          row.update(runtime="onnxruntime", dtype="float32", device="cpu",
                     **peer.onnx_fields)
        row.update(roofline.rate_fields(row, peer.gmacs, matmul_gmacs_per_s))
        self.runs.rows.append(row)
        print(f"{row['model']:<14} {row['runtime']:<11} {row['dtype']:<9} batch "
              f"{batch:>4} {row['latency_ms']:10.3f} ms {row['images_per_s']:10.1f} "
              f"images/s", flush=True)


def build_peers(names, runtimes, num_keypoints, height, width, torch="import"):
  """The PeerSet of peers `names` in `runtimes`. Without torch (or with no names) none is
  built and runs.skipped says why; a peer that fails to build or export gets an error row
  and the others go on."""
  check_runtimes(runtimes)
  names = canonical_names(names)
  torch = import_torch() if torch == "import" else torch
  peer_set = PeerSet(torch=torch, runtimes=tuple(runtimes), input_size=(height, width))
  if not names or not runtimes:
    peer_set.runs.skipped = "no peers asked for (--peers= or --peer_runtimes= empty)"
  elif torch is None:
    peer_set.runs.skipped = (f"torch is not installed: {INSTALL} (the peers are PyTorch "
                             "modules; their ONNX Runtime rows are exported from them)")
  else:
    _, modules = torch_peers(num_keypoints, height, width)
    for name in names:
      peer = _build_peer(peer_set, name, modules[name])
      if peer is not None:
        peer_set.peers.append(peer)
  return peer_set


def _build_peer(peer_set, name, module):
  torch, (height, width) = peer_set.torch, peer_set.input_size
  try:
    model, params = peer_model(torch, module)
    peer = Peer(name, model, params, peer_gmacs(torch, model, height, width))
  except Exception as error:    # pylint: disable=broad-except  (a peer must not stop us)
    logging.exception("peer %s failed", name)
    peer_set.runs.rows.append(dict(model=PEER_NAMES[name], peer=name, runtime="torch",
                                   error=repr(error)))
    return None
  if "onnxruntime" in peer_set.runtimes:
    try:
      peer.session, export_s = onnxruntime_session(torch, model, height, width)
      peer.onnx_fields = dict(export_s=round(export_s, 1), onnx_opset=ONNX_OPSET,
                              max_rel_diff_to_torch=max_rel_diff(torch, model, peer.session,
                                                                 height, width))
    except ImportError as error:
      peer_set.runs.rows.append(dict(
          model=PEER_NAMES[name], peer=name, runtime="onnxruntime",
          error=str(error)))
    except Exception as error:    # pylint: disable=broad-except
      logging.exception("peer %s: ONNX Runtime failed", name)
      peer_set.runs.rows.append(dict(model=PEER_NAMES[name], peer=name,
                                     runtime="onnxruntime", error=repr(error)))
  return peer


def ratio_key(peer_row):
  """Our rows' field for a peer row: ratio_to_<peer> (PyTorch), ratio_to_<peer>_<runtime>."""
  runtime = peer_row.get("runtime", "torch")
  return f"ratio_to_{peer_row['peer']}" + ("" if runtime == "torch" else f"_{runtime}")


def add_ratios(rows, peer_rows):
  """Each of our inference rows gets images/s divided by each peer's at the same batch."""
  for row in (r for r in rows if r.get("mode", "inference") == "inference"):
    for peer in peer_rows:
      if peer.get("batch") == row["batch"] and peer.get("images_per_s"):
        row[ratio_key(peer)] = round(row["images_per_s"] / peer["images_per_s"], 3)
