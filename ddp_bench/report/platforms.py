"""The platform comparison the courses end with (Colab or a cluster?), with measured numbers in every cell.

For every workload that ran on more than one platform (the same model, data, per-device batch and precision),
one row per platform (where it ran and on which device). Every cell comes from that platform's complete runs:
- `devices`: the largest device count measured (GPUs, or CPU ranks);
- `images_per_s_1` / `images_per_s_max`: throughput on 1 device and at the largest count (medians over repeats);
- `x_cpu`: `images_per_s_1` over the CPU platform's, in the same workload;
- `epoch_time_s`: the training set over `images_per_s_max`;
- `time_to_accuracy_s`: the fastest median time to the workload's target accuracy over the device counts that
  reached it (`time_to_accuracy_devices` says at how many), training time only;
- `queue_wait_s`: the median queue wait (0 where there is no scheduler: Colab, a workstation);
- `setup_s`: the median time the job script or notebook spent on its environment and data;
- `first_result_s`: end to end, the median of queue wait + setup + the run's whole wall time, over the runs on
  the fewest devices (parts a run did not record count as 0);
- `energy_per_epoch_j`: the job's joules per image at the largest count, times the training set;
- `device_hours_per_epoch`: devices x epoch time at the largest count;
- `peak_memory_mb`: the largest rank's peak at the largest count (GPU memory on GPUs, resident memory on CPUs);
- `efficiency_max`: scaling efficiency at the largest count against the smallest (per-device throughput ratio).
"""

from __future__ import annotations

import pandas as pd

from ddp_bench.report.data import short_device, where_label
from ddp_bench.report.identity import IMPLIED_SHAPES
from ddp_bench.report.stats import median_of

# The model by its spec and source file's sha256 (empty for the built-ins and in older rows), the data by its shape.
WORKLOAD_KEYS = ("model", "model_sha256", "data", "input_shape", "batch_size", "amp")  # input_shape: filled in
# rows of schema 1 by report.data
PLATFORM_KEYS = ("platform", "cluster", "device_kind", "device_name")
NO_SCHEDULER = ("colab", "local")

PLATFORM_COLUMNS = [
    "workload",
    "name",
    "device_kind",
    "devices",
    "images_per_s_1",
    "images_per_s_max",
    "x_cpu",
    "epoch_time_s",
    "target_accuracy",
    "time_to_accuracy_s",
    "time_to_accuracy_devices",
    "queue_wait_s",
    "setup_s",
    "first_result_s",
    "energy_per_epoch_j",
    "device_hours_per_epoch",
    "peak_memory_mb",
    "efficiency_max",
    "device_name",
]


def platform_name(platform: str, cluster: str, device_kind: str, device_name: str) -> str:
    """`GPU: Tesla T4 · Colab`, `GPU: A100-SXM4-40GB · narval`, `CPU (Intel Xeon Gold 6148) · local`."""
    device = short_device(device_name)
    what = f"GPU: {device}" if device_kind == "GPU" else f"CPU ({device})"
    return f"{what} · {where_label(platform, cluster)}"


def _name_of(run: pd.Series) -> str:
    return platform_name(run["platform"], run["cluster"], run["device_kind"], run["device_name"])


def _races(runs: pd.DataFrame, target: float) -> pd.DataFrame:
    """The runs that reached the workload's target accuracy."""
    return runs[(runs["reached"].astype(str) == "True") & (runs["target_accuracy"] == target)]


def workload_title(model: str, sha256: str, data: str, shape: str, batch_size: int, amp: str) -> str:
    name = f"{model} (sha256 {sha256[:12]})" if sha256 else model
    on = f"{data} {shape}" if shape and data not in IMPLIED_SHAPES else data
    return f"{name} on {on} · {int(batch_size)} per device · {'fp32' if amp == 'off' else amp}"


def _target(runs: pd.DataFrame) -> float:
    """The target accuracy most of the workload's reached races aimed for (NaN when none was reached)."""
    reached = runs.loc[runs["reached"].astype(str) == "True", "target_accuracy"].dropna()
    return float(reached.mode().iloc[0]) if len(reached) else float("nan")


def _first_result_s(runs: pd.DataFrame) -> pd.Series:
    queue = runs["queue_wait_s"].where(~runs["platform"].isin(NO_SCHEDULER), 0.0).fillna(0.0)
    return queue + runs["setup_s"].fillna(0.0) + runs["wall_time_s"]


def _platform_row(runs: pd.DataFrame, target: float) -> dict:
    first = runs.iloc[0]
    counts = sorted(runs["world_size"].unique())
    smallest, largest = int(counts[0]), int(counts[-1])
    at = {count: runs[runs["world_size"] == count] for count in counts}
    throughput = {count: median_of(at[count]["global_images_per_s"]) for count in counts}
    at_largest = at[largest]
    race_times = _races(runs, target).groupby("world_size")["time_to_accuracy_s"].median()
    energy = at_largest["job_energy_j"] / at_largest["samples"] * at_largest["dataset_size"]
    queue = 0.0 if first["platform"] in NO_SCHEDULER else median_of(runs["queue_wait_s"])
    return {
        "name": _name_of(first),
        "device_kind": first["device_kind"],
        "device_name": first["device_name"],
        "devices": largest,
        "images_per_s_1": throughput.get(1, float("nan")),
        "images_per_s_max": throughput[largest],
        "epoch_time_s": float(first["dataset_size"]) / throughput[largest],
        "target_accuracy": target,
        "time_to_accuracy_s": float(race_times.min()) if len(race_times) else float("nan"),
        "time_to_accuracy_devices": int(race_times.idxmin()) if len(race_times) else 0,
        "queue_wait_s": queue,
        "setup_s": median_of(runs["setup_s"]),
        "first_result_s": median_of(_first_result_s(at[smallest])),
        "energy_per_epoch_j": median_of(energy),
        "device_hours_per_epoch": largest * float(first["dataset_size"]) / throughput[largest] / 3600,
        "peak_memory_mb": median_of(at_largest["peak_memory_mb"]),
        "efficiency_max": (
            throughput[largest] / largest / (throughput[smallest] / smallest) if largest > smallest else float("nan")
        ),
    }


def platform_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per platform of every workload that ran on more than one platform."""
    rows = []
    for key, workload in runs.groupby(list(WORKLOAD_KEYS), sort=True):
        platforms = workload.groupby(list(PLATFORM_KEYS), sort=True, dropna=False)
        if platforms.ngroups < 2:
            continue
        target = _target(workload)
        entries = [_platform_row(group, target) for _, group in platforms]
        cpu = [entry["images_per_s_1"] for entry in entries if entry["device_kind"] == "CPU"]
        for entry in entries:
            entry["x_cpu"] = entry["images_per_s_1"] / cpu[0] if cpu else float("nan")
            entry["workload"] = workload_title(*key)
        rows += sorted(entries, key=lambda entry: (entry["device_kind"] != "CPU", entry["images_per_s_1"]))
    return pd.DataFrame(rows, columns=PLATFORM_COLUMNS)


def course_rows(runs: pd.DataFrame, table: pd.DataFrame) -> dict[str, dict[str, dict[str, float | str]]]:
    """The course table's questions, answered per platform with measured cells, for each compared workload:
    {workload: {platform: {"quick_s": ..., "efficiency": ..., "devices": ..., "hardware": ...}}}."""
    answers: dict[str, dict[str, dict[str, float | str]]] = {}
    for key, workload in runs.groupby(list(WORKLOAD_KEYS), sort=True):
        title = workload_title(*key)
        if title not in set(table["workload"]):
            continue
        for _, group in workload.groupby(list(PLATFORM_KEYS), sort=True, dropna=False):
            first = group.iloc[0]
            name = _name_of(first)
            row = table[(table["workload"] == title) & (table["name"] == name)].iloc[0]
            one_epoch = group[group["epochs"] == 1]
            answers.setdefault(title, {})[name] = {
                "quick_s": median_of(_first_result_s(one_epoch)) if len(one_epoch) else float("nan"),
                "efficiency": row["efficiency_max"],
                "devices": int(row["devices"]),
                "hardware": f"{int(row['devices'])} × {short_device(first['device_name'])}",
            }
    return answers


def accuracy_series(runs: pd.DataFrame) -> pd.DataFrame:
    """Median time to the target accuracy per platform, workload and device count, for the second scaling plot."""
    out = []
    for key, workload in runs.groupby(list(WORKLOAD_KEYS), sort=True):
        target = _target(workload)
        for _, group in _races(workload, target).groupby(list(PLATFORM_KEYS), sort=True, dropna=False):
            first = group.iloc[0]
            name = _name_of(first)
            for count, at in group.groupby("world_size", sort=True):
                out.append(
                    {
                        "series": f"{name} · {workload_title(*key)}",
                        "device_kind": first["device_kind"],
                        "world_size": int(count),
                        "target_accuracy": target,
                        "time_to_accuracy_s": median_of(at["time_to_accuracy_s"]),
                    }
                )
    columns = ["series", "device_kind", "world_size", "target_accuracy", "time_to_accuracy_s"]
    return pd.DataFrame(out, columns=columns)
