"""Cluster profiles: one table of data, one entry per cluster, and the facts a user should see at the top of a job
script.

Every fact comes from ../shared/notes/clusters-2026.md (research notes of 2026-12-01 on stored copies of the sites'
documentation; nothing here was checked on a live cluster) and names its page in [brackets]; each profile's
`sources` say where the pages are. Where the notes found nothing, the profile says "not found" instead of a
number. Clusters change: check `sinfo -o "%N %G %c %m"` on yours before trusting a number here.
"""

from __future__ import annotations

from ddp_bench.cluster.profiles_alcf import ALCF
from ddp_bench.cluster.site_types import ClusterProfile, GpuNode, MigSlice, RetiredCluster
from ddp_bench.errors import UsageError

_FAST = ("--amp", "bf16", "--channels-last")  # bf16 autocast and NHWC: the fast setting on A100, H100, H200, L40S
_ALLIANCE_MODULES = "StdEnv/2023 python/3.11"  # StdEnv/2023: the standard environment [Standard software environments]
_WIKI = "https://docs.alliancecan.ca/wiki/"
_ALLIANCE_SOURCES = (
    f"[GPUs] {_WIKI}Using_GPUs_with_Slurm (copy of 2026-04-03)",
    f"[bundles] {_WIKI}Allocations_and_compute_scheduling",
    f"[policies] {_WIKI}Job_scheduling_policies",
    f"[MIG] {_WIKI}Multi-Instance_GPU (2026-05-08)",
    f"[local] {_WIKI}Using_node-local_storage",
    f"[jobs] {_WIKI}Running_jobs",
    f"[PyTorch] {_WIKI}PyTorch (2026-01-23)",
    f"[wheels] {_WIKI}Wheels3.1x: avail_wheels torch (2026-08-21)",
)
_WHEELS = "Wheelhouse torch: 2.6.0 to 2.13.0 on Python 3.11-3.13 (no 2.8.x); H100s need torch 2.5.1+ [wheels, PyTorch]."
_ACCOUNTS = "Accounts: def-<pi> by default, rrg-/rpp- for a RAC (tied to this cluster) [jobs]."
_AI_ACCOUNTS = "Accounts: aip-<pi> (PAICE; not part of the RAC) [jobs]."
_ONE_SLICE = "MIG: a job may hold one slice only (--mig NAME, one rank); DDP cannot span slices [MIG]."


def _h100_mig(prefix: str, bundles: tuple[tuple[int, str], ...]) -> tuple[MigSlice, ...]:
    """The H100's three MIG profiles, named `prefix + profile`, with each cluster's bundle (cores, memory)."""
    names = ("1g.10gb", "2g.20gb", "3g.40gb")
    return tuple(MigSlice(n, prefix + n, cpus, memory) for n, (cpus, memory) in zip(names, bundles, strict=True))


# MIG slices and each cluster's bundle for them (cores, memory) [bundles]; the specifiers [GPUs].
_FIR_MIG = _h100_mig("nvidia_h100_80gb_hbm3_", ((1, "35G"), (3, "70G"), (6, "140G")))
_NIBI_MIG = _h100_mig("h100_", ((2, "31G"), (4, "62G"), (6, "124G")))
_RORQUAL_MIG = _h100_mig("h100_", ((2, "15G"), (4, "31G"), (8, "62G")))
_NARVAL_MIG = tuple(
    MigSlice(name, f"a100_{name}", cpus, memory)
    for name, cpus, memory in (
        ("1g.5gb", 1, "15G"),
        ("2g.10gb", 3, "31G"),
        ("3g.20gb", 6, "62G"),
        ("4g.20gb", 6, "62G"),
    )
)

# GpuNode(Slurm type, model, GPUs per node, cores per node, RealMemory in MB, cores per GPU, memory per GPU, bf16,
#         MIG slices): see site_types.py.
PROFILES: dict[str, ClusterProfile] = {
    profile.name: profile
    for profile in (
        ClusterProfile(
            name="generic",
            title="any Slurm cluster with GPUs",
            scheduler="slurm",
            nodes=(GpuNode("", "GPUs of any model", 4, 0, 0, 8, "32G", False),),
            gpu_request="untyped",
            facts=(
                "Set --gpus-per-node, --cpus-per-task and --mem to your GPU nodes, and the modules your site",
                "needs before python (or set DDP_BENCH_VENV to a virtualenv that has ddp_bench installed).",
            ),
            sources=(),
        ),
        ClusterProfile(
            name="fir",
            title="Fir (Alliance, SFU; replaced Cedar)",
            scheduler="slurm",
            nodes=(GpuNode("h100", "4x NVIDIA H100 SXM5 80GB", 4, 48, 1152000, 12, "280G", True, _FIR_MIG),),
            facts=(
                "In service since 2025-08-11 [Fir]. GPU nodes: 160 x 4x H100 SXM5 80GB (NVLink), 1x AMD EPYC 9454",
                "(48 cores, NPS=4: 4 NUMA domains of 12), 1152000M, 7.84 TB NVMe [Fir].",
                "Per GPU: 12 cores and 280 GB, the recommended share of a bundle [bundles]; one task per GPU [Fir].",
                "Walltime 1 h to 7 days [Fir, policies]. Compute nodes have full internet access [Fir].",
                "$SLURM_TMPDIR: 7T [local]. Interconnect: InfiniBand NDR, 2:1 blocking on GPU nodes [Fir].",
                "MIG on about half the GPU nodes: 1g.10gb, 2g.20gb, 3g.40gb [MIG].",
                _ONE_SLICE,
                "Cedar's files are on Fir: the two share file systems [renewal].",
                _ACCOUNTS,
                _WHEELS,
            ),
            sources=(
                f"[Fir] {_WIKI}Fir (2026-07-24)",
                f"[renewal] {_WIKI}Infrastructure_renewal",
                *_ALLIANCE_SOURCES,
            ),
            modules=_ALLIANCE_MODULES,
            default_flags=_FAST,
            max_walltime_h=168,
            min_walltime_h=1,
            cc_cluster="fir",
        ),
        ClusterProfile(
            name="nibi",
            title="Nibi (Alliance, SHARCNET Waterloo; replaced Graham)",
            scheduler="slurm",
            nodes=(GpuNode("h100", "8x NVIDIA H100 SXM 80GB", 8, 112, 2048000, 14, "250G", True, _NIBI_MIG),),
            facts=(
                "In service since 2025-07-31 [Nibi]. GPU nodes: 36 x 8x H100 SXM 80GB (NVLink), 2x Intel Xeon 8570",
                "(112 cores), 2048000M, 11T local disk [Nibi]. (Its MI300A nodes are not covered here.)",
                "Per GPU: 14 cores and 250 GB [bundles]. The Nibi page lists per-node requests up to h100:4 only;",
                "official confirmation of h100:8 was not found (public job scripts use it) [Nibi].",
                "Walltime up to 7 days [policies] (the Nibi page states none). All nodes have internet [Nibi].",
                "$SLURM_TMPDIR: 3T [local]. Interconnect: Ethernet, 200 Gbit/s non-blocking between GPU nodes;",
                "sbatch --switches=1 keeps a job on one switch [Nibi].",
                "MIG on about half the GPU nodes: h100_1g.10gb, h100_2g.20gb, h100_3g.40gb [MIG].",
                _ONE_SLICE,
                "Graham's files are on Nibi: the two share file systems [renewal].",
                _ACCOUNTS,
                _WHEELS,
            ),
            sources=(
                f"[Nibi] {_WIKI}Nibi (2026-06-26)",
                f"[renewal] {_WIKI}Infrastructure_renewal",
                *_ALLIANCE_SOURCES,
            ),
            modules=_ALLIANCE_MODULES,
            default_flags=_FAST,
            max_walltime_h=168,
            cc_cluster="nibi",
        ),
        ClusterProfile(
            name="rorqual",
            title="Rorqual (Alliance, ETS Montreal; replaced Beluga)",
            scheduler="slurm",
            nodes=(GpuNode("h100", "4x NVIDIA H100 SXM5 80GB", 4, 64, 510000, 16, "124G", True, _RORQUAL_MIG),),
            facts=(
                "In service since 2025-06-19 [Rorqual]. GPU nodes: 81 x 4x H100 SXM5 80GB (NVLink), 2x Intel Xeon",
                "Gold 6448Y (64 cores), 510000M, 3.84 TB NVMe [Rorqual].",
                "Per GPU: 16 cores and 124 GB [bundles]. Walltime 1 h to 7 days; 1000 jobs at most [Rorqual].",
                "Compute nodes cannot reach the internet [Rorqual]. $SLURM_TMPDIR: 375G, or --tmp=370G..3360G [local].",
                "Interconnect: InfiniBand HDR 200 Gb/s, blocking up to 34:6 [Rorqual].",
                "Profiling needs DISABLE_DCGM=1 at submission [GPUs].",
                "MIG on about half the GPU nodes: h100_1g.10gb, h100_2g.20gb, h100_3g.40gb [MIG].",
                _ONE_SLICE,
                _ACCOUNTS,
                _WHEELS,
            ),
            sources=(f"[Rorqual] {_WIKI}Rorqual/en (2026-04-03)", *_ALLIANCE_SOURCES),
            modules=_ALLIANCE_MODULES,
            default_flags=_FAST,
            max_walltime_h=168,
            min_walltime_h=1,
            cc_cluster="rorqual",
        ),
        ClusterProfile(
            name="narval",
            title="Narval (Alliance, ETS Montreal)",
            scheduler="slurm",
            nodes=(GpuNode("a100", "4x NVIDIA A100 SXM4 40GB", 4, 48, 510000, 12, "124G", True, _NARVAL_MIG),),
            facts=(
                "In service since 2021, not replaced in the 2025 renewal [Narval, renewal]. GPU nodes: 159 x 4x A100",
                "SXM4 40GB (NVLink), 2x AMD EPYC 7413 (48 cores), 510000M, 3.84 TB SSD [Narval].",
                "Per GPU: 12 cores and 124 GB [bundles]. Walltime 1 h to 7 days; 1000 jobs at most [Narval].",
                "Compute nodes cannot reach the internet [Narval]. $SLURM_TMPDIR: 800G [local].",
                "Interconnect: InfiniBand HDR, HDR100 (100 Gb/s) per node [Narval]. No AVX-512; StdEnv/2023 only.",
                "MIG: a100_1g.5gb, a100_2g.10gb, a100_3g.20gb, a100_4g.20gb [MIG].",
                _ONE_SLICE,
                _ACCOUNTS,
                _WHEELS,
            ),
            sources=(
                f"[Narval] {_WIKI}Narval/en (2026-04-17)",
                f"[renewal] {_WIKI}Infrastructure_renewal",
                *_ALLIANCE_SOURCES,
            ),
            modules=_ALLIANCE_MODULES,
            default_flags=_FAST,
            max_walltime_h=168,
            min_walltime_h=1,
            cc_cluster="narval",
        ),
        ClusterProfile(
            name="trillium",
            title="Trillium (Alliance, SciNet Toronto; replaced Niagara and Mist)",
            scheduler="slurm",
            nodes=(GpuNode("h100", "4x NVIDIA H100 SXM 80GB", 4, 96, 767000, 24, "", True),),
            facts=(
                "In service since 2025-08-07 [Trillium]. GPU nodes: 63 x 4x H100 SXM 80GB (NVLink), 1x AMD EPYC 9654",
                "(96 cores), 767000M: 24 cores and about 188 GiB per GPU [Trillium, bundles].",
                "Submit GPU jobs from the GPU login node, trillium-gpu.alliancecan.ca, and from $SCRATCH [Quickstart].",
                "Exactly 1 GPU or a multiple of 4 (whole nodes) per job; always --nodes; no partition [Quickstart].",
                "Memory requests are ignored: do not use --mem [Quickstart]. No MIG; MPS is allowed [Quickstart, MIG].",
                "Walltime 15 min to 24 h [Quickstart, policies]. The internet cannot be reached from compute nodes.",
                "$HOME and $PROJECT are read-only on compute nodes: results go under $SCRATCH [Quickstart].",
                "$SLURM_TMPDIR is a RAM disk (no local disk): build the venv on a login node [Quickstart, Python].",
                "Default limits: 5 nodes / 20 GPUs, or 25 nodes / 100 GPUs with an allocation [Quickstart].",
                "Modules of the Quickstart's GPU examples: StdEnv/2023 cuda/12.6 python/3.11.5 [Quickstart].",
                "Interconnect: InfiniBand NDR, non-blocking, 800 Gb/s per GPU node [Trillium].",
                _ACCOUNTS,
                _WHEELS,
            ),
            sources=(
                f"[Trillium] {_WIKI}Trillium (2026-04-17)",
                f"[Quickstart] {_WIKI}Trillium_Quickstart (2026-05-08)",
                f"[Python] {_WIKI}Python (2026-03-27)",
                *_ALLIANCE_SOURCES,
            ),
            modules="StdEnv/2023 cuda/12.6 python/3.11.5",
            default_flags=_FAST,
            gpu_counts="one-or-whole-nodes",
            max_walltime_h=24,
            min_walltime_h=0.25,
            venv="login-node",
            results_under="SCRATCH",
            memory_requests=False,
            no_mig_reason="Trillium has no MIG (it allows MPS instead)",
            cc_cluster="trillium",
        ),
        ClusterProfile(
            name="killarney",
            title="Killarney (PAICE: Vector Institute and SciNet, Toronto)",
            scheduler="slurm",
            nodes=(
                GpuNode("l40s", "4x NVIDIA L40S 48GB", 4, 64, 512000, 16, "", True),
                GpuNode("h100", "8x NVIDIA H100 SXM 80GB", 8, 48, 2048000, 6, "240G", True),
            ),
            facts=(
                "In service since 2025-06-09 [Killarney]. Two kinds of GPU node (--gpu-type l40s or h100) [Killarney]:",
                "  l40s: 168 x 4x L40S 48GB, 2x Xeon Gold 6338 (64 cores), 512 GB, 350 GB SSD, HDR100 100 Gb/s;",
                "  h100: 10 x 8x H100 SXM 80GB, 2x Xeon Gold 6442Y (48 cores), 2048 GB, 800 GB NVMe, 2x HDR200.",
                "GPUs as Vector's guide asks: --gres=gpu:l40s:N or --gres=gpu:h100:N [Vector].",
                "Per GPU: 16 cores on l40s, 6 on h100 (node cores / GPUs). Memory: 240 GB per H100 from Vector's",
                "4x H100 template (960 GB) [Vector]; for l40s no recommendation was found, so none is requested.",
                "Walltime up to 7 days; --time picks the partition (gpubase_*_b1..b5: 3 h to 7 days) [Vector].",
                "Internet on compute nodes: not found. No checkpoint space: use $SCRATCH [Vector].",
                _AI_ACCOUNTS,
                "Modules in Vector's examples: python/3.12.4 (and 3.10.12) [Vector].",
            ),
            sources=(
                f"[Killarney] {_WIKI}Killarney (2026-05-08)",
                "[Vector] https://github.com/VectorInstitute/vec-playbook (2026-01-19)",
                *_ALLIANCE_SOURCES,
            ),
            modules="StdEnv/2023 python/3.12.4",
            default_flags=_FAST,
            gpu_request="gres",
            max_walltime_h=168,
            no_mig_reason="Killarney's MIG slices were not found in the notes",
            cc_cluster="killarney",
        ),
        ClusterProfile(
            name="tamia",
            title="tamIA (PAICE: Universite Laval, Mila and Calcul Quebec)",
            scheduler="slurm",
            nodes=(
                GpuNode("h100", "4x NVIDIA HGX H100 SXM 80GB", 4, 48, 512000, 12, "0", True),
                GpuNode("h200", "8x NVIDIA HGX H200 SXM 141GB", 8, 64, 1024000, 8, "0", True),
            ),
            facts=(
                "In service since 2025-03-31 [tamIA]. Two kinds of GPU node (--gpu-type h100 or h200) [tamIA]:",
                "  h100: 53 x 4x H100 SXM 80GB, 2x Xeon Gold 6442Y (48 cores), 512 GB;",
                "  h200: 12 x 8x H200 SXM 141GB, 2x Xeon Gold 6448Y (64 cores), 1024 GB. Each node: 7.68 TB SSD.",
                "Jobs are allocated whole nodes: each uses all 4 H100 or all 8 H200 GPUs of its nodes [tamIA];",
                "--gpus=h100:4 on one node, --gpus-per-node on several (the page's --gpus-per-nodes is a typo).",
                "Memory per GPU: not found; whole nodes, so --mem=0 (all of each node's memory).",
                "Walltime 1 h to 24 h; 1000 jobs at most [tamIA]. Compute nodes cannot reach the internet [tamIA].",
                "$SLURM_TMPDIR size: not stated [tamIA]. NDR200 InfiniBand port per GPU [tamIA]. StdEnv/2023.",
                _AI_ACCOUNTS,
                "Reachable from Canada only [tamIA].",
            ),
            sources=(f"[tamIA] {_WIKI}TamIA/en (2026-08-14)", *_ALLIANCE_SOURCES),
            modules=_ALLIANCE_MODULES,
            default_flags=_FAST,
            gpu_request="gpus-on-one-node",
            gpu_counts="whole-nodes",
            max_walltime_h=24,
            min_walltime_h=1,
            no_mig_reason="tamIA has no MIG slices in the notes (and allocates whole nodes)",
            cc_cluster="tamia",
        ),
        ClusterProfile(
            name="vulcan",
            title="Vulcan (PAICE: University of Alberta and Amii)",
            scheduler="slurm",
            nodes=(GpuNode("l40s", "4x NVIDIA L40S 48GB", 4, 64, 512000, 16, "", True),),
            facts=(
                "In service since 2025-04-15 [Vulcan]. GPU nodes: 252 x 4x L40S 48GB, 2x Xeon Gold 6448Y (64 cores),",
                "512 GB [Vulcan]: 16 cores per GPU. Memory per GPU: not found, so none is requested.",
                "GPU specifier l40s [GPUs]; no Vulcan-specific example was found, so the Alliance's form is used.",
                "Walltime up to 7 days [Vulcan]. Internet: not generally available on compute nodes; a Squid proxy",
                "lets whitelisted domains through [Vulcan]. Interconnect: 100 Gb/s Ethernet with RoCE [Vulcan].",
                "$SLURM_TMPDIR size: not found.",
                _AI_ACCOUNTS,
            ),
            sources=(f"[Vulcan] {_WIKI}Vulcan (2026-03-27)", *_ALLIANCE_SOURCES),
            modules=_ALLIANCE_MODULES,
            default_flags=_FAST,
            max_walltime_h=168,
            no_mig_reason="Vulcan has no MIG slices in the notes",
            cc_cluster="vulcan",
        ),
        ClusterProfile(
            name="cpu",
            title="CPU-only nodes (any Slurm cluster)",
            scheduler="slurm",
            nodes=(GpuNode("", "no GPUs", 0, 0, 0, 4, "8G", False),),
            facts=(
                "gloo on CPUs: one rank per --ntasks-per-node, each with --cpus-per-task threads.",
                "Useful as a baseline row beside GPU runs, and to test a set-up before spending GPU hours.",
            ),
            sources=(),
        ),
        *ALCF,
    )
}

RETIRED: dict[str, RetiredCluster] = {
    cluster.name: cluster
    for cluster in (  # [renewal] Infrastructure_renewal (2026-01-11), [Beluga] Béluga_en (2026-07-17)
        RetiredCluster("beluga", "Beluga", "closed its compute nodes on 2025-07-31", "rorqual"),
        RetiredCluster("cedar", "Cedar", "was retired on 2025-09-12", "fir", "and shares its storage"),
        RetiredCluster("graham", "Graham", "was retired on 2025-09-01", "nibi", "and shares its storage"),
        RetiredCluster("niagara", "Niagara", "was retired on 2025-09-30", "trillium"),
    )
}


def get_profile(name: str) -> ClusterProfile:
    if name in RETIRED:
        raise UsageError(RETIRED[name].message())
    if name not in PROFILES:
        raise UsageError(f"unknown cluster {name!r}; known: {', '.join(PROFILES)} (or auto)")
    return PROFILES[name]
