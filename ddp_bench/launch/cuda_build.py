"""Can this torch build drive this node's GPUs? If not, one line that says why and what to install, before anything
trains: a GPU job whose torch cannot use its GPUs must never train on the CPU instead, since a row that says `cpu`
from a GPU job is a wrong number in someone's proposal.

Three ways it goes wrong, all seen on real clusters: a CPU-only build on a GPU node (the wrong wheel in a venv); a
build for a newer CUDA than the node's driver supports (PyPI's torch 2.15 wheel is built for CUDA 13.2 and needs
driver 580 or newer: then `torch.cuda.is_available()` is simply False); and a build without kernels for the GPU's
compute capability (that wheel's kernels start at sm_75, so a V100, sm_70, gets "no kernel image is available").
torch's own view is compared with the driver's, from `nvidia-smi`, which needs neither torch nor CUDA.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

# The oldest driver each CUDA major version runs on (minor version compatibility): NVIDIA, "CUDA Compatibility",
# Minor Version Compatibility, Table 1 (docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html).
MIN_DRIVER_MAJOR = {11: 450, 12: 525, 13: 580}
# What to install for a driver that supports CUDA N at most: PyTorch's wheel index for that CUDA.
WHEEL_INDEX = {11: "cu118", 12: "cu126"}
INDEX_URL = "https://download.pytorch.org/whl/"


@dataclass(frozen=True)
class DriverView:
    """What the NVIDIA driver reports, whatever torch thinks."""

    gpus: int
    driver: str  # e.g. '535.104.05'


@dataclass(frozen=True)
class TorchView:
    """What this torch build reports about CUDA."""

    version: str  # torch.__version__
    cuda: str  # torch.version.cuda; '' for a CPU-only build
    available: bool  # torch.cuda.is_available()
    arch_list: tuple[str, ...]  # torch.cuda.get_arch_list(): the kernels compiled in ('sm_80', 'compute_90', ...)
    devices: tuple[tuple[str, tuple[int, int]], ...]  # (name, compute capability) of each visible GPU


def driver_view(timeout_s: float = 30) -> DriverView | None:
    """The node's GPUs and driver version from `nvidia-smi`; None where there is none or it cannot answer."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        shown = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line.strip() for line in shown.stdout.splitlines() if line.strip()]
    if shown.returncode != 0 or not lines:
        return None
    return DriverView(len(lines), lines[0])


def torch_view() -> TorchView:
    import torch

    available = torch.cuda.is_available()
    devices = ()
    if available:
        devices = tuple(
            (torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index)))
            for index in range(torch.cuda.device_count())
        )
    return TorchView(
        torch.__version__,
        torch.version.cuda or "",
        available,
        tuple(torch.cuda.get_arch_list()) if available else (),
        devices,
    )


def has_kernels(arch_list: tuple[str, ...], capability: tuple[int, int]) -> bool:
    """Does a build with these kernels run on a GPU of this compute capability? Machine code (sm_XY) runs on the
    same major version at the same or a higher minor one; PTX (compute_XY) is compiled for any capability at or
    above its own; arch-specific code (sm_90a) runs on exactly that capability."""
    for arch in arch_list:
        match = re.fullmatch(r"(sm|compute)_(\d+?)(\d)([a-z]?)", arch)
        if not match:
            continue
        kind, major, minor, suffix = match.group(1), int(match.group(2)), int(match.group(3)), match.group(4)
        if suffix == "a":
            if (major, minor) == capability:
                return True
        elif kind == "sm" and major == capability[0] and minor <= capability[1]:
            return True
        elif kind == "compute" and (major, minor) <= capability:
            return True
    return False


def is_mig(visible_devices: str) -> bool:
    """Does CUDA_VISIBLE_DEVICES hand this process MIG slices (their UUIDs start with MIG-)?"""
    return any(entry.strip().startswith("MIG-") for entry in visible_devices.split(","))


def hides_every_gpu(env: Mapping[str, str]) -> bool:
    """CUDA_VISIBLE_DEVICES set to show no GPU at all: a choice, not a broken build."""
    return "CUDA_VISIBLE_DEVICES" in env and env["CUDA_VISIBLE_DEVICES"].strip() in ("", "-1", "none", "NoDevFiles")


def cuda_problem(torch: TorchView, driver: DriverView | None, env: Mapping[str, str]) -> str:
    """Why this torch cannot use the GPUs this node has, as one line that names the fix; '' when it can, or when the
    node shows none."""
    if torch.available:
        if not any(re.fullmatch(r"(sm|compute)_\d+[a-z]?", arch) for arch in torch.arch_list):
            return ""  # a ROCm build (gfx90a, ...) or one that reports no arch list: nothing to judge it by
        for name, capability in torch.devices:
            if not has_kernels(torch.arch_list, capability):
                return _no_kernels(torch, name, capability)
        return ""
    if driver is None or driver.gpus == 0 or hides_every_gpu(env):
        return ""
    seen = f"nvidia-smi sees {driver.gpus} GPU(s) (driver {driver.driver})"
    if not torch.cuda:
        return (
            f"{seen}, but torch {torch.version} is a CPU-only build: install the CUDA build (on an Alliance cluster "
            "`pip install --no-index torch` from the wheelhouse, on Polaris `module load conda`; elsewhere PyPI's "
            "`pip install torch`), or pass --device cpu to train on the CPU on purpose"
        )
    built_for = int(torch.cuda.split(".")[0])
    needed = MIN_DRIVER_MAJOR.get(built_for, 0)
    driver_major = int(driver.driver.split(".")[0]) if driver.driver.split(".")[0].isdigit() else 0
    if driver_major and driver_major < needed:
        supported = max((cuda for cuda, oldest in MIN_DRIVER_MAJOR.items() if oldest <= driver_major), default=0)
        fix = (
            f"pip install torch --index-url {INDEX_URL}{WHEEL_INDEX[supported]}"
            if supported in WHEEL_INDEX
            else "a torch built for an older CUDA"
        )
        return (
            f"{seen}, but torch {torch.version} is built for CUDA {torch.cuda}, which needs driver {needed} or newer: "
            f"install a build for CUDA {supported or 'this driver supports'} ({fix}), or `module load` the "
            "cluster's own torch or a newer driver"
        )
    return (
        f"{seen}, but torch {torch.version} (CUDA {torch.cuda}) cannot use them (CUDA_VISIBLE_DEVICES="
        f"{env.get('CUDA_VISIBLE_DEVICES', 'unset')!r}): check the job's GPU request, or pass --device cpu"
    )


def _no_kernels(torch: TorchView, name: str, capability: tuple[int, int]) -> str:
    compiled = " ".join(torch.arch_list) or "nothing"
    oldest = min((int(m) for m in re.findall(r"_(\d+)", compiled)), default=0)
    if capability[0] * 10 + capability[1] < oldest:
        fix = (
            f"install a build that still has sm_{capability[0]}{capability[1]} kernels "
            f"(pip install torch --index-url {INDEX_URL}{WHEEL_INDEX[12]}: the CUDA 12.6 builds keep Maxwell to "
            "Hopper), or `module load` the cluster's own torch"
        )
    else:
        fix = "install a newer torch, built for a newer CUDA (PyPI's `pip install --upgrade torch`)"
    return (
        f"{name} has compute capability {capability[0]}.{capability[1]}, but torch {torch.version} (CUDA "
        f"{torch.cuda}) has kernels for {compiled} only: {fix}"
    )


def describe(torch: TorchView, driver: DriverView | None) -> str:
    """One line for `check`: the build, its CUDA, the driver and the kernels compiled in."""
    cuda = f"CUDA {torch.cuda}" if torch.cuda else "CPU-only build"
    shown = f"driver {driver.driver}, {driver.gpus} GPU(s) seen by nvidia-smi" if driver else "no nvidia-smi answer"
    kernels = " ".join(torch.arch_list) if torch.arch_list else "—"
    return f"torch {torch.version} · {cuda} · {shown} · kernels: {kernels}"
