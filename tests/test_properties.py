"""Property-based tier (issue #26): generated rank rows and flag values, run in-process through `report`, `check`
and `sweep --dry-run`. Whatever the input: no exception escapes, the exit code is 0 or 2 (2 with one line), Markdown
table rows keep their cell count, proposal.tex compiles where pdflatex is installed, and nothing is left
half-written. The rows are TEST FIXTURES, not measurements.

Hypothesis runs a fixed number of examples from a derandomized seed, so the tier costs the same on every CI stack
and a failure reproduces.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ddp_bench.cli import main
from ddp_bench.report.transaction import REPORT_FILES
from ddp_bench.results.records import RankRecord
from tests.helpers.rank_rows import write_raw_row

NO_SHRINK = (Phase.explicit, Phase.generate)  # a failing example is reported as found: shrinking re-runs reports
SETTINGS = dict(
    derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck), phases=NO_SHRINK
)

# Pieces that mean something to a renderer: rich markup, Markdown and HTML, LaTeX, mathtext, control characters.
SPECIALS = ["[/x]", "[bold]", "[link=http://e]", "|", "\n", "\r", "\t", "\x07", "$", "$x$", "\\", "\\undefined{",
            "{", "}", "%", "#", "_", "^", "~", "&", "<script>", "![](http://e/x.png)", "`", "*", "\u2028", "é™",
            ",", " ", "p -l select=99", ";", "x"]  # fmt: skip
TEXT = st.lists(st.one_of(st.sampled_from(SPECIALS), st.text(max_size=6)), max_size=6).map("".join)
TEXT_FIELDS = ("platform", "cluster", "hostname", "device_name", "comm_env", "git_commit", "verdict", "tag", "model")
NUMBER_FIELDS = tuple(field.name for field in dataclasses.fields(RankRecord) if field.type in ("int", "float"))
# The numbers the report divides by, sums or plots: drawn as often as all the others together.
KEY_FIELDS = ("train_time_s", "samples", "world_size", "rank", "num_nodes", "batch_size", "dataset_size", "mfu")
NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["", "1e308", "-0", "1.5", "0", "x", "inf", "nan"]),
)


def _run(argv: list[str]) -> tuple[int, str, str]:
    """`python -m ddp_bench ARGV` in this process: (exit code, stdout, stderr); any exception fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _exit_0_or_one_line_2(code: int, err: str) -> None:
    assert code in (0, 2), err
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ddp_bench: error: "), err


def _cells_kept(text: str) -> None:
    cells = None
    for line in text.splitlines():
        if not line.startswith("|"):
            cells = None
            continue
        count = len(re.findall(r"(?<!\\)\|", line))
        cells = count if cells is None else cells
        assert count == cells, line


def _compiles(tex_path: str) -> None:
    """proposal.tex inside a minimal article compiles, where pdflatex is installed."""
    pdflatex = shutil.which("pdflatex")
    if not pdflatex:
        return
    folder = os.path.dirname(tex_path)
    with open(os.path.join(folder, "document.tex"), "w", encoding="utf-8") as handle:
        handle.write(
            "\\documentclass{article}\\usepackage{booktabs}\\begin{document}\\input{proposal.tex}\\end{document}"
        )
    done = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "document.tex"], cwd=folder,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]


@settings(max_examples=12, **SETTINGS)
@given(
    texts=st.fixed_dictionaries({name: TEXT for name in TEXT_FIELDS}),
    numbers=st.dictionaries(st.sampled_from(KEY_FIELDS) | st.sampled_from(NUMBER_FIELDS), NUMBER, max_size=2),
)
def test_report_on_generated_rows_exits_0_or_2_and_writes_whole_or_nothing(texts, numbers):
    with tempfile.TemporaryDirectory() as folder:
        runs = os.path.join(folder, "runs [bold]")
        for world in (1, 2):  # a series of two counts, so the Proposal is written too
            for rank in range(world):
                cells = {**texts, "run_id": f"w{world}", "rank": str(rank), "world_size": str(world),
                         "global_batch_size": str(64 * world)}  # fmt: skip
                if world == 2 and rank == 1:
                    cells.update(numbers)  # the hostile numbers on one rank of one run
                write_raw_row(os.path.join(runs, f"w{world}", f"rank{rank}.csv"), **cells)
        out = os.path.join(folder, "report")
        code, _stdout, err = _run(["report", runs, "--out", out])
        _exit_0_or_one_line_2(code, err)
        assert [name for name in os.listdir(folder) if name not in ("runs [bold]", "report", ".report.lock")] == []
        if code == 2:
            assert not os.path.exists(out)
            return
        names = os.listdir(out)
        assert "summary.md" in names and all(REPORT_FILES.fullmatch(name) for name in names)
        for name in ("summary.md", "proposal.md"):
            if name in names:
                with open(os.path.join(out, name), encoding="utf-8") as handle:
                    _cells_kept(handle.read())
        summary = pd.read_csv(os.path.join(out, "summary.csv"))
        published = summary[["global_images_per_s", "efficiency", "epoch_time_s", "world_size", "batch_size"]]
        assert (published.apply(pd.to_numeric) > 0).all().all() and np.isfinite(published).all().all()
        if "proposal.tex" in names:
            _compiles(os.path.join(out, "proposal.tex"))


FLAG_VALUE = st.one_of(NUMBER, TEXT, st.integers(1, 64).map(str))
# A valid command line each, of which each example makes up to two values hostile (so that many examples get
# past the parser and the checks behind it are reached too).
CHECK_FLAGS = {"--batch-size": "64", "--seed": "0", "--lr": "0.01", "--init-timeout": "60", "--out": "results",
               "--tag": "t", "--gpus": "2", "--time": "00:30:00", "--mem-per-gpu": "8G", "--steps": "10"}  # fmt: skip
SWEEP_FLAGS = {"--gpus": "1,2", "--account": "def-x", "--time": "00:30:00", "--mem-per-gpu": "8G", "--queue": "",
               "--results": "results", "--gpus-per-node": "4", "--cpus-per-task": "2"}  # fmt: skip

SCHEDULER_FLAGS = ["--account", "--queue", "--time", "--mem-per-gpu"]  # what ends up in #SBATCH / #PBS lines
# A valid scheduler value with a special after it: what a prefix match (or a trailing newline) would let through.
SUFFIXED = st.tuples(st.sampled_from(["def-x", "00:30:00", "8G", "debug"]), st.sampled_from(SPECIALS)).map("".join)


def _argv(base: dict[str, str], hostile: dict[str, str], folder: str) -> list[str]:
    values = {**base, **hostile}
    for path_flag in ("--out", "--results"):
        if path_flag in values:
            values[path_flag] = os.path.join(folder, values[path_flag])
    return [f"{flag}={value}" for flag, value in values.items()]


@settings(max_examples=30, **SETTINGS)
@given(hostile=st.dictionaries(st.sampled_from(sorted(CHECK_FLAGS)), FLAG_VALUE, max_size=2))
def test_check_on_generated_flags_exits_0_or_2_in_one_line(hostile):
    with tempfile.TemporaryDirectory() as folder:
        argv = ["check", "--cluster", "generic", "--device", "cpu", *_argv(CHECK_FLAGS, hostile, folder)]
        code, _stdout, err = _run(argv)
        _exit_0_or_one_line_2(code, err)
        assert os.listdir(folder) == []  # check writes nothing


@settings(max_examples=30, **SETTINGS)
@given(
    hostile=st.dictionaries(
        st.sampled_from(SCHEDULER_FLAGS) | st.sampled_from(sorted(SWEEP_FLAGS)),
        FLAG_VALUE | SUFFIXED,
        min_size=1,
        max_size=2,
    ),
    cluster=st.sampled_from(["generic", "polaris", "narval"]),
)
def test_sweep_dry_run_on_generated_flags_exits_0_or_2_and_every_directive_is_one_option(hostile, cluster):
    with tempfile.TemporaryDirectory() as folder:
        jobs = ["--scripts-dir", os.path.join(folder, "jobs")]
        argv = ["sweep", "--dry-run", "--cluster", cluster, *_argv(SWEEP_FLAGS, hostile, folder), *jobs]
        code, stdout, err = _run([*argv, "--", "--steps", "10"])
        _exit_0_or_one_line_2(code, err)
        assert os.listdir(folder) == []  # a dry run writes nothing
        directives = [line for line in stdout.splitlines() if line.startswith(("#SBATCH", "#PBS"))]
        assert all(re.fullmatch(r"#SBATCH \S+|#PBS -\w \S+", line) for line in directives), directives
