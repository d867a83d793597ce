"""Pre-flight checks: the cluster mistakes that waste allocations, found before the process group starts.

`python -m ddp_bench check [run flags]` runs them all and prints a table; a normal run applies the same
checks (errors stop it with exit 2 before anything is written, notes are printed once by rank 0).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from ddp_bench.config import BenchConfig
from ddp_bench.errors import UsageError
from ddp_bench.launch.launchers import LaunchInfo

NETWORK_FILESYSTEMS = {"lustre", "nfs", "nfs4", "gpfs", "beegfs", "cifs", "smb3", "fuse.sshfs", "ceph", "fuse.ceph"}


@dataclass(frozen=True)
class Finding:
    check: str
    level: str  # ok | note | error
    message: str


def require_launcher_for_allocation(cfg: BenchConfig, env: Mapping[str, str], info: LaunchInfo) -> None:
    """A multi-task Slurm allocation whose job script forgot srun would run N copies of a 1-rank job, or one."""
    promised = env.get("SLURM_NTASKS", "1")
    if cfg.launcher == "auto" and info.launcher == "single" and promised.isdigit() and int(promised) > 1:
        raise UsageError(
            f"this Slurm job asked for {promised} tasks but ddp_bench was not started by srun, so it would run "
            "alone: use `srun python -m ddp_bench ...` (or --launcher single to run one process on purpose)"
        )


def filesystem_type(path: str) -> str:
    """The type of the filesystem holding `path`, from /proc/mounts (longest matching mount point)."""
    path = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
                    best, kind = point, fields[2]
    except OSError:
        return ""  # not Linux: nothing to say
    return kind


def data_location_note(cfg: BenchConfig, env: Mapping[str, str]) -> Finding:
    if cfg.data == "synthetic":
        return Finding("data location", "ok", "synthetic data is generated in memory")
    local = env.get("SLURM_TMPDIR", "")
    real = os.path.realpath(cfg.data_dir)
    if local and (real == os.path.realpath(local) or real.startswith(os.path.realpath(local) + os.sep)):
        return Finding("data location", "ok", f"{cfg.data_dir} is on node-local disk ($SLURM_TMPDIR)")
    kind = filesystem_type(cfg.data_dir)
    if kind in NETWORK_FILESYSTEMS:
        return Finding(
            "data location",
            "note",
            f"{cfg.data_dir} is on a network filesystem ({kind}): copy it to node-local disk "
            "($SLURM_TMPDIR) for faster start-up and loading",
        )
    return Finding("data location", "ok", f"{cfg.data_dir} is on a local filesystem ({kind or 'unknown'})")


def gpu_note(local_world_size: int, visible: int) -> Finding | None:
    if visible > local_world_size:
        return Finding(
            "GPUs",
            "note",
            f"{visible} GPUs visible on this node but only {local_world_size} rank(s): {visible - local_world_size} "
            "GPU(s) will sit idle (set --ntasks-per-node / --nproc_per_node to the GPU count)",
        )
    return None


def has_internet(host: str, port: int = 443, timeout_s: float = 3.0) -> bool:
    """Can this node open a connection to the dataset mirror? (Compute nodes on clusters usually cannot.)"""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def run_checks(cfg: BenchConfig, env: Mapping[str, str]) -> list[Finding]:
    """Every check, as findings; never raises for what it finds."""
    from ddp_bench.launch.discovery import discover_launch
    from ddp_bench.results.results_dir import check_output_dir

    findings = []
    try:
        info = discover_launch(env, cfg.launcher, cfg.init_timeout)
        require_launcher_for_allocation(cfg, env, info)
    except UsageError as exc:
        return [Finding("launcher", "error", str(exc))]
    findings.append(
        Finding(
            "launcher",
            "ok",
            f"{info.launcher}: rank {info.rank} of {info.world_size}, local rank {info.local_rank} of "
            f"{info.local_world_size} on node {info.node_rank} of {info.num_nodes}"
            + (f", rendezvous {info.master_addr}:{info.master_port}" if info.world_size > 1 else ""),
        )
    )
    from ddp_bench.launch.cuda_build import describe, driver_view, torch_view

    findings.append(Finding("torch", "ok", describe(torch_view(), driver_view())))
    findings += _device_findings(cfg, info, env)
    dataset, images = _dataset_findings(cfg)
    findings += dataset
    findings.append(data_location_note(cfg, env))
    if cfg.batch_size * info.world_size > images:
        findings.append(
            Finding(
                "batch",
                "error",
                f"global batch {cfg.batch_size * info.world_size} is larger than the {images} training images",
            )
        )
    try:
        check_output_dir(cfg.out)
        findings.append(Finding("results", "ok", f"{cfg.out} is writable"))
    except UsageError as exc:
        findings.append(Finding("results", "error", str(exc)))
    return findings


def _device_findings(cfg: BenchConfig, info: LaunchInfo, env: Mapping[str, str]) -> list[Finding]:
    """The device and backend this rank would train on, and whether the node's GPUs match its ranks."""
    import torch

    from ddp_bench.launch.hardware import plan_hardware

    findings = []
    try:
        plan = plan_hardware(cfg, info, env)
        findings.append(Finding("device", "ok", f"{plan.device} with {plan.backend}, {plan.threads} CPU thread(s)"))
        if plan.device.type == "cuda":
            note = gpu_note(info.local_world_size, torch.cuda.device_count())
            if note:
                findings.append(note)
    except UsageError as exc:
        findings.append(Finding("device", "error", str(exc)))
    return findings


def _dataset_findings(cfg: BenchConfig) -> tuple[list[Finding], int]:
    """Whether the training images can be read, and how many there are (0 where unknown)."""
    from ddp_bench.data import DOWNLOAD_HOSTS, SPECS, open_real_dataset

    findings = []
    images = SPECS[cfg.image_shape_name].train_size if cfg.image_shape_name in SPECS else 0
    if cfg.data == "synthetic":
        findings.append(Finding("dataset", "ok", f"synthetic, shaped like {cfg.image_shape_name}"))
    elif cfg.data == "imagefolder":
        from ddp_bench.image_folder import list_folder

        try:
            images = list_folder(cfg.data_dir, need_val=cfg.epoch_limit is not None).train
            findings.append(Finding("dataset", "ok", f"image folder: {images} training images in {cfg.data_dir}"))
        except UsageError as exc:
            findings.append(Finding("dataset", "error", str(exc)))
    else:
        try:
            images = len(open_real_dataset(cfg.data, cfg.data_dir, train=True))
            findings.append(Finding("dataset", "ok", f"{cfg.data}: {images} training images in {cfg.data_dir}"))
        except UsageError as exc:
            reachable = has_internet(DOWNLOAD_HOSTS[cfg.data])
            online = "this node has internet" if reachable else "this node has no internet (usual on compute nodes)"
            findings.append(Finding("dataset", "error", f"{exc} ({online})"))
    return findings, images
