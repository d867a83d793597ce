"""Fault injection for the reliability tests: make one rank fail at one step, in a chosen way.

    DDP_BENCH_FAULT="rank=1,step=5,kind=sigkill"

kinds: `raise` (an exception in that rank), `oom` (torch.OutOfMemoryError, as a too-large batch would raise),
`sigkill` (the rank kills itself: no handler, no clean-up, exactly what the OOM killer or a node crash does),
`sigterm` (only that rank receives SIGTERM). Unset, it costs one comparison per step.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from ddp_bench.errors import UsageError

FAULT_ENV = "DDP_BENCH_FAULT"
KINDS = ("raise", "oom", "sigkill", "sigterm")


@dataclass(frozen=True)
class Fault:
    rank: int
    step: int  # measured step index (0-based) before which the fault strikes
    kind: str

    def strike(self, rank: int, step: int) -> None:
        if rank != self.rank or step != self.step:
            return
        if self.kind == "raise":
            raise RuntimeError(f"injected fault on rank {rank} at step {step}")
        if self.kind == "oom":
            import torch

            raise torch.OutOfMemoryError(f"injected out-of-memory on rank {rank} at step {step}")
        os.kill(os.getpid(), signal.SIGKILL if self.kind == "sigkill" else signal.SIGTERM)


def fault_from_env(env: Mapping[str, str]) -> Fault | None:
    text = env.get(FAULT_ENV, "")
    if not text:
        return None
    try:
        fields = dict(part.split("=", 1) for part in text.split(","))
        fault = Fault(int(fields["rank"]), int(fields["step"]), fields["kind"])
    except (KeyError, ValueError):
        raise UsageError(f"{FAULT_ENV}={text!r}: expected rank=R,step=S,kind=K") from None
    if fault.kind not in KINDS:
        raise UsageError(f"{FAULT_ENV}: kind must be one of {', '.join(KINDS)}")
    return fault
