"""Tier 2: hostile flag values through the real command line (issue #26 §5, §6): numbers outside their bounds and
scheduler values that would not survive a #SBATCH / #PBS directive or qsub -v. Each: exit 2, one line on stderr, no
traceback, nothing written."""

from __future__ import annotations

import os

import pytest

from tests.helpers.runs import clean_env, run_cli

# (verb and flags, what the one line must say); {tmp} is the test's directory, {file} a file in it
CASES = [
    (["--seed", "99999999999999999999"], "--seed must be at most"),
    (["--init-timeout", "1e300"], "--init-timeout must be at most"),
    (["--init-timeout", "inf"], "--init-timeout must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--batch-size", "99999999999"], "--batch-size must be at most"),
    (["--compare-synthetic"], "--compare-synthetic compares real data"),
    (["--data", "mnist", "--data-dir", "{file}"], "is a file, not a directory"),
    (["allreduce", "--max-bytes", "1099511627776"], "--max-bytes must be at most"),
    (["allreduce", "--init-timeout", "inf"], "--init-timeout must be a finite number"),
    (["report", "{tmp}", "--predict-to", "1000000000"], "--predict-to must be at most"),
    (["report", "{tmp}", "--request-epochs", "inf"], "--request-epochs inf: give a number of epochs"),
    (["check", "--gpus", "1000000000"], "--gpus must be at most"),
    (["check", "--mem-per-gpu", "64G\n"], "--mem-per-gpu takes a value such as 64G"),
    (["sweep", "--gpus", "1,1000000000"], "--gpus must be at most"),
    (["sweep", "--gpus", "2", "--problem-minutes", "inf"], "--problem-minutes must be a finite number"),
    (["sweep", "--gpus", "2", "--account", "x;y"], "--account takes a value such as"),
    (["sweep", "--gpus", "2", "--account", "x --output=/tmp/y"], "--account takes a value such as"),
    (["sweep", "--cluster", "polaris", "--gpus", "4", "--account", "p -l select=99"], "--account takes a value"),
    (["sweep", "--gpus", "2", "--time", "01:00:00\n"], "--time takes a time limit"),
    (["sweep", "--gpus", "2", "--mem-per-gpu", "64G\n"], "--mem-per-gpu takes a value such as 64G"),
    (["sweep", "--gpus", "2", "--queue", "debug -l x"], "--queue takes a value"),
    (["sweep", "--gpus", "2", "--scripts-dir", "{file}"], "--scripts-dir {file} is a file"),
    (["sweep", "--gpus", "2", "--scripts-dir", "/proc/ddp_bench_jobs"], "--scripts-dir /proc/ddp_bench_jobs cannot"),
    (["sweep", "--gpus", "2", "--results", "{tmp}/a\nb"], "--results"),
]


@pytest.mark.parametrize("argv, fragment", CASES, ids=[" ".join(argv) for argv, _ in CASES])
def test_a_hostile_flag_value_is_one_line_exit_2_and_writes_nothing(tmp_path, argv, fragment):
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    values = {"tmp": str(tmp_path), "file": str(keep)}
    argv = [part.format(**values) for part in argv]
    verb = argv[0] if argv[0] in ("allreduce", "report", "check", "sweep") else "run"
    if verb in ("run", "allreduce", "check"):
        argv += ["--device", "cpu", "--out", str(tmp_path / "results")]
    if verb == "report":
        argv += ["--out", str(tmp_path / "report")]
    if verb == "sweep" and "--cluster" not in argv:
        argv = [*argv, "--cluster", "generic"]
    if verb == "sweep" and "--scripts-dir" not in argv:
        argv += ["--scripts-dir", str(tmp_path / "jobs")]
    if verb == "sweep" and "--results" not in argv:
        argv += ["--results", str(tmp_path / "results")]
    done = run_cli(argv, timeout=120, env=clean_env(DDP_BENCH_VENV=str(tmp_path / "venv")), cwd=str(tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddp_bench: error: "), done.stderr
    assert fragment.format(**values) in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"] and keep.read_text() == "precious"


def test_qsub_gets_the_results_path_from_its_environment_so_a_comma_starts_no_variable(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    qsub = bin_dir / "qsub"  # a stand-in that records what it was given, as PBS would read it
    qsub.write_text(
        '#!/bin/sh\nprintf "%s\\n" "$@" > "$0.argv"\nprintf "%s" "$DDP_BENCH_RESULTS" > "$0.env"\necho 1.pbs\n'
    )
    qsub.chmod(0o755)
    results = str(tmp_path / "res,DDP_BENCH_SRC=") + "/tmp/evil"
    env = clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", DDP_BENCH_VENV=str(tmp_path / "venv"))
    argv = ["sweep", "--cluster", "polaris", "--gpus", "4", "--account", "p", "--results", results]
    done = run_cli([*argv, "--scripts-dir", str(tmp_path / "jobs")], timeout=120, env=env, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    passed = (bin_dir / "qsub.argv").read_text().splitlines()
    assert passed[:2] == ["-v", "DDP_BENCH_RESULTS,DDP_BENCH_VENV"]  # names only: no value is parsed by qsub
    assert (bin_dir / "qsub.env").read_text() == results
