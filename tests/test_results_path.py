"""Tier 2: a measured row is never lost. The results directory is proven before training (a real full tmpfs, an
uncreatable directory), and a write that fails after training (a tmpfs that fills during the run, an I/O error)
puts the row on stderr and in the temp directory, where `report` reads it. Every run here says --device cpu."""

import contextlib
import csv
import errno
import io
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from ddp_bench.cli import main
from ddp_bench.errors import UsageError
from ddp_bench.report.build import build_report
from ddp_bench.results.rank_files import read_rank_csv
from ddp_bench.results.records import COLUMNS
from ddp_bench.results.results_dir import RESCUE_DIR_NAME, prove_output_dir
from tests.helpers.failures import wait_until_catching
from tests.helpers.rank_rows import read_rows
from tests.helpers.runs import clean_env, run_cli

CPU = ["--device", "cpu"]


@contextlib.contextmanager
def small_tmpfs(path, size: str = "256k"):
    """A real tmpfs of `size` mounted at `path` for the block (root only; the test skips and says why otherwise)."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True, timeout=30
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(mounted.stderr or 'mount failed').strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(filesystem) -> None:
    """Write zeros until the filesystem says it is full."""
    with open(filesystem / "filler", "wb", buffering=0) as handle:
        with pytest.raises(OSError) as full:
            while True:
                handle.write(bytes(4096))
    assert full.value.errno == errno.ENOSPC


def csv_on_stderr(stderr: str) -> dict[str, str]:
    """The one row a rescued rank printed: its header line and the line after it."""
    lines = stderr.splitlines()
    start = lines.index(",".join(COLUMNS))
    header, row = csv.reader(io.StringIO("\n".join(lines[start : start + 2])))
    return dict(zip(header, row, strict=True))


def test_the_probe_leaves_the_directory_and_nothing_in_it(tmp_path):
    prove_output_dir(str(tmp_path / "new" / "deeper"))
    assert os.listdir(tmp_path / "new" / "deeper") == []


def test_an_uncreatable_directory_is_refused_before_training(tmp_path):
    # os.access says yes to root under /proc; only creating the directory finds out. 100,000 steps would take
    # minutes: an answer within the timeout proves nothing trained.
    started = time.monotonic()
    done = run_cli([*CPU, "--steps", "100000", "--out", "/proc/forbidden"], timeout=60)
    assert time.monotonic() - started < 60
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "ddp_bench: error: --out /proc/forbidden cannot be written: No such file or directory (/proc/forbidden)"
    ]


def test_a_full_filesystem_is_refused_before_training(tmp_path):
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        fill(disk)
        done = run_cli([*CPU, "--steps", "100000", "--out", str(disk / "results")], timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"ddp_bench: error: --out {disk / 'results'} cannot be written: No space left on device "
            f"({disk / 'results'})"
        ]
        assert sorted(os.listdir(disk)) == ["filler"]  # the directory the probe made is gone again


@pytest.mark.long
def test_a_disk_that_fills_during_the_run_loses_no_row(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        out = disk / "results"
        process = subprocess.Popen(
            [sys.executable, "-m", "ddp_bench", *CPU, "--steps", "100000", "--out", str(out)],
            env=clean_env(TMPDIR=str(temp)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until_catching(process, signal.SIGUSR1)
            # The probe has run once the directory exists and stays empty (its probe file came and went).
            deadline = time.monotonic() + 120
            empty_twice = 0
            while empty_twice < 2 and time.monotonic() < deadline and process.poll() is None:
                empty_twice = empty_twice + 1 if out.is_dir() and not os.listdir(out) else 0
                time.sleep(0.05)
            assert empty_twice == 2, "the run never proved its results directory"
            fill(disk)  # the disk fills while the run trains
            process.send_signal(signal.SIGUSR1)  # stop at the next check and write the (incomplete) row
            _out, err = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 1, err
    last = err.strip().splitlines()[-1]
    rescued = temp / RESCUE_DIR_NAME
    assert last.startswith(f"ddp_bench: failed: rank 0 could not write its row to {out} (No space left on device)")
    assert "Traceback" not in err
    (path,) = rescued.glob("*/rank0.csv")
    assert last.endswith(f"; the row is on stderr above and saved in {path}")
    (row,) = read_rank_csv(str(path))
    assert row == csv_on_stderr(err)
    assert row["status"] == "incomplete" and row["device"] == "cpu"


def test_a_write_that_fails_after_training_is_rescued_and_the_report_reads_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()

    def failing_write(out_dir, record):
        raise OSError(errno.EIO, "Input/output error")  # what a dropped network filesystem returns

    monkeypatch.setattr("ddp_bench.recording.write_rank_csv", failing_write)
    code = main([*CPU, "--steps", "3", "--warmup-steps", "1", "--out", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 1
    assert "could not write its row to" in err and "(Input/output error)" in err
    rescued = tmp_path / "tmp" / RESCUE_DIR_NAME
    (path,) = rescued.glob("*/rank0.csv")
    (row,) = read_rank_csv(str(path))
    assert row == csv_on_stderr(err) and row["status"] == "complete" and row["steps"] == "3"
    assert read_rows(tmp_path / "results") == []
    report = build_report([str(rescued)], str(tmp_path / "report"))  # the report takes the rescue directory
    assert report.summary["world_size"].tolist() == [1]
    assert report.summary["global_images_per_s"].iloc[0] == pytest.approx(float(row["global_images_per_s"]))


def test_a_report_with_no_rank_files_is_an_error_naming_where_it_looked(tmp_path):
    (tmp_path / "a" / "empty-run").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    done = run_cli(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "r")], timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"ddp_bench: error: no rank*.csv files under {tmp_path / 'a'}, {tmp_path / 'b'} (searched recursively): "
        "give the --out directory of your runs"
    ]
    assert not (tmp_path / "r").exists()
    with pytest.raises(UsageError, match="no rank"):
        build_report([str(tmp_path / "a")], str(tmp_path / "r"))
