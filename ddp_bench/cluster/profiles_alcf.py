"""The ALCF's PBS machines in the profile table (`profiles.py` holds the rest): Polaris, and Sophia, where the 2025
bootcamp ran its hands-on. Facts from ../shared/notes/clusters-2026.md (§10 and §12), each naming its page."""

from __future__ import annotations

from ddp_bench.cluster.site_types import ClusterProfile, GpuNode, Queue

_ALCF = "https://docs.alcf.anl.gov/"
_PROXY = "Internet only through the proxy: http_proxy/https_proxy=http://proxy.alcf.anl.gov:3128 [Polaris]."

ALCF: tuple[ClusterProfile, ...] = (
    ClusterProfile(
        name="polaris",
        title="Polaris (ALCF, Argonne; PBS Pro)",
        scheduler="pbs",
        nodes=(GpuNode("a100", "4x NVIDIA A100 40GB (NVLink)", 4, 32, 524288, 8, "", True),),
        facts=(
            "560 nodes, each 1x AMD EPYC 7543P (32 cores, 64 threads), 512 GiB, 4x A100 40GB on NVLink,",
            "2x 1.6 TB local SSD, 2x Slingshot-11 NICs [Polaris]: 8 cores (16 threads) per GPU.",
            "Queues [running]: debug 1-2 nodes 1 h; debug-scaling 1-10 nodes 1 h; prod 10-496 nodes 24 h;",
            "capacity 1-4 nodes 168 h; preemptable 1-10 nodes 72 h (only with sweep --queue preemptable).",
            "Python: module use /soft/modulefiles; module load conda; conda activate. conda/2025-09-25, the default",
            "since 2025-10-24: PyTorch 2.8, CUDA 12.9.1, NCCL 2.28.3 [python]. Extra packages: a venv built with",
            "python -m venv --system-site-packages on a login node, given as DDP_BENCH_VENV [python].",
            "Launch: mpiexec -n RANKS -ppn 4 --cpu-bind depth -d 16 [pytorch]; ddp_bench reads Cray PALS's ranks.",
            "GPUs in reverse order to the CPU binding: local rank r drives GPU 3-r, its NUMA neighbour, as ALCF's",
            "set_affinity_gpu_polaris.sh sets CUDA_VISIBLE_DEVICES [affinity].",
            "Backend nccl: the mpi backend fails on CUDA tensors (Cray MPICH is not CUDA-aware to PyTorch) [pytorch].",
            "NCCL settings below as ALCF recommends; on hangs, unset NCCL_NET_GDR_LEVEL NCCL_CROSS_NIC",
            "NCCL_COLLNET_ENABLE NCCL_NET [nccl].",
            _PROXY,
            "DataLoader workers: up to 16 per rank [pytorch]. Walltime: per queue (above).",
        ),
        sources=(
            f"[Polaris] {_ALCF}polaris/ (argonne-lcf/user-guides, 2026-08-19)",
            f"[running] {_ALCF}polaris/running-jobs/",
            f"[python] {_ALCF}polaris/data-science/python/",
            f"[pytorch] {_ALCF}polaris/data-science/frameworks/pytorch/",
            f"[nccl] {_ALCF}polaris/applications-and-libraries/libraries/nccl/",
            "[affinity] https://www.alcf.anl.gov/support/user-guides/polaris/hardware-overview/machine-overview/"
            "index.html (Polaris Device Affinity Information), as cited by ALCF's set_affinity_gpu_polaris.sh "
            "(copies in ECP-CANDLE/Benchmarks and firemodels/fds)",
        ),
        modules="conda",
        default_flags=("--amp", "bf16", "--channels-last", "--launcher", "mpi"),
        venv="conda",
        no_mig_reason="Polaris has no MIG slices in the notes",
        queues=(
            Queue("debug", 1, 2, 1),
            Queue("debug-scaling", 1, 10, 1),
            Queue("prod", 10, 496, 24),
            Queue("capacity", 1, 4, 168),
            Queue("preemptable", 1, 10, 72, chosen_by_default=False),
        ),
        # Each rank sees only its NUMA neighbour GPU (3 - local rank, [affinity]); ddp_bench then drives cuda:0.
        launch="mpiexec -n {ranks} -ppn {per_node} --cpu-bind depth -d 16 "
        'bash -c "export CUDA_VISIBLE_DEVICES=\\$((3 - PMI_LOCAL_RANK % 4)); exec \\"\\$@\\"" gpu-affinity',
        job_env=(
            ("NCCL_NET_GDR_LEVEL", "PHB"),
            ("NCCL_CROSS_NIC", "1"),
            ("NCCL_COLLNET_ENABLE", "1"),
            ("NCCL_NET", "AWS Libfabric"),
            ("LD_LIBRARY_PATH", "/soft/libraries/aws-ofi-nccl/v1.9.1-aws/lib:/soft/libraries/hwloc/lib/"),
            ("FI_CXI_DISABLE_HOST_REGISTER", "1"),
            ("FI_MR_CACHE_MONITOR", "userfaultfd"),
            ("FI_CXI_DEFAULT_CQ_SIZE", "131072"),
        ),
        host_patterns=("polaris-login-*", "*.polaris.alcf.anl.gov"),  # ALCF's getting-started page; job ids
        pbs_server="polaris",  # PBS_JOBID=123.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov
    ),
    ClusterProfile(
        name="sophia",
        title="Sophia (ALCF, Argonne; DGX A100; PBS Pro)",
        scheduler="pbs",
        nodes=(GpuNode("a100", "8x NVIDIA A100 40GB (DGX A100)", 8, 0, 0, 0, "", True),),
        facts=(
            "DGX A100 nodes, 8x A100-40GB each; the 2025 bootcamp ran its hands-on here [bootcamp].",
            "Cores and memory per node: not found; so no CPU binding is set.",
            "Submission in the bootcamp: qsub -A <project> -q by-node -l select=1",
            "-l walltime=01:00:00,filesystems=eagle:home [bootcamp]. Walltime limit: not found.",
            "Launch in the bootcamp: mpirun -n NGPUS on one node [bootcamp]; how to place ranks on several nodes",
            "was not found, so this profile renders one-node jobs (up to 8 GPUs).",
            "Python environment: not found (the bootcamp used ezpz's ezpz_setup_python): set DDP_BENCH_VENV to a",
            "virtualenv with ddp_bench's dependencies and mpi4py. Internet through proxy.alcf.anl.gov:3128 [bootcamp].",
            "Host names sophia-* (how ezpz recognises it) [ezpz].",
        ),
        sources=(
            "[bootcamp] https://github.com/saforem2/intro-hpc-bootcamp-2025, content/02-llms/06-parallel-training",
            "[ezpz] https://github.com/saforem2/ezpz, docs/notes/systems.md (2026-08-21)",
        ),
        default_flags=("--amp", "bf16", "--channels-last", "--launcher", "mpi"),
        venv="login-node",
        no_mig_reason="Sophia has no MIG slices in the notes",
        queues=(Queue("by-node", 1, 0, 0),),
        launch="mpirun -n {ranks}",
        max_nodes=1,
        max_nodes_reason="how Sophia's mpirun places ranks on several nodes was not found (the bootcamp ran one)",
        host_patterns=("sophia-*",),
    ),
)
