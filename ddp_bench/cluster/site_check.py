"""What `check` says about the cluster: which profile it chose and why, and every site rule the job breaks.

`check` takes the sweep's job flags beside the run flags (`--cluster`, `--gpu-type`, `--gpus`, `--time`, `--mig`,
`--mem-per-gpu`, `--queue`); inside a job, the ranks and nodes are the launcher's and a MIG slice is seen in
CUDA_VISIBLE_DEVICES. A retired or unknown --cluster is bad input: one line, exit 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from ddp_bench.args import Parser
from ddp_bench.cluster.detect import resolve_cluster, this_host
from ddp_bench.cluster.profiles import get_profile
from ddp_bench.cluster.rules import JobRequest, check_scheduler_values, parse_walltime, site_refusals
from ddp_bench.config import BenchConfig
from ddp_bench.errors import UsageError
from ddp_bench.flag_bounds import check_bounds
from ddp_bench.launch.cuda_build import is_mig
from ddp_bench.launch.launchers import detect_launch
from ddp_bench.launch.preflight import Finding


def split_check_args(argv: Sequence[str]):
    """(check's own job flags, the run flags left over)."""
    parser = Parser(prog="python -m ddp_bench check", add_help=False, allow_abbrev=False)
    parser.add_argument("--cluster", default="auto")
    parser.add_argument("--gpu-type", default="")
    parser.add_argument("--gpus", type=int)
    parser.add_argument("--time", default="")
    parser.add_argument("--mig", default="")
    parser.add_argument("--mem-per-gpu", default="")
    parser.add_argument("--queue", default="")
    own, rest = parser.parse_known_args(list(argv))
    check_bounds({"--gpus": own.gpus})
    check_scheduler_values(
        {"--mem-per-gpu": own.mem_per_gpu, "--queue": own.queue, "--mig": own.mig, "--gpu-type": own.gpu_type}
    )
    return own, rest


def _gpu_type_in_job(env: Mapping[str, str]) -> str:
    """The GPU type a Slurm job asked for (SLURM_GPUS_PER_NODE or SLURM_GPUS, e.g. h100:4), '' if untyped."""
    for name in ("SLURM_GPUS_PER_NODE", "SLURM_GPUS"):
        kind, _, count = env.get(name, "").partition(":")
        if count:
            return kind
    return ""


def cluster_findings(own, cfg: BenchConfig, env: Mapping[str, str]) -> list[Finding]:
    detection = resolve_cluster(own.cluster, env, this_host())
    profile = get_profile(detection.name)
    findings = [Finding("cluster", "ok", f"{profile.name}: {detection.reason}")]
    gpu_type = own.gpu_type or _gpu_type_in_job(env)
    if len(profile.nodes) > 1 and not gpu_type:
        kinds = " or ".join(node.gpu_type for node in profile.nodes)
        return [*findings, Finding("site rules", "note", f"give --gpu-type {kinds} to check this cluster's rules")]
    node = profile.node(gpu_type if len(profile.nodes) > 1 or own.gpu_type else "")
    try:
        info = detect_launch(env, cfg.launcher)
        ranks, nodes = info.world_size, info.num_nodes
    except UsageError:
        ranks, nodes = 1, 1
    if own.gpus:
        ranks, nodes = own.gpus, -(-own.gpus // max(node.gpus, 1))
    visible = env.get("CUDA_VISIBLE_DEVICES", "")
    venv = env.get("DDP_BENCH_VENV", "") or (sys.prefix if sys.prefix != sys.base_prefix else "")
    request = JobRequest(
        gpus=ranks,
        nodes=nodes,
        time_s=parse_walltime(own.time) if own.time else None,
        mig=own.mig or (visible.split(",")[0].strip() if is_mig(visible) else ""),
        mem_per_gpu=own.mem_per_gpu,
        results=os.path.abspath(cfg.out),
        venv=venv,
        queue=own.queue,
    )
    refusals = site_refusals(profile, node, request, env)
    findings += [Finding("site rules", "error", refusal) for refusal in refusals]
    if not refusals:
        asked = f"{ranks} rank(s) on {nodes} node(s)" + (f" for {own.time}" if own.time else "")
        findings.append(Finding("site rules", "ok", f"{asked}: within {profile.name}'s rules"))
    return findings
