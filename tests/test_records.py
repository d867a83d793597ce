"""Tier 1 (pure): the CSV schema, atomic no-clobber writing, and the throughput arithmetic."""

import errno
import math
import os

import pytest

from ddp_bench.results.rank_files import read_rank_csv
from ddp_bench.results.records import (
    COLUMNS,
    REQUIRED_COLUMNS,
    global_images_per_second,
    images_per_second,
    incomplete_reason,
    new_run_id,
    render_csv,
    write_rank_csv,
)
from tests.helpers.rank_rows import make_record

REQUIRED = (
    "run_id status started_at launcher platform cluster hostname num_nodes node_rank world_size rank local_rank "
    "backend device device_name model data batch_size global_batch_size amp channels_last compile warmup_steps "
    "steps samples train_time_s wall_time_s images_per_s global_images_per_s step_time_median_ms "
    "step_time_p90_ms final_loss test_accuracy torch_version cuda_version ddp_bench_version git_commit"
).split()


def test_schema_has_every_required_column_once():
    # REQUIRED_COLUMNS is derived from RankRecord's field metadata: exactly the columns of the first schema, in order
    assert REQUIRED_COLUMNS == tuple(REQUIRED)
    assert set(REQUIRED_COLUMNS) <= set(COLUMNS)
    assert len(set(COLUMNS)) == len(COLUMNS)


def test_files_from_an_older_schema_read_with_the_new_columns_empty(tmp_path):
    old_columns = [name for name in COLUMNS if name in REQUIRED_COLUMNS]
    record = make_record()
    path = tmp_path / "rank0.csv"
    path.write_text(",".join(old_columns) + "\n" + ",".join(str(getattr(record, name)) for name in old_columns) + "\n")
    (row,) = read_rank_csv(str(path))
    assert list(row) == list(COLUMNS)
    assert row["verdict"] == "" and row["run_id"] == "run-a"


def test_results_readme_documents_every_column():
    readme = os.path.join(os.path.dirname(__file__), "..", "results", "README.md")
    with open(readme, encoding="utf-8") as handle:
        text = handle.read()
    undocumented = [name for name in COLUMNS if f"`{name}`" not in text]
    assert undocumented == []


def test_round_trip_keeps_values_and_writes_nan_as_empty(tmp_path):
    record = make_record(train_time_s=1 / 3, tag="hello world")
    path = write_rank_csv(str(tmp_path), record)
    assert path == os.path.join(str(tmp_path), "run-a", "rank0.csv")
    (row,) = read_rank_csv(path)
    assert float(row["train_time_s"]) == 1 / 3  # every digit kept
    assert row["test_accuracy"] == ""
    assert row["tag"] == "hello world"
    assert list(row) == list(COLUMNS)


@pytest.fixture(params=["hard links", "no hard links"])
def filesystem_links(request, monkeypatch):
    """Run a test on a filesystem with hard links, and as on one without (Colab's Drive and other FUSE mounts
    answer link() with EPERM or ENOSYS)."""
    if request.param == "no hard links":

        def refuse(source, target):
            raise PermissionError(errno.EPERM, "Operation not permitted", source)

        monkeypatch.setattr("ddp_bench.results.records.os.link", refuse)
    return request.param


def test_a_row_is_never_overwritten_and_no_temporary_file_is_left(tmp_path, filesystem_links):
    write_rank_csv(str(tmp_path), make_record(final_loss=1.0))
    with pytest.raises(FileExistsError):
        write_rank_csv(str(tmp_path), make_record(final_loss=2.0))
    assert os.listdir(tmp_path / "run-a") == ["rank0.csv"]
    (row,) = read_rank_csv(str(tmp_path / "run-a" / "rank0.csv"))
    assert float(row["final_loss"]) == 1.0


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("run_id,status\nr,complete\n", "missing columns"),
        (",".join(COLUMNS) + "\n", "no data row"),
        (",".join(COLUMNS) + "\n" + "a,b\n", "different number of cells"),
    ],
)
def test_malformed_files_are_named_with_the_reason(tmp_path, content, fragment):
    path = tmp_path / "rank0.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=fragment):
        read_rank_csv(str(path))


def test_render_has_header_and_one_row():
    lines = render_csv(make_record()).splitlines()
    assert lines[0].split(",") == list(COLUMNS)
    assert len(lines) == 2


def test_per_rank_throughput():
    assert images_per_second(6400, 2.0) == 3200.0
    assert math.isnan(images_per_second(64, 0.0))


def test_global_throughput_sums_samples_over_the_slowest_rank():
    # Two ranks did 6400 images each; the slower took 4 s: 12800 / 4, not rank 0's 3200/s x 2.
    assert global_images_per_second([6400, 6400], [2.0, 4.0]) == 3200.0
    assert global_images_per_second([6400, 3200], [2.0, 2.0]) == 4800.0
    with pytest.raises(ValueError):
        global_images_per_second([1, 2], [1.0])


def test_run_ids_are_unique_and_sort_by_time():
    ids = {new_run_id("mnist_cnn", 2, now=0) for _ in range(1000)}
    assert len(ids) == 1000
    assert new_run_id("m", 1, now=0) < new_run_id("m", 1, now=86400)
    assert new_run_id("m", 4, now=0).startswith("19700101T000000Z-m-w4-")


@pytest.mark.parametrize(
    "statuses, world_sizes, ranks, reason",
    [
        (["complete"] * 2, [2, 2], [1, 0], ""),
        (["complete", "incomplete"], [2, 2], [0, 1], "stopped early (status incomplete)"),
        (["complete"] * 2, [2, 4], [0, 1], "ranks disagree on the world size"),
        (["complete"] * 2, [2, 2], [0, 0], "a rank reported twice"),
        (["complete"] * 2, [2, 2], [0, 2], "rank(s) 2 outside a world of 2"),
        (["complete"], [4], [0], "3 of 4 rank rows missing (ranks 1, 2, 3)"),
    ],
)
def test_a_run_is_complete_only_when_every_rank_finished_once(statuses, world_sizes, ranks, reason):
    assert incomplete_reason(statuses, world_sizes, ranks) == reason
