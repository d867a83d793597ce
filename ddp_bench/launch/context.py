"""Where a result was measured: platform, cluster, host, device, software versions, the communication stack
(NCCL version, GPU driver, NCCL_* settings, the node's GPU topology) and source commit."""

from __future__ import annotations

import os
import platform as _platform
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

import ddp_bench
from ddp_bench.launch.cuda_build import is_mig


def detect_platform(env: Mapping[str, str]) -> str:
    """colab | slurm | pbs | local: the kind of machine, independent of how the ranks were launched."""
    if "COLAB_RELEASE_TAG" in env or "COLAB_GPU" in env or "COLAB_JUPYTER_IP" in env:
        return "colab"
    if "SLURM_JOB_ID" in env:
        return "slurm"
    if "PBS_JOBID" in env:
        return "pbs"
    return "local"


def detect_cluster(env: Mapping[str, str]) -> str:
    return env.get("SLURM_CLUSTER_NAME", "")


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (platform.processor() is empty on most Linux systems)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
    except OSError:
        names = []  # not Linux
    return names[0] if names else (_platform.processor() or _platform.machine())


def git_commit() -> str:
    """The commit of the ddp_bench source that ran, with -dirty for uncommitted changes; empty if unknown."""
    source = os.path.dirname(os.path.dirname(os.path.abspath(ddp_bench.__file__)))
    try:
        commit = subprocess.run(["git", "-C", source, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return ""
        dirty = subprocess.run(
            ["git", "-C", source, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""  # no git on the node, or a package installed without its repository
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def cpu_ranges(cpus: set[int]) -> str:
    """CPU numbers as compact ranges, the way taskset and Slurm print them: {0, 1, 2, 5} -> '0-2,5'."""
    parts: list[str] = []
    ordered = sorted(cpus)
    start = previous = ordered[0] if ordered else 0
    for cpu in ordered[1:] + [None]:
        if cpu is not None and cpu == previous + 1:
            previous = cpu
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if cpu is not None:
            start = previous = cpu
    return ",".join(parts) if ordered else ""


# The variables each backend reads: NCCL's own and torch's for it, and gloo's (an NCCL job also has a gloo group
# for host-side agreement, which needs GLOO_SOCKET_IFNAME on sites whose host names resolve to an unroutable address).
# NCCL's own, torch's, the gloo side group's, and libfabric's (FI_*: NCCL's network plugin on Slingshot, Polaris)
COMM_ENV_PREFIXES = {"nccl": ("NCCL_", "TORCH_NCCL_", "GLOO_", "FI_"), "gloo": ("GLOO_",)}


def comm_env(env: Mapping[str, str], backend: str) -> str:
    """The communication settings in force for this backend, sorted, 'NAME=value;...'; NCCL's settings are no
    provenance of a gloo run."""
    prefixes = COMM_ENV_PREFIXES.get(backend, ())
    return ";".join(f"{name}={env[name]}" for name in sorted(env) if name.startswith(prefixes))


def nccl_version() -> str:
    import torch

    try:
        version = torch.cuda.nccl.version()
    except (AttributeError, RuntimeError):
        return ""  # a torch built without NCCL
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def driver_version() -> str:
    try:
        import pynvml  # the nvidia-ml-py package
    except ImportError:
        return ""
    try:
        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
    except pynvml.NVMLError:
        return ""  # no driver loaded, or no NVML on this node
    return version.decode() if isinstance(version, bytes) else str(version)


def node_gpus() -> int:
    """How many GPUs this node has, whatever the job was given: NVML's count (it ignores CUDA_VISIBLE_DEVICES), or
    CUDA's where NVML cannot answer, whichever is larger; 0 where neither sees one."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    try:
        import pynvml  # the nvidia-ml-py package
    except ImportError:
        return count
    try:
        pynvml.nvmlInit()
        return max(count, int(pynvml.nvmlDeviceGetCount()))
    except pynvml.NVMLError:
        return count  # no driver loaded, or no NVML on this node


def gpu_topology(timeout_s: float = 30) -> str:
    """`nvidia-smi topo -m`: how this node's GPUs, NICs and CPUs connect (NVLink, PCIe switch, socket); '' when
    there is no nvidia-smi or it cannot answer."""
    try:
        shown = subprocess.run(["nvidia-smi", "topo", "-m"], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return shown.stdout if shown.returncode == 0 else ""


@dataclass(frozen=True)
class RunContext:
    platform: str
    cluster: str
    hostname: str
    device_name: str
    cpu_affinity: str  # the CPUs this rank may run on, as ranges ('0-11'): what the launcher bound it to
    torch_version: str
    cuda_version: str
    nccl_version: str  # the NCCL torch uses, on GPU runs ('' on CPU)
    driver_version: str  # the NVIDIA driver, on GPU runs ('' on CPU or without NVML)
    comm_env: str  # the backend's settings in force for this rank (COMM_ENV_PREFIXES), 'NAME=value;...' sorted
    python_version: str
    ddp_bench_version: str
    git_commit: str
    mig_slice: str = ""  # the MIG slice this rank runs on (CUDA_VISIBLE_DEVICES' MIG-... UUID); '' on a whole GPU
    topology: str = ""  # `nvidia-smi topo -m`, taken by one rank per GPU node; written beside the rows, not in them
    devices_on_node: int = 0  # GPUs this node has (node_gpus); 0 on CPU runs


def collect_context(
    env: Mapping[str, str], device_type: str, device_index: int, backend: str, node_leader: bool = False
) -> RunContext:
    """Where this rank runs. Take it once the backend's defaults are in force (launch.distributed.apply_comm_defaults),
    so that `comm_env` is what the backend really ran with, whatever launched it."""
    import torch

    visible = env.get("CUDA_VISIBLE_DEVICES", "")
    if device_type == "cuda":
        device_name = torch.cuda.get_device_name(device_index)
    else:
        device_name = cpu_name()
    return RunContext(
        platform=detect_platform(env),
        cluster=detect_cluster(env),
        hostname=socket.gethostname(),
        device_name=device_name,
        cpu_affinity=cpu_ranges(os.sched_getaffinity(0)),
        torch_version=torch.__version__,
        cuda_version=torch.version.cuda or "",
        nccl_version=nccl_version() if device_type == "cuda" else "",
        driver_version=driver_version() if device_type == "cuda" else "",
        comm_env=comm_env(env, backend),
        python_version=_platform.python_version(),
        ddp_bench_version=ddp_bench.__version__,
        git_commit=git_commit(),
        mig_slice=visible if device_type == "cuda" and is_mig(visible) else "",
        topology=gpu_topology() if device_type == "cuda" and node_leader else "",
        devices_on_node=node_gpus() if device_type == "cuda" else 0,
    )
