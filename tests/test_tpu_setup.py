"""Multi-host start on a Cloud TPU slice: `parallel.initialize_distributed` with the flags'
defaults calls `jax.distributed.initialize()` (no arguments) on a faked pod slice, and
nothing on one host, a CPU, or where JAX_PLATFORMS leaves the TPU out; off a TPU VM the
metadata server is never asked.

The slice is faked the way JAX itself would see it: `running_in_cloud_tpu_vm` (what
`import jax` sets on a TPU VM), GKE's environment variables, or a fake metadata server
behind jax/_src/clusters/cloud_tpu_cluster.py's `get_metadata`. JAX's own auto-detection
is asked the same question as a check that the fakes describe what we claim.
"""

import pytest

import jax
from jax._src import cloud_tpu_init
from jax._src import clusters
from jax._src.clusters import cloud_tpu_cluster

from mamkpd_jax.training import parallel

# Every variable JAX's TPU cluster detection reads; cleared so the host's own never leak in.
TPU_ENV = ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES", "TPU_PROCESS_ADDRESSES_PATH",
           "TPU_WORKER_ID", "TPU_SKIP_MDS_QUERY", "MEGASCALE_NUM_SLICES",
           "MEGASCALE_SLICE_ID", "MEGASCALE_COORDINATOR_ADDRESS", "JAX_COORDINATOR_PORT")


@pytest.fixture
def host(monkeypatch):
  """A fake host: {"calls": initialize()'s (args, kwargs), "metadata": asked keys};
  `tpu_vm(metadata)` makes it a Cloud TPU VM whose metadata server holds `metadata`."""
  state = {"calls": [], "metadata": []}
  for name in TPU_ENV:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(jax.distributed, "initialize",
                      lambda *args, **kwargs: state["calls"].append((args, kwargs)))
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)

  def no_metadata_server(key):
    state["metadata"].append(key)
    raise ConnectionError("no metadata server off a TPU VM")

  monkeypatch.setattr(cloud_tpu_cluster, "get_metadata", no_metadata_server)

  def tpu_vm(metadata=None):
    for module in (cloud_tpu_init, cloud_tpu_cluster, clusters.cluster):
      monkeypatch.setattr(module, "running_in_cloud_tpu_vm", True, raising=False)
    if metadata is not None:

      def get_metadata(key):
        state["metadata"].append(key)
        return (metadata[key], 200) if key in metadata else ("", 404)

      monkeypatch.setattr(cloud_tpu_cluster, "get_metadata", get_metadata)

  state["tpu_vm"] = tpu_vm
  return state


def gce_metadata(workers, slices=1):
  """A TPU VM's metadata server for host 0 of a slice of `workers` hosts (the old
  name:id:ip endpoint format, and the tpu-env block JAX reads MEGASCALE_* from)."""
  endpoints = ",".join(f"w{i}:{i}:10.0.0.{i + 1}" for i in range(workers))
  return {"agent-worker-number": "0", "worker-network-endpoints": endpoints,
          "tpu-env": f"ACCELERATOR_TYPE: 'v5litepod-{4 * workers}'\n"
                     f"MEGASCALE_NUM_SLICES: '{slices}'\n"}


def jax_would_detect():
  """(coordinator, num_processes, process_id) as jax.distributed.initialize() with no
  arguments would fill them in (JAX's own auto-detection, on the same fake host)."""
  found = clusters.ClusterEnv.auto_detect_unset_distributed_params(
      None, None, None, None, None, 1)
  return found[:3]


def test_gce_pod_slice_joins_with_no_arguments(host):
  host["tpu_vm"](gce_metadata(workers=4))
  assert parallel.cloud_tpu_process_count() == 4
  parallel.initialize_distributed()                  # main.py's defaults: "", 0, -1
  assert host["calls"] == [((), {})]
  assert jax_would_detect() == ("10.0.0.1:8482", 4, 0)


def test_gke_pod_slice_joins_from_its_environment(host, monkeypatch):
  host["tpu_vm"]({})                # a GKE node: its metadata server has no TPU VM keys
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.1,10.0.0.2")
  monkeypatch.setenv("TPU_WORKER_ID", "1")
  monkeypatch.setenv("MEGASCALE_NUM_SLICES", "2")    # two slices of two hosts
  monkeypatch.setenv("MEGASCALE_SLICE_ID", "0")
  parallel.initialize_distributed("", 0, -1)
  assert host["calls"] == [((), {})]
  assert "worker-network-endpoints" not in host["metadata"]
  assert jax_would_detect() == ("10.0.0.1:8482", 4, 1)


def test_single_host_tpu_vm_does_not_join(host):
  host["tpu_vm"](gce_metadata(workers=1))
  assert parallel.cloud_tpu_process_count() == 1
  parallel.initialize_distributed()
  assert host["calls"] == []


@pytest.mark.parametrize("gke_env", [False, True])
def test_off_a_tpu_vm_nothing_is_asked_or_joined(host, monkeypatch, gke_env):
  if gke_env:            # TPU-looking variables on a machine without TPUs change nothing
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "a,b,c")
  assert parallel.on_cloud_tpu_vm() is False          # this CPU machine, as imported
  assert parallel.cloud_tpu_process_count() == 0
  parallel.initialize_distributed()
  assert host["calls"] == [] and host["metadata"] == []


@pytest.fixture
def jax_platforms_cpu():
  """JAX_PLATFORMS=cpu, as a user sets it to keep a TPU VM's TPU out of a run."""
  before = jax.config.jax_platforms
  jax.config.update("jax_platforms", "cpu")
  yield
  jax.config.update("jax_platforms", before)


def test_jax_platforms_without_tpu_is_not_a_tpu_run(host, jax_platforms_cpu):
  host["tpu_vm"](gce_metadata(workers=4))
  assert parallel.cloud_tpu_process_count() == 0
  parallel.initialize_distributed()
  assert host["calls"] == [] and host["metadata"] == []


def test_num_processes_one_opts_out_and_flags_still_win(host):
  host["tpu_vm"](gce_metadata(workers=4))
  parallel.initialize_distributed(num_processes=1)
  assert host["calls"] == [] and host["metadata"] == []
  parallel.initialize_distributed("10.0.0.1:1234", 4, 2)
  assert host["calls"] == [(("10.0.0.1:1234", 4, 2), {})]


def test_already_initialized_is_left_alone(host, monkeypatch):
  host["tpu_vm"](gce_metadata(workers=4))
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
  parallel.initialize_distributed()
  assert host["calls"] == [] and host["metadata"] == []


def test_unreachable_metadata_on_a_tpu_vm_names_the_flags(host):
  host["tpu_vm"]()                  # a TPU VM whose metadata server does not answer
  with pytest.raises(RuntimeError, match="--num_processes=1") as error:
    parallel.initialize_distributed()
  assert "ConnectionError" in str(error.value) and host["calls"] == []


def test_coordinator_without_process_count_is_an_error(host):
  with pytest.raises(ValueError, match="--num_processes"):
    parallel.initialize_distributed("10.0.0.1:1234", 0, -1)
  assert host["calls"] == []


def test_main_py_defaults_are_the_auto_detecting_ones():
  """main.py passes its flags' defaults: no address, num_processes 0 (auto), id -1."""
  from absl import flags
  from mamkpd_jax.commands import train as train_command
  train_command.define_flags()
  values = flags.FLAGS
  assert (values["coordinator_address"].default, values["num_processes"].default,
          values["process_id"].default) == ("", 0, -1)
