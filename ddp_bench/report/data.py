"""From per-rank CSV rows to runs, and from runs to scaling tables. pandas only; no torch, no plotting.

Definitions (the ones users of every DDP tool keep asking for):
- a run's throughput = Σ samples over its ranks ÷ the slowest rank's train_time_s;
- per-GPU throughput = run throughput ÷ world size;
- speedup(N) = throughput(N) ÷ throughput(N₀) × N₀, where N₀ is the smallest world size measured for that
  configuration (so with a 1-GPU baseline it is the classic T₁/T_N ratio);
- efficiency(N) = speedup(N) ÷ N (1.0 is perfect scaling).
Weak scaling keeps the per-rank batch fixed as GPUs are added; strong scaling keeps the global batch fixed.
Repeated runs of one configuration and world size are summarised by their median, with min and max kept.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import pandas as pd

from ddp_bench.report.drift import DRIFT_COLUMNS, point_drift, run_drift
from ddp_bench.report.identity import fill_schema_1_shape, model_identity, shape_suffix
from ddp_bench.report.stats import median_of
from ddp_bench.results.rank_files import find_rank_files, read_rank_csv
from ddp_bench.results.records import COLUMNS, NUMERIC_COLUMNS, global_images_per_second, incomplete_reason

# What makes two runs comparable, besides the scaling kind and the batch that the kind holds fixed. The model is
# named by its spec and its source file's sha256 (empty for the built-ins), the data by its shape and classes.
CONFIG_KEYS = (
    "platform",
    "cluster",
    "device_name",
    "model",
    "model_sha256",
    "data",
    "input_shape",
    "num_classes",
    "loader",
    "amp",
    "channels_last",
    "compile",
)


@dataclass(frozen=True)
class LoadedRows:
    rows: pd.DataFrame  # one row per usable rank file, numeric columns typed
    problems: list[tuple[str, str]]  # (path, why it could not be used)
    files: int  # rank files found under the directories, usable or not


def load_rows(directories: list[str]) -> LoadedRows:
    """Every per-rank CSV under the directories; a file that does not fit the schema is named and left out.

    Each file is read once with the csv module; the rows of all files then make one frame, and each numeric
    column is converted once for all of them (per-file conversion cost seconds at the scale of a 512-GPU sweep).
    """
    problems = [(directory, "not a directory") for directory in directories if not os.path.isdir(directory)]
    files = find_rank_files(directories)
    records: list[dict[str, str]] = []
    sources: list[str] = []
    for path in files:
        try:
            rows = read_rank_csv(path)
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            problems.append((path, str(exc)))
            continue
        records += rows
        sources += [path] * len(rows)
    frame = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    frame["source"] = sources
    fill_schema_1_shape(frame)
    for column in NUMERIC_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")  # an empty cell is NaN
    # every row passed the schema's checks as its file was read (rank_files.validate_row)
    for column in ("channels_last", "compile"):
        frame[column] = frame[column].astype(str)
    frame["scaling"] = frame["scaling"].replace("", "weak")  # rows from before the scaling column were weak
    return LoadedRows(frame, problems, len(files))


def short_device(name: str) -> str:
    name = re.sub(r"\((R|TM|tm)\)", "", str(name)).replace("NVIDIA ", "")
    name = re.sub(r"\s+CPU\s+@.*$", "", name)
    return re.sub(r"\s+", " ", name).strip()


def where_label(platform: str, cluster: str) -> str:
    """Colab, PBS, the Slurm cluster's name, or the platform."""
    named = {"colab": "Colab", "pbs": "PBS"}.get(platform)
    return named or (cluster if isinstance(cluster, str) and cluster else platform)


def platform_label(platform: str, cluster: str, device_name: str, world_size: int) -> str:
    """`Colab · Tesla T4 ×1`, `narval · A100-SXM4-40GB ×8`, `local · Xeon Processor ×2`."""
    where = where_label(platform, cluster)
    return f"{where} · {short_device(device_name)} ×{int(world_size)}"


@dataclass(frozen=True)
class RunTables:
    runs: pd.DataFrame  # one row per complete run
    incomplete: list[tuple[str, str]]  # (run_id, why it is left out of the figures)


def summarise_runs(rows: pd.DataFrame) -> RunTables:
    """Group rank rows into runs; a run counts only when every rank reported and all call it complete."""
    runs, incomplete = [], []
    for run_id, ranks in rows.groupby("run_id", sort=True):
        reason = incomplete_reason(
            ranks["status"].tolist(), ranks["world_size"].astype(int).tolist(), ranks["rank"].astype(int).tolist()
        )
        if reason:
            incomplete.append((str(run_id), reason))
            continue
        runs.append(_run_row(run_id, ranks))
    return RunTables(pd.DataFrame(runs, columns=_run_columns()), incomplete)


def _run_row(run_id, ranks: pd.DataFrame) -> dict:
    """One complete run's row, from its ranks' rows."""
    world_size = int(ranks["world_size"].iloc[0])
    first = ranks.iloc[0]
    throughput = global_images_per_second(ranks["samples"].tolist(), ranks["train_time_s"].tolist())
    dataset_size = ranks["dataset_size"].iloc[0]
    return {
        "run_id": run_id,
        **{key: first[key] for key in CONFIG_KEYS},
        "model_params": first["model_params"],  # named in titles; the sha256 tells versions apart
        "scaling": first["scaling"],
        "world_size": world_size,
        "num_nodes": int(first["num_nodes"]),
        "batch_size": int(first["batch_size"]),
        "global_batch_size": int(first["global_batch_size"]),
        "global_images_per_s": throughput,
        "images_per_s_per_gpu": throughput / world_size,
        "step_time_median_ms": ranks["step_time_median_ms"].median(),
        "step_time_p90_ms": ranks["step_time_p90_ms"].max(),
        "epoch_time_s": dataset_size / throughput if dataset_size == dataset_size else float("nan"),
        "test_accuracy": ranks["test_accuracy"].iloc[0],
        "mfu": median_of(ranks["mfu"]),
        "verdict": ranks["verdict"].mode().iloc[0],  # what most ranks concluded
        "started_at": first["started_at"],
        # for the scaling model (report/scaling.py)
        "launcher": first["launcher"],
        "backend": first["backend"],
        "job_compute_step_ms": ranks["job_compute_step_ms"].max(),  # the same on every rank
        "grad_buckets": first["grad_buckets"],
        **run_drift(ranks),  # the compute drift's inputs (report/drift.py)
        # for the platform comparison (report/platforms.py)
        "device_kind": "GPU" if str(first["device"]).startswith("cuda") else "CPU",
        "dataset_size": dataset_size,
        "samples": ranks["samples"].sum(),
        "epochs": first["epochs"],
        "wall_time_s": ranks["wall_time_s"].max(),
        "queue_wait_s": first["queue_wait_s"],
        "setup_s": ranks["setup_s"].max(),
        "startup_s": ranks["startup_s"].max(),
        "job_energy_j": first["job_energy_j"],
        "peak_memory_mb": _peak_memory_mb(ranks),
        "target_accuracy": first["target_accuracy"],
        "reached": first["reached"],
        "time_to_accuracy_s": ranks["time_to_accuracy_s"].max(),  # the slowest rank's clock, as throughput
        # ranks on different nodes may disagree (another driver): every distinct value, joined
        **{key: " | ".join(sorted(set(ranks[key].astype(str)))) for key in PROVENANCE_KEYS},
    }


def _run_columns() -> list[str]:
    """The columns of the runs table, in order."""
    return [
        "run_id",
        *CONFIG_KEYS,
        "model_params",
        "scaling",
        "world_size",
        "num_nodes",
        "batch_size",
        "global_batch_size",
        "global_images_per_s",
        "images_per_s_per_gpu",
        "step_time_median_ms",
        "step_time_p90_ms",
        "epoch_time_s",
        "test_accuracy",
        "mfu",
        "verdict",
        "started_at",
        "launcher",
        "backend",
        "job_compute_step_ms",
        "grad_buckets",
        *DRIFT_COLUMNS,
        *RUN_RESOURCE_COLUMNS,
        *PROVENANCE_KEYS,
    ]


# What produced a run, beyond its configuration: the report lists every one of these that differs between the
# runs of a series it compares.
PROVENANCE_KEYS = (
    "torch_version",
    "cuda_version",
    "nccl_version",
    "driver_version",
    "comm_env",
    "python_version",
    "git_commit",
)


def provenance_differences(runs: pd.DataFrame) -> list[tuple[str, str, dict[str, int]]]:
    """(series title, provenance key, {value: runs with it}) for every key whose value differs between the runs
    of one scaling series."""
    found = []
    for scaling in ("weak", "strong"):
        subset = runs[runs["scaling"] == scaling]
        for _key, series in subset.groupby(list(series_keys(scaling)), sort=True, dropna=False):
            for key in PROVENANCE_KEYS:
                counts = series[key].fillna("").astype(str).value_counts(sort=False)
                if len(counts) > 1:
                    found.append((series_title(series.iloc[0]), key, {str(v): int(n) for v, n in counts.items()}))
    return found


RUN_RESOURCE_COLUMNS = (
    "device_kind",
    "dataset_size",
    "samples",
    "epochs",
    "wall_time_s",
    "queue_wait_s",
    "setup_s",
    "startup_s",
    "job_energy_j",
    "peak_memory_mb",
    "target_accuracy",
    "reached",
    "time_to_accuracy_s",
)


def _peak_memory_mb(ranks: pd.DataFrame) -> float:
    """The largest rank's peak: device memory on GPUs (what limits the batch), resident memory on CPUs."""
    device = ranks["peak_device_allocated_mb"]
    return float(device.max()) if device.notna().any() else float(ranks["peak_rss_mb"].max())


def series_keys(scaling: str) -> tuple[str, ...]:
    """Columns that identify one scaling series: weak holds the per-rank batch, strong the global batch."""
    return (*CONFIG_KEYS, "scaling", "batch_size" if scaling == "weak" else "global_batch_size")


SUMMARY_COLUMNS = [
    "label",
    "platform",
    "cluster",
    "device_name",
    "num_nodes",
    "world_size",
    "model",
    "model_sha256",
    "model_params",
    "data",
    "input_shape",
    "num_classes",
    "loader",
    "batch_size",
    "global_batch_size",
    "amp",
    "channels_last",
    "compile",
    "scaling",
    "repeats",
    "global_images_per_s",
    "global_images_per_s_min",
    "global_images_per_s_max",
    "images_per_s_per_gpu",
    "speedup",
    "efficiency",
    "epoch_time_s",
    "step_time_median_ms",
    "step_time_p90_ms",
    "test_accuracy",
    "mfu",
    "verdict",
    "series",
    "device_kind",
    "launcher",
    "backend",
    "job_compute_step_ms",
    "grad_buckets",
    "dataset_size",
    *DRIFT_COLUMNS,
]


def scaling_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per scaling series and world size: median over repeats, spread, speedup and efficiency."""
    out = []
    for scaling in ("weak", "strong"):
        subset = runs[runs["scaling"] == scaling]
        keys = list(series_keys(scaling))
        for series_index, (_key, series) in enumerate(subset.groupby(keys, sort=True, dropna=False)):
            points = []
            for world_size, repeats in series.groupby("world_size", sort=True):
                first = repeats.iloc[0]
                points.append(
                    {
                        **{key: first[key] for key in (*CONFIG_KEYS, "model_params", "scaling")},
                        "label": platform_label(first["platform"], first["cluster"], first["device_name"], world_size),
                        "num_nodes": int(repeats["num_nodes"].median()),
                        "world_size": int(world_size),
                        "batch_size": int(repeats["batch_size"].median()),
                        "global_batch_size": int(repeats["global_batch_size"].median()),
                        "repeats": len(repeats),
                        "global_images_per_s": median_of(repeats["global_images_per_s"]),
                        "global_images_per_s_min": repeats["global_images_per_s"].min(),
                        "global_images_per_s_max": repeats["global_images_per_s"].max(),
                        "epoch_time_s": median_of(repeats["epoch_time_s"]),
                        "step_time_median_ms": median_of(repeats["step_time_median_ms"]),
                        "step_time_p90_ms": median_of(repeats["step_time_p90_ms"]),
                        "test_accuracy": median_of(repeats["test_accuracy"]),
                        "mfu": median_of(repeats["mfu"]),
                        "verdict": repeats["verdict"].mode().iloc[0],
                        "series": f"{scaling}-{series_index}",
                        "device_kind": first["device_kind"],
                        "launcher": repeats["launcher"].mode().iloc[0],
                        "backend": first["backend"],
                        "job_compute_step_ms": median_of(repeats["job_compute_step_ms"]),
                        "grad_buckets": first["grad_buckets"],
                        "dataset_size": median_of(repeats["dataset_size"]),  # images per epoch
                        **point_drift(repeats),
                    }
                )
            base = points[0]  # the smallest world size of this series is its baseline
            for point in points:
                point["images_per_s_per_gpu"] = point["global_images_per_s"] / point["world_size"]
                point["speedup"] = point["global_images_per_s"] / base["global_images_per_s"] * base["world_size"]
                point["efficiency"] = point["speedup"] / point["world_size"]
            out += points
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)


def device_word(kinds, plural: bool = True) -> str:
    """What to call the devices on an axis or in a column: GPUs, CPU ranks, or both."""
    kinds = set(kinds)
    if kinds == {"CPU"}:
        return "ranks" if plural else "rank"
    if kinds <= {"GPU"}:
        return "GPUs" if plural else "GPU"
    return "GPUs or CPU ranks" if plural else "device"


def series_title(row: pd.Series) -> str:
    """A legend entry for one scaling series."""
    where = where_label(row["platform"], row["cluster"])
    per = device_word([row.get("device_kind", "GPU")], plural=False)
    batch = f"{row['batch_size']}/{per}" if row["scaling"] == "weak" else f"global {row['global_batch_size']}"
    extras = [
        flag
        for flag, on in (("channels-last", row["channels_last"] == "True"), ("compile", row["compile"] == "True"))
        if on
    ]
    amp = "" if row["amp"] == "off" else f" {row['amp']}"
    return (
        f"{where} · {short_device(row['device_name'])} · {model_identity(row)} {row['data']}{shape_suffix(row)}"
        + f" · {batch}{amp}"
        + (" · " + ", ".join(extras) if extras else "")
        + f" ({row['scaling']})"
    )
