"""This rank's handle on a running job, and the tensors its collectives lent to the process groups.

Why tensors are held: a gloo or NCCL worker thread that drops the last reference to a tensor whose Python object
is already gone must take the GIL to free that object. If the main thread, holding the GIL, is at that moment
destroying the process group (which joins its worker threads) or waiting for the worker's lock, neither can move
on and the rank hangs at exit with no timeout to end it (seen on torch 2.6 in a 2-rank run: the main thread in
`~ProcessGroupGloo` joining a worker that waited for the GIL in `~AsyncAllreduceWork`). So every tensor the
harness hands to a collective stays referenced here until the groups' threads have let go of it, and the groups
are left only once that is so: then the last reference to each is always dropped by the main thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from ddp_bench.launch.launchers import LaunchInfo


class HeldTensors:
    """Tensors lent to collectives, kept until no process-group thread refers to them any more."""

    def __init__(self) -> None:
        self._tensors: list[torch.Tensor] = []

    def hold(self, *tensors: torch.Tensor) -> None:
        # Those only this list still refers to are released now, by this (the main) thread; the rest wait.
        self._tensors = [tensor for tensor in self._tensors if tensor._use_count() > 1]
        self._tensors.extend(tensors)

    def lent(self) -> int:
        """How many held tensors a process-group thread still refers to."""
        return sum(tensor._use_count() > 1 for tensor in self._tensors)

    def release(self, timeout_s: float) -> bool:
        """Wait (without the GIL) until the groups' threads have let go of every held tensor, then drop them all.
        False if some were still lent after `timeout_s`: those are kept, never freed from under a worker."""
        deadline = time.monotonic() + timeout_s
        while self.lent():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)  # releases the GIL, which a worker freeing a tensor may be waiting for
        self._tensors.clear()
        return True


@dataclass(frozen=True)
class Job:
    """This rank's handle on the running job."""

    info: LaunchInfo
    device: torch.device
    store: dist.Store  # ddp_bench's own keys, beside the process group's
    control: dist.ProcessGroup | None  # a gloo group for host-side agreement (None: use the default group)
    held: HeldTensors = field(default_factory=HeldTensors)
