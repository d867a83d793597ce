"""The allocation-proposal answer: each scaling series as the table a committee reads, its knee, and what a
request costs. pandas only; the text (Markdown, LaTeX, the paragraph) is in proposal_text.py.

Per series with at least two counts, one row per count: devices, nodes, time per epoch, images/s, speedup and
efficiency, measured rows first and then the scaling model's predicted rows (at counts nobody measured), each
predicted row with its trust statement (model_trust.py). Efficiency of `GOOD_EFFICIENCY` or more is marked good,
as the Alliance's Scalability page counts it ("An efficiency of 75% or more is good", with "at least five or six
values" recommended; https://docs.alliancecan.ca/wiki/Scalability/en).

- The knee: the largest count whose efficiency is still at or above the threshold, walking up from the smallest
  count and stopping at the first count below it (a later point back above the line does not move the knee past
  a count that failed). When no count falls below, the threshold was not reached within the counts shown.
- A request of E epochs (E × the series' training set) or N images costs, at each count: wall time = images ÷
  images/s (training only: no start-up, evaluation or queue), device-hours = devices × wall time, and for the GPU
  models in `RGU_VALUES`, RGU-years = device-hours ÷ (365 × 24) × the model's RGU value (the CCDB form's
  GPU-years × RGU). Predicted rows cost at the predicted throughput, and say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ddp_bench.errors import UsageError
from ddp_bench.report.data import series_title, short_device
from ddp_bench.report.model_trust import SeriesTrust
from ddp_bench.report.scaling import SeriesModel

GOOD_EFFICIENCY = 0.75
HOURS_PER_YEAR = 365 * 24


@dataclass(frozen=True)
class RguValue:
    model: str  # the Alliance's name for the GPU model
    rgu: float  # reference GPU units per GPU
    name_parts: tuple[str, ...]  # each appears, upper-case, in the device name torch reports for it


RGU_SOURCE = (
    'the Alliance\'s "Allocations and compute scheduling" page, RGU scores for whole GPU models '
    "(https://docs.alliancecan.ca/wiki/Allocations_and_compute_scheduling)"
)
RGU_VALUES = (
    RguValue("H100-80gb", 12.2, ("H100", "80GB")),
    RguValue("A100-40gb", 4.0, ("A100", "40GB")),
)


@dataclass(frozen=True)
class Rgu:
    model: str  # "" when the table has no value for the device
    value: float  # NaN when none
    note: str  # why there is none ("" when there is)


def rgu_for(device_kind: str, device_name: str) -> Rgu:
    """The device's RGU value from RGU_VALUES, or an empty one that says why."""
    known = ", ".join(value.model for value in RGU_VALUES)
    if device_kind != "GPU":
        return Rgu("", float("nan"), "CPU ranks: RGUs are defined for GPU models only")
    name = str(device_name).upper()
    if "MIG" in name.split():
        return Rgu("", float("nan"), f"{short_device(device_name)} is a MIG instance; the table here holds whole GPUs")
    for value in RGU_VALUES:
        if all(part in name for part in value.name_parts):
            return Rgu(value.model, value.rgu, "")
    return Rgu("", float("nan"), f"no RGU value for {short_device(device_name)} in the table used ({known})")


@dataclass(frozen=True)
class ProposalOptions:
    threshold: float = GOOD_EFFICIENCY  # efficiency counted good, and the knee's line
    request_epochs: float | None = None  # the request: E epochs of the series' training set ...
    request_images: int | None = None  # ... or N images

    def __post_init__(self) -> None:
        if not (0 < self.threshold <= 1):
            raise UsageError(
                f"--efficiency-threshold {self.threshold:g}: give a fraction above 0 and at most 1 (0.75 is 75 %)"
            )
        if self.request_epochs is not None and self.request_images is not None:
            raise UsageError("give --request-epochs or --request-images, not both")
        if self.request_epochs is not None and not (math.isfinite(self.request_epochs) and self.request_epochs > 0):
            raise UsageError(f"--request-epochs {self.request_epochs:g}: give a number of epochs above 0")
        if self.request_images is not None and self.request_images <= 0:
            raise UsageError(f"--request-images {self.request_images}: give a number of images, 1 or more")

    @property
    def requested(self) -> bool:
        return self.request_epochs is not None or self.request_images is not None

    def images(self, epoch_images: float) -> float:
        """Images the request trains (NaN when there is no request)."""
        if self.request_images is not None:
            return float(self.request_images)
        return self.request_epochs * epoch_images if self.request_epochs is not None else float("nan")


@dataclass(frozen=True)
class Knee:
    threshold: float
    count: int  # the largest count still at or above the threshold
    efficiency: float
    source: str  # measured | predicted
    below_count: int  # the first count below the threshold; 0: not reached within the counts shown
    below_efficiency: float
    below_source: str


def find_knee(rows: pd.DataFrame, threshold: float) -> Knee:
    """rows: devices, efficiency, source; the knee as the module docstring defines it."""
    ordered = rows.dropna(subset=["efficiency"]).sort_values("devices")
    knee = ordered.iloc[0]
    for _, row in ordered.iterrows():
        if row["efficiency"] < threshold:
            return Knee(
                threshold,
                int(knee["devices"]),
                float(knee["efficiency"]),
                knee["source"],
                int(row["devices"]),
                float(row["efficiency"]),
                row["source"],
            )
        knee = row
    last = int(knee["devices"])
    return Knee(threshold, last, float(knee["efficiency"]), knee["source"], 0, float("nan"), "")


PROPOSAL_COLUMNS = [
    "series",
    "title",
    "scaling",
    "source",
    "devices",
    "nodes",
    "device_kind",
    "device_name",
    "batch_size",
    "global_batch_size",
    "epoch_time_s",
    "images_per_s",
    "images_per_s_low",  # predicted rows: the model's band (measurement/prediction.py); measured rows: empty
    "images_per_s_high",
    "speedup",
    "efficiency",
    "good",
    "trust",
    "request_images",
    "wall_time_s",
    "device_hours",
    "gpu_model",
    "rgu_per_device",
    "rgu_years",
    "rgu_note",
]


@dataclass(frozen=True)
class SeriesProposal:
    series: str
    points: pd.DataFrame  # the series' summary rows (measured), by count
    rows: pd.DataFrame  # PROPOSAL_COLUMNS: measured rows, then predicted ones (empty with one count)
    knee: Knee | None  # None with one count
    trust: SeriesTrust | None  # None when the model did not serve the series
    not_modelled: str  # why the model made no rows for it ("" when it did)


@dataclass(frozen=True)
class Proposal:
    options: ProposalOptions
    series: list[SeriesProposal]

    def table(self) -> pd.DataFrame:
        """proposal.csv: every series' rows."""
        frames = [entry.rows for entry in self.series if not entry.rows.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PROPOSAL_COLUMNS)


def _cost(options: ProposalOptions, epoch_images: float, images_per_s: float, devices: int, rgu: Rgu) -> dict:
    images = options.images(epoch_images)
    wall_s = images / images_per_s
    device_hours = devices * wall_s / 3600
    return {
        "request_images": images,
        "wall_time_s": wall_s,
        "device_hours": device_hours,
        "gpu_model": rgu.model,
        "rgu_per_device": rgu.value,
        "rgu_years": device_hours / HOURS_PER_YEAR * rgu.value,
        "rgu_note": rgu.note if options.requested else "",
    }


def _measured_rows(points: pd.DataFrame, options: ProposalOptions, rgu: Rgu) -> list[dict]:
    rows = []
    for _, point in points.iterrows():
        devices = int(point["world_size"])
        rows.append(
            {
                "source": "measured",
                "devices": devices,
                "nodes": int(point["num_nodes"]),
                "batch_size": int(point["batch_size"]),
                "global_batch_size": int(point["global_batch_size"]),
                "epoch_time_s": float(point["epoch_time_s"]),
                "images_per_s": float(point["global_images_per_s"]),
                "speedup": float(point["speedup"]),
                "efficiency": float(point["efficiency"]),
                "trust": "",
                **_cost(options, float(point["dataset_size"]), float(point["global_images_per_s"]), devices, rgu),
            }
        )
    return rows


def _nodes(prediction: pd.Series) -> int | str:
    """The predicted row's node count where the model gives one; "" (unknown) where it does not."""
    nodes = prediction.get("num_nodes", float("nan"))
    return int(nodes) if nodes == nodes else ""


def _predicted_rows(
    points: pd.DataFrame, model: SeriesModel, trust: SeriesTrust, options: ProposalOptions, rgu: Rgu
) -> list[dict]:
    """The model's rows at counts without runs."""
    largest = points.iloc[-1]
    epoch_images = float(largest["dataset_size"])
    statements = trust.rows.set_index("world_size")["trust"]
    rows = []
    for _, row in model.predictions.iterrows():
        devices = int(row["world_size"])
        if devices in set(points["world_size"]):
            continue
        weak = largest["scaling"] == "weak"
        images_per_s = float(row["predicted_images_per_s"])
        rows.append(
            {
                "source": "predicted",
                "devices": devices,
                "nodes": _nodes(row),
                "batch_size": int(largest["batch_size"]) if weak else int(largest["global_batch_size"]) // devices,
                "global_batch_size": int(largest["batch_size"]) * devices
                if weak
                else int(largest["global_batch_size"]),
                "epoch_time_s": epoch_images / images_per_s,
                "images_per_s": images_per_s,
                "images_per_s_low": float(row.get("predicted_images_per_s_low", float("nan"))),
                "images_per_s_high": float(row.get("predicted_images_per_s_high", float("nan"))),
                "speedup": float(row["predicted_efficiency"]) * devices,
                "efficiency": float(row["predicted_efficiency"]),
                "trust": statements.get(devices, ""),
                **_cost(options, epoch_images, images_per_s, devices, rgu),
            }
        )
    return rows


def series_proposal(
    points: pd.DataFrame,
    model: SeriesModel | None,
    trust: SeriesTrust | None,
    not_modelled: str,
    options: ProposalOptions,
) -> SeriesProposal:
    points = points.sort_values("world_size").reset_index(drop=True)
    first = points.iloc[0]
    if len(points) < 2:
        return SeriesProposal(str(first["series"]), points, pd.DataFrame(columns=PROPOSAL_COLUMNS), None, trust, "")
    rgu = rgu_for(first["device_kind"], first["device_name"])
    rows = _measured_rows(points, options, rgu)
    if model is not None and trust is not None:
        rows += _predicted_rows(points, model, trust, options, rgu)
    frame = pd.DataFrame(rows).assign(
        series=first["series"],
        title=series_title(first),
        scaling=first["scaling"],
        device_kind=first["device_kind"],
        device_name=first["device_name"],
    )
    frame["good"] = frame["efficiency"] >= options.threshold
    frame = frame.reindex(columns=PROPOSAL_COLUMNS)
    return SeriesProposal(str(first["series"]), points, frame, find_knee(frame, options.threshold), trust, not_modelled)


def build_proposal(
    summary: pd.DataFrame,
    models: list[SeriesModel],
    trust: list[SeriesTrust],
    not_modelled: list[str],
    options: ProposalOptions,
) -> Proposal:
    """One SeriesProposal per series of the summary. not_modelled: predict_series' reasons, which name each
    series by its largest run's label and scaling."""
    by_series = {model.series: model for model in models}
    trust_of = {entry.series: entry for entry in trust}
    entries = []
    for series, points in summary.groupby("series", sort=True):
        largest = points.sort_values("world_size").iloc[-1]
        name = f"{largest['label']} ({largest['scaling']})"
        why = next((line.split(": ", 1)[-1] for line in not_modelled if line.startswith(name + ": ")), "")
        entries.append(series_proposal(points, by_series.get(series), trust_of.get(series), why, options))
    return Proposal(options, entries)
