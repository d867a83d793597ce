"""Stopping early without losing the measurement: SIGTERM (Slurm's time limit, torchrun, mpiexec) and
SIGUSR1 (Slurm's `--signal=USR1@<seconds>` warning) ask the run to stop.

A signal only sets a flag. The ranks then agree, at step boundaries that every rank reaches at the same step
count, whether any of them was asked to stop; all stop after the same step, synchronise, and write their rows
with `status=incomplete` and the steps they actually did. Stopping at different steps would leave a rank
waiting in an all-reduce for a peer that has already left.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """Which signal asked this rank to stop ('' while none has)."""

    def __init__(self) -> None:
        self.signal_name = ""

    def __bool__(self) -> bool:
        return bool(self.signal_name)

    def request(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Route STOP_SIGNALS to this request while the block runs; restore the previous handlers after."""
        previous = {sig: signal.signal(sig, lambda signum, _frame: self.request(signum)) for sig in STOP_SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def check_interval(warmup_step_s: float, target_s: float = 0.5, most: int = 1000) -> int:
    """Steps between stop checks, so that a check (one tiny host-side all-reduce) comes about every
    `target_s` seconds: negligible cost for fast steps, a prompt stop for slow ones."""
    if not warmup_step_s > 0:
        return 1
    return max(1, min(most, int(target_s / warmup_step_s)))
