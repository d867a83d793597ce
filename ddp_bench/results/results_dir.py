"""The results directory: checked before anything trains, and a row that cannot be written after training is
rescued instead of lost.

`check_output_dir` is the cheap early check (creates nothing). `prove_output_dir` runs on every rank just before
the process group starts: it creates the directory and writes, flushes and removes a probe file, because only a
real write finds a full disk, a read-only or pseudo filesystem (`/proc`), a quota or an ACL that `os.access`
does not see (it says yes to root everywhere). If writing still fails after training (the disk filled during
the run, a network filesystem dropped), `rescue_row` puts the row on stderr and in the temp directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
import tempfile

from ddp_bench.errors import UsageError
from ddp_bench.results.records import RankRecord, render_csv, write_rank_csv

# What the probe writes: more than a rank's row file and its temporary copy take together.
PROBE_BYTES = 8192
RESCUE_DIR_NAME = "ddp_bench-rescued"


def check_output_dir(out: str) -> None:
    """The results directory exists and is writable, or can be created; nothing is created here."""
    path = os.path.abspath(out)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--out {out} is a file, not a directory")
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UsageError(f"--out {out} cannot be created: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out} is not writable")


def prove_output_dir(out: str) -> None:
    """Create the results directory, then write, flush to disk and remove a probe file in it; a one-line
    UsageError if any step fails. The directory stays (it is about to be used); the probe never does."""
    path = os.path.abspath(out)
    missing = []  # the directories this probe creates, deepest first: removed again if the probe fails
    ancestor = path
    while not os.path.lexists(ancestor):
        missing.append(ancestor)
        ancestor = os.path.dirname(ancestor)
    probe = os.path.join(path, f".ddp_bench-probe-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.makedirs(path, exist_ok=True)
        try:
            with open(probe, "x", encoding="ascii") as handle:
                handle.write("0" * PROBE_BYTES)
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            if os.path.lexists(probe):
                os.unlink(probe)
    except OSError as exc:
        for directory in missing:
            with contextlib.suppress(OSError):  # another rank may be using it already: then it stays
                os.rmdir(directory)
        raise UsageError(f"--out {out} cannot be written: {exc.strerror or exc} ({exc.filename or path})") from None


def rescue_dir() -> str:
    """Where rows go that could not be written to --out: a directory `report` can be given as it is."""
    return os.path.join(tempfile.gettempdir(), RESCUE_DIR_NAME)


def rescue_row(record: RankRecord, out: str, error: OSError) -> str:
    """Save a measured row that could not be written to --out: on stderr as a CSV header and row, and in a file
    under the temp directory. Returns the one-line reason the run must end with."""
    text = render_csv(record)
    sys.stderr.write(f"ddp_bench: rank {record.rank}'s row, which could not be written to {out}:\n{text}")
    sys.stderr.flush()
    reason = f"rank {record.rank} could not write its row to {out} ({error.strerror or error})"
    try:
        saved = write_rank_csv(rescue_dir(), record)
    except OSError as again:
        return f"{reason}; the row is on stderr above (the temp directory failed too: {again.strerror or again})"
    return f"{reason}; the row is on stderr above and saved in {saved}"
