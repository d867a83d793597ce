"""Tier 2: hostile and broken rows, files and report directories through the real command line (issue #26).

Every case ends in exit 0 with the bad part named, or exit 2 with one line; never a traceback, a hang, a half-written
report or an earlier report's files beside a new one. The rows are TEST FIXTURES, not measurements.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import subprocess
import sys

import pytest

from ddp_bench.report.transaction import REPORT_FILES
from ddp_bench.results.records import SCHEMA_VERSION
from tests.helpers.rank_rows import write_raw_row, write_run
from tests.helpers.runs import clean_env, launched, run_cli, run_group

HOSTILE_TEXT = (
    "a|b\n# heading\n\n™ é\x07 <script>alert(1)</script> ![](http://evil.example/x.png) [/x] [link=http://e]z[/link]"
)


def _report(results, out, *flags, timeout: float = 120):
    return run_cli(["report", str(results), "--out", str(out), *flags], timeout=timeout)


def _one_line_exit_2(done, fragment: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddp_bench: error: "), done.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in done.stdout + done.stderr


def _table_rows_keep_their_cells(text: str) -> None:
    """Every Markdown table row has as many cells as its header (an unescaped `|` would add one)."""
    cells = None
    for line in text.splitlines():
        if not line.startswith("|"):
            cells = None
            continue
        count = len(re.findall(r"(?<!\\)\|", line))
        cells = count if cells is None else cells
        assert count == cells, line


@pytest.mark.long
def test_markup_and_markdown_in_fields_and_paths_are_shown_as_text(tmp_path):
    results = tmp_path / "runs [/x]"
    for world in (1, 2):  # two counts: the Proposal (proposal.md, proposal.tex) is written too
        write_run(results, f"w{world}", world, cluster=HOSTILE_TEXT, device_name=HOSTILE_TEXT, hostname=HOSTILE_TEXT,
                  comm_env=HOSTILE_TEXT, git_commit=HOSTILE_TEXT, verdict=HOSTILE_TEXT)  # fmt: skip
    done = _report(results, tmp_path / "report")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "[/x]" in done.stdout and "[link=http://e]" in done.stdout  # rich showed the brackets, did not read them
    for name in ("summary.md", "proposal.md"):
        text = (tmp_path / "report" / name).read_text()
        _table_rows_keep_their_cells(text)
        assert "<script>" not in text and not re.search(r"(?<!\\)\]\(http://evil", text)  # no image, no link
        assert not re.search(r"^#+ heading", text, re.M)  # a newline in a field started no heading
    tex = (tmp_path / "report" / "proposal.tex").read_text()
    assert "\n\n" not in tex.split("\\begin{table}", 1)[1].split("\\end{table}", 1)[0]  # no blank line in a table
    assert tex.isascii() and not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", tex)  # pdflatex stops on either


@pytest.mark.long
def test_mathtext_in_a_field_neither_raises_nor_typesets(tmp_path):
    write_run(tmp_path / "runs", "w1", cluster="x$\\undefinedmacro{$ y")
    write_run(tmp_path / "runs", "w2", 2, cluster="$x$", device_name="_hidden")
    done = _report(tmp_path / "runs", tmp_path / "report")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "report" / "throughput.svg").is_file() and (tmp_path / "report" / "summary.md").is_file()


@pytest.mark.long
def test_a_complete_run_with_markup_in_its_out_path_exits_0(tmp_path):
    out = tmp_path / "rows [/x] [bold]"
    done = run_cli(["--device", "cpu", "--data", "synthetic", "--steps", "2", "--batch-size", "8", "--out", str(out)],
                   timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "[/x] [bold]" in done.stdout


def test_check_shows_markup_in_its_findings_as_text(tmp_path):
    done = run_cli(["check", "--device", "cpu", "--out", str(tmp_path / "x [/x]" / "deeper")], timeout=120)
    assert done.returncode in (0, 2), done.stderr
    assert "Traceback" not in done.stdout + done.stderr and "MarkupError" not in done.stderr


# (cells of a bad row, the field the one line must name)
BAD_ROWS = [
    ({"train_time_s": "0"}, "train_time_s"),
    ({"train_time_s": "-3"}, "train_time_s"),
    ({"train_time_s": "inf"}, "train_time_s"),
    ({"samples": "1e308"}, "samples"),
    ({"images_per_s": "-5"}, "images_per_s"),
    ({"global_images_per_s": "-5"}, "global_images_per_s"),
    ({"batch_size": "0"}, "batch_size"),
    ({"num_nodes": "0"}, "num_nodes"),
    ({"wall_time_s": "-1"}, "wall_time_s"),
    ({"mfu": "inf"}, "mfu"),
    ({"world_size": "1e9"}, "world_size"),
    ({"world_size": "1.5"}, "world_size"),
    ({"schema_version": str(SCHEMA_VERSION + 1)}, "schema_version"),
    ({"status": "maybe"}, "status"),
    ({"world_size": "x" * 100_000}, "world_size"),  # a 100 KB cell: named, not echoed whole
]


def test_rows_outside_the_schema_are_named_and_left_out(tmp_path):
    results = tmp_path / "runs"
    write_run(results, "good", 2)
    for index, (cells, _field) in enumerate(BAD_ROWS):
        write_raw_row(results / f"bad{index}" / "rank0.csv", run_id=f"bad{index}", **cells)
    done = _report(results, tmp_path / "report")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    named = {line.split("/")[-2]: line for line in done.stdout.splitlines() if line.startswith("cannot use")}
    for index, (_cells, field) in enumerate(BAD_ROWS):
        assert field in named[f"bad{index}"], named.get(f"bad{index}")
    assert max(len(line) for line in done.stdout.splitlines()) < 1000  # the 200 KB cell was cut short
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "x" * 1000 not in summary  # cut short in summary.md too
    assert "| 2 |" in summary and all(f"bad{index}/rank0.csv" in summary for index in range(len(BAD_ROWS)))


def test_a_report_with_nothing_left_exits_2_and_names_why(tmp_path):
    write_raw_row(tmp_path / "runs" / "r" / "rank0.csv", train_time_s="inf")
    done = _report(tmp_path / "runs", tmp_path / "report")
    _one_line_exit_2(done, "no complete run to report")
    assert "train_time_s" in done.stderr
    assert not (tmp_path / "report").exists()


def test_sweep_check_done_on_a_huge_world_size_answers_at_once(tmp_path):
    write_raw_row(tmp_path / "results" / "r" / "rank0.csv", world_size="1000000000", sweep_key="k")
    done = run_cli(["sweep", "--check-done", "k", "--results", str(tmp_path / "results")], timeout=60)
    assert done.returncode == 1, done.stderr  # not done, and no memory exhausted on the way


@pytest.mark.long
def test_directory_links_are_not_followed_and_loops_do_not_hang(tmp_path):
    results = tmp_path / "runs"
    write_run(results, "w1")
    os.symlink("..", results / "loop")  # ln -s .. loop: every run would be found twice
    write_run(tmp_path / "elsewhere", "w9")
    os.symlink(tmp_path / "elsewhere", results / "outside")  # a link out of the tree brings nothing in
    os.symlink(results / "b", results / "a")
    os.symlink(results / "a", results / "b")  # two links to each other
    done = _report(results, tmp_path / "report", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "reported twice" not in done.stdout
    assert "1 complete run(s)" in (tmp_path / "report" / "summary.md").read_text()
    write_raw_row(results / "k" / "rank0.csv", run_id="k", sweep_key="k")
    checked = run_cli(["sweep", "--check-done", "k", "--results", str(results)], timeout=60)  # the same discovery
    assert checked.returncode == 0, checked.stderr


@pytest.mark.long
def test_fifos_devices_huge_fields_and_boms_are_handled(tmp_path):
    results = tmp_path / "runs"
    write_run(results, "w1")
    (results / "fifo").mkdir()
    os.mkfifo(results / "fifo" / "rank7.csv")
    (results / "zero").mkdir()
    os.symlink("/dev/zero", results / "zero" / "rank0.csv")
    write_raw_row(results / "big" / "rank0.csv", tag="y" * 200_000)  # over the csv module's 128 KiB field limit
    bom = write_raw_row(results / "bom" / "rank0.csv", run_id="w1-bom")
    with open(bom, "rb") as handle:
        text = handle.read()
    with open(bom, "wb") as handle:
        handle.write(b"\xef\xbb\xbf" + text)  # saved by Excel
    done = _report(results, tmp_path / "report", timeout=60)
    assert done.returncode == 0, done.stderr
    named = {line.split("/")[-2]: line for line in done.stdout.splitlines() if line.startswith("cannot use")}
    assert set(named) == {"fifo", "zero", "big"}, done.stdout
    assert "not a regular file" in named["fifo"] and "not a regular file" in named["zero"]
    assert "2 complete run(s)" in (tmp_path / "report" / "summary.md").read_text()  # the BOM file's run counts


@pytest.mark.long
def test_an_out_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    write_run(tmp_path / "runs", "w1")
    _one_line_exit_2(_report(tmp_path / "runs", "/proc/ddp_bench_report"), "--out /proc/ddp_bench_report")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    _one_line_exit_2(_report(tmp_path / "runs", tmp_path / "mine"), "holds files no report wrote (notes.txt)")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


@pytest.mark.long
def test_a_full_disk_leaves_the_earlier_report_whole(tmp_path):
    write_run(tmp_path / "runs", "w1")
    out = tmp_path / "report"
    assert _report(tmp_path / "runs", out).returncode == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    # files over 20 kB fail with EFBIG as on a full disk (SIGXFSZ ignored, as a write to a full disk raises)
    program = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000)); "
        "from ddp_bench.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    command = [sys.executable, "-c", program, "report", str(tmp_path / "runs"), "--out", str(out)]
    _one_line_exit_2(run_group(command, timeout=120, env=clean_env()), "could not be written")
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert [name for name in os.listdir(tmp_path) if "building" in name or "earlier" in name] == []


@pytest.mark.long
def test_a_second_report_replaces_the_first_whole(tmp_path):
    write_run(tmp_path / "two", "w1")
    write_run(tmp_path / "two", "w2", 2)
    out = tmp_path / "report"
    assert _report(tmp_path / "two", out).returncode == 0
    assert (out / "proposal.md").is_file()
    write_run(tmp_path / "one", "w1")
    assert _report(tmp_path / "one", out).returncode == 0
    assert not (out / "proposal.md").exists() and not (out / "proposal.tex").exists()
    assert all(REPORT_FILES.fullmatch(name) for name in os.listdir(out))


def test_a_report_into_a_directory_being_written_is_refused(tmp_path):
    write_run(tmp_path / "runs", "w1")
    with open(tmp_path / ".report.lock", "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a report writing to report/ holds
        _one_line_exit_2(_report(tmp_path / "runs", tmp_path / "report"), "being written by another report")
    assert not (tmp_path / "report").exists()


def test_a_filesystem_without_file_locks_still_gets_its_report(tmp_path, monkeypatch, capsys):
    """Lustre mounted with noflock answers flock with ENOSYS (the kernel's drivers/staging/lustre/README.txt), NFS
    with no lock daemon with ENOLCK: the report is still written whole, and one note says a concurrent one is not
    refused.
    In-process through the command line's entry, with flock made to fail as such a mount would."""
    from ddp_bench.cli import main

    def no_locks(handle, operation):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    write_run(tmp_path / "runs", "w1")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    assert "summary.md" in os.listdir(tmp_path / "report")
    notes = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(notes) == 1 and notes[0].startswith("ddp_bench: note: ") and "takes no file locks" in notes[0], notes


def test_two_concurrent_reports_into_one_directory_never_mix(tmp_path):
    write_run(tmp_path / "one", "w1")
    write_run(tmp_path / "two", "w1")
    write_run(tmp_path / "two", "w2", 2)
    out = str(tmp_path / "report")
    commands = [
        [sys.executable, "-m", "ddp_bench", "report", str(tmp_path / name), "--out", out] for name in ("two", "one")
    ]
    with launched(commands[0], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()) as first:
        second = run_group(commands[1], timeout=120, env=clean_env())
        first_err = first.communicate(timeout=120)[1]
    for code, err in ((first.returncode, first_err), (second.returncode, second.stderr)):
        assert code == 0 or (code == 2 and "being written by another report" in err), err
    names = set(os.listdir(out))
    # whichever report finished last is there whole: its summary with its own Proposal (two counts) or none (one)
    assert "summary.md" in names and (
        ("proposal.md" in names) == ("2 complete run(s)" in (tmp_path / "report" / "summary.md").read_text())
    )


@pytest.mark.long
@pytest.mark.parametrize("world", [2])
def test_a_full_report_writes_only_the_files_the_transaction_knows(tmp_path, world):
    write_run(tmp_path / "runs", "w1", 1, target_accuracy=0.5, reached="True", time_to_accuracy_s=1.0)
    write_run(tmp_path / "runs", "w2", world, target_accuracy=0.5, reached="True", time_to_accuracy_s=1.0)
    assert _report(tmp_path / "runs", tmp_path / "report", "--predict-to", "4").returncode == 0
    names = os.listdir(tmp_path / "report")
    assert "proposal.tex" in names and [name for name in names if not REPORT_FILES.fullmatch(name)] == []
