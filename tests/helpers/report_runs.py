"""Hand-made runs and all-reduce tables for the report's arithmetic: TEST FIXTURES, not measurements, round numbers
chosen so that every expected speedup, efficiency and prediction can be worked out by hand."""

from __future__ import annotations

import dataclasses

from ddp_bench.results.allreduce_table import AllreduceRow, write_allreduce_csv
from ddp_bench.results.records import write_rank_csv
from tests.helpers.rank_rows import make_record

# 4 MB of gradients ready 30 ms before the end of backward, then 1 MB at the end
BUCKETS = "4000000@30.000;1000000@0.000"
GPU = dict(launcher="slurm", backend="nccl", device="cuda:0")  # a GPU job's launch columns


def timed_fixture_run(out, run_id: str, world: int, seconds: list[float], steps: int = 100, batch: int = 64, **extra):
    """Write one fake run: `world` ranks, rank r took seconds[r] for `steps` steps of `batch` images."""
    for rank in range(len(seconds)):
        record = make_record(
            run_id=run_id,
            rank=rank,
            world_size=world,
            local_world_size=world,
            num_nodes=1,
            status="complete",
            platform="slurm",
            cluster="fixture",
            device_name="NVIDIA FIXTURE-GPU",
            model="mnist_cnn",
            data="synthetic",
            loader="device",
            amp="off",
            channels_last=False,
            compile=False,
            scaling="weak",
            batch_size=batch,
            global_batch_size=batch * world,
            steps=steps,
            samples=steps * batch,
            train_time_s=seconds[rank],
            dataset_size=60000,
            hostname="TEST-FIXTURE",
            tag="TEST FIXTURE",
        )
        write_rank_csv(str(out), dataclasses.replace(record, **extra))


def allreduce_fixture(out, world: int, nodes: int, us_per_mb: float = 1000.0, device_name: str = "") -> None:
    """An allreduce.csv as the benchmark writes it: here exactly `us_per_mb` µs per MB (no latency; CPU time half)."""
    directory = out / f"allreduce-w{world}-n{nodes}"
    directory.mkdir(parents=True)
    rows = []
    for size in (1_000_000, 4_000_000, 16_000_000):
        time_us = us_per_mb * size / 1e6
        rows.append(AllreduceRow("ar", "slurm", "slurm", "fixture", "TEST-FIXTURE", nodes, world, "nccl", "cuda:0",
                                 device_name or "NVIDIA FIXTURE-GPU", size, 5, time_us, time_us / 2, 0.0, 0.0, "x",
                                 "x", "x"))  # fmt: skip
    write_allreduce_csv(rows, str(directory))
