"""The machine's Slurm: one per machine (its daemons listen on fixed ports), so test sessions take turns through a
lock; tests/local_slurm.sh brings a one-node cluster up and down."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.helpers.paths import ROOT

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


def wait_until_queue_empty(env: dict[str, str], timeout_s: float = 240) -> None:
    """Poll squeue until nothing is queued or running (or `timeout_s` has passed: the caller's checks then fail)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True, timeout=30).stdout.strip():
            break
        time.sleep(1)
