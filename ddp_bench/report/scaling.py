"""The report's scaling model and straggler tables. pandas only; the arithmetic is in measurement/scaling_model.py.

Predictions are made for weak-scaling series (fixed per-rank batch, so a rank's compute does not change with
the count) that have an all-reduce measurement (`allreduce.csv`) from the same launcher, platform, cluster,
backend and device. At each count:
- compute: at a measured count, that count's own runs (the job's compute-only step: at each step the slowest
  rank's time, median over steps, then over repeats), so the column checks the communication model alone; past
  the largest measured count, the largest run's, which carries the contention of the most ranks measured;
- buckets: DDP's gradient buckets and how long before the end of backward each was ready, from the same run;
- all-reduce: the measured curve at that rank count, interpolated at each bucket's size, or, at counts without
  one, the α–β ring fitted to the curve at the largest count measured;
- on CPU ranks, the CPU time of each all-reduce (`cpu_time_us` of the same curve, scaled by the ring's bytes
  per rank at other counts) for the part that overlaps backward. Nothing is fitted to the model's miss at a
  measured count (issue #25: such a term hides any error of the communication terms).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from ddp_bench.measurement.scaling_model import (
    AllreduceCurve,
    TwoStage,
    fit_two_stage,
    parse_buckets,
    predict_step,
    prediction_counts,
)

STRAGGLER_SHARE = 0.10  # a rank more than 10 % below the run's median images/s is flagged
ALLREDUCE_KEYS = ("launcher", "platform", "cluster", "backend", "device_name")


def load_allreduce(directories: list[str]) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Every allreduce.csv under the directories, and (path, why) for those that cannot be used."""
    frames, problems = [], []
    for directory in directories:
        for root, _dirs, names in os.walk(directory):
            if "allreduce.csv" in names:
                path = os.path.join(root, "allreduce.csv")
                try:
                    frame = pd.read_csv(path, dtype={key: str for key in ALLREDUCE_KEYS}, keep_default_na=False)
                    frame[["world_size", "num_nodes", "size_bytes"]] = frame[
                        ["world_size", "num_nodes", "size_bytes"]
                    ].astype(int)
                    frame["time_us"] = frame["time_us"].astype(float)
                    if "cpu_time_us" not in frame:  # tables from before the column: CPU time not measured
                        frame["cpu_time_us"] = float("nan")
                except (ValueError, KeyError, OSError, pd.errors.ParserError) as exc:
                    problems.append((path, f"not an all-reduce table: {exc}"))
                    continue
                frame["source"] = os.path.dirname(path)
                frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*ALLREDUCE_KEYS, "world_size", "num_nodes", "size_bytes", "time_us"]), problems
    return pd.concat(frames, ignore_index=True), problems


def allreduce_curves(allreduce: pd.DataFrame) -> list[AllreduceCurve]:
    """One curve per (world size, nodes): the median time per message size over the runs measured."""
    curves = []
    for (world_size, num_nodes), group in allreduce.groupby(["world_size", "num_nodes"], sort=True):
        by_size = group.groupby("size_bytes")[["time_us", "cpu_time_us"]].median().sort_index()
        cpu = by_size["cpu_time_us"]
        curves.append(
            AllreduceCurve(
                int(world_size),
                int(num_nodes),
                tuple(map(int, by_size.index)),
                tuple(by_size["time_us"] / 1e6),
                tuple(cpu / 1e6) if cpu.notna().all() else (),
            )
        )
    return curves


@dataclass(frozen=True)
class SeriesModel:
    series: str
    predictions: pd.DataFrame  # one row per count: measured and predicted
    compute_source: str
    allreduce_source: str


def predict_series(
    summary: pd.DataFrame, allreduce: pd.DataFrame, predict_to: int
) -> tuple[list[SeriesModel], list[str]]:
    """Predictions for every series the model can serve; and one line for each series it cannot, saying why."""
    models, skipped = [], []
    for series, points in summary.groupby("series", sort=True):
        points = points.sort_values("world_size").reset_index(drop=True)
        largest = points.iloc[-1]
        name = f"{largest['label']} ({largest['scaling']})"
        if largest["scaling"] != "weak":
            skipped.append(f"{name}: strong scaling changes each rank's batch, and so its compute; not modelled")
            continue
        if points["grad_buckets"].fillna("").eq("").any() or points["job_compute_step_ms"].isna().any():
            skipped.append(f"{name}: rows without job_compute_step_ms and grad_buckets (from before this version)")
            continue
        try:
            for text in points["grad_buckets"]:
                parse_buckets(text)
        except ValueError:
            skipped.append(f"{name}: a grad_buckets cell is not 'bytes@window_ms;...'")
            continue
        matching = allreduce
        for key in ALLREDUCE_KEYS:
            matching = matching[matching[key] == str(largest[key])]
        if matching.empty:
            skipped.append(
                f"{name}: no allreduce.csv from {largest['launcher']} with {largest['backend']} on this platform "
                "and device; run `python -m ddp_bench allreduce` under the same launcher"
            )
            continue
        try:
            models.append(_predict(str(series), points, allreduce_curves(matching), predict_to))
        except ValueError as exc:  # a curve the α–β fit cannot use (one message size, e.g. --max-bytes 4096)
            skipped.append(f"{name}: the all-reduce curves cannot be fitted ({exc})")
    return models, skipped


def _predict(series: str, points: pd.DataFrame, curves: list[AllreduceCurve], predict_to: int) -> SeriesModel:
    biggest = max(curves, key=lambda curve: (curve.world_size, curve.num_nodes))
    fit = biggest.fit() if biggest.world_size > 1 else None
    stages = _two_stage(curves)
    base = points.iloc[0]
    base_per_rank = base["global_images_per_s"] / base["world_size"]
    largest = points.iloc[-1]
    per_node = max(1, int(largest["world_size"]) // int(largest["num_nodes"]))  # how the largest run was laid out
    rows = []
    for count in prediction_counts(points["world_size"].tolist(), max(predict_to, int(largest["world_size"]))):
        measured = points[points["world_size"] == count]
        source = measured.iloc[0] if len(measured) else largest
        nodes = int(source["num_nodes"]) if len(measured) else -(-count // per_node)
        on_cpu = source["device_kind"] == "CPU"
        comm = _comm_at(count, nodes, curves, biggest, stages, on_cpu)
        if comm is None:
            continue  # only a 1-rank all-reduce measured: nothing to extrapolate from
        comm_from, allreduce_ms, cpu_ms = comm
        step = predict_step(
            count, float(source["job_compute_step_ms"]), parse_buckets(source["grad_buckets"]), allreduce_ms, cpu_ms
        )
        images_per_step_ms = count * int(source["batch_size"]) * 1e3  # images/s = this ÷ step ms
        predicted = images_per_step_ms / step.step_ms
        rows.append(
            {
                "world_size": count,
                "num_nodes": nodes,
                "measured_images_per_s": measured["global_images_per_s"].iloc[0] if len(measured) else float("nan"),
                "measured_efficiency": measured["efficiency"].iloc[0] if len(measured) else float("nan"),
                "predicted_images_per_s": predicted,
                "predicted_images_per_s_low": images_per_step_ms / step.slowest_step_ms,
                "predicted_images_per_s_high": images_per_step_ms / step.fastest_step_ms,
                "predicted_efficiency": predicted / count / base_per_rank,
                "compute_ms": step.compute_ms,
                "comm_ms": step.comm_ms,
                "comm_cpu_ms": step.comm_cpu_ms,
                "step_ms": step.step_ms,
                "compute_from": f"{'this count' if len(measured) else 'largest run'} ({int(source['world_size'])})",
                "comm_from": comm_from,
            }
        )
    compute_source = (
        "the job's compute-only step (`job_compute_step_ms`: in the `no_sync` control after the timed stage, the "
        "median over steps of the slowest rank's time in each; on one rank, its timed steps) of the runs at each "
        f"measured count; past {int(largest['world_size'])}, the {int(largest['world_size'])}-rank run's "
        f"({float(largest['job_compute_step_ms']):.1f} ms), with its gradient buckets and their ready times "
        "(`grad_buckets`)"
    )
    if stages is not None:
        past = (
            f"; past that, two stages: inside a node α = {stages.intra.alpha_s * 1e6:.1f} µs per hop and β = "
            f"{stages.intra.beta_bytes_per_s / 1e9:.3f} GB/s (fitted on one node at {stages.intra.fitted_at} ranks), "
            f"between nodes α = {stages.inter.alpha_s * 1e6:.1f} µs and β = {stages.inter.beta_bytes_per_s / 1e9:.3f} "
            f"GB/s per node (fitted across {stages.inter.fitted_at} nodes), {per_node} rank(s) per node"
        )
    elif fit:
        past = (
            f"; past that, α = {fit.alpha_s * 1e6:.1f} µs per hop and β = {fit.beta_bytes_per_s / 1e9:.3f} GB/s "
            f"per link, fitted at {fit.fitted_at} ranks"
        )
    else:
        past = ""
    allreduce_source = (
        "allreduce.csv at "
        + ", ".join(f"{curve.world_size} ranks on {curve.num_nodes} node(s)" for curve in curves)
        + past
    )
    return SeriesModel(series, pd.DataFrame(rows), compute_source, allreduce_source)


def _two_stage(curves: list[AllreduceCurve]) -> TwoStage | None:
    """The two-stage model, where one curve was measured on one node of several ranks and another across nodes."""
    inside = [curve for curve in curves if curve.num_nodes == 1 and curve.world_size > 1]
    across = [curve for curve in curves if curve.num_nodes > 1]
    if not inside or not across:
        return None
    return fit_two_stage(
        max(inside, key=lambda curve: curve.world_size),
        max(across, key=lambda curve: (curve.num_nodes, curve.world_size)),
    )


def _comm_at(
    count: int,
    nodes: int,
    curves: list[AllreduceCurve],
    biggest: AllreduceCurve,
    stages: TwoStage | None,
    on_cpu: bool,
) -> tuple[str, Callable[[int], float], Callable[[int], float]] | None:
    """(where the all-reduce times come from, ms per all-reduce of S bytes, its CPU ms) at `count` ranks on `nodes`:
    the curve measured at that count (on the same number of nodes if there is one); else the two-stage model where
    it could be fitted, else the α–β fit to the biggest curve; None when that was measured on one rank. The CPU term
    applies on CPU ranks only (gloo shares their cores with backward)."""
    if count == 1:
        return "none (one rank)", lambda _size: 0.0, lambda _size: 0.0
    exact = [curve for curve in curves if curve.world_size == count]
    if exact:
        curve = max(exact, key=lambda curve: (curve.num_nodes == nodes, curve.num_nodes))
        comm_from = f"measured at {count} ranks on {curve.num_nodes} node(s)"

        def allreduce_ms(size: int) -> float:
            return curve.time_s(size) * 1e3
    elif stages is not None:
        curve, per_node = biggest, max(1, count // nodes)
        comm_from = f"two-stage fit ({nodes} node(s) × {per_node})"

        def allreduce_ms(size: int) -> float:
            return stages.time_s(nodes, per_node, size) * 1e3
    elif biggest.world_size > 1:
        curve, fit = biggest, biggest.fit()
        comm_from = f"α–β fit at {fit.fitted_at} ranks"

        def allreduce_ms(size: int) -> float:
            return fit.time_s(count, size) * 1e3
    else:
        return None

    def cpu_ms(size: int) -> float:
        return curve.cpu_time_s(size, count) * 1e3 if on_cpu else 0.0

    return comm_from, allreduce_ms, cpu_ms


def straggler_table(rows: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per complete multi-rank run: each rank's own images/s (batch ÷ its compute-only step, so a slow rank
    does not hide behind the all-reduce that makes every rank wait for it), their min, median and max, the
    slowest rank and its host, and how far it is below the median."""
    out = []
    ranks_of = rows[rows["run_id"].isin(runs.loc[runs["world_size"] > 1, "run_id"])]
    for run_id, ranks in ranks_of.groupby("run_id", sort=True):
        own = ranks["batch_size"] * 1e3 / ranks["compute_step_ms"]
        if own.isna().any():
            continue  # rows from before compute_step_ms
        slowest = ranks.loc[own.idxmin()]
        median = float(own.median())
        below = 1 - float(own.min()) / median
        out.append(
            {
                "run_id": run_id,
                "world_size": int(ranks["world_size"].iloc[0]),
                "images_per_s_min": float(own.min()),
                "images_per_s_median": median,
                "images_per_s_max": float(own.max()),
                "slowest_rank": int(slowest["rank"]),
                "slowest_host": slowest["hostname"],
                "below_median": below,
                "straggler": below > STRAGGLER_SHARE,
            }
        )
    columns = [
        "run_id",
        "world_size",
        "images_per_s_min",
        "images_per_s_median",
        "images_per_s_max",
        "slowest_rank",
        "slowest_host",
        "below_median",
        "straggler",
    ]
    return pd.DataFrame(out, columns=columns)
