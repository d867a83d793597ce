"""The types of the cluster profiles (the table itself is `profiles.py`): a cluster, its kinds of GPU node, their
MIG slices, PBS queues, and the clusters that were retired."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ddp_bench.errors import UsageError

Scheduler = Literal["slurm", "pbs"]
# How a script asks Slurm for GPUs, as the site documents it:
#   gpus-per-node    --gpus-per-node=TYPE:N (the Alliance's recommended form)
#   gres             --gres=gpu:TYPE:N (Vector's Killarney guide)
#   gpus-on-one-node --gpus=TYPE:N on one node, --gpus-per-node=TYPE:N on several (tamIA's page)
#   untyped          --gpus-per-node=N (the generic profile: any GPU)
GpuRequest = Literal["gpus-per-node", "gres", "gpus-on-one-node", "untyped"]
# Which GPU counts a job may hold: any; exactly 1 or whole nodes (Trillium); whole nodes only (tamIA).
GpuCounts = Literal["any", "one-or-whole-nodes", "whole-nodes"]
# Where the job's Python comes from: a venv built on node-local disk from the wheelhouse; one the user built on a
# login node (DDP_BENCH_VENV, required); ALCF's conda module (or DDP_BENCH_VENV).
VenvPlace = Literal["node-local", "login-node", "conda"]


@dataclass(frozen=True)
class MigSlice:
    """One MIG profile a job may hold (a job may hold only one slice)."""

    name: str  # as users say it: 3g.40gb
    specifier: str  # the Slurm GPU type of the slice: nvidia_h100_80gb_hbm3_3g.40gb
    cpus: int  # cores in the slice's allocation bundle
    memory: str  # memory in the bundle, as sbatch writes it: 140G


@dataclass(frozen=True)
class GpuNode:
    """One kind of GPU node of a cluster."""

    gpu_type: str  # the Slurm GPU specifier ('' = any GPU)
    model: str  # what the GPUs are, for the script's header
    gpus: int  # GPUs per node (0: a CPU-only profile)
    cpus: int  # cores per node (0: not found)
    memory_mb: int  # node memory as Slurm counts it (RealMemory; 0: not found)
    cpus_per_gpu: int  # cores per rank (= per GPU) the site recommends
    # Memory per GPU the site recommends, as sbatch writes it ("280G"); "" = no memory request (the site forbids
    # one, or recommends none: the profile's facts say which); "0" = whole nodes: all of each node's memory.
    mem_per_gpu: str
    bf16: bool  # fast bf16 autocast (A100, H100, H200, L40S)
    mig: tuple[MigSlice, ...] = ()


@dataclass(frozen=True)
class Queue:
    """A PBS queue: the nodes and walltime it takes."""

    name: str
    min_nodes: int
    max_nodes: int  # 0: not found
    max_hours: float  # 0: not found
    chosen_by_default: bool = True  # picked when it is the first that fits; others only with --queue


@dataclass(frozen=True)
class ClusterProfile:
    name: str
    title: str
    scheduler: Scheduler
    nodes: tuple[GpuNode, ...]  # one per kind of GPU node; more than one: the user picks with --gpu-type
    facts: tuple[str, ...]  # comment lines at the top of the job script, each naming its source page
    sources: tuple[str, ...]  # the pages the facts' [names] refer to, with the date of the copy read
    modules: str = ""  # `module load` arguments ('' = none)
    default_flags: tuple[str, ...] = ()  # ddp_bench flags that suit the hardware
    gpu_request: GpuRequest = "gpus-per-node"
    gpu_counts: GpuCounts = "any"
    max_walltime_h: float = 0  # 0: no limit known (generic) or per queue (PBS)
    min_walltime_h: float = 0  # the site's shortest job; 0: none documented
    venv: VenvPlace = "node-local"
    results_under: str = ""  # an environment variable the results must be under ('SCRATCH' on Trillium)
    memory_requests: bool = True  # False: the site ignores them and says not to make any (Trillium)
    no_mig_reason: str = ""  # why --mig is refused here (when the nodes have no MIG slices)
    queues: tuple[Queue, ...] = ()  # PBS: the queues, in the order the default choice tries them
    launch: str = ""  # PBS: the launcher line, with {ranks} and {per_node}
    job_env: tuple[tuple[str, str], ...] = ()  # exported in the job (ALCF's NCCL settings), in order
    max_nodes: int = 0  # 0: no limit ddp_bench knows of
    max_nodes_reason: str = ""
    cc_cluster: str = ""  # the value the Alliance's software environment gives CC_CLUSTER here
    host_patterns: tuple[str, ...] = ()  # fnmatch patterns of the fully qualified host names
    pbs_server: str = ""  # a word in the PBS server's name (PBS_JOBID = 123.<server>)

    @property
    def short_title(self) -> str:  # "Fir" of "Fir (Alliance, SFU; replaced Cedar)"
        return self.title.split(" (")[0]

    @property
    def default_time(self) -> str:
        """A job's time limit when none is asked: 30 minutes, or the site's documented minimum where longer."""
        minutes = max(30, round(self.min_walltime_h * 60))
        return f"{minutes // 60:02d}:{minutes % 60:02d}:00"

    def node(self, gpu_type: str = "") -> GpuNode:
        """The node kind for --gpu-type (required where the cluster has more than one kind)."""
        if not gpu_type:
            if len(self.nodes) > 1:
                kinds = " or ".join(node.gpu_type for node in self.nodes)
                raise UsageError(f"{self.short_title} has two kinds of GPU node: give --gpu-type {kinds}")
            return self.nodes[0]
        for node in self.nodes:
            if node.gpu_type == gpu_type:
                return node
        kinds = ", ".join(node.gpu_type for node in self.nodes if node.gpu_type) or "none (any GPU)"
        raise UsageError(f"{self.short_title} has no {gpu_type!r} GPU nodes; its GPU types: {kinds}")


@dataclass(frozen=True)
class RetiredCluster:
    name: str
    title: str
    retired: str  # what ended, and when
    successor: str  # the profile to use instead
    note: str = ""  # e.g. that the successor shares its storage

    def message(self) -> str:
        note = f" {self.note}" if self.note else ""
        successor = self.successor.capitalize()
        return f"{self.title} {self.retired}; {successor} replaced it{note}: use --cluster {self.successor}"
