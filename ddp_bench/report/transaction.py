"""The report as a transaction: `--out` is proven before any work, the report is built in a directory beside it
and swapped in whole, an earlier report's files never survive beside the new ones, and a second report into the
same directory while one is being written is refused in one line.

A directory that holds anything but an earlier report's files is never replaced: the report refuses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator

from ddp_bench.errors import UsageError
from ddp_bench.escape import shortened

# Every file a report writes (build.py, plots.py, proposal_text.py); tests/test_hostile_report.py checks that a
# full report writes nothing else. An --out directory holding only these (or nothing) may be replaced.
REPORT_FILES = re.compile(
    r"(summary|predictions|stragglers|platforms|proposal)\.csv|summary\.md|proposal\.(md|tex)"
    r"|(throughput|efficiency|platforms|time_to_accuracy)\.(png|svg)"
)


def _refuse(out_dir: str, why: str) -> UsageError:
    return UsageError(f"--out {shortened(out_dir, 160)} {why}")


def _proven(out_dir: str) -> tuple[str, str]:
    """(the directory --out lives in, created when missing; --out's own name), or UsageError: --out is a file, holds
    files no report wrote, or its parent cannot be created or written."""
    target = os.path.abspath(out_dir)
    parent, name = os.path.dirname(target), os.path.basename(target)
    if os.path.lexists(target) and not os.path.isdir(target):
        raise _refuse(out_dir, "is a file, not a directory")
    if os.path.isdir(target):
        foreign = sorted(entry for entry in os.listdir(target) if not REPORT_FILES.fullmatch(entry))
        if foreign:
            raise _refuse(
                out_dir,
                f"holds files no report wrote ({shortened(', '.join(foreign[:3]), 80)}): a report replaces its "
                "directory whole, so give a new directory or an earlier report's",
            )
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise _refuse(out_dir, f"cannot be created ({exc.strerror})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _refuse(out_dir, f"cannot be written: no write permission in {shortened(parent, 120)}")
    return parent, name


@contextlib.contextmanager
def _locked(parent: str, name: str, out_dir: str) -> Iterator[None]:
    """An exclusive lock on `.NAME.lock` beside --out for the block; a report that finds it held is refused."""
    path = os.path.join(parent, f".{name}.lock")
    try:
        handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held for the block, closed below
    except OSError as exc:
        raise _refuse(out_dir, f"cannot be written ({exc.strerror})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refuse(
                out_dir, "is being written by another report now: run this one when it has finished"
            ) from None
        except OSError as exc:  # no locks here: Lustre mounted noflock (ENOSYS), NFS with no lock daemon (ENOLCK)
            print(
                f"ddp_bench: note: {shortened(parent, 160)} takes no file locks ({exc.strerror}): a second report "
                "into --out at the same time is not refused; each is still built apart and swapped in whole",
                file=sys.stderr,
            )
        yield


@contextlib.contextmanager
def report_transaction(out_dir: str) -> Iterator[str]:
    """A fresh directory beside --out to build the report in; when the block ends without an error it replaces
    --out whole, else it is removed and --out is left as it was. Filesystem errors end as one line (UsageError)."""
    parent, name = _proven(out_dir)
    with _locked(parent, name, out_dir):
        _proven(out_dir)  # again under the lock: another report may have finished in between
        try:
            staging = tempfile.mkdtemp(prefix=f".{name}.building-", dir=parent)
        except OSError as exc:
            raise _refuse(out_dir, f"cannot be written ({exc.strerror})") from None
        try:
            yield staging
            _swap(staging, os.path.join(parent, name))
        except OSError as exc:
            raise _refuse(out_dir, f"could not be written ({exc.strerror}); nothing in it was changed") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _swap(staging: str, target: str) -> None:
    """Put the built report at `target`: an earlier report there is moved aside first and removed after."""
    earlier = None
    if os.path.isdir(target):
        earlier = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.earlier-", dir=os.path.dirname(target))
        os.rename(target, os.path.join(earlier, "report"))
    try:
        os.rename(staging, target)
    except OSError:
        if earlier is not None:  # put the earlier report back: nothing is lost
            os.rename(os.path.join(earlier, "report"), target)
            os.rmdir(earlier)
        raise
    if earlier is not None:
        shutil.rmtree(earlier, ignore_errors=True)
