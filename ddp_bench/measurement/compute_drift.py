"""Compute drift with the rank count: a synchronous DDP step waits for the slowest of its N ranks. Pure arithmetic.

A run records the distribution of its compute-only steps (every rank's `no_sync` control steps pooled; on one
rank, its timed steps) as a few quantiles (`QUANTILE_COLUMNS`). The model reads them as a piecewise-linear CDF:
level 0 at the fastest step, then p25 to p99, and level 1 at the slowest step recorded. `slowest_of(n)` is
the expected maximum of n draws from it. The ranks' step times are assumed independent and alike: a rank that
is slow every step (a hot GPU, a busy host) is in the pooled distribution, but its persistence is not, so the
term is the jitter part of drift; host contention is the other part (prediction.PARTIAL_NODE_SHARE).

At a count M past the largest measured count N, the compute step is N's measured job compute step (the median,
over control steps, of the slowest rank's time) × slowest_of(M) ÷ slowest_of(N): anchored on the measurement,
never fitted to the model's miss. The CDF ends at the slowest step recorded, so the point never goes past it;
where M is more ranks than the steps pooled (the slowest of M reaches further into the tail than any recorded
step), the band's slow end gets longer by an exponential tail through p50 and the recorded max (`tail_ms`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ddp_bench.measurement.timing import percentile

# Eight levels: on 4,000 draws each of exponential, normal and log-normal steps, the expected slowest of 1, 2, 8 and
# 32 from these quantiles came within -1.7 to +3.0 % of the draws' own (+3.0 %: the exponential's slowest of 32;
# five levels, 0/50/90/99/100 %: -3.6 to +4.3 %). Past p99 the straight line to the max over-weights the tail, so
# at large counts the term errs slow (pessimistic), not fast.
QUANTILE_LEVELS = (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
QUANTILE_COLUMNS = (
    "compute_step_min_ms",
    "compute_step_p25_ms",
    "compute_step_p50_ms",
    "compute_step_p75_ms",
    "compute_step_p90_ms",
    "compute_step_p95_ms",
    "compute_step_p99_ms",
    "compute_step_max_ms",
)
MEDIAN = QUANTILE_LEVELS.index(0.5)
POOLED_COLUMN = "compute_steps_pooled"
MIN_POOLED = 3  # fewer pooled steps describe no distribution: no drift term from them


@dataclass(frozen=True)
class StepQuantiles:
    values_ms: tuple[float, ...]  # at QUANTILE_LEVELS
    samples: int  # the pooled compute-only steps behind them

    def points(self) -> list[tuple[float, float]]:
        return list(zip(QUANTILE_LEVELS, self.values_ms, strict=True))


def step_quantiles(samples_ms: Sequence[float]) -> StepQuantiles:
    """The recorded quantiles of pooled compute-only step times (NaN for none)."""
    values = [float(value) for value in samples_ms if math.isfinite(value)]
    return StepQuantiles(tuple(percentile(values, level * 100) for level in QUANTILE_LEVELS), len(values))


def quantile_cells(samples_ms: Sequence[float]) -> dict[str, float | int]:
    """The row's cells for them: QUANTILE_COLUMNS and POOLED_COLUMN."""
    quantiles = step_quantiles(samples_ms)
    return {**dict(zip(QUANTILE_COLUMNS, quantiles.values_ms, strict=True)), POOLED_COLUMN: quantiles.samples}


def slowest_of(n: int, points: Sequence[tuple[float, float]]) -> float:
    """The expected maximum of n independent draws from the piecewise-linear CDF through (level, value) points,
    levels rising from 0 to 1, values not falling: E[max] = x_last − ∫ F(x)ⁿ dx, exact on each linear piece."""
    if n < 1:
        raise ValueError(f"slowest_of needs at least one draw, not {n}")
    levels, values = [p for p, _ in points], [x for _, x in points]
    if len(points) < 2 or levels[0] != 0 or levels[-1] != 1:
        raise ValueError("the quantiles must start at level 0 and end at level 1")
    rising = all(b > a for a, b in zip(levels, levels[1:], strict=False))
    if not rising or any(b < a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError("levels must rise and values must not fall")
    below = 0.0  # ∫ F(x)ⁿ dx over the support
    for (p0, x0), (p1, x1) in zip(points, points[1:], strict=False):
        below += (x1 - x0) / (p1 - p0) * (p1 ** (n + 1) - p0 ** (n + 1)) / (n + 1)
    return values[-1] - below


def tail_ms(n: int, quantiles: StepQuantiles) -> float:
    """How far past the recorded slowest step the slowest of n may reach, when n is more draws than were pooled:
    an exponential tail through the median and the max (the max of S draws sits near level S/(S+1)), so the
    slowest of n lies near max + b·ln((n+1)/(S+1)) with b = (max − p50) ÷ ln((S+1)/2). 0 when n ≤ S."""
    pooled = quantiles.samples
    if n <= pooled or pooled < MIN_POOLED:
        return 0.0
    median, slowest = quantiles.values_ms[MEDIAN], quantiles.values_ms[-1]
    scale = (slowest - median) / math.log((pooled + 1) / 2)
    return scale * math.log((n + 1) / (pooled + 1))


@dataclass(frozen=True)
class Drift:
    ratio: float  # compute at the target count = the measured count's job compute step × ratio
    tail_share: float  # the band's slow end: that step × tail_share longer (the tail past the recorded max)
    applied: bool  # False: no quantiles recorded (rows from before schema 3), the ratio is 1
    capped: bool  # the target needed the tail past the recorded max: the point stops there

    def note(self) -> str:
        if not self.applied:
            return "none (no per-step quantiles: rows from before schema 3)"
        capped = "; capped at the slowest step recorded, the band's slow end widened" if self.capped else ""
        return f"× {self.ratio:.3f}{capped}"


NO_DRIFT = Drift(1.0, 0.0, False, False)


def quantiles_from(cells: dict) -> StepQuantiles | None:
    """The recorded quantiles in a row or summary point, or None where they are missing or too few."""
    try:
        values = tuple(float(cells[column]) for column in QUANTILE_COLUMNS)
        pooled = float(cells[POOLED_COLUMN])
    except (KeyError, TypeError, ValueError):
        return None
    if not all(math.isfinite(value) for value in (*values, pooled)) or pooled < MIN_POOLED:
        return None
    if any(b < a for a, b in zip(values, values[1:], strict=False)) or values[0] <= 0:
        return None
    return StepQuantiles(values, int(pooled))


def compute_drift(measured: int, target: int, quantiles: StepQuantiles | None) -> Drift:
    """The slowest-of-N drift from `measured` ranks to `target` ranks (1 at or below the measured count)."""
    if quantiles is None:
        return NO_DRIFT
    if target <= measured:
        return Drift(1.0, 0.0, True, False)
    anchor = slowest_of(measured, quantiles.points())
    ratio = slowest_of(target, quantiles.points()) / anchor
    tail = tail_ms(target, quantiles) / anchor
    return Drift(ratio, tail, True, target > quantiles.samples)
