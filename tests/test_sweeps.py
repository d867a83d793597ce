"""Tier 3: `ddp_bench sweep` on a local single-node Slurm: one job per GPU count, or every count in one allocation
(with its all-reduce step), and finished counts skipped when submitted again.

The Slurm fixture brings a cluster up with tests/local_slurm.sh (root and apt needed; otherwise these tests
skip and say why) and stops exactly the daemons it started.
"""

import csv
import glob
import re
import sys

import pytest

from tests.helpers.rank_rows import read_rows
from tests.helpers.runs import run_group
from tests.helpers.slurm import wait_until_queue_empty

pytestmark = pytest.mark.distributed

RUN = [sys.executable, "-m", "ddp_bench"]


def sweep_command(results, jobs, *options: str) -> list[str]:
    """`ddp_bench sweep [OPTIONS]` over 1 and 2 CPU "GPUs", 3 steps each, rows to `results`, scripts to `jobs`."""
    return [
        *RUN,
        "sweep",
        *options,
        "--cluster",
        "cpu",
        "--gpus",
        "1,2",
        "--gpus-per-node",
        "2",
        "--cpus-per-task",
        "1",
        "--results",
        str(results),
        "--scripts-dir",
        str(jobs),
        "--",
        "--device",
        "cpu",
        "--steps",
        "3",
        "--warmup-steps",
        "1",
    ]


def test_sweep_submits_one_job_per_gpu_count_and_skips_finished_ones(slurm, tmp_path):
    env = {**slurm, "DDP_BENCH_VENV": sys.prefix}
    sweep = sweep_command(tmp_path / "results", tmp_path / "jobs")
    first = run_group(sweep, timeout=120, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert len(re.findall(r"Submitted batch job \d+", first.stdout)) == 2
    wait_until_queue_empty(env)
    rows = read_rows(tmp_path / "results")
    assert sorted(int(row["world_size"]) for row in rows) == [1, 2, 2]
    assert len({row["sweep_key"] for row in rows}) == 2
    again = run_group(sweep, timeout=120, env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("# skipped: complete rows") == 2 and "Submitted" not in again.stdout


def check_one_allocation(results) -> None:
    """Every count's rows from one job, and the all-reduce benchmark run as a step of it, on the 2 ranks."""
    rows = read_rows(results)
    assert sorted(int(row["world_size"]) for row in rows) == [1, 2, 2]
    assert len({row["job_id"] for row in rows}) == 1  # the same allocation: one queue wait for the series
    assert len({row["sweep_key"] for row in rows}) == 2 and {row["launcher"] for row in rows} == {"slurm"}
    tables = glob.glob(str(results / "*" / "allreduce.csv"))
    assert len(tables) == 1  # the all-reduce benchmark ran as a step, on the 2 ranks
    with open(tables[0], newline="") as handle:
        measured = list(csv.DictReader(handle))
    assert {(row["world_size"], row["launcher"], row["backend"]) for row in measured} == {("2", "slurm", "gloo")}


def check_submitted_again(script, sweep: list[str], results, env: dict[str, str], tmp_path) -> None:
    """The same script submitted again (as after a time limit): every count already has complete rows."""
    again = run_group(
        ["sbatch", "--wait", f"--output={tmp_path / 'again.out'}", str(script)],
        timeout=240,
        env={**env, "DDP_BENCH_RESULTS": str(results)},
        cwd=tmp_path,
    )
    assert again.returncode == 0, (tmp_path / "again.out").read_text()[-3000:]
    assert (tmp_path / "again.out").read_text().count("are already in") == 2
    assert len(read_rows(results)) == 3 and len(glob.glob(str(results / "*" / "allreduce.csv"))) == 1
    # and the sweep itself now has nothing to submit
    done = run_group(sweep, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0 and "Submitted" not in done.stdout and done.stdout.count("# skipped") == 2


def test_sweep_one_job_runs_every_count_in_one_allocation_with_its_allreduce(slurm, tmp_path):
    env = {**slurm, "DDP_BENCH_VENV": sys.prefix}
    results, jobs = tmp_path / "results", tmp_path / "jobs"
    sweep = sweep_command(results, jobs, "--one-job")
    first = run_group(sweep, timeout=120, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert len(re.findall(r"Submitted batch job \d+", first.stdout)) == 1  # one job for the whole series
    (script,) = list(jobs.iterdir())
    assert "#SBATCH --nodes=1" in script.read_text() and "#SBATCH --ntasks-per-node=2" in script.read_text()
    wait_until_queue_empty(env)
    check_one_allocation(results)
    check_submitted_again(script, sweep, results, env, tmp_path)

    # the report models the series from the rows and the all-reduce of the same allocation
    report = run_group([*RUN, "report", str(results), "--out", str(tmp_path / "report")], timeout=120, env=env)
    assert report.returncode == 0, report.stderr
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "## Scaling model" in summary and "measured at 2 ranks on 1 node(s)" in summary
