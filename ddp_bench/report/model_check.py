"""The scaling model checked on rows already measured: predict a count from the rows of a fit directory (its runs
and its allreduce.csv), set it against the median measured in a check directory. Offline, in-process and fast (no
plots, no files written), so a test can re-run the emulated cluster's committed checks after any change to the
model, and break the model on purpose (`allreduce_scale`: every measured all-reduce time multiplied) to show that
the check can fail.

    python -m ddp_bench.report.model_check FIT_DIR CHECK_DIR COUNT [--scale 0.5]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from ddp_bench.report.data import load_rows, scaling_summary, summarise_runs
from ddp_bench.report.scaling import load_allreduce, predict_series


@dataclass(frozen=True)
class ModelCheck:
    count: int
    predicted: float  # images/s at `count`, from the fit rows alone
    predicted_low: float
    predicted_high: float
    measured: float  # median over the check directory's runs at `count`
    in_sample: float  # predicted ÷ measured at the largest count of the fit rows (the model's parts, in sample)
    comm_from: str

    @property
    def ratio(self) -> float:
        return self.predicted / self.measured


def _summary(directories: Sequence[str]) -> pd.DataFrame:
    loaded = load_rows(list(directories))
    if not loaded.files:
        raise ValueError(f"no rank*.csv files under {', '.join(directories)}")
    return scaling_summary(summarise_runs(loaded.rows).runs)


def check_rows(fit: str, check: str, count: int, allreduce_scale: float = 1.0) -> ModelCheck:
    """Predict `count` from `fit` (every all-reduce time × allreduce_scale) and compare with `check`'s median."""
    summary = _summary([fit])
    allreduce, problems = load_allreduce([fit])
    if problems:
        raise ValueError(f"{problems[0][0]}: {problems[0][1]}")
    allreduce = allreduce.assign(time_us=allreduce["time_us"] * allreduce_scale)
    models, skipped = predict_series(summary, allreduce, count)
    if len(models) != 1:
        raise ValueError(f"expected one modelled series under {fit}: {skipped}")
    rows = models[0].predictions.set_index("world_size")
    measured = _summary([check])
    at = measured[measured["world_size"] == count]
    if at.empty or count not in rows.index:
        raise ValueError(f"no measured or predicted {count}-rank point ({check})")
    largest = int(summary["world_size"].max())
    row = rows.loc[count]
    return ModelCheck(
        count,
        float(row["predicted_images_per_s"]),
        float(row["predicted_images_per_s_low"]),
        float(row["predicted_images_per_s_high"]),
        float(at["global_images_per_s"].median()),
        float(rows.loc[largest, "predicted_images_per_s"] / rows.loc[largest, "measured_images_per_s"]),
        str(row["comm_from"]),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fit")
    parser.add_argument("check")
    parser.add_argument("count", type=int)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every measured all-reduce time")
    args = parser.parse_args(argv)
    try:
        result = check_rows(args.fit, args.check, args.count, args.scale)
    except ValueError as exc:
        print(f"ddp_bench: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.count} predicted {result.predicted:.1f} ({result.predicted_low:.0f}-{result.predicted_high:.0f}, "
        f"{result.comm_from}), measured {result.measured:.1f}: {result.ratio:.3f}; in sample {result.in_sample:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
