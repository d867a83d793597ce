"""Shared fixtures: a clean environment per test, subprocess helpers with timeouts that end the whole launch
(launcher and ranks) when they expire, the local Slurm, and the real-MNIST path."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ddp_bench.results.rank_files import read_rank_csv

# Real MNIST digits for the accuracy tests: set DDP_BENCH_MNIST_DIR to a directory holding MNIST/raw/.
MNIST_ENV = "DDP_BENCH_MNIST_DIR"

# Variables that would make a test process look like a rank of some other job.
_LAUNCH_PREFIXES = ("SLURM_", "OMPI_", "PMI_", "PMIX_", "PALS_", "TORCHELASTIC_", "PBS_")
_LAUNCH_NAMES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")


@pytest.fixture(autouse=True)
def restore_environment():
    """Undo any environment change a test (or the code under test) makes, so nothing leaks into the next."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without launcher variables, plus `extra`, for child processes."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_LAUNCH_PREFIXES) and key not in _LAUNCH_NAMES
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def end_process_group(process: subprocess.Popen) -> None:
    """SIGKILL every process of the launch's own process group (the launcher, its ranks, and ranks it left
    orphaned: they keep the group id), then reap the launcher."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def launched(command: list[str], **popen) -> Iterator[subprocess.Popen]:
    """Popen in a process group of its own; whatever is still running of it when the block ends (a timeout, a
    failed assertion, pytest-timeout) is killed, so no test leaves ranks behind."""
    process = subprocess.Popen(command, start_new_session=True, **popen)
    try:
        yield process
    finally:
        if process.poll() is None:
            end_process_group(process)
        else:  # the launcher exited: its ranks may not have
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def run_group(
    command: list[str],
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> subprocess.CompletedProcess:
    """subprocess.run(capture_output=True, text=True) for launches: on a timeout the whole process group ends
    (not only the launcher) before TimeoutExpired is raised."""
    with launched(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            end_process_group(process)
            out, err = process.communicate()
            raise subprocess.TimeoutExpired(command, timeout, out, err) from None
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def run_cli(args: list[str], timeout: float = 120, env: dict[str, str] | None = None, cwd: str | None = None):
    """`python -m ddp_bench ARGS` in a child process; never waits longer than `timeout`."""
    return run_group([sys.executable, "-m", "ddp_bench", *args], timeout=timeout, env=env or clean_env(), cwd=cwd)


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """`torchrun --standalone --nproc_per_node N -m ddp_bench ARGS`; --standalone picks a free port."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return [*launcher, "-m", "ddp_bench", *args]


def run_torchrun(nproc: int, args: list[str], timeout: float = 240, env: dict[str, str] | None = None):
    return run_group(torchrun_command(nproc, args), timeout=timeout, env=env or clean_env())


def read_rows(out_dir) -> list[dict[str, str]]:
    """Every rank row under a results directory, in rank order within each run."""
    rows = []
    for path in sorted(glob.glob(os.path.join(str(out_dir), "*", "rank*.csv"))):
        rows += read_rank_csv(path)
    return sorted(rows, key=lambda row: (row["run_id"], int(row["rank"])))


@pytest.fixture
def mnist_dir() -> str:
    path = os.environ.get(MNIST_ENV, "")
    if not path or not os.path.isfile(os.path.join(path, "MNIST", "raw", "train-images-idx3-ubyte")):
        pytest.skip(f"real MNIST not available: set {MNIST_ENV} to a directory holding MNIST/raw/")
    return path


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
# A fixed place, so that a session killed before its teardown leaves PID files the next `up` stops first.
SLURM_BASE = "/tmp/ddp_bench_slurm"
# One Slurm per machine (its daemons listen on fixed ports): test sessions that need it take turns.
SLURM_LOCK = "/tmp/ddp_bench_slurm.lock"
# pytest-timeout's 300 s cover a test's fixture set-up: waiting longer would end in a timeout, not a skip
SLURM_LOCK_WAIT_S = 240


@contextlib.contextmanager
def machine_lock(path: str, wait_s: float) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the block, waiting up to `wait_s` for another holder to finish."""
    with open(path, "a", encoding="utf-8") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.skip(f"another test session held {path} for over {wait_s:g} s")
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def local_slurm(command: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """tests/local_slurm.sh COMMAND BASE ARGS (up, down, ...)."""
    script = os.path.join(ROOT, "tests", "local_slurm.sh")
    return subprocess.run(["bash", script, command, SLURM_BASE, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def slurm_machine() -> Iterator[None]:
    """This machine's Slurm, to this session alone for as long as it lasts."""
    with machine_lock(SLURM_LOCK, SLURM_LOCK_WAIT_S):
        yield


@pytest.fixture(scope="session")
def slurm(slurm_machine) -> Iterator[dict[str, str]]:
    """Environment for Slurm clients talking to a local one-node cluster that lives for the session."""
    up = local_slurm("up")
    if up.returncode != 0:
        pytest.skip(up.stderr.strip().splitlines()[-1] if up.stderr.strip() else "local Slurm did not start")
    conf = re.search(r"SLURM_CONF=(\S+)", up.stdout).group(1)
    yield clean_env(SLURM_CONF=conf, PATH=f"{BIN}:{os.environ['PATH']}", OMP_NUM_THREADS="1")
    local_slurm("down", timeout=120)  # cancels what is still queued or running, then stops the daemons
