"""The report's scaling model and straggler tables. pandas only; the arithmetic is in measurement/scaling_model.py.

Predictions are made for weak-scaling series (fixed per-rank batch, so a rank's compute does not change with
the count) that have an all-reduce measurement (`allreduce.csv`) from the same launcher, platform, cluster,
backend and device. At each count:
- compute: at a measured count, that count's own runs (the job's compute-only step: at each step the slowest
  rank's time, median over steps, then over repeats), so the column checks the communication model alone; past
  the largest measured count, the largest run's, which carries the contention of the most ranks measured, times
  the slowest of N ranks drawn from its recorded per-step quantiles (report/drift.py: `compute_drift`), the band
  wider for GPU compute measured on part of a node (`partial_node`);
- buckets: DDP's gradient buckets and how long before the end of backward each was ready, from the same run;
- all-reduce: the measured curve at that rank count, interpolated at each bucket's size, or, at counts without
  one, the ring fitted to the curve at the largest count measured, keeping the bandwidth each message size
  reached, or NCCL's tree where faster (measurement/comm_choice.py, link_model.py); in two stages where curves
  inside one node and across nodes were measured;
- the band: measurement/prediction.py (bucket overlap, and the spread of the all-reduce models past the measured
  counts);
- on CPU ranks, the CPU time of each all-reduce (`cpu_time_us` of the same curve, scaled by the ring's bytes
  per rank at other counts) for the part that overlaps backward. Nothing is fitted to the model's miss at a
  measured count (issue #25: such a term hides any error of the communication terms).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from ddp_bench.measurement.comm_choice import comm_at, two_stage_of
from ddp_bench.measurement.prediction import predict_at
from ddp_bench.measurement.scaling_model import AllreduceCurve, TwoStage, parse_buckets, prediction_counts
from ddp_bench.report.drift import drift_at, drift_source

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
    largest = points.iloc[-1]
    tree = str(largest["backend"]) == "nccl"  # NCCL has a tree; gloo only the ring
    stages = two_stage_of(curves, tree)
    base = points.iloc[0]
    base_per_rank = base["global_images_per_s"] / base["world_size"]
    per_node = max(1, int(largest["world_size"]) // int(largest["num_nodes"]))  # how the largest run was laid out
    rows = []
    for count in prediction_counts(points["world_size"].tolist(), max(predict_to, int(largest["world_size"]))):
        measured = points[points["world_size"] == count]
        source = measured.iloc[0] if len(measured) else largest
        nodes = int(source["num_nodes"]) if len(measured) else -(-count // per_node)
        comm = comm_at(count, nodes, curves, stages, source["device_kind"] == "CPU", tree)
        if comm is None:
            continue  # only a 1-rank all-reduce measured: nothing to extrapolate from
        compute = drift_at(source, count, measured=len(measured) > 0)
        buckets = parse_buckets(source["grad_buckets"])
        row = predict_at(
            count,
            int(source["batch_size"]),
            compute.compute_ms,
            buckets,
            comm,
            compute.partial_ms,
            compute.tail_ms,
            fast_compute_ms=compute.undrifted_ms,  # the drift's own error: the fast end takes none of it
        )
        rows.append(
            {
                "world_size": count,
                "num_nodes": nodes,
                "measured_images_per_s": measured["global_images_per_s"].iloc[0] if len(measured) else float("nan"),
                "measured_efficiency": measured["efficiency"].iloc[0] if len(measured) else float("nan"),
                **row,
                "predicted_efficiency": row["predicted_images_per_s"] / count / base_per_rank,
                "compute_from": f"{'this count' if len(measured) else 'largest run'} ({int(source['world_size'])})"
                + compute.text(),
                # 1 at a measured count; empty where the rows record no quantiles (not modelled, the notes say)
                "compute_drift": compute.drift.ratio if compute.drift.applied or len(measured) else float("nan"),
                "partial_node": compute.partial,
            }
        )
    compute_source = (
        "the job's compute-only step (`job_compute_step_ms`: in the `no_sync` control after the timed stage, the "
        "median over steps of the slowest rank's time in each; on one rank, its timed steps) of the runs at each "
        f"measured count; past {int(largest['world_size'])}, the {int(largest['world_size'])}-rank run's "
        f"({float(largest['job_compute_step_ms']):.1f} ms), with its gradient buckets and their ready times "
        "(`grad_buckets`)" + drift_source(largest, predict_to)
    )
    return SeriesModel(series, pd.DataFrame(rows), compute_source, _allreduce_source(curves, stages, per_node, tree))


def _allreduce_source(curves: list[AllreduceCurve], stages: TwoStage | None, per_node: int, tree: bool) -> str:
    biggest = max(curves, key=lambda curve: (curve.world_size, curve.num_nodes))
    if stages is not None:
        past = (
            f"; past that, two stages: inside a node {stages.intra.describe('ranks on one node')}; between nodes, "
            f"per node, {stages.inter.describe('nodes')}; {per_node} rank(s) per node"
        )
    elif biggest.world_size > 1:
        past = f"; past that, {biggest.sized(tree).describe()}"
    else:
        past = ""
    return (
        "allreduce.csv at "
        + ", ".join(f"{curve.world_size} ranks on {curve.num_nodes} node(s)" for curve in curves)
        + past
    )


def algorithm_note(row: pd.Series) -> str:
    """`, ring` or `, tree` after the all-reduce's source, where a model chose it (not at a measured curve)."""
    chosen = str(row.get("allreduce_algorithm", ""))
    return f", {chosen}" if chosen not in ("", "nan", "measured", "none") else ""


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
