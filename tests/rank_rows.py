"""Hand-made rank rows for the hostile-input tests: TEST FIXTURES, not measurements. Every value sits inside the
schema's ranges, so a test changes one field to make a row hostile."""

from __future__ import annotations

import dataclasses
import os

from ddp_bench.results.records import COLUMNS, RankRecord, render_table, write_rank_csv

_BY_TYPE = {"int": 1, "float": 1.5, "bool": False, "str": "x"}


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
