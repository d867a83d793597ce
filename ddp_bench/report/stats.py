"""The median of a report column that may hold no value at all (a test accuracy never measured, an MFU with no known
peak, quantiles from rows of an older schema): NaN, shown as a dash, and no warning. pandas 2.2 on numpy 2.1 (Colab's
stack) warns "Mean of empty slice" for the median of an all-NaN column; a user calling build_report in a notebook
would see that on every report."""

from __future__ import annotations

import pandas as pd


def median_of(values: pd.Series) -> float:
    present = values.dropna()
    return float(present.median()) if len(present) else float("nan")
