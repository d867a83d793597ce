"""Child processes for launches: a clean environment, a process group of their own that is ended on a timeout
(launcher and ranks), and the CLI and torchrun commands."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

# Variables that would make a test process look like a rank of some other job.
_LAUNCH_PREFIXES = ("SLURM_", "OMPI_", "PMI_", "PMIX_", "PALS_", "TORCHELASTIC_", "PBS_")
_LAUNCH_NAMES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")


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
