"""Cluster profiles: what a job script needs to know about a machine, and the facts a user should see.

GPU node facts follow the Alliance documentation ("Using GPUs with Slurm" and the cluster pages). Clusters
change: check `sinfo -o "%N %G %c %m"` on yours before trusting a number here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ddp_bench.errors import UsageError

ALLIANCE_RETIREMENT = (
    "The Alliance announced that Béluga, Cedar and Graham are replaced by Rorqual, Fir and Nibi (2025);",
    "if this cluster is gone, start from the generic profile and that cluster's documentation.",
)


@dataclass(frozen=True)
class ClusterProfile:
    name: str
    title: str
    facts: tuple[str, ...]  # comment lines at the top of the job script
    gpus_per_node: int  # 0: a CPU-only profile
    gpu_type: str  # Slurm GPU type for --gpus-per-node=TYPE:N ('' = any)
    cpus_per_task: int  # cores per rank (= per GPU)
    mem_per_task: str  # memory per rank, as sbatch writes it
    modules: str  # `module load` arguments ('' = none)
    default_flags: tuple[str, ...] = ()  # ddp_bench flags that suit the hardware


_ALLIANCE_MODULES = "StdEnv/2023 python/3.11"

PROFILES: dict[str, ClusterProfile] = {
    profile.name: profile
    for profile in (
        ClusterProfile(
            name="generic",
            title="any Slurm cluster with GPUs",
            facts=(
                "Set --gpus-per-node, --cpus-per-task and --mem to your GPU nodes, and the modules your site",
                "needs before python (or set DDP_BENCH_VENV to a virtualenv that has ddp_bench installed).",
            ),
            gpus_per_node=4,
            gpu_type="",
            cpus_per_task=8,
            mem_per_task="32G",
            modules="",
        ),
        ClusterProfile(
            name="narval",
            title="Narval (Alliance, ETS Montreal)",
            facts=(
                "GPU nodes: 4x NVIDIA A100-SXM4-40GB, 48 cores (2x AMD EPYC 7413), ~498 GB RAM, InfiniBand HDR.",
                "A100s have bf16: --amp bf16 --channels-last is the fast setting. Compute nodes have no internet.",
                "Request at most 12 cores and ~124 GB per GPU to keep GPUs schedulable for others.",
            ),
            gpus_per_node=4,
            gpu_type="a100",
            cpus_per_task=12,
            mem_per_task="120G",
            modules=_ALLIANCE_MODULES,
            default_flags=("--amp", "bf16", "--channels-last"),
        ),
        ClusterProfile(
            name="beluga",
            title="Beluga (Alliance, ETS Montreal)",
            facts=(
                "GPU nodes: 4x NVIDIA V100-SXM2-16GB, 40 cores (2x Intel Xeon Gold 6148), ~186 GB RAM.",
                "V100s have no bf16: use --amp fp16. Compute nodes have no internet.",
                *ALLIANCE_RETIREMENT,
            ),
            gpus_per_node=4,
            gpu_type="v100",
            cpus_per_task=10,
            mem_per_task="46G",
            modules=_ALLIANCE_MODULES,
            default_flags=("--amp", "fp16", "--channels-last"),
        ),
        ClusterProfile(
            name="cedar",
            title="Cedar (Alliance, SFU)",
            facts=(
                "GPU nodes used here: 4x NVIDIA V100-SXM2-32GB (type v100l), 32 cores, ~192 GB RAM;",
                "Cedar also has 4x P100 nodes (types p100, p100l). No bf16: use --amp fp16. No internet on nodes.",
                *ALLIANCE_RETIREMENT,
            ),
            gpus_per_node=4,
            gpu_type="v100l",
            cpus_per_task=8,
            mem_per_task="46G",
            modules=_ALLIANCE_MODULES,
            default_flags=("--amp", "fp16", "--channels-last"),
        ),
        ClusterProfile(
            name="graham",
            title="Graham (Alliance, Waterloo)",
            facts=(
                "GPU nodes used here: 4x NVIDIA T4 16GB (type t4), 44 cores, ~192 GB RAM; Graham also has",
                "P100, V100 and A100 nodes. T4s have no bf16: use --amp fp16. Compute nodes have no internet.",
                *ALLIANCE_RETIREMENT,
            ),
            gpus_per_node=4,
            gpu_type="t4",
            cpus_per_task=11,
            mem_per_task="46G",
            modules=_ALLIANCE_MODULES,
            default_flags=("--amp", "fp16", "--channels-last"),
        ),
        ClusterProfile(
            name="cpu",
            title="CPU-only nodes (any Slurm cluster)",
            facts=(
                "gloo on CPUs: one rank per --ntasks-per-node, each with --cpus-per-task threads.",
                "Useful as a baseline row beside GPU runs, and to test a set-up before spending GPU hours.",
            ),
            gpus_per_node=0,
            gpu_type="",
            cpus_per_task=4,
            mem_per_task="8G",
            modules="",
        ),
    )
}


def get_profile(name: str) -> ClusterProfile:
    if name not in PROFILES:
        raise UsageError(f"unknown cluster {name!r}; known: {', '.join(PROFILES)}")
    return PROFILES[name]
