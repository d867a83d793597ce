"""Figures for the report: throughput and efficiency against GPU count, and the platform comparison.

Each figure is saved as PNG and SVG. Titles, axis labels with units and legends are always there; values are
annotated on the points and bars, so a figure pasted into a report can be read without the table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure  # figures as objects, rendered to files: no pyplot, no display, no global state
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

from ddp_bench.escape import plot_text
from ddp_bench.report.data import device_word, series_title
from ddp_bench.report.scaling import SeriesModel


def _save(figure: Figure, out_dir: str, name: str) -> list[str]:
    paths = []
    for extension in ("png", "svg"):
        path = os.path.join(out_dir, f"{name}.{extension}")
        figure.savefig(path, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


def _gpu_axis(axis, world_sizes: list[int], kinds) -> None:
    axis.set_xscale("log", base=2)
    ticks = sorted(set(world_sizes))
    axis.xaxis.set_major_locator(FixedLocator(ticks))
    axis.xaxis.set_minor_locator(NullLocator())
    axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    axis.set_xlabel(device_word(kinds))
    axis.grid(True, which="major", alpha=0.3)


def _number(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 10_000 else f"{value:,.0f}"


def plot_throughput(summary: pd.DataFrame, out_dir: str, models: Sequence[SeriesModel] = ()) -> list[str]:
    figure = Figure(figsize=(8, 5))
    axis = figure.subplots()
    predictions = {model.series: model.predictions for model in models}
    counts = summary["world_size"].tolist()
    for series, points in summary.groupby("series", sort=True):
        points = points.sort_values("world_size")
        x, y = points["world_size"].tolist(), points["global_images_per_s"].tolist()
        errors = [
            (points["global_images_per_s"] - points["global_images_per_s_min"]).tolist(),
            (points["global_images_per_s_max"] - points["global_images_per_s"]).tolist(),
        ]
        line = axis.errorbar(x, y, yerr=errors, marker="o", capsize=3, label=plot_text(series_title(points.iloc[0])))
        colour = line.lines[0].get_color()
        if len(x) > 1:  # ideal: the baseline's per-GPU throughput times the GPU count
            per_gpu = y[0] / x[0]
            axis.plot(x, [per_gpu * n for n in x], linestyle="--", color=colour, alpha=0.5, linewidth=1)
        if series in predictions:  # the model under the measured points: a dotted line in its overlap range
            model = predictions[series]
            axis.fill_between(
                model["world_size"],
                model["predicted_images_per_s_low"],
                model["predicted_images_per_s_high"],
                color=colour,
                alpha=0.15,
                linewidth=0,
            )
            axis.plot(
                model["world_size"],
                model["predicted_images_per_s"],
                linestyle=":",
                color=colour,
                linewidth=1.5,
                label="model (ring/tree, DDP overlap; band: overlap and all-reduce model)",
            )
            counts += model["world_size"].tolist()
        for n, value in zip(x, y, strict=True):
            axis.annotate(
                _number(value), (n, value), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8
            )
    _gpu_axis(axis, counts, summary["device_kind"])
    axis.set_yscale("log")  # log-log: ideal scaling is a straight line whatever the GPU count
    axis.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.yaxis.set_minor_locator(NullLocator())
    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: _number(value)))
    axis.set_ylabel("training throughput (images/s, all GPUs)")
    axis.set_title("Throughput vs GPUs (dashed: ideal linear scaling from the smallest run)")
    axis.legend(fontsize=8, loc="upper left")
    return _save(figure, out_dir, "throughput")


def plot_efficiency(summary: pd.DataFrame, out_dir: str) -> list[str]:
    figure = Figure(figsize=(8, 5))
    axis = figure.subplots()
    for _series, points in summary.groupby("series", sort=True):
        points = points.sort_values("world_size")
        x, y = points["world_size"].tolist(), (points["efficiency"] * 100).tolist()
        axis.plot(x, y, marker="o", label=plot_text(series_title(points.iloc[0])))
        for n, value in zip(x, y, strict=True):
            axis.annotate(
                f"{value:.0f}%", (n, value), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8
            )
    axis.axhline(100, color="grey", linestyle="--", linewidth=1, label="ideal (100 %)")
    _gpu_axis(axis, summary["world_size"].tolist(), summary["device_kind"])
    top = max(110.0, float((summary["efficiency"] * 100).max()) + 10)
    axis.set_ylim(0, top)
    axis.set_ylabel("scaling efficiency (%)")
    axis.set_title("Scaling efficiency vs GPUs (speedup ÷ GPUs, relative to the smallest run)")
    axis.legend(fontsize=8, loc="lower left")
    return _save(figure, out_dir, "efficiency")


def plot_platforms(summary: pd.DataFrame, out_dir: str) -> list[str]:
    """One bar per platform and GPU count, per model: images/s and time per epoch."""
    table = summary.assign(name=summary["label"] + " · " + summary["model"] + " " + summary["data"])
    table = table.sort_values(["model", "global_images_per_s"]).reset_index(drop=True)
    height = max(3.0, 0.45 * len(table) + 1.5)
    figure = Figure(figsize=(13, height))
    left, right = figure.subplots(1, 2, sharey=True)
    positions = range(len(table))
    bars = left.barh(positions, table["global_images_per_s"], color="tab:blue")
    left.bar_label(bars, labels=[_number(v) for v in table["global_images_per_s"]], padding=3, fontsize=8)
    left.set_yticks(list(positions), [plot_text(name) for name in table["name"]], fontsize=8)
    left.set_xlabel("training throughput (images/s)")
    left.set_title("Throughput")
    left.margins(x=0.2)
    epoch = table["epoch_time_s"]
    bars = right.barh(positions, epoch, color="tab:orange")
    right.bar_label(bars, labels=[_duration(v) for v in epoch], padding=3, fontsize=8)
    right.set_xlabel("time per epoch (s, whole training set)")
    right.set_title("Time per epoch")
    right.margins(x=0.2)
    figure.suptitle("Platform comparison (median over repeats)")
    figure.tight_layout()
    return _save(figure, out_dir, "platforms")


def _duration(seconds: float) -> str:
    if seconds != seconds:
        return "—"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def plot_time_to_accuracy(accuracy: pd.DataFrame, out_dir: str) -> list[str]:
    """Time to the target accuracy against the device count, per platform and workload: where adding devices
    stops helping (a larger global batch can need more epochs)."""
    figure = Figure(figsize=(8, 5))
    axis = figure.subplots()
    for series, points in accuracy.groupby("series", sort=True):
        points = points.sort_values("world_size")
        x, y = points["world_size"].tolist(), points["time_to_accuracy_s"].tolist()
        axis.plot(x, y, marker="o", label=plot_text(series))
        for n, value in zip(x, y, strict=True):
            axis.annotate(
                _duration(value), (n, value), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8
            )
    _gpu_axis(axis, accuracy["world_size"].tolist(), accuracy["device_kind"])
    axis.set_ylim(bottom=0)
    targets = sorted({f"{value * 100:g} %" for value in accuracy["target_accuracy"]})
    axis.set_ylabel("time to target accuracy (s, training only)")
    axis.set_title(f"Time to {' / '.join(targets)} test accuracy vs devices")
    axis.legend(fontsize=8, loc="upper right")
    return _save(figure, out_dir, "time_to_accuracy")
