"""Rank rows: read back from a results directory (read_rows), and hand-made ones, TEST FIXTURES, not measurements.
make_record's rows fill every field with a placeholder of its type; fixture_record's (the hostile-input tests') are a
1-rank complete run with every value inside the schema's ranges, so a test changes one field to make a row hostile."""

from __future__ import annotations

import dataclasses
import glob
import os

from ddp_bench.results.rank_files import read_rank_csv
from ddp_bench.results.records import COLUMNS, RankRecord, render_table, write_rank_csv

_BY_TYPE = {"int": 1, "float": 1.5, "bool": False, "str": "x"}


def read_rows(out_dir) -> list[dict[str, str]]:
    """Every rank row under a results directory, in rank order within each run."""
    rows = []
    for path in sorted(glob.glob(os.path.join(str(out_dir), "*", "rank*.csv"))):
        rows += read_rank_csv(path)
    return sorted(rows, key=lambda row: (row["run_id"], int(row["rank"])))


def make_record(**changes) -> RankRecord:
    """A fixture row (test data, not a measurement)."""
    values = {}
    for field in dataclasses.fields(RankRecord):
        if field.default is not dataclasses.MISSING:
            continue
        values[field.name] = {"int": 1, "float": 1.5, "bool": False, "str": "x"}[field.type]
    values.update(run_id="run-a", rank=0, world_size=2, local_world_size=2, test_accuracy=float("nan"))
    values.update(status="complete", mfu=0.5, test_accuracy=float("nan"), target_accuracy=0.5)  # in the schema's ranges
    values.update(changes)
    return RankRecord(**values)


def fixture_record(**changes) -> RankRecord:
    """One valid row of a 1-rank complete run; `changes` replace fields."""
    values = {
        field.name: _BY_TYPE[field.type]
        for field in dataclasses.fields(RankRecord)
        if field.default is dataclasses.MISSING
    }
    values.update(
        run_id="run-a",
        status="complete",
        platform="slurm",
        cluster="fixture",
        device="cuda:0",
        device_name="NVIDIA FIXTURE-GPU",
        model="mnist_cnn",
        data="synthetic",
        amp="off",
        scaling="weak",
        rank=0,
        world_size=1,
        local_world_size=1,
        num_nodes=1,
        batch_size=64,
        global_batch_size=64,
        steps=100,
        samples=6400,
        train_time_s=2.0,
        dataset_size=60000,
        mfu=0.5,
        test_accuracy=float("nan"),
        target_accuracy=float("nan"),
        hostname="TEST-FIXTURE",
        tag="TEST FIXTURE",
    )
    values.update(changes)
    return RankRecord(**values)


def write_run(directory, run_id: str, world: int = 1, seconds: float = 2.0, **changes) -> list[str]:
    """A complete run of `world` ranks, each 6400 images in `seconds`; the paths of its rank files."""
    paths = []
    for rank in range(world):
        record = fixture_record(run_id=run_id, rank=rank, world_size=world, local_world_size=world,
                                global_batch_size=64 * world, train_time_s=seconds)  # fmt: skip
        paths.append(write_rank_csv(str(directory), dataclasses.replace(record, **changes)))
    return paths


def write_raw_row(path, **cells: str) -> str:
    """A rank file whose cells are given as text (values no RankRecord would hold), the rest a valid row's."""
    record = fixture_record()
    row = tuple(cells.get(name, _cell_text(getattr(record, name))) for name in COLUMNS)
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(render_table(COLUMNS, [row]))
    return str(path)


def _cell_text(value: object) -> str:
    return (
        "" if isinstance(value, float) and value != value else repr(value) if isinstance(value, float) else str(value)
    )
