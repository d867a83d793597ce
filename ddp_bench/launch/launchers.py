"""Who started us, and where is everybody? One small class per launcher.

Each environment reads only its own variables from a plain mapping (so tests pass dicts, never patch
`os.environ`), answers `detect(env)`, and `read(env)` returns one immutable `LaunchInfo`. None of them writes
to the environment or talks to other ranks: `discovery.py` asks MPI what its variables cannot say, and only
the process-group set-up in `distributed.py` turns a `LaunchInfo` into a rendezvous.
They are tried in a fixed order. torchrun comes first because it also runs inside Slurm jobs and MPI
allocations, where the Slurm/MPI variables describe the allocation, not torchrun's workers.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from ddp_bench.errors import UsageError

# Ports derived from a job id fall in [PORT_BASE, PORT_BASE + PORT_SPAN): above the well-known and registered
# services most clusters run, below the Linux ephemeral range (32768+) that the kernel hands out itself.
PORT_BASE = 12000
PORT_SPAN = 20000


@dataclass(frozen=True)
class LaunchInfo:
    """Everything about this process's place in the job that training needs."""

    launcher: str  # torchrun | slurm | mpi | single
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    node_rank: int
    num_nodes: int
    master_addr: str
    master_port: int
    job_id: str = ""
    attempt: int = 0  # torchrun's restart count: a restarted job's keys in the rendezvous store are its own

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise UsageError(f"{self.launcher}: rank {self.rank} is outside a world of {self.world_size}")
        if not 0 <= self.local_rank < max(self.local_world_size, 1):
            raise UsageError(
                f"{self.launcher}: local rank {self.local_rank} is outside {self.local_world_size} ranks on this node"
            )


def _int(env: Mapping[str, str], name: str) -> int:
    value = env[name]
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"environment variable {name}={value!r} is not an integer") from None


def _port(env: Mapping[str, str], default: int) -> int:
    if "MASTER_PORT" not in env:
        return default
    port = _int(env, "MASTER_PORT")
    if not 0 < port < 65536:
        raise UsageError(f"MASTER_PORT={port} is not a TCP port")
    return port


class TorchrunEnvironment:
    """torchrun / torch.distributed.run: it exports the rendezvous itself."""

    name = "torchrun"
    _required = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        return all(name in env for name in TorchrunEnvironment._required)

    @staticmethod
    def read(env: Mapping[str, str]) -> LaunchInfo:
        missing = [name for name in TorchrunEnvironment._required if name not in env]
        if missing:
            raise UsageError(f"--launcher torchrun, but {', '.join(missing)} not set: start with torchrun")
        world_size = _int(env, "WORLD_SIZE")
        local_world_size = _int(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else world_size
        if "GROUP_WORLD_SIZE" in env:
            num_nodes = _int(env, "GROUP_WORLD_SIZE")
        else:  # torchrun starts the same number of workers on every node
            num_nodes = max(world_size // max(local_world_size, 1), 1)
        return LaunchInfo(
            launcher="torchrun",
            rank=_int(env, "RANK"),
            local_rank=_int(env, "LOCAL_RANK"),
            world_size=world_size,
            local_world_size=local_world_size,
            node_rank=_int(env, "GROUP_RANK") if "GROUP_RANK" in env else 0,
            num_nodes=num_nodes,
            master_addr=env["MASTER_ADDR"],
            master_port=_port(env, 29500),
            job_id=env.get("TORCHELASTIC_RUN_ID", ""),
            attempt=_int(env, "TORCHELASTIC_RESTART_COUNT") if "TORCHELASTIC_RESTART_COUNT" in env else 0,
        )


def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compressed host list (`gpu[001-003,007],cdr5`) as host names, in order.

    Uses python-hostlist, the parser Slurm sites maintain; where it is not installed (a cluster wheelhouse
    without it), asks Slurm itself with `scontrol show hostnames`.
    """
    try:
        import hostlist
    except ImportError:
        hosts = scontrol_hostnames(nodelist)
    else:
        try:
            hosts = hostlist.expand_hostlist(nodelist)
        except hostlist.BadHostlist as exc:
            raise UsageError(f"cannot parse SLURM_JOB_NODELIST={nodelist!r}: {exc}") from None
    if not hosts:
        raise UsageError(f"SLURM_JOB_NODELIST={nodelist!r} names no host")
    return hosts


_TASKS_GROUP = re.compile(r"^(\d+)(?:\(x(\d+)\))?$")


def expand_tasks_per_node(spec: str) -> list[int]:
    """Slurm's SLURM_STEP_TASKS_PER_NODE (`4(x2),3`) as one count per node: [4, 4, 3]."""
    counts: list[int] = []
    for group in spec.split(","):
        match = _TASKS_GROUP.match(group.strip())
        if not match:
            raise UsageError(f"cannot parse Slurm tasks-per-node value {spec!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def slurm_port(job_id: str, step_id: str) -> int:
    """A port that differs between concurrent jobs, and between concurrent steps of one job, on a node."""
    job = int(job_id) if job_id.isdigit() else sum(map(ord, job_id))
    step = int(step_id) if step_id.isdigit() else 0
    return PORT_BASE + (job * 16 + step % 16) % PORT_SPAN


class SlurmEnvironment:
    """A task started by `srun` (a batch script's own shell is not a task: it has no SLURM_STEP_ID)."""

    name = "slurm"

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        return "SLURM_PROCID" in env and "SLURM_NTASKS" in env and "SLURM_STEP_ID" in env

    @staticmethod
    def read(env: Mapping[str, str]) -> LaunchInfo:
        for name in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID"):
            if name not in env:
                raise UsageError(f"--launcher slurm, but {name} is not set: start the ranks with srun")
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not nodelist:
            raise UsageError("--launcher slurm, but SLURM_JOB_NODELIST is not set")
        hosts = expand_nodelist(nodelist)
        node_rank = _int(env, "SLURM_NODEID") if "SLURM_NODEID" in env else 0
        tasks_spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
        world_size = _int(env, "SLURM_NTASKS")
        if tasks_spec:
            per_node = expand_tasks_per_node(tasks_spec)
            local_world_size = per_node[node_rank] if node_rank < len(per_node) else per_node[-1]
        else:
            local_world_size = world_size // max(len(hosts), 1)
        job_id = env["SLURM_JOB_ID"]
        return LaunchInfo(
            launcher="slurm",
            rank=_int(env, "SLURM_PROCID"),
            local_rank=_int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0,
            world_size=world_size,
            local_world_size=local_world_size,
            node_rank=node_rank,
            num_nodes=_int(env, "SLURM_STEP_NUM_NODES") if "SLURM_STEP_NUM_NODES" in env else len(hosts),
            # The first host of the step runs rank 0 (block distribution, Slurm's default).
            master_addr=env.get("MASTER_ADDR", hosts[0]),
            master_port=_port(env, slurm_port(job_id, env.get("SLURM_STEP_ID", "0"))),
            job_id=job_id,
        )


def scontrol_hostnames(nodelist: str) -> list[str]:
    """Slurm's own expansion of a host list."""
    try:
        done = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise UsageError(f"cannot expand SLURM_JOB_NODELIST={nodelist!r}: install python-hostlist ({exc})") from None
    return done.stdout.split()


# (rank, size, local rank, local size) variable names, by MPI implementation
_MPI_FLAVOURS = (
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("PALS_RANKID", "PMI_SIZE", "PALS_LOCAL_RANKID", "PALS_LOCAL_SIZE"),  # Cray PALS (PBS on Polaris)
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),  # MPICH / Intel MPI hydra
    ("PMIX_RANK", "", "", ""),  # PMIx (srun --mpi=pmix, prterun): the size comes from MPI itself
)


class MpiEnvironment:
    """A rank started by mpiexec/mpirun. MPI only tells us who we are; gloo or NCCL does the training."""

    name = "mpi"

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        return any(rank_var in env for rank_var, *_ in _MPI_FLAVOURS)

    @staticmethod
    def read(env: Mapping[str, str]) -> LaunchInfo:
        """What the environment alone says; `ddp_bench.launch.discovery` asks MPI itself for the rest."""
        for rank_var, size_var, local_var, local_size_var in _MPI_FLAVOURS:
            if rank_var not in env:
                continue
            world_size = _int(env, size_var) if size_var in env else 0
            rank = _int(env, rank_var)
            return MpiLaunchInfo(
                launcher="mpi",
                rank=rank,
                # Unknowns get placeholders here; discovery replaces them with MPI's own answers.
                local_rank=_int(env, local_var) if local_var in env else 0,
                world_size=max(world_size, rank + 1),
                local_world_size=_int(env, local_size_var) if local_size_var in env else 1,
                node_rank=0,
                num_nodes=1,
                master_addr=env.get("MASTER_ADDR", ""),
                master_port=_port(env, 0),
                job_id=env.get("PBS_JOBID", env.get("SLURM_JOB_ID", "")),
                env_world_size=world_size,
            )
        raise UsageError("--launcher mpi, but no MPI rank variable is set: start the ranks with mpiexec")


@dataclass(frozen=True)
class MpiLaunchInfo(LaunchInfo):
    env_world_size: int = 0  # what the launcher's variables promised (0: they did not say)
    complete: bool = False  # True once mpi4py has confirmed sizes and shared rank 0's address


class SingleProcessEnvironment:
    """`python -m ddp_bench` on its own: one rank, no rendezvous."""

    name = "single"

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        return True

    @staticmethod
    def read(env: Mapping[str, str]) -> LaunchInfo:
        return LaunchInfo("single", 0, 0, 1, 1, 0, 1, "127.0.0.1", 0, "")


ENVIRONMENTS = (TorchrunEnvironment, SlurmEnvironment, MpiEnvironment, SingleProcessEnvironment)


def detect_launch(env: Mapping[str, str], launcher: str = "auto") -> LaunchInfo:
    """The first environment that recognises `env` (or the one `--launcher` forces) describes this job."""
    for environment in ENVIRONMENTS:
        if launcher == environment.name or (launcher == "auto" and environment.detect(env)):
            return environment.read(env)
    raise UsageError(f"unknown launcher {launcher!r}")
