"""Where the time goes: FLOPs per image, a peak measured in the same run, and a verdict per run.

The peak is a matrix-multiply benchmark on the same device and dtype, run by every rank at the same moment
(so ranks sharing a node's cores measure the share they really have). A datasheet number would let a wrong
table produce a 500 % "MFU"; a measured one cannot.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ddp_bench.launch.collectives import synchronize

# Thresholds for the verdict, as shares of one step's wall time.
LOADER_BOUND_SHARE = 0.25  # waiting for data takes over a quarter of the step
COMM_BOUND_SHARE = 0.30  # exposed all-reduce time is over 30 % of the step
OVERHEAD_BOUND_MFU = 0.10  # a GPU below 10 % of its measured matmul peak, not waiting on data or network


def flops_per_image(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Forward + backward FLOPs of one training image, counted once by torch.utils.flop_counter."""
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.train()
    with counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return counter.get_total_flops() / len(x)


def matmul_dtype(amp: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp, torch.float32)


def measured_peak_flops(
    device: torch.device, dtype: torch.dtype, budget_s: float = 0.3, repeat_s: float = 0.025
) -> float:
    """FLOP/s of square matrix products on this device and dtype, in the math mode in force (TF32 or not), from a
    few repeats of at least `repeat_s` each (peak_from_repeats says which).

    On a GPU the matrices are 8192 x 8192 (one product is 1.1 TFLOP: milliseconds even on an H100, so a repeat
    holds several and lasts tens of milliseconds, far above launch and timer overheads); halved while they do not
    fit. Run before training, and freed after, so it can never cost the run its row.
    """
    n = 8192 if device.type == "cuda" else 1024
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.float32  # CPUs have no fast fp16 matmul; fp16 is refused on CPU anyway
    while True:
        try:
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            torch.matmul(a, b)  # first call: kernel selection, and the product's own allocation
            synchronize(device)
            break
        except torch.OutOfMemoryError:
            a = b = None  # free what did fit before trying half the size
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if n <= 1024:
                raise
            n //= 2
    started = time.perf_counter()
    torch.matmul(a, b)
    synchronize(device)
    per_repeat = max(1, math.ceil(repeat_s / max(time.perf_counter() - started, 1e-9)))
    seconds: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(seconds) < 3 or (time.perf_counter() < deadline and len(seconds) < 50):
        started = time.perf_counter()
        for _ in range(per_repeat):
            torch.matmul(a, b)
        synchronize(device)
        seconds.append((time.perf_counter() - started) / per_repeat)
    del a, b
    if device.type == "cuda":
        torch.cuda.empty_cache()  # give the training its memory back
    return 2 * n**3 / peak_from_repeats(seconds, device.type)


def peak_from_repeats(seconds: list[float], device_type: str) -> float:
    """The seconds per product the peak is taken from. GPUs: the median repeat. A GPU at a low power cap (a T4's
    70 W) runs its first products at boost clocks and then slows: the best repeat would be a burst the training
    never sees. CPUs: the best, since a shared machine's other work only ever slows a repeat down."""
    ordered = sorted(seconds)
    return ordered[len(ordered) // 2] if device_type == "cuda" else ordered[0]


def model_flops_utilization(achieved_flops: float, peak_flops: float) -> float:
    """achieved / peak, or NaN when there is no peak or the run outpaced it: a measured peak below what the model
    achieved is no ceiling (a different math mode, a throttled measurement), and an MFU above 1 would be false."""
    if not peak_flops > 0 or achieved_flops > peak_flops:
        return float("nan")
    return achieved_flops / peak_flops


# What to try for each verdict; the console summary prints it under the verdict.
ADVICE = {
    "loader-bound": "keep the dataset on the device (--loader device) or add --workers",
    "comm-bound": "use a larger per-GPU batch, fewer nodes, or a faster interconnect",
    "overhead-bound": "the GPU waits on Python and kernel launches: try a bigger batch, --compile, or a CPU",
    "compute-bound": "the model's arithmetic sets the pace: AMP and channels-last help on GPUs",
}


def exposed_data_wait_ms(data_wait_ms: float, step_ms: float, stage_step_ms: float, device_type: str) -> float:
    """The part of waiting for data that the step did not hide. On a CPU nothing overlaps: all of the loop's wait.
    On a GPU the host queues work ahead of the device, so a wait can pass while the device is still busy with
    earlier steps; what it cost is the stage's time per step beyond the median step (device time, CUDA events)."""
    if device_type == "cuda":
        return max(0.0, stage_step_ms - step_ms)
    return data_wait_ms


def verdict(*, data_exposed_ms: float, step_ms: float, comm_ms: float, mfu: float, device_type: str) -> str:
    """What bounds one run, from its median per-step numbers (the data wait the step did not hide, the step, the
    exposed all-reduce): one of the keys of ADVICE."""
    whole = data_exposed_ms + step_ms
    if whole > 0 and data_exposed_ms / whole > LOADER_BOUND_SHARE:
        return "loader-bound"
    if step_ms > 0 and comm_ms / step_ms > COMM_BOUND_SHARE:
        return "comm-bound"
    if device_type == "cuda" and mfu == mfu and mfu < OVERHEAD_BOUND_MFU:
        return "overhead-bound"
    return "compute-bound"
