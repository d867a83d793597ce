"""The report's compute drift: what each run recorded of its compute-only steps' spread and of its node, carried
from rank rows to runs and summary points, and the compute step and band widening at each predicted count.
pandas only; the arithmetic is in measurement/compute_drift.py and measurement/prediction.py.

Past the largest measured count N, the compute step at M is N's `job_compute_step_ms` × slowest_of(M) ÷
slowest_of(N) (the `compute_drift` column); rows from before schema 3 recorded no quantiles and get no drift term.
A GPU run with fewer of its ranks on a node than the node has GPUs measured compute on part of a node: the band's
slow end at the counts it serves is longer by PARTIAL_NODE_SHARE of the compute step, as in `predict --spec`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ddp_bench.measurement.compute_drift import POOLED_COLUMN, QUANTILE_COLUMNS, Drift, compute_drift, quantiles_from
from ddp_bench.measurement.prediction import partial_node, partial_node_ms
from ddp_bench.report.stats import median_of

NODE_COLUMNS = ("busy_devices_on_node", "devices_on_node")
DRIFT_COLUMNS = (*QUANTILE_COLUMNS, POOLED_COLUMN, *NODE_COLUMNS, "on_mig")


def _on_mig(frame: pd.DataFrame) -> float:
    """1 where any rank trained on a MIG slice (rank rows' `mig_slice`, a MIG-... UUID, or a runs table's `on_mig`),
    else 0."""
    if "mig_slice" in frame:
        return float(frame["mig_slice"].fillna("").astype(str).str.strip().str.startswith("MIG-").any())
    return float(frame["on_mig"].max()) if "on_mig" in frame else 0.0


def run_drift(ranks: pd.DataFrame) -> dict[str, float]:
    """One run's cells: the pooled quantiles (the same on every rank), the fewest ranks busy on any of its nodes
    and the most GPUs any of them has (so a run with one partial node is partial)."""
    cells = {column: ranks[column].max() if column in ranks else math.nan for column in QUANTILE_COLUMNS}
    cells[POOLED_COLUMN] = ranks[POOLED_COLUMN].min() if POOLED_COLUMN in ranks else math.nan
    cells["busy_devices_on_node"] = ranks["busy_devices_on_node"].min() if "busy_devices_on_node" in ranks else math.nan
    cells["devices_on_node"] = ranks["devices_on_node"].max() if "devices_on_node" in ranks else math.nan
    cells["on_mig"] = _on_mig(ranks)
    return cells


def point_drift(repeats: pd.DataFrame) -> dict[str, float]:
    """One summary point's cells over its repeated runs: the median of each quantile, the fewest pooled steps, and
    the node as in run_drift."""
    cells = run_drift(repeats)
    cells.update({column: median_of(repeats[column]) for column in QUANTILE_COLUMNS if column in repeats})
    return cells


@dataclass(frozen=True)
class DriftAt:
    compute_ms: float  # the compute step at this count
    undrifted_ms: float  # the measured compute step it was drawn from, before the drift
    tail_ms: float  # the band's slow end longer by this: the slowest of N past the steps recorded
    partial_ms: float  # ... and by this: compute measured on part of a node
    drift: Drift
    partial: bool

    def text(self) -> str:
        """What compute_from adds: `, slowest of N × 1.042 (capped ...)`, `, part of a node`."""
        drift = f", slowest of N {self.drift.note()}" if self.drift.applied and self.drift.ratio != 1 else ""
        return drift + (", part of a node" if self.partial else "")


def drift_at(source: pd.Series, count: int, measured: bool) -> DriftAt:
    """The compute at `count` from `source` (that count's own runs where measured, else the largest run's)."""
    anchor = float(source["job_compute_step_ms"])
    drift = compute_drift(int(source["world_size"]), count, quantiles_from(source.to_dict()))
    busy, devices = (float(source.get(column, math.nan)) for column in NODE_COLUMNS)
    # MIG slices are one rank each, not a node's GPUs: no partial-node term for them (as sweep's warning)
    on_mig = float(source.get("on_mig", 0.0)) == 1.0
    known = source.get("device_kind") == "GPU" and math.isfinite(busy) and math.isfinite(devices) and not on_mig
    partial = bool(not measured and known and partial_node(int(busy), int(devices), count))
    return DriftAt(
        anchor * drift.ratio, anchor, anchor * drift.tail_share, partial_node_ms(anchor, partial), drift, partial
    )


def drift_source(largest: pd.Series, predict_to: int) -> str:
    """The notes' sentence on the drift applied past the largest run."""
    count = int(largest["world_size"])
    if quantiles_from(largest.to_dict()) is None:
        return (
            f"; no compute drift past {count}: its rows record no per-step quantiles (schema before 3, or fewer "
            "than 3 steps pooled), so the slowest of N ranks is not modelled and the compute step is carried unchanged"
        )
    if predict_to <= count:
        return f"; no compute drift: nothing is predicted past the largest run ({count})"
    at = drift_at(largest, predict_to, measured=False)
    capped = (
        f" (past {int(largest[POOLED_COLUMN])} pooled steps the point stops at the slowest step recorded and the "
        "band's slow end is widened by an exponential tail)"
        if at.drift.capped
        else ""
    )
    p50, p99, slowest = (float(largest[f"compute_step_{name}_ms"]) for name in ("p50", "p99", "max"))
    return (
        f"; compute drift past {count}: × slowest_of(M) ÷ slowest_of({count}), the expected slowest of M independent "
        f"ranks from the {count}-rank run's pooled compute-only steps (p50 {p50:.1f}, p99 {p99:.1f}, max "
        f"{slowest:.1f} ms): "
        f"× {at.drift.ratio:.3f} at {predict_to}{capped}"
        + ("; measured on part of a node: the band's slow end is widened" if at.partial else "")
    )
