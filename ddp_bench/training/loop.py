"""The one training loop: warm-up stage, timed stage, evaluation. Read it top to bottom.

What is timed: `train_time_s` runs from the moment every rank has finished warming up (an all-reduce lines
them up, and the device is synchronised) to the end of the last measured step (synchronised again). It
includes waiting for data, forward, backward, gradient all-reduce and optimizer steps; it excludes warm-up and
evaluation. Per-step times (CUDA events, or perf_counter on CPU) start after the batch is in hand, so their
median says how long the model takes, and the gap to `train_time_s / steps` is time spent waiting for data.

With a target accuracy the timed stage is a race: the model starts from its initial weights (the warm-up's
updates are undone), is evaluated at the end of every epoch and every `eval_every` steps with the clock paused,
and stops at the first evaluation that reaches the target; each evaluation adds a point to the accuracy curve.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ddp_bench.data import BatchSource
from ddp_bench.faults import Faults
from ddp_bench.launch.collectives import align_ranks, any_rank, reduce_floats
from ddp_bench.launch.job import Job
from ddp_bench.launch.stopping import StopRequest, check_interval
from ddp_bench.measurement.consumption import DevicePeak, EnergyCounter
from ddp_bench.measurement.timing import StageClock, StepTimer


@dataclass(frozen=True)
class TrainResult:
    steps: int  # measured steps this rank ran
    samples: int  # images this rank trained on in those steps
    train_time_s: float
    energy_j: float  # this rank's counter over the same intervals as train_time_s; NaN without a counter
    peak_device_allocated_mb: float  # GPU: the allocator's peak over the same intervals, MiB; NaN on CPU
    peak_device_reserved_mb: float
    step_times_ms: list[float]
    final_loss: float
    test_accuracy: float  # NaN when nothing was evaluated
    batches_per_epoch_done: list[int]  # measured batches taken from each epoch, in order (for index logs)
    stopped_by: str  # the signal that stopped the run early, '' when it ran to the end
    data_wait_ms: list[float]  # per measured step: time the loop waited for its batch
    curve: list[AccuracyPoint]  # one point per evaluation, in order
    reached: AccuracyPoint | None  # the first evaluation at or above the target accuracy


@dataclass(frozen=True)
class AccuracyPoint:
    """One evaluation during the timed stage."""

    step: int  # measured steps done before it
    epochs: float  # epochs done before it (fractional for evaluations inside an epoch)
    train_time_s: float  # training time so far: evaluation excluded
    elapsed_s: float  # since the timed stage began: evaluation included
    test_accuracy: float


@dataclass(frozen=True)
class Precision:
    amp: str  # off | bf16 | fp16
    device_type: str

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device_type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        return torch.amp.GradScaler(self.device_type) if self.amp == "fp16" else None


def epochs_forever(batches: BatchSource, first_epoch: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Batches across as many epochs as asked for, each epoch freshly shuffled (set_epoch)."""
    epoch = first_epoch
    while True:
        for x, y in batches.epoch(epoch):
            yield epoch, x, y
        epoch += 1


def timed_fetch(batches: Iterator, waits: list[float]) -> Iterator:
    """Pass batches through, recording how long each one took to arrive."""
    while True:
        started = time.perf_counter()
        try:
            item = next(batches)
        except StopIteration:
            return
        waits.append((time.perf_counter() - started) * 1e3)
        yield item


def train_step(model: nn.Module, optimizer, scaler, precision: Precision, x, y) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    with precision.autocast():
        loss = F.cross_entropy(model(x), y)
    if scaler is None:
        loss.backward()  # under DDP, gradients are all-reduced during backward
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.detach()  # no .item(): reading it would synchronise the device every step


def evaluate(model: nn.Module, batches: BatchSource, precision: Precision, job: Job) -> float:
    """Test accuracy over the whole test split: each rank counts its own share, the counts are summed."""
    model.eval()
    correct = torch.zeros((), dtype=torch.float64, device=job.device)
    seen = 0
    with torch.no_grad(), precision.autocast():
        for x, y in batches.epoch(0):
            correct += (model(x).argmax(dim=1) == y).sum()
            seen += len(y)
    model.train()
    total_correct, total_seen = reduce_floats(job, [correct.item(), float(seen)], dist.ReduceOp.SUM)
    return total_correct / total_seen if total_seen else float("nan")


def run_training(
    *,
    job: Job,
    ddp_model: nn.Module,
    eval_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    target_accuracy: float | None = None,
    eval_every: int | None = None,
    energy: EnergyCounter | None = None,
    batches: BatchSource,
    test_batches: BatchSource | None,
    precision: Precision,
    warmup_steps: int,
    steps: int | None,
    epochs: int | None,
    stop: StopRequest,
    fault: Faults | None,
    on_step: Callable[[], None],
) -> TrainResult:
    """Warm up, then train for `steps` measured steps or `epochs` whole epochs (evaluating after each), or until
    `target_accuracy` within at most `epochs`."""
    device = job.device
    ddp_model.train()
    racing = target_accuracy is not None
    # Time to accuracy counts from the initial weights: warm-up still absorbs first-call costs, then its updates
    # are undone (every rank restores the same state, so the replicas stay identical).
    initial = (
        copy.deepcopy((eval_model.state_dict(), optimizer.state_dict(), scheduler.state_dict())) if racing else None
    )

    # Stage 1, warm-up (not timed): first-call costs land here — allocator growth, cuDNN autotuning,
    # torch.compile, DataLoader workers starting, DDP building its buckets on the first backward.
    warmup = epochs_forever(batches, first_epoch=0)
    warmup_clock = StageClock(device)
    settled = warmup_steps // 2  # the later half of warm-up shows the steady step time (compilation is over)
    for index in range(warmup_steps):
        if index == settled:
            warmup_clock.start()
        _epoch, x, y = next(warmup)
        train_step(ddp_model, optimizer, scaler, precision, x, y)
    del warmup
    if initial is not None:
        eval_model.load_state_dict(initial[0])
        optimizer.load_state_dict(initial[1])
        scheduler.load_state_dict(initial[2])
    # The slowest rank's warm-up step time sets how often the ranks agree on stopping (about twice a second).
    warmup_step_s = warmup_clock.stop() / (warmup_steps - settled) if warmup_steps else 0.0
    (slowest_step_s,) = reduce_floats(job, [warmup_step_s], dist.ReduceOp.MAX)
    check_every = check_interval(slowest_step_s)

    # Stage 2, timed. Every rank starts the clock at the same moment, after its warm-up work has finished.
    align_ranks(job)
    # energy read at the clock's starts and stops only, never per step; the device memory peak over the same intervals
    clock = StageClock(device, energy, DevicePeak.of(device))
    step_timer = StepTimer(device)
    loss = torch.full((), float("nan"), device=device)
    taken_per_epoch: list[int] = [0]
    step = 0
    data_wait_ms: list[float] = []
    curve: list[AccuracyPoint] = []
    reached: AccuracyPoint | None = None

    def measured_step(x: torch.Tensor, y: torch.Tensor) -> bool:
        """One timed training step; False when the ranks have agreed to stop instead."""
        nonlocal loss, step
        # Every rank asks at the same step counts, so all of them stop after the same step.
        if step % check_every == 0 and any_rank(bool(stop), job):
            return False
        if fault is not None:
            fault.strike(job.info.rank, step)
        step_timer.start()
        loss = train_step(ddp_model, optimizer, scaler, precision, x, y)
        step_timer.stop()
        if step_scheduler is not None:
            step_scheduler.step()  # the learning-rate warm-up of scaled SGD recipes
        taken_per_epoch[-1] += 1
        step += 1
        on_step()
        return True

    def checkpoint(epochs_done: float) -> bool:
        """Evaluate (the clock must be stopped); True when the target accuracy is reached."""
        nonlocal reached
        accuracy = evaluate(eval_model, test_batches, precision, job)
        point = AccuracyPoint(step, epochs_done, clock.elapsed_s, time.perf_counter() - stage_started, accuracy)
        curve.append(point)
        if racing and reached is None and accuracy >= target_accuracy:
            reached = point
        return reached is not None

    clock.start()
    stage_started = time.perf_counter()
    stopped = False
    if epochs is None:
        stream = timed_fetch(epochs_forever(batches, first_epoch=0), data_wait_ms)
        current_epoch = 0
        for _ in range(steps or 0):
            epoch, x, y = next(stream)  # waiting for data is inside train_time_s, outside the step time
            if epoch != current_epoch:
                scheduler.step()  # the recipe decays the learning rate once per epoch
                current_epoch = epoch
                taken_per_epoch.append(0)
            if not measured_step(x, y):
                stopped = True
                break
        clock.stop()
    else:
        per_epoch = batches.batches_per_epoch
        for epoch in range(epochs):
            if epoch > 0:
                taken_per_epoch.append(0)
                clock.start()
            for x, y in timed_fetch(iter(batches.epoch(epoch)), data_wait_ms):
                if not measured_step(x, y):
                    stopped = True
                    break
                if (
                    eval_every
                    and step % eval_every == 0
                    and taken_per_epoch[-1] < per_epoch
                    and test_batches is not None
                ):
                    clock.stop()  # evaluation is not training time
                    if checkpoint(epoch + taken_per_epoch[-1] / per_epoch):
                        break
                    clock.start()
            if reached is None:
                clock.stop()  # (an evaluation inside the epoch that reached the target stopped it already)
            if stopped or reached is not None:
                break
            if test_batches is not None and checkpoint(epoch + 1):
                break
            scheduler.step()

    return TrainResult(
        steps=step,
        samples=step * batches.shard.batch_size,
        train_time_s=clock.elapsed_s,
        energy_j=clock.energy_j,
        peak_device_allocated_mb=clock.memory.allocated_mb if clock.memory else float("nan"),
        peak_device_reserved_mb=clock.memory.reserved_mb if clock.memory else float("nan"),
        step_times_ms=step_timer.durations_ms(),
        final_loss=float(loss.item()),
        test_accuracy=curve[-1].test_accuracy if curve else float("nan"),
        batches_per_epoch_done=taken_per_epoch,
        # A rank that did not receive the signal itself stopped because a peer did.
        stopped_by=(stop.signal_name or "a signal to another rank") if stopped else "",
        data_wait_ms=data_wait_ms,
        curve=curve,
        reached=reached,
    )
