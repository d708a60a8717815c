"""What HRVMamba's pure-JAX DCNv4 (kernels/dcnv4.py, impl="jax") lowers to, per branch.

No accelerator is needed: the op is lowered (StableHLO, before any compiler pass) for TPU
through `jax.export` and for CUDA under an abstract H100 mesh, and compiled for the CPU;
with `--tpu_topology` it is also compiled for a TPU without a TPU (deviceless AOT, needs
`pip install "jax[tpu]"`: libtpu). For each DCNv4 call of the model (one per branch width)
it prints, forward and forward+backward (jax.grad w.r.t. value and offset_mask):

  gather / scatter   stablehlo ops in the module; each sits in the scan over the K kernel
                     points, so each runs K = 9 times per call
  row                one gathered slice: D contiguous channels (bytes at the value dtype)
  rows/call          N*Q*G*K*4 rows gathered per call (Q = H*W, 4 bilinear corners)
  largest            the module's largest tensor over its largest input (elements)
  G or K minor       arrays of >= N*Q*G elements in the scans (carried, in the bodies and
                     what they call) whose minor axis is not Q or D (lane_sparse): 0
  --tpu_topology     also XLA:TPU's gathers, scatters, fusions, its largest array as
                     stored in (r, 128) tiles, and memory_analysis() temp and peak bytes

    python scripts/dcnv4_hlo.py                           # HRVMamba-T, 256x192, batch 1, 8
    python scripts/dcnv4_hlo.py --variant=base --batch=8 --dtype=bfloat16
    python scripts/dcnv4_hlo.py --tpu_topology=v5e:2x2    # also XLA:TPU's optimised HLO

Facts and what they mean: docs/hrvmamba.md, "DCNv4 on accelerators".
"""

import collections
import math
import re

import jax
import jax.numpy as jnp
from absl import app, flags

from mamkpd_jax.benchmarking import lowering
from mamkpd_jax.kernels.dcnv4 import dcnv4
from mamkpd_jax.models.hrvmamba import dcn, variants

KERNEL_POINTS = dcn.KERNEL_POINTS                   # 3x3
CORNERS = 4                                         # bilinear
COUNTED = ("gather", "scatter", "while", "dynamic_slice", "dynamic_update_slice",
           "dot_general", "custom_call")
TENSOR = re.compile(r"tensor<((?:\d+x)*)([a-z]+\d+)>")
SIGNATURE = re.compile(r":\s*\(([^()]*)\)\s*->\s*(tensor<[^>]*>)")


def forward_fn(groups):
  return lambda value, offset_mask: dcnv4(value, offset_mask, groups=groups, impl="jax")


def gradient_fn(groups):
  """d/d(value, offset_mask) of sum(out**2): the forward and the custom VJP together."""
  forward = forward_fn(groups)
  loss = lambda v, om: jnp.sum(jnp.square(forward(v, om).astype(jnp.float32)))
  return jax.grad(loss, argnums=(0, 1))


def lower_cpu(fn, *args):
  return jax.jit(fn).lower(*args).as_text()


def _tensor(text):
  """'tensor<2x3xf32>' -> ((2, 3), 'f32')."""
  dims, dtype = TENSOR.fullmatch(text.strip()).groups()
  return tuple(int(d) for d in dims.split("x") if d), dtype


def _op_name(line):
  match = re.search(r'(?:=\s*|^\s*)"?stablehlo\.([a-z_]+)', line)
  return match.group(1) if match else None


def stablehlo_facts(text):
  """Counts and shapes in a StableHLO module's text (jax.export or .lower().as_text()).

  Returns a dict: `ops` (Counter over COUNTED), `gathers` [(operand shape, dtype,
  slice_sizes, result shape)], `scatters` [(operand shape, dtype, update shape, region
  ops)], `largest` (elements of the largest tensor anywhere), `inputs` (elements of each
  argument of @main). ValueError for text without a StableHLO @main.
  """
  match = re.search(r"func\.func public @main\(([^\n]*)\)\s*->", text)
  if not match:
    raise ValueError("not a StableHLO module: no `func.func public @main`")
  inputs = [math.prod(_tensor(t.group(0))[0]) for t in TENSOR.finditer(match.group(1))]
  facts = {"ops": collections.Counter(), "gathers": [], "scatters": [], "inputs": inputs,
           "largest": 0}
  lines = [re.sub(r"\s*loc\(.*$", "", line) for line in text.splitlines()
           if not line.startswith("#loc")]
  region = None                    # inside a scatter: the ops of its update computation
  for line in lines:
    for found in TENSOR.finditer(line):
      facts["largest"] = max(facts["largest"], math.prod(_tensor(found.group(0))[0]))
    name = _op_name(line)
    if region is not None:
      if line.strip().startswith("})"):
        operands, _ = SIGNATURE.search(line).groups()
        (shape, dtype), _, (update, _) = (_tensor(t) for t in operands.split(", "))
        facts["scatters"].append((shape, dtype, update, tuple(region)))
        region = None
      elif name and name != "return":
        region.append(name)
      continue
    if name in COUNTED:
      facts["ops"][name] += 1
    if name == "gather":
      operands, result = SIGNATURE.search(line).groups()
      shape, dtype = _tensor(operands.split(", ")[0])
      sizes = tuple(int(s) for s in re.search(r"slice_sizes = array<i64: ([\d, ]+)>",
                                              line).group(1).split(", "))
      facts["gathers"].append((shape, dtype, sizes, _tensor(result)[0]))
    elif name == "scatter":
      region = []
  return facts


def _functions(lines):
  """{name: its lines} for every func.func of a StableHLO module (2-space indented)."""
  functions, name = {}, None
  for line in lines:
    match = re.match(r"  func\.func (?:public|private) @([\w.$-]+)\(", line)
    if match:
      name = match.group(1)
      functions[name] = []
    elif line.startswith("  }"):
      name = None
    elif name:
      functions[name].append(line)
  return functions


def _while_bodies(lines):
  """The lines of each `stablehlo.while`'s carried types and `do { ... }` region."""
  bodies = []
  for start, line in enumerate(lines):
    if "stablehlo.while(" not in line:
      continue
    indent = len(line) - len(line.lstrip())
    body, inside = [line], False
    for inner in lines[start + 1:]:
      closing = inner.startswith(" " * indent + "}") and len(inner) - len(inner.lstrip()) == indent
      if closing and "do {" in inner:
        inside = True
      elif closing:
        break
      elif inside:
        body.append(inner)
    bodies.append(body)
  return bodies


def scan_body_shapes(text):
  """Shapes of every tensor in the module's while loops (the scans over kernel points):
  their carried values, their bodies and the functions those call, transitively.

  Returns a set of (shape, dtype). ValueError for text without a StableHLO @main.
  """
  lines = [re.sub(r"\s*loc\(.*$", "", line) for line in text.splitlines()
           if not line.startswith("#loc")]
  functions = _functions(lines)
  if "main" not in functions:
    raise ValueError("not a StableHLO module: no `func.func public @main`")
  pending = [line for body in _while_bodies(functions["main"]) for line in body]
  seen, shapes = set(), set()
  while pending:
    line = pending.pop()
    shapes.update(_tensor(found.group(0)) for found in TENSOR.finditer(line))
    for callee in re.findall(r"call @([\w.$-]+)\(", line):
      if callee not in seen and callee in functions:
        seen.add(callee)
        pending.extend(functions[callee])
  return shapes


def lane_sparse(shapes, min_elements, minor_ok):
  """The (shape, dtype)s of at least `min_elements` whose minor axis (trailing size-1
  axes dropped: they take no lanes) is not in `minor_ok`. XLA:TPU stores the two minor
  axes in (r, 128) tiles, so a (..., Q, G) array takes 128/G times its size."""
  sparse = []
  for shape, dtype in sorted(shapes):
    dims = list(shape)
    while len(dims) > 1 and dims[-1] == 1:
      dims.pop()
    if len(dims) > 1 and math.prod(dims) >= min_elements and dims[-1] not in minor_ok:
      sparse.append((shape, dtype))
  return sparse


def compiled_facts(text):
  """Counts in XLA's optimised HLO text (.compile().as_text()).

  Returns `ops` (Counter: gather, scatter, while, fusion, custom-call), `trip_counts`
  of the while loops XLA knows, and `gathers_fused` / `scatters_fused`: how many gathers
  (scatters) share a computation with a floating-point multiply, i.e. were fused with
  the bilinear weighting rather than left as their own kernel.
  """
  ops = collections.Counter(re.findall(
      r"[ })](gather|scatter|while|fusion|custom-call)\(", text))
  trips = [int(n) for n in re.findall(r'known_trip_count":\{"n":"(\d+)"', text)]
  fused = collections.Counter()
  for computation in re.split(r"\n(?=\S)", text):        # computations start at column 0
    weighted = re.search(r"= (?:f32|bf16|f16)\S* multiply\(", computation) is not None
    for op in ("gather", "scatter"):
      fused[op] += weighted * len(re.findall(rf"[ )]{op}\(", computation))
  return {"ops": ops, "trip_counts": trips, "gathers_fused": fused["gather"],
          "scatters_fused": fused["scatter"]}


def tiled_padding(text):
  """{(dtype, shape): factor} for arrays in XLA:TPU's optimised HLO laid out in (r, 128)
  tiles: storage over logical size, the minor dim rounded up to 128 lanes and the
  second-minor to r rows (a (..., 32) array uses 32 of 128 lanes: factor >= 4)."""
  factors = {}
  for dtype, dims, order, rows, lanes in re.findall(
      r"\b([a-z]+\d+)\[([\d,]+)\]\{([\d,]+):T\((\d+),(\d+)\)", text):
    shape = tuple(int(d) for d in dims.split(","))
    minor = [int(i) for i in order.split(",")]
    padded = dict(enumerate(shape))
    padded[minor[0]] = -(-shape[minor[0]] // int(lanes)) * int(lanes)
    if len(minor) > 1:
      padded[minor[1]] = -(-shape[minor[1]] // int(rows)) * int(rows)
    factors[(dtype, shape)] = max(factors.get((dtype, shape), 0),
                                  math.prod(padded.values()) / math.prod(shape))
  return factors


def compile_tpu(topology, fn, *args):
  """XLA:TPU's optimised HLO text and memory_analysis() of `fn` for one chip of
  `topology` (e.g. "v5e:2x2"), compiled on this host without a TPU (needs libtpu)."""
  compiled = lowering.compile_for_tpu(lowering.tpu_topology_device(topology), fn, args)
  return compiled.as_text(), compiled.memory_analysis()


def row_summary(facts):
  """'gathers 4 x (1,32) f32 = 128 B' style summary of one module's facts."""
  parts = [f"gather {facts['ops']['gather']}", f"scatter {facts['ops']['scatter']}",
           f"while {facts['ops']['while']}", f"dot {facts['ops']['dot_general']}",
           f"dyn-slice {facts['ops']['dynamic_slice']}"]
  if facts["gathers"]:
    _, dtype, sizes, _ = facts["gathers"][0]
    parts.append(f"row {sizes[-1]}x{dtype} = {sizes[-1] * _bytes(dtype)} B")
  if facts["scatters"]:
    shape, dtype, _, region = facts["scatters"][0]
    parts.append(f"scatter into {'x'.join(map(str, shape))}x{dtype} ({'+'.join(region)})")
  parts.append(f"largest {facts['largest'] / max(facts['inputs']):.2f} x input")
  return ", ".join(parts)


def _bytes(dtype):
  return max(1, int(re.search(r"\d+", dtype).group(0)) // 8)


def report(variant, batches, dtypes, platforms, tpu_topology=None, input_hw=(256, 192)):
  """Prints one block per (branch, batch, dtype): per-call sizes, then per platform and
  direction what the lowered (and compiled) module holds."""
  lower = {"tpu": lowering.lower_for_tpu, "cuda": lowering.lower_for_cuda, "cpu": lower_cpu}
  mib = lambda size: f"{size / 2**20:.1f} MiB"
  sites = dcn.call_sites(variant, *input_hw)
  print(f"HRVMamba-{variant} at {input_hw[0]}x{input_hw[1]}: DCNv4 calls per forward "
        + ", ".join(f"branch {b.index} {b.calls}" for b in sites)
        + f" (total {sum(b.calls for b in sites)})")
  for site in sites:
    for batch in batches:
      for dtype in dtypes:
        rows = batch * site.height * site.width * site.groups * KERNEL_POINTS * CORNERS
        d = site.channels // site.groups
        row_bytes = d * jnp.dtype(dtype).itemsize
        print(f"\nbranch {site.index}: N={batch} {site.height}x{site.width}, "
              f"C={site.channels} = G {site.groups} x D {d}, P={site.lanes}, {dtype}: "
              f"{rows} rows/call gathered forward ({rows * row_bytes / 2**20:.1f} MiB), "
              f"backward re-gathers {rows} and scatter-adds {rows} float32 rows "
              f"({rows * d * 4 / 2**20:.1f} MiB)")
        args = site.inputs(batch, jnp.dtype(dtype))
        for direction, fn in (("forward", forward_fn(site.groups)),
                              ("fwd+bwd", gradient_fn(site.groups))):
          for platform in platforms:
            text = lower[platform](fn, *args)
            queries = site.height * site.width
            sparse = lane_sparse(scan_body_shapes(text), batch * queries * site.groups,
                                 (queries, d))
            print(f"  {direction:8s}{platform:5s} {row_summary(stablehlo_facts(text))}, "
                  f"scan arrays with G or K minor: {len(sparse)}")
          if "cpu" in platforms:
            text = jax.jit(fn).lower(*args).compile().as_text()
            print(f"  {direction:8s}cpu optimised: {_compiled_summary(compiled_facts(text))}")
          if tpu_topology:
            text, memory = compile_tpu(tpu_topology, fn, *args)
            stored = {key: factor * math.prod(key[1]) * _bytes(key[0])
                      for key, factor in tiled_padding(text).items()}
            (dtype_, shape), size = max(stored.items(), key=lambda item: item[1])
            print(f"  {direction:8s}{tpu_topology} optimised: "
                  f"{_compiled_summary(compiled_facts(text))}; largest stored array "
                  f"{dtype_}{list(shape)}: {mib(size)} in (r, 128) tiles, "
                  f"{size / math.prod(shape) / _bytes(dtype_):.0f}x its logical size; "
                  f"memory_analysis temp {mib(memory.temp_size_in_bytes)}, "
                  f"peak {mib(memory.peak_memory_in_bytes)}")


def _compiled_summary(facts):
  ops = facts["ops"]
  return (f"gather {ops['gather']} ({facts['gathers_fused']} fused with a multiply), "
          f"scatter {ops['scatter']} ({facts['scatters_fused']} fused with a multiply), "
          f"while {ops['while']} (trips {facts['trip_counts'] or 'not shown'}), "
          f"fusion {ops['fusion']}")


def define_flags():
  """Command-line flags (defined only when run as a script, so tests can import this)."""
  return {
      "variant": flags.DEFINE_enum("variant", "tiny", sorted(variants.VARIANTS),
                                   "HRVMamba variant."),
      "batch": flags.DEFINE_list("batch", ["1", "8"], "Batch sizes."),
      "dtype": flags.DEFINE_list("dtype", ["float32"], "float32 and/or bfloat16."),
      "platforms": flags.DEFINE_list("platforms", ["tpu", "cuda", "cpu"],
                                     "Lower for these (cpu is also compiled)."),
      "input": flags.DEFINE_list("input", ["256", "192"], "Input height, width."),
      "tpu_topology": flags.DEFINE_string(
          "tpu_topology", None, "Also compile for one chip of this TPU topology, e.g. "
          "v5e:2x2, v4:2x2x1, v5p:2x2x1, v6e:2x2 (needs libtpu: pip install 'jax[tpu]')."),
  }


def parse(values):
  """Flag values -> report()'s arguments; ValueError naming the flag when one is wrong."""
  try:
    batches = [int(b) for b in values["batch"]]
    input_hw = tuple(int(s) for s in values["input"])
  except ValueError as error:
    raise ValueError(f"--batch and --input take integers: {error}") from None
  if not batches or min(batches) < 1:
    raise ValueError(f"--batch: every batch size must be >= 1; got {values['batch']}")
  if len(input_hw) != 2:
    raise ValueError(f"--input takes HEIGHT,WIDTH; got {values['input']}")
  for dtype in values["dtype"]:
    if dtype not in ("float32", "bfloat16"):
      raise ValueError(f"--dtype: float32 or bfloat16; got {dtype!r}")
  for platform in values["platforms"]:
    if platform not in ("tpu", "cuda", "cpu"):
      raise ValueError(f"--platforms: tpu, cuda or cpu; got {platform!r}")
  dcn.call_sites(values["variant"], *input_hw)    # ValueError naming a bad size
  return dict(variant=values["variant"], batches=batches, dtypes=values["dtype"],
              platforms=values["platforms"], tpu_topology=values["tpu_topology"],
              input_hw=input_hw)


def main(argv):
  del argv
  try:
    arguments = parse({name: flag.value for name, flag in FLAGS.items()})
  except ValueError as error:
    raise app.UsageError(str(error))
  report(**arguments)


if __name__ == "__main__":
  FLAGS = define_flags()
  app.run(main)
