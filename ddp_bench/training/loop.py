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


@dataclass(frozen=True)
class LoopParts:
    """What one training loop trains, on what data, and what may interrupt it."""

    job: Job
    ddp_model: nn.Module  # the module that trains (DDP-wrapped and compiled where asked)
    eval_model: nn.Module  # the bare module: evaluated, and its weights restored after a race's warm-up
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    scheduler: torch.optim.lr_scheduler.LRScheduler  # stepped once per epoch
    batches: BatchSource
    precision: Precision
    stop: StopRequest
    on_step: Callable[[], None]  # called after every measured step (the progress line)
    step_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None  # stepped after every measured step
    test_batches: BatchSource | None = None
    energy: EnergyCounter | None = None
    fault: Faults | None = None


@dataclass(frozen=True)
class LoopLength:
    """How long each stage runs: `steps` measured steps, or `epochs` whole epochs (evaluating after each), or
    until `target_accuracy` within at most `epochs`."""

    warmup_steps: int
    steps: int | None
    epochs: int | None
    target_accuracy: float | None = None
    eval_every: int | None = None  # evaluate every this many measured steps too (epochs only)


def run_training(parts: LoopParts, length: LoopLength) -> TrainResult:
    """Warm up, then train for `length`'s measured steps or epochs, or until its target accuracy."""
    parts.ddp_model.train()
    racing = length.target_accuracy is not None
    # Time to accuracy counts from the initial weights: warm-up still absorbs first-call costs, then its updates
    # are undone (every rank restores the same state, so the replicas stay identical).
    initial = copy.deepcopy(_training_state(parts)) if racing else None
    check_every = warm_up(parts, length.warmup_steps, restore=initial)
    # Stage 2, timed. Every rank starts the clock at the same moment, after its warm-up work has finished.
    align_ranks(parts.job)
    stage = TimedStage(parts, check_every, length.target_accuracy)
    stage.start()
    if length.epochs is None:
        timed_steps(stage, length.steps or 0)
    else:
        timed_epochs(stage, length.epochs, length.eval_every)
    return stage.result()


def _training_state(parts: LoopParts) -> tuple[dict, dict, dict]:
    return parts.eval_model.state_dict(), parts.optimizer.state_dict(), parts.scheduler.state_dict()


def _restore_training_state(parts: LoopParts, state: tuple[dict, dict, dict]) -> None:
    parts.eval_model.load_state_dict(state[0])
    parts.optimizer.load_state_dict(state[1])
    parts.scheduler.load_state_dict(state[2])


def warm_up(parts: LoopParts, warmup_steps: int, restore: tuple[dict, dict, dict] | None) -> int:
    """Stage 1, warm-up (not timed): first-call costs land here — allocator growth, cuDNN autotuning,
    torch.compile, DataLoader workers starting, DDP building its buckets on the first backward. Then the training
    state goes back to `restore` where one is given. Returns how many measured steps go between the ranks'
    agreements on stopping."""
    warmup = epochs_forever(parts.batches, first_epoch=0)
    warmup_clock = StageClock(parts.job.device)
    settled = warmup_steps // 2  # the later half of warm-up shows the steady step time (compilation is over)
    for index in range(warmup_steps):
        if index == settled:
            warmup_clock.start()
        _epoch, x, y = next(warmup)
        train_step(parts.ddp_model, parts.optimizer, parts.scaler, parts.precision, x, y)
    del warmup
    if restore is not None:
        _restore_training_state(parts, restore)
    # The slowest rank's warm-up step time sets how often the ranks agree on stopping (about twice a second).
    warmup_step_s = warmup_clock.stop() / (warmup_steps - settled) if warmup_steps else 0.0
    (slowest_step_s,) = reduce_floats(parts.job, [warmup_step_s], dist.ReduceOp.MAX)
    return check_interval(slowest_step_s)


def timed_steps(stage: TimedStage, steps: int) -> None:
    """--steps: `steps` measured steps across as many epochs as they need, the clock running throughout."""
    parts = stage.parts
    stream = timed_fetch(epochs_forever(parts.batches, first_epoch=0), stage.data_wait_ms)
    current_epoch = 0
    for _ in range(steps):
        epoch, x, y = next(stream)  # waiting for data is inside train_time_s, outside the step time
        if epoch != current_epoch:
            parts.scheduler.step()  # the recipe decays the learning rate once per epoch
            current_epoch = epoch
            stage.taken_per_epoch.append(0)
        if not stage.measured_step(x, y):
            break
    stage.clock.stop()


def timed_epochs(stage: TimedStage, epochs: int, eval_every: int | None) -> None:
    """--epochs (and the race to --target-accuracy): whole epochs, evaluated after each and every `eval_every`
    steps with the clock stopped; ends early at the first evaluation that reaches the target."""
    parts = stage.parts
    per_epoch = parts.batches.batches_per_epoch
    for epoch in range(epochs):
        if epoch > 0:
            stage.taken_per_epoch.append(0)
            stage.clock.start()
        for x, y in timed_fetch(iter(parts.batches.epoch(epoch)), stage.data_wait_ms):
            if not stage.measured_step(x, y):
                break
            if stage.evaluation_due(eval_every, per_epoch):
                stage.clock.stop()  # evaluation is not training time
                if stage.checkpoint(epoch + stage.taken_per_epoch[-1] / per_epoch):
                    break
                stage.clock.start()
        if stage.reached is None:
            stage.clock.stop()  # (an evaluation inside the epoch that reached the target stopped it already)
        if stage.stopped or stage.reached is not None:
            break
        if parts.test_batches is not None and stage.checkpoint(epoch + 1):
            break
        parts.scheduler.step()


class TimedStage:
    """Stage 2's clocks and what it has counted so far: the steps, the batches taken from each epoch, the data
    waits and the evaluations. One per run_training call."""

    def __init__(self, parts: LoopParts, check_every: int, target_accuracy: float | None):
        device = parts.job.device
        self.parts = parts
        self.check_every = check_every
        self.target_accuracy = target_accuracy
        # energy read at the clock's starts and stops only, never per step; the device memory peak over the same
        # intervals
        self.clock = StageClock(device, parts.energy, DevicePeak.of(device))
        self.step_timer = StepTimer(device)
        self.loss = torch.full((), float("nan"), device=device)
        self.taken_per_epoch: list[int] = [0]
        self.step = 0
        self.data_wait_ms: list[float] = []
        self.curve: list[AccuracyPoint] = []
        self.reached: AccuracyPoint | None = None
        self.stopped = False  # the ranks agreed to stop on a signal
        self.started = 0.0  # perf_counter when the stage began

    def start(self) -> None:
        self.clock.start()
        self.started = time.perf_counter()

    def measured_step(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        """One timed training step; False when the ranks have agreed to stop instead."""
        parts = self.parts
        # Every rank asks at the same step counts, so all of them stop after the same step.
        if self.step % self.check_every == 0 and any_rank(bool(parts.stop), parts.job):
            self.stopped = True
            return False
        if parts.fault is not None:
            parts.fault.strike(parts.job.info.rank, self.step)
        self.step_timer.start()
        self.loss = train_step(parts.ddp_model, parts.optimizer, parts.scaler, parts.precision, x, y)
        self.step_timer.stop()
        if parts.step_scheduler is not None:
            parts.step_scheduler.step()  # the learning-rate warm-up of scaled SGD recipes
        self.taken_per_epoch[-1] += 1
        self.step += 1
        parts.on_step()
        return True

    def evaluation_due(self, eval_every: int | None, per_epoch: int) -> bool:
        """An evaluation inside the epoch (--eval-every), not at its end, where one follows anyway."""
        return bool(
            eval_every
            and self.step % eval_every == 0
            and self.taken_per_epoch[-1] < per_epoch
            and self.parts.test_batches is not None
        )

    def checkpoint(self, epochs_done: float) -> bool:
        """Evaluate (the clock must be stopped); True when the target accuracy is reached."""
        parts = self.parts
        accuracy = evaluate(parts.eval_model, parts.test_batches, parts.precision, parts.job)
        point = AccuracyPoint(
            self.step, epochs_done, self.clock.elapsed_s, time.perf_counter() - self.started, accuracy
        )
        self.curve.append(point)
        if self.target_accuracy is not None and self.reached is None and accuracy >= self.target_accuracy:
            self.reached = point
        return self.reached is not None

    def result(self) -> TrainResult:
        clock, stop = self.clock, self.parts.stop
        return TrainResult(
            steps=self.step,
            samples=self.step * self.parts.batches.shard.batch_size,
            train_time_s=clock.elapsed_s,
            energy_j=clock.energy_j,
            peak_device_allocated_mb=clock.memory.allocated_mb if clock.memory else float("nan"),
            peak_device_reserved_mb=clock.memory.reserved_mb if clock.memory else float("nan"),
            step_times_ms=self.step_timer.durations_ms(),
            final_loss=float(self.loss.item()),
            test_accuracy=self.curve[-1].test_accuracy if self.curve else float("nan"),
            batches_per_epoch_done=self.taken_per_epoch,
            # A rank that did not receive the signal itself stopped because a peer did.
            stopped_by=(stop.signal_name or "a signal to another rank") if self.stopped else "",
            data_wait_ms=self.data_wait_ms,
            curve=self.curve,
            reached=self.reached,
        )
