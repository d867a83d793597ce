"""Fault injection for the reliability tests: make one rank fail at one step, in a chosen way.

    DDP_BENCH_FAULT="rank=1,step=5,kind=sigkill"
    DDP_BENCH_FAULT="rank=1,kind=slow,ms=40"
    DDP_BENCH_FAULT="rank=0,kind=slowdata,ms=20"
    DDP_BENCH_FAULT="rank=1,step=5,kind=sigkill;rank=0,step=5,kind=stall"   (several, separated by ';')

kinds: `raise` (an exception in that rank), `oom` (torch.OutOfMemoryError, as a too-large batch would raise),
`alloc` (the RuntimeError cuDNN raises when it cannot allocate its workspace), `sigkill` (the rank kills itself:
no handler, no clean-up, exactly what the OOM killer or a node crash does), `sigterm` (only that rank receives
SIGTERM), `stall` (that rank's main thread blocks for an hour without holding the GIL, as a GPU host does inside
a kernel launch when the launch queue is full behind a collective that will never finish), `slow` (a straggler:
that rank's every forward pass, from the first, takes `ms` milliseconds longer, as on a slower or throttled
device; it has no step), `slowdata` (a slow input pipeline: every training batch reaches that rank `ms`
milliseconds late, as from a loader that cannot keep up; no step). Unset, it costs one comparison per step.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ddp_bench.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

FAULT_ENV = "DDP_BENCH_FAULT"
KINDS = ("raise", "oom", "alloc", "sigkill", "sigterm", "stall", "slow", "slowdata")
DELAYS = ("slow", "slowdata")  # the kinds that last the whole run: `ms`, no step


@dataclass(frozen=True)
class Fault:
    rank: int
    step: int  # measured step index (0-based) before which the fault strikes
    kind: str
    delay_ms: float = 0.0  # slow: added to each forward pass

    def slow_down(self, model: nn.Module, rank: int) -> None:
        """A `slow` fault makes this rank a straggler: every forward pass of `model` waits delay_ms first."""
        if self.kind != "slow" or rank != self.rank:
            return
        model.register_forward_pre_hook(lambda _module, _inputs: time.sleep(self.delay_ms / 1e3))

    def slow_data(self, batches, rank: int):
        """A `slowdata` fault: this rank's training batches each arrive delay_ms late."""
        if self.kind != "slowdata" or rank != self.rank:
            return batches
        return LateBatches(batches, self.delay_ms / 1e3)

    def strike(self, rank: int, step: int) -> None:
        if self.kind in DELAYS or rank != self.rank or step != self.step:
            return
        if self.kind == "raise":
            raise RuntimeError(f"injected fault on rank {rank} at step {step}")
        if self.kind == "oom":
            import torch

            raise torch.OutOfMemoryError(f"injected out-of-memory on rank {rank} at step {step}")
        if self.kind == "alloc":
            raise RuntimeError(f"cuDNN error: CUDNN_STATUS_ALLOC_FAILED (injected on rank {rank} at step {step})")
        if self.kind == "stall":
            time.sleep(3600)
            return
        os.kill(os.getpid(), signal.SIGKILL if self.kind == "sigkill" else signal.SIGTERM)


@dataclass(frozen=True)
class Faults:
    """Every fault DDP_BENCH_FAULT asked for; each strikes on its own rank."""

    faults: tuple[Fault, ...]

    def slow_down(self, model: nn.Module, rank: int) -> None:
        for fault in self.faults:
            fault.slow_down(model, rank)

    def slow_data(self, batches, rank: int):
        for fault in self.faults:
            batches = fault.slow_data(batches, rank)
        return batches

    def strike(self, rank: int, step: int) -> None:
        for fault in self.faults:
            fault.strike(rank, step)


class LateBatches:
    """A batch source whose every batch arrives `delay_s` late (the loader, not the device, sets the pace)."""

    def __init__(self, batches, delay_s: float) -> None:
        self._batches = batches
        self._delay_s = delay_s

    def __getattr__(self, name: str):
        return getattr(self._batches, name)

    def epoch(self, epoch: int):
        for batch in self._batches.epoch(epoch):
            time.sleep(self._delay_s)
            yield batch


def fault_from_env(env: Mapping[str, str]) -> Faults | None:
    text = env.get(FAULT_ENV, "")
    if not text:
        return None
    return Faults(tuple(_one_fault(part, text) for part in text.split(";")))


def _one_fault(part: str, text: str) -> Fault:
    try:
        fields = dict(field.split("=", 1) for field in part.split(","))
        slow = fields.get("kind") in DELAYS
        fault = Fault(
            int(fields["rank"]),
            0 if slow else int(fields["step"]),
            fields["kind"],
            float(fields["ms"]) if slow else 0.0,
        )
    except (KeyError, ValueError):
        raise UsageError(
            f"{FAULT_ENV}={text!r}: expected rank=R,step=S,kind=K or rank=R,kind=slow,ms=M (or kind=slowdata)"
        ) from None
    if fault.kind not in KINDS:
        raise UsageError(f"{FAULT_ENV}: kind must be one of {', '.join(KINDS)}")
    if fault.delay_ms < 0:
        raise UsageError(f"{FAULT_ENV}: ms must be zero or more")
    return fault
