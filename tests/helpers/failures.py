"""What the failure tests look for: a marker in every child's environment (so none can be left behind unseen), our
own one-line error, our frames in a traceback, and a signal handler installed (seen in /proc)."""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid

from tests.helpers.runs import clean_env

OUR_TRACEBACK = re.compile(r'File ".*ddp_bench/')


def marked_env(**extra: str) -> dict[str, str]:
    return clean_env(DDP_BENCH_TEST_MARK=uuid.uuid4().hex, **extra)


def processes_with(env: dict[str, str]) -> list[int]:
    """PIDs of live processes whose environment holds this test's marker."""
    needle = f"DDP_BENCH_TEST_MARK={env['DDP_BENCH_TEST_MARK']}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    with open(f"/proc/{pid}/stat") as stat:
                        if stat.read().rsplit(")", 1)[1].split()[0] != "Z":  # zombies are already dead
                            found.append(int(pid))
        except OSError:
            continue  # the process ended while we looked
    return found


def last_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ddp_bench: ")]


def wait_until_catching(process: subprocess.Popen, signum: int, timeout: float = 60) -> None:
    """Wait until `process` has installed a handler for `signum` (its SigCgt mask in /proc says so)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{process.pid}/status") as handle:
                caught = int(next(line for line in handle if line.startswith("SigCgt:")).split()[1], 16)
            if caught & (1 << (signum - 1)):
                return
        except (OSError, StopIteration):
            pass  # not started yet
        time.sleep(0.1)
    raise AssertionError(f"process never installed a handler for signal {signum}")
