"""Tier 2: failures end every rank within bounded time with one clear line, and nothing hangs or lingers.

Faults are injected with DDP_BENCH_FAULT (ddp_bench/faults.py) so they strike at a known step, or sent from
the test as real signals. Every child process carries a marker variable, so a test can prove none is left.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from ddp_bench.errors import EXIT_FAILURE, EXIT_INTERRUPTED
from ddp_bench.launch.discovery import free_port
from tests.helpers.failures import OUR_TRACEBACK, last_lines, marked_env, processes_with, wait_until_catching
from tests.helpers.rank_rows import read_rows
from tests.helpers.runs import clean_env, launched, run_cli, run_group, run_torchrun, torchrun_command

pytestmark = pytest.mark.distributed


def slurm_rank(rank: int, port: int) -> dict[str, str]:
    return clean_env(
        SLURM_PROCID=str(rank),
        SLURM_LOCALID=str(rank),
        SLURM_NTASKS="2",
        SLURM_STEP_ID="0",
        SLURM_JOB_ID="7",
        SLURM_JOB_NODELIST="localhost",
        MASTER_PORT=str(port),
    )


@pytest.mark.parametrize(
    "rank, expected",
    [
        (0, "ddp_bench: failed: rank 0: only 1 of 2 ranks reached the rendezvous"),  # hosts it, nobody comes
        (1, "ddp_bench: failed: rank 1 of 2: could not join the rendezvous"),  # rank 0 never came
    ],
    ids=["rank 0 alone", "rank 1 alone"],
)
@pytest.mark.long
def test_a_rank_left_alone_stops_after_init_timeout_saying_what_is_missing(tmp_path, rank, expected):
    started = time.monotonic()
    done = run_cli(
        ["--device", "cpu", "--init-timeout", "3", "--steps", "1", "--out", str(tmp_path)],
        env=slurm_rank(rank, free_port()),
    )
    assert time.monotonic() - started < 60
    assert done.returncode == EXIT_FAILURE
    (line,) = last_lines(done.stderr)
    assert line.startswith(expected)
    assert "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.long
def test_a_rank_killed_mid_run_stops_the_others_naming_it(tmp_path):
    env = marked_env(DDP_BENCH_FAULT="rank=1,step=3,kind=sigkill")
    started = time.monotonic()
    done = run_torchrun(
        2, ["--device", "cpu", "--steps", "10000", "--warmup-steps", "1", "--out", str(tmp_path)], env=env, timeout=120
    )
    assert time.monotonic() - started < 60
    assert done.returncode != 0
    assert "ddp_bench: failed: rank 0: stopping because lost rank 1 of 2 (process gone)" in done.stderr
    assert not OUR_TRACEBACK.search(done.stderr)  # torchrun prints a traceback of its own; we print none
    assert processes_with(env) == []
    assert read_rows(tmp_path) == []


@pytest.mark.long
def test_an_exception_in_one_rank_ends_all_four_with_clear_lines(tmp_path):
    env = marked_env(DDP_BENCH_FAULT="rank=2,step=2,kind=raise", OMP_NUM_THREADS="1")
    started = time.monotonic()
    done = run_torchrun(
        4,
        ["--device", "cpu", "--steps", "10000", "--warmup-steps", "1", "--batch-size", "16", "--out", str(tmp_path)],
        env=env,
        timeout=150,
    )
    assert time.monotonic() - started < 90
    assert done.returncode != 0
    ours = last_lines(done.stderr)
    assert "ddp_bench: failed: rank 2 failed: RuntimeError: injected fault on rank 2 at step 2" in ours
    survivors = [line for line in ours if "stopping because" in line]
    assert survivors and all("because rank 2 failed: RuntimeError: injected fault" in line for line in survivors)
    assert processes_with(env) == []


@pytest.mark.long
def test_out_of_memory_on_one_rank_says_so_and_what_to_do(tmp_path):
    env = marked_env(DDP_BENCH_FAULT="rank=1,step=1,kind=oom")
    done = run_torchrun(
        2, ["--device", "cpu", "--steps", "10000", "--warmup-steps", "1", "--out", str(tmp_path)], env=env, timeout=120
    )
    assert done.returncode != 0
    assert (
        "ddp_bench: failed: rank 1 ran out of memory (injected out-of-memory on rank 1 at step 1); lower --batch-size"
        in done.stderr
    )
    assert processes_with(env) == []


@pytest.mark.long
def test_sigterm_to_one_rank_stops_all_at_the_same_step_with_incomplete_rows(tmp_path):
    env = marked_env(DDP_BENCH_FAULT="rank=1,step=4,kind=sigterm")
    done = run_torchrun(
        2, ["--device", "cpu", "--steps", "10000", "--warmup-steps", "2", "--out", str(tmp_path)], env=env, timeout=120
    )
    assert done.returncode != 0  # torchrun reports a worker's exit code 3 as a failure
    assert f"exitcode  : {EXIT_INTERRUPTED}" in done.stderr
    rows = read_rows(tmp_path)
    assert [row["rank"] for row in rows] == ["0", "1"]
    assert {row["status"] for row in rows} == {"incomplete"}
    steps = {int(row["steps"]) for row in rows}
    assert len(steps) == 1 and 4 <= steps.pop() < 10000
    assert rows[0]["global_images_per_s"] == rows[1]["global_images_per_s"]
    assert "stopped early by a signal to another rank" in done.stderr or "stopped early by SIGTERM" in done.stderr


@pytest.mark.long
@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM], ids=["SIGUSR1", "SIGTERM"])
def test_slurm_warning_signal_or_sigterm_writes_incomplete_rows_and_exits_3(tmp_path, signum):
    env = marked_env()
    command = [sys.executable, "-m", "ddp_bench", "--device", "cpu", "--steps", "100000", "--out", str(tmp_path)]
    with launched(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        wait_until_catching(process, signum)
        time.sleep(3)  # usually mid-training by now; if not, the run stops at its first check all the same
        process.send_signal(signum)
        _out, err = process.communicate(timeout=60)
    assert process.returncode == EXIT_INTERRUPTED, err
    (row,) = read_rows(tmp_path)
    assert row["status"] == "incomplete" and int(row["steps"]) < 100000
    assert f"stopped early by {signal.Signals(signum).name}" in err


@pytest.mark.long
def test_concurrent_runs_into_one_directory_lose_no_row(tmp_path):
    flags = ["--device", "cpu", "--steps", "3", "--warmup-steps", "1", "--out", str(tmp_path)]
    command = [sys.executable, "-m", "ddp_bench", *flags]
    torchrun = torchrun_command(2, flags)
    env = clean_env(OMP_NUM_THREADS="1")
    with contextlib.ExitStack() as stack:
        processes = [
            stack.enter_context(launched(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            for cmd in (command, command, command, torchrun)
        ]
        for process in processes:
            assert process.wait(timeout=240) == 0, process.stderr.read()
    rows = read_rows(tmp_path)
    assert len(rows) == 5
    assert len({row["run_id"] for row in rows}) == 4


@pytest.mark.parametrize(
    "verb, runs",
    [(["allreduce", "--max-bytes", "65536", "--iters", "3", "--warmup", "1"], 2), (["--steps", "5"], 1)],
    ids=["all-reduce benchmark", "training"],
)
@pytest.mark.long
def test_two_ranks_on_one_core_leave_the_job_without_hanging(tmp_path, verb, runs):
    # Both ranks pinned to one core, so a gloo worker thread that finishes a collective gets the CPU only after the
    # main thread moves on. Before the job held the tensors it lends to collectives, the main thread could destroy
    # the group (joining that worker, the GIL held) while the worker waited for the GIL to free a tensor: on torch
    # 2.6 the all-reduce benchmark hung at exit so in every one of 6 runs here. Each run must now end promptly.
    if shutil.which("taskset") is None:
        pytest.skip("taskset (util-linux) is not installed")
    env = marked_env(OMP_NUM_THREADS="1")
    pinned = ["taskset", "-c", str(min(os.sched_getaffinity(0)))]
    for attempt in range(runs):
        out = tmp_path / str(attempt)
        started = time.monotonic()
        done = run_group(
            [*pinned, *torchrun_command(2, [*verb, "--device", "cpu", "--out", str(out)])], timeout=90, env=env
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert time.monotonic() - started < 60
        assert list(out.iterdir())  # it wrote its results
    assert processes_with(env) == []


def test_a_launch_that_outlives_its_timeout_is_ended_with_every_process_it_started():
    # What the suite's launch helpers promise: a launcher whose ranks outlive it (here an orphan, as a rank whose
    # torchrun died) is ended whole when the test's timeout expires, so no test leaves ranks running.
    env = marked_env()
    sleeper = "import time; time.sleep(300)"
    script = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {sleeper!r}]); time.sleep(300)"
    with pytest.raises(subprocess.TimeoutExpired):
        run_group([sys.executable, "-c", script], timeout=3, env=env)
    deadline = time.monotonic() + 10
    while processes_with(env) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(env) == []
