"""Shared fixtures: a clean environment per test, subprocess helpers with timeouts, and the real-MNIST path."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from ddp_bench.results.records import read_rank_csv

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


def run_cli(args: list[str], timeout: float = 120, env: dict[str, str] | None = None, cwd: str | None = None):
    """`python -m ddp_bench ARGS` in a child process; never waits longer than `timeout`."""
    return subprocess.run(
        [sys.executable, "-m", "ddp_bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or clean_env(),
        cwd=cwd,
    )


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """`torchrun --standalone --nproc_per_node N -m ddp_bench ARGS`; --standalone picks a free port."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return [*launcher, "-m", "ddp_bench", *args]


def run_torchrun(nproc: int, args: list[str], timeout: float = 240, env: dict[str, str] | None = None):
    return subprocess.run(
        torchrun_command(nproc, args), capture_output=True, text=True, timeout=timeout, env=env or clean_env()
    )


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
