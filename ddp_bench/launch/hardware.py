"""This rank's hardware plan: which device, which backend, how many CPU threads; or a one-line UsageError for a
request the hardware cannot honour. Reads torch's view of the GPUs and the launcher's placement, writes nothing.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ddp_bench.config import BenchConfig
from ddp_bench.errors import UsageError
from ddp_bench.launch.cuda_build import cuda_problem, driver_view, is_mig, torch_view
from ddp_bench.launch.launchers import LaunchInfo


@dataclass(frozen=True)
class HardwarePlan:
    device: torch.device
    backend: str
    threads: int
    tf32: bool = False  # TF32 for fp32 matmuls and cuDNN convolutions (CUDA only)
    cudnn_benchmark: bool = False  # cuDNN autotuning of convolution algorithms (CUDA only; shapes are fixed)


def apply_math_mode(plan: HardwarePlan) -> None:
    """Set the math mode the plan decided, for training and for the peak measured in the same process alike.

    torch's defaults disagree with each other (TF32 off for matmuls, on for cuDNN convolutions), which would let
    convolutions outrun a matmul peak measured in full fp32; both follow one decision here instead.
    """
    torch.backends.cuda.matmul.allow_tf32 = plan.tf32
    torch.backends.cudnn.allow_tf32 = plan.tf32
    torch.backends.cudnn.benchmark = plan.cudnn_benchmark


# glibc's malloc serves blocks above its mmap threshold with a fresh mmap and returns them with munmap on free.
# The threshold starts at 128 KiB and rises only when a large block happens to be freed, so a training step's
# few-MB activations may be mapped, zero-filled page by page and unmapped again on every step: measured on the
# course CNN, 5,000 page faults a step and a whole run at 0.91 of a hand loop that had escaped them, depending
# only on which temporary each process happened to free first. Fixed thresholds make every run the same steady
# state (what CPU tuning guides get from jemalloc or tcmalloc): blocks up to glibc's largest mmap threshold come
# from the heap, and freed memory stays.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
MMAP_THRESHOLD = 32 * 2**20  # glibc's upper limit for it on 64-bit systems
TRIM_THRESHOLD = 512 * 2**20


def steady_cpu_allocator(env: Mapping[str, str]) -> str:
    """Fix glibc malloc's thresholds for this process; returns what the CPU allocator is, for the rows. Left alone
    when the user chose (LD_PRELOAD of another allocator, MALLOC_* tunables) or the C library is not glibc."""
    chosen = [f"{name}={env[name]}" for name in sorted(env) if name == "LD_PRELOAD" or name.startswith("MALLOC_")]
    if chosen:
        return "as set: " + " ".join(chosen)
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return "C library default (not glibc)"
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return "glibc default (mallopt refused)"
    return f"glibc mmap_threshold={MMAP_THRESHOLD >> 20}MiB trim_threshold={TRIM_THRESHOLD >> 20}MiB"


def plan_hardware(cfg: BenchConfig, info: LaunchInfo, env: Mapping[str, str]) -> HardwarePlan:
    """Device, backend and CPU threads for this rank, or a UsageError for what the hardware cannot do."""
    cuda_ok = False
    if cfg.device != "cpu":  # a GPU this torch cannot drive is refused, under --device auto too
        view = torch_view()
        problem = cuda_problem(view, None if view.available else driver_view(), env)
        if problem:
            raise UsageError(problem)
        cuda_ok = view.available
    if cfg.device == "cuda" and not cuda_ok:
        raise UsageError(f"--device cuda, but no CUDA GPU is visible to torch {torch.__version__}")
    kind = cfg.device if cfg.device != "auto" else ("cuda" if cuda_ok else "cpu")
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if kind == "cuda" else "gloo")
    if backend == "nccl" and kind != "cuda":
        raise UsageError("--backend nccl needs CUDA GPUs; use --backend gloo (or auto) on CPU")
    if cfg.amp == "fp16" and kind != "cuda":
        raise UsageError("--amp fp16 needs a CUDA GPU; use --amp bf16 on CPU")
    if kind == "cuda":
        visible = torch.cuda.device_count()
        bound = env.get("CUDA_VISIBLE_DEVICES", "")
        if is_mig(bound) and info.world_size > 1:
            raise UsageError(
                f"{info.world_size} ranks on MIG slices ({bound}): a job may hold one MIG slice, and slices cannot "
                "run multi-rank DDP (no CUDA IPC or peer access between them); run one rank on the slice, or "
                "request whole GPUs (e.g. --gpus-per-node=h100:4)"
            )
        if info.local_world_size <= visible:
            device = torch.device("cuda", info.local_rank)
        elif visible == 1 and bound and "," not in bound:
            device = torch.device("cuda", 0)  # the scheduler bound one GPU to each task (--gpus-per-task=1)
        else:
            raise UsageError(
                f"{info.local_world_size} ranks on this node but only {visible} GPU(s) visible: "
                "start at most one rank per GPU (--ntasks-per-node / --nproc_per_node)"
            )
        capability = torch.cuda.get_device_capability(device)
        if cfg.amp == "bf16" and capability < (8, 0):
            name = torch.cuda.get_device_name(device)
            raise UsageError(f"--amp bf16 needs an Ampere or newer GPU; {name} has no bf16 units, use --amp fp16")
    else:
        device = torch.device("cpu")
    if "OMP_NUM_THREADS" in env:
        threads = torch.get_num_threads()  # the launcher or the user chose
    elif kind == "cpu":
        # Ranks sharing a node share its cores; all of them spinning on every core only adds contention.
        threads = max(1, len(os.sched_getaffinity(0)) // max(info.local_world_size, 1))
    else:
        threads = torch.get_num_threads()
    if kind == "cuda":
        # TF32 units exist from Ampere (8.0) on; a T4's or V100's row says off, as its fp32 math is. Warm-up absorbs
        # cuDNN's autotuning, and every training batch has the same shape, so autotuning is on.
        tf32 = cfg.tf32 == "on" and capability >= (8, 0)
        return HardwarePlan(device, backend, threads, tf32=tf32, cudnn_benchmark=True)
    return HardwarePlan(device, backend, threads)
