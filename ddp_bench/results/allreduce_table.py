"""allreduce.csv: one row per message size of one all-reduce benchmark, written as rank rows are."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from ddp_bench.results.records import render_table, write_new_file


@dataclass(frozen=True)
class AllreduceRow:
    run_id: str
    launcher: str
    platform: str
    cluster: str
    hostname: str
    num_nodes: int
    world_size: int
    backend: str
    device: str
    device_name: str
    size_bytes: int
    iterations: int
    time_us: float  # mean per all-reduce on the slowest rank
    cpu_time_us: float  # mean per all-reduce: CPU time of the busiest rank's process (all its threads)
    algbw_gbps: float  # GB/s = 1e9 bytes/s
    busbw_gbps: float
    torch_version: str
    ddp_bench_version: str
    git_commit: str


def write_allreduce_csv(rows: list[AllreduceRow], directory: str) -> None:
    """allreduce.csv, written as rank rows are: atomically, never over an existing file."""
    columns = tuple(field.name for field in dataclasses.fields(AllreduceRow))
    write_new_file(
        os.path.join(directory, "allreduce.csv"), render_table(columns, [dataclasses.astuple(r) for r in rows])
    )
