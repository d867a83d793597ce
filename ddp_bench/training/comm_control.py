"""The control phase after the timed stage: what communication costs each step, what the step costs without it,
and when DDP's gradient buckets become ready. None of it is inside `train_time_s`.

- exposed communication: paired steps with and without DDP's all-reduce (`no_sync`);
- compute-only step time: the median of those `no_sync` steps, on this rank alone: the per-rank speed a
  straggler report needs (with the all-reduce, every rank waits for the slowest and all look alike); and, since
  every such step starts with the ranks aligned, the median over steps of the slowest rank's time in each: the
  compute-only step the job as a whole runs at (the scaling model's compute term), which is longer than any one
  rank's median when their times jitter; and every rank's such steps pooled, whose quantiles the row records
  for the slowest of N ranks at counts not measured (measurement/compute_drift.py);
- gradient readiness: a few more compute-only steps with a hook on every parameter, giving each bucket's bytes
  and how long before the end of backward its last gradient was ready: the overlap the scaling model needs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ddp_bench.data import BatchSource
from ddp_bench.launch.collectives import align_ranks, gather_floats
from ddp_bench.launch.job import Job
from ddp_bench.measurement.scaling_model import Bucket, ddp_buckets
from ddp_bench.measurement.timing import StepTimer, percentile
from ddp_bench.training.loop import Precision, epochs_forever, train_step


@dataclass(frozen=True)
class CommControl:
    exposed_comm_ms: float  # 0 on one rank
    compute_step_ms: float  # median compute-only step on this rank; NaN when not measured
    job_compute_step_ms: float  # median over the same steps of the slowest rank's time; NaN when not measured
    buckets: list[Bucket]  # in the order DDP reduces them; [] when not measured
    pooled_compute_ms: tuple[float, ...] = ()  # every rank's no_sync steps, all ranks together; () when not measured


def comm_control(
    ddp_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    batches: BatchSource,
    precision: Precision,
    job: Job,
    pairs: int = 10,
    readiness_steps: int = 3,
) -> CommControl:
    """Run the whole control phase (every rank the same steps in the same order). The no_sync steps leave the
    replicas apart, so the caller runs nothing that trains after this."""
    stream = epochs_forever(batches, first_epoch=1_000_000)  # any epoch: only the timing matters here
    ddp = getattr(ddp_model, "_orig_mod", ddp_model)  # the DDP module under torch.compile
    distributed = isinstance(ddp, DistributedDataParallel)
    exposed, compute, job_compute, pooled = (0.0, float("nan"), float("nan"), ())
    if distributed:
        exposed, compute, job_compute, pooled = _paired_steps(
            ddp_model, ddp, optimizer, scaler, stream, precision, job, pairs
        )
    module = ddp.module if distributed else ddp

    def compute_only_step() -> None:
        _epoch, x, y = next(stream)
        with ddp.no_sync() if distributed else contextlib.nullcontext():
            train_step(ddp_model, optimizer, scaler, precision, x, y)

    buckets = gradient_buckets(module, compute_only_step, job.device, readiness_steps)
    return CommControl(exposed, compute, job_compute, buckets, pooled)


def _paired_steps(ddp_model, ddp, optimizer, scaler, stream, precision, job, pairs) -> tuple:
    """(exposed all-reduce ms, compute-only ms, the job's compute-only ms, every rank's no_sync steps): the median,
    over pairs of adjacent steps, of (step with DDP's gradient all-reduce) minus (the same step under `no_sync`);
    the median `no_sync` step of this rank; the median over those steps of the slowest rank's time in each; and
    all ranks' no_sync step times pooled (the distribution the slowest of N is drawn from). The difference
    is the communication the overlap with backward did not hide, plus the wait for the slowest rank. Pairing
    adjacent steps, in alternating order, keeps drift in machine speed (other jobs, clock boost, a noisy
    neighbour) out of it. Zero when the difference is below the noise.

    The steps run what the run trained: the compiled module under --compile (no_sync is DDP's switch, reached
    through the compiled wrapper), and the run's own loss scaler. One untimed pair first absorbs what switching
    to no_sync costs once (a recompilation under --compile)."""
    timers = {True: StepTimer(job.device), False: StepTimer(job.device)}
    for pair in range(-1, pairs):
        # Every rank runs the same order, so the synced step's collective always has all its peers.
        for sync in (True, False) if pair % 2 == 0 else (False, True):
            _epoch, x, y = next(stream)
            # Start both kinds of step with the ranks aligned, as they are in steady training after each
            # all-reduce; otherwise the drift a free-running no_sync step builds up is charged to the next one.
            align_ranks(job)
            with contextlib.nullcontext() if sync else ddp.no_sync():
                if pair < 0:  # the untimed first pair
                    train_step(ddp_model, optimizer, scaler, precision, x, y)
                    continue
                timers[sync].start()
                train_step(ddp_model, optimizer, scaler, precision, x, y)
                timers[sync].stop()
    unsynced = timers[False].durations_ms()
    differences = [synced - alone for synced, alone in zip(timers[True].durations_ms(), unsynced, strict=True)]
    everyone = gather_floats(job, unsynced)
    slowest = [max(step) for step in zip(*everyone, strict=True)]
    pooled = tuple(time for rank in everyone for time in rank)
    return max(0.0, percentile(differences, 50)), percentile(unsynced, 50), percentile(slowest, 50), pooled


def gradient_buckets(
    module: nn.Module, compute_only_step: Callable[[], None], device: torch.device, steps: int
) -> list[Bucket]:
    """DDP's buckets for this model, with when each became ready: a hook after every parameter's gradient
    accumulation marks the moment (a CUDA event on the gradient's stream, or perf_counter on the CPU, where the
    gradient is complete when the hook runs), over `steps` compute-only steps; each parameter's median ready
    time, relative to the step's last gradient, is bucketed as DDP rebuilds its buckets. Hook costs stay out of
    the other measurements: these steps time nothing else."""
    params = [param for param in module.parameters() if param.requires_grad]
    if not params or steps <= 0:
        return []
    cuda = device.type == "cuda"

    def stamp() -> torch.cuda.Event | float:
        if not cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def ms_since(start, at) -> float:
        return start.elapsed_time(at) if cuda else (at - start) * 1e3

    starts: list = []  # one stamp per step, before it: the reference its gradients' stamps are timed from
    marks: list[dict[int, object]] = []  # per step, parameter index -> stamp after its gradient accumulated

    def hook_for(index: int) -> Callable[[torch.Tensor], None]:
        def hook(_param: torch.Tensor) -> None:
            marks[-1][index] = stamp()

        return hook

    handles = [param.register_post_accumulate_grad_hook(hook_for(index)) for index, param in enumerate(params)]
    try:
        for _ in range(steps):
            starts.append(stamp())
            marks.append({})
            compute_only_step()
    finally:
        for handle in handles:
            handle.remove()
    if cuda:
        torch.cuda.synchronize(device)
    offsets: dict[int, list[float]] = {index: [] for index in range(len(params))}
    for start, step_marks in zip(starts, marks, strict=True):
        if len(step_marks) != len(params):
            continue  # a parameter without a gradient this step (unused): no bucket timing from it
        times = {index: ms_since(start, at) for index, at in step_marks.items()}
        end = max(times.values())
        for index, at in times.items():
            offsets[index].append(at - end)
    if not all(offsets.values()):
        return []
    ready = [(param.numel() * param.element_size(), percentile(offsets[i], 50)) for i, param in enumerate(params)]
    return ddp_buckets(ready)
