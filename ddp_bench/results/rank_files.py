"""Finding rank files and reading their rows: the one place where rows come in, for the report and the sweep alike.

Discovery walks the given directories without following a directory link (a link to `..` is no loop, a link
out of the tree brings nothing in) and keeps regular files only, each once. Reading opens without blocking
(a FIFO named rank7.csv never hangs), refuses anything over MAX_RANK_FILE_BYTES, tolerates a UTF-8 BOM, and
checks every row against the schema's ranges (`RankRecord`'s field metadata): one ValueError naming the field.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import io
import math
import os
import stat

from ddp_bench.escape import shortened
from ddp_bench.results.records import COLUMNS, REQUIRED_COLUMNS, RankRecord, incomplete_reason

RANK_FILE_PATTERN = "rank*.csv"
# One header and one row are a few kilobytes; a megabyte is no rank file (and /dev/zero is not read to the end).
MAX_RANK_FILE_BYTES = 2**20
# Statuses a row can hold (results/README.md).
STATUSES = ("complete", "incomplete")
_FIELDS = {field.name: field for field in dataclasses.fields(RankRecord)}


def find_rank_files(directories: list[str]) -> list[str]:
    """Every rank*.csv under the directories, searched recursively without following directory links, once each
    (by the file it is, however reached), in sorted order. A FIFO or a link to a device is found here and refused
    when read, so the report names it."""
    found: dict[str, str] = {}
    for directory in directories:
        for parent, _subdirectories, names in os.walk(directory, followlinks=False):
            for name in fnmatch.filter(names, RANK_FILE_PATTERN):
                path = os.path.join(parent, name)
                found.setdefault(os.path.realpath(path), path)
    return sorted(found.values())


def _read_text(path: str) -> str:
    """The file's text when it is a regular file of at most MAX_RANK_FILE_BYTES, else ValueError."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once and is refused below
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ValueError("not a regular file")
        data = handle.read(MAX_RANK_FILE_BYTES + 1)
    if len(data) > MAX_RANK_FILE_BYTES:
        raise ValueError(f"over {MAX_RANK_FILE_BYTES // 1024} KiB: not a rank file")
    try:
        return data.decode("utf-8-sig")  # a BOM (a file saved by Excel) is no part of the first column's name
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None


def read_rank_csv(path: str) -> list[dict[str, str]]:
    """Rows of one per-rank file as strings, every column of today's schema present (columns newer than the
    file read as empty), each row checked by `validate_row`; raises ValueError naming what is wrong with it."""
    try:
        reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
        header = tuple(reader.fieldnames or ())
        missing = [name for name in REQUIRED_COLUMNS if name not in header]
        if missing:
            raise ValueError(f"missing columns: {shortened(', '.join(missing), 120)}")
        rows = list(reader)
    except csv.Error as exc:  # a field over the csv module's limit (128 KiB), a NUL byte
        raise ValueError(f"not a CSV file the schema can read ({shortened(exc, 80)})") from None
    if not rows:
        raise ValueError("no data row")
    for row in rows:
        if None in row or any(value is None for value in row.values()):
            raise ValueError("a row has a different number of cells than the header")
    rows = [{name: row.get(name, "") for name in COLUMNS} for row in rows]
    for row in rows:
        validate_row(row)
    return rows


def validate_row(row: dict[str, str]) -> None:
    """ValueError naming the first field that is outside the schema: an unknown status, a number that is not
    finite, not whole where the schema has a count, or outside the range `RankRecord`'s metadata gives it, or
    missing where a row cannot do without it. An empty cell (or nan) is an unmeasured value elsewhere."""
    if row["status"] not in STATUSES:
        raise ValueError(f"unknown status {shortened(row['status'], 40)!r}")
    complete = row["status"] == "complete"
    for name, field in _FIELDS.items():
        if field.type not in ("int", "float"):
            continue
        text = row[name].strip()
        if not text or text.lower() == "nan":  # NaN is written as an empty cell; older files wrote nan
            if field.metadata.get("present"):
                raise ValueError(f"no value in {name}")
            continue
        _check_number(name, text, field, complete)


def _check_number(name: str, text: str, field: dataclasses.Field, complete: bool) -> None:
    shown = shortened(text, 40)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number in {name}: {shown!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} is {shown}: not a finite number")
    if field.type == "int" and not value.is_integer():
        raise ValueError(f"{name} is {shown}: not a whole number")
    if "low" not in field.metadata:
        return
    low, high = field.metadata["low"], field.metadata["high"]
    if value < low or value > high or (complete and field.metadata["above"] and value <= low):
        shape = f"more than {low:g}" if field.metadata["above"] else f"at least {low:g}"
        raise ValueError(f"{name} is {shown}: outside the schema's range ({shape}, at most {high:g})")


def complete_runs(directory: str) -> list[list[dict[str, str]]]:
    """Every run under `directory` whose every rank wrote a complete row, as its rows. Files that cannot be read
    or rows outside the schema do not count (the report names them; here they simply are not done)."""
    runs: dict[str, list[dict[str, str]]] = {}
    for path in find_rank_files([directory]):
        try:
            for row in read_rank_csv(path):
                runs.setdefault(row["run_id"], []).append(row)
        except (ValueError, OSError):
            continue
    complete = []
    for rows in runs.values():
        statuses, sizes, ranks = (
            [r["status"] for r in rows],
            [int(float(r["world_size"])) for r in rows],
            [int(float(r["rank"])) for r in rows],
        )
        if not incomplete_reason(statuses, sizes, ranks):
            complete.append(rows)
    return complete
