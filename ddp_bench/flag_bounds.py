"""Bounds for every numeric flag of every verb, checked in one place: a value outside them is bad input (one line,
exit 2) before anything is written or allocated. Pure: no torch import.

The upper bounds are far beyond any real run; they exist so that a typo (`--seed 99999999999999999999`,
`--init-timeout 1e300`, `--max-bytes 1099511627776`) is refused instead of overflowing or exhausting memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ddp_bench.errors import UsageError
from ddp_bench.results.records import MAX_WORLD_SIZE


@dataclass(frozen=True)
class Bound:
    low: float
    high: float
    above: bool = False  # the value must be more than low, not equal to it

    def problem(self, value: float) -> str:
        """'' when the value is inside, else what it must be."""
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if value < self.low or (self.above and value == self.low):
            if self.above and self.low == 0 or self.low == 1 and isinstance(value, int):
                return "must be positive"
            return "must be zero or more" if self.low == 0 else f"must be at least {self.low:g}"
        if value > self.high:
            return f"must be at most {self.high if isinstance(self.high, int) else f'{self.high:g}'}"
        return ""


DAY_S = 86400.0
BOUNDS: dict[str, Bound] = {
    # run
    "--batch-size": Bound(1, 2**24),
    "--steps": Bound(1, 10**9),
    "--epochs": Bound(1, 10**6),
    "--max-epochs": Bound(1, 10**6),
    "--eval-every": Bound(1, 10**9),
    "--warmup-steps": Bound(0, 10**9),
    "--workers": Bound(0, 1024),
    "--seed": Bound(0, 2**62),  # the data order's generator takes seed x 2 + 1: inside torch's 64 bits
    "--lr": Bound(0, 1e3, above=True),
    "--lr-reference-batch": Bound(1, 2**31),
    "--lr-warmup-epochs": Bound(0, 10**4),
    "--init-timeout": Bound(0, 7 * DAY_S, above=True),  # a timedelta of 1e300 s overflows
    # the shape of synthetic images, or the crop of an image folder's: 8 px is the least a ResNet's stride takes
    "--image-size": Bound(8, 8192),
    "--channels": Bound(1, 1024),
    "--num-classes": Bound(2, 10**6),
    # allreduce
    "--max-bytes": Bound(4096, 2**32),  # 4 GiB: the largest message NCCL's own tests are run with by default
    "--iters": Bound(1, 10**6),
    "--warmup": Bound(0, 10**6),
    # report
    "--predict-to": Bound(0, MAX_WORLD_SIZE),
    "--efficiency-threshold": Bound(0, 1, above=True),
    "--request-epochs": Bound(0, 10**6, above=True),
    "--request-images": Bound(1, 10**15),
    # sweep and check
    "--gpus": Bound(1, MAX_WORLD_SIZE),
    "--gpus-per-node": Bound(1, 1024),
    "--cpus-per-task": Bound(0, 4096),
    "--global-batch": Bound(1, 2**31),
    "--problem-minutes": Bound(0, 10**4, above=True),
}


def check_bounds(values: Mapping[str, float | int | None]) -> None:
    """UsageError for the first flag (by name, e.g. '--seed') whose value is outside BOUNDS; None is not given."""
    for flag, value in values.items():
        if value is None:
            continue
        problem = BOUNDS[flag].problem(value)
        if problem:
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            raise UsageError(f"{flag} {problem}, not {shown}")
