"""How far the scaling model has been trusted: where each predicted count lies against the measured ones, and the
model's error wherever the same rows can check it. pandas only; the model itself (`scaling.predict_series`) is
used as a black box.

- `position`: `measured` (the series has runs at that count), `interpolation` (between two measured counts) or
  `extrapolation` (past the largest measured count); `reach` = count ÷ the largest measured count, so 4.0 is a
  prediction four times past what was measured (1 or less inside the measured range).
- `error_here`: predicted ÷ measured − 1 at a measured count. There the model takes compute and the all-reduce
  from that count's own runs, so this checks how its parts add up, not an extrapolation.
- the backtest: the largest measured count predicted from the smaller counts only (their rows, and the
  all-reduce curves measured below that count), then compared with what was measured there. It is the one check
  of an extrapolation that the rows themselves allow; its reach is the largest count ÷ the largest one used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from ddp_bench.console import format_number
from ddp_bench.report.scaling import SeriesModel, predict_series

TRUST_COLUMNS = ["position", "reach", "error_here", "checked_at", "checked_from", "checked_error", "trust"]


def counts_text(counts: Sequence[int]) -> str:
    """`4`, `1 and 2`, `1, 2 and 4`."""
    words = [str(int(count)) for count in counts]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def signed_percent(ratio_minus_one: float) -> str:
    return "—" if ratio_minus_one != ratio_minus_one else f"{ratio_minus_one * 100:+.1f} %"


@dataclass(frozen=True)
class Backtest:
    """The largest measured count predicted from the smaller ones alone."""

    count: int  # the largest measured count
    from_counts: tuple[int, ...]  # the measured counts the prediction was made from (empty: not checked)
    predicted: float  # images/s at `count`, NaN when not checked
    measured: float
    why_not: str  # "" when checked

    @property
    def error(self) -> float:
        return self.predicted / self.measured - 1 if not self.why_not else float("nan")

    @property
    def reach(self) -> float:
        return self.count / max(self.from_counts) if self.from_counts else float("nan")

    def statement(self) -> str:
        if self.why_not:
            return f"not checked past the measured counts: {self.why_not}"
        return (
            f"checked: {self.count} predicted from {counts_text(self.from_counts)} alone "
            f"(×{self.reach:g} past them): {format_number(self.predicted)} images/s against "
            f"{format_number(self.measured)} measured ({signed_percent(self.error)})"
        )


def backtest(points: pd.DataFrame, allreduce: pd.DataFrame) -> Backtest:
    """points: one series' summary rows. Predict its largest count from the smaller ones and the all-reduce
    curves measured below that count, with the same model the report uses."""
    points = points.sort_values("world_size")
    largest = int(points["world_size"].iloc[-1])
    measured = float(points["global_images_per_s"].iloc[-1])
    smaller = points[points["world_size"] < largest]
    if smaller.empty:
        return Backtest(largest, (), float("nan"), measured, "one count measured, nothing smaller to predict it from")
    below = allreduce[allreduce["world_size"].astype(int) < largest]
    models, not_modelled = predict_series(smaller, below, largest)
    rows = models[0].predictions if models else pd.DataFrame(columns=["world_size"])
    at = rows[rows["world_size"] == largest]
    if at.empty:
        curves = sorted(set(below["world_size"].astype(int)))
        why = (
            not_modelled[0].split(": ", 1)[-1]
            if not_modelled
            else "no prediction at that count; all-reduce measured below it at "
            + (f"{counts_text(curves)} rank(s)" if curves else "no count")
        )
        return Backtest(largest, (), float("nan"), measured, f"{largest} from the smaller counts alone: {why}")
    from_counts = tuple(int(count) for count in smaller["world_size"])
    return Backtest(largest, from_counts, float(at["predicted_images_per_s"].iloc[0]), measured, "")


@dataclass(frozen=True)
class SeriesTrust:
    series: str
    measured_counts: tuple[int, ...]
    backtest: Backtest
    rows: pd.DataFrame  # world_size and TRUST_COLUMNS, one row per predicted count

    def errors_here(self) -> str:
        """`1: +0.0 %, 2: +3.1 %`: the model against the measurement at every measured count it predicted."""
        measured = self.rows[self.rows["position"] == "measured"]
        return ", ".join(
            f"{int(row['world_size'])}: {signed_percent(row['error_here'])}" for _, row in measured.iterrows()
        )


def position(count: int, measured: Sequence[int]) -> tuple[str, float]:
    """(measured | interpolation | extrapolation, count ÷ the largest measured count)."""
    reach = count / max(measured)
    if count in measured:
        return "measured", reach
    return ("interpolation" if min(measured) < count < max(measured) else "extrapolation"), reach


def where_text(where: str, reach: float) -> str:
    """`measured`, `interpolation`, `extrapolation ×4` (× the largest measured count)."""
    return f"extrapolation ×{reach:g}" if where == "extrapolation" else where


def row_statement(where: str, reach: float, largest: int, error_here: float, check: Backtest) -> str:
    if where == "measured":
        return f"measured count; model {signed_percent(error_here)} against it (parts from this count's own runs)"
    checked = (
        f"checked error {signed_percent(check.error)} ({check.count} predicted from {counts_text(check.from_counts)})"
        if not check.why_not
        else "not checked past the measured counts"
    )
    if where == "interpolation":
        return f"interpolation inside the measured counts (up to {largest}); {checked}"
    return f"extrapolation, ×{reach:g} past the largest measured count ({largest}); {checked}"


def series_trust(points: pd.DataFrame, allreduce: pd.DataFrame, model: SeriesModel) -> SeriesTrust:
    measured = tuple(sorted(int(count) for count in points["world_size"]))
    check = backtest(points, allreduce)
    out = []
    for _, row in model.predictions.iterrows():
        count = int(row["world_size"])
        where, reach = position(count, measured)
        here = row["predicted_images_per_s"] / row["measured_images_per_s"] - 1 if where == "measured" else float("nan")
        out.append(
            {
                "world_size": count,
                "position": where,
                "reach": reach,
                "error_here": here,
                "checked_at": check.count if not check.why_not else float("nan"),
                "checked_from": counts_text(check.from_counts) if check.from_counts else "",
                "checked_error": check.error,
                "trust": row_statement(where, reach, measured[-1], here, check),
            }
        )
    return SeriesTrust(model.series, measured, check, pd.DataFrame(out, columns=["world_size", *TRUST_COLUMNS]))


def trust_models(summary: pd.DataFrame, allreduce: pd.DataFrame, models: Sequence[SeriesModel]) -> list[SeriesTrust]:
    """One SeriesTrust per modelled series, in the models' order."""
    return [series_trust(summary[summary["series"] == model.series], allreduce, model) for model in models]


def with_trust(model: SeriesModel, trust: SeriesTrust) -> pd.DataFrame:
    """The model's predictions with the trust columns beside them (predictions.csv)."""
    return model.predictions.merge(trust.rows, on="world_size", how="left").assign(series=model.series)
