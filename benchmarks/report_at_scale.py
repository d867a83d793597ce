"""How long `python -m ddp_bench report` takes, and how much memory, on a sweep at the scale of a real study.

    python benchmarks/report_at_scale.py [--max-gpus 512] [--repeats 3] [--rounds 3] [--row ROW_CSV]

The fixture is a weak-scaling sweep of 1, 2, 4 ... --max-gpus ranks with --repeats runs each (1..512 with 3
repeats: 3,069 rank files). Every file is a copy of ONE REAL measured row (by default the first rank row under
results/cpu-2core-runs/), with only its run id, rank, world size and batch arithmetic changed: the numbers are not
a measurement of those GPU counts, only realistic rows for the report to read. The report then runs as a separate
process, the way a user runs it, --rounds times; its wall time and peak resident memory (from wait4) are printed.

Targets: at most 3 s and under 200 MB per report, plots included. Exit code 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_SECONDS = 3.0
TARGET_MEGABYTES = 200.0


def real_row(path: str) -> dict[str, str]:
    with open(path, encoding="utf-8", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    return row


def write_fixture(root: str, template: dict[str, str], max_gpus: int, repeats: int) -> int:
    """One directory per run, one rank file per rank, as ddp_bench lays them out; returns the file count."""
    header = list(template)
    count = 0
    world = 1
    while world <= max_gpus:
        for repeat in range(repeats):
            run_id = f"20261122T000000Z-{template['model']}-w{world}-fixture{repeat:02d}"
            directory = os.path.join(root, run_id)
            os.makedirs(directory)
            row = {
                **template,
                "run_id": run_id,
                "world_size": str(world),
                "local_world_size": str(min(world, 4)),
                "num_nodes": str(-(-world // 4)),
                "global_batch_size": str(int(template["batch_size"]) * world),
                "tag": "report-at-scale fixture",
            }
            for rank in range(world):
                row.update(rank=str(rank), local_rank=str(rank % 4), node_rank=str(rank // 4))
                with open(os.path.join(directory, f"rank{rank}.csv"), "w", encoding="utf-8", newline="") as handle:
                    writer = csv.writer(handle, lineterminator="\n")
                    writer.writerow(header)
                    writer.writerow(row[name] for name in header)
                count += 1
        world *= 2
    return count


def timed_report(fixture: str, out: str) -> tuple[float, float]:
    """Wall seconds and peak resident megabytes of one `python -m ddp_bench report` process."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "ddp_bench", "report", fixture, "--out", out],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    _pid, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"report failed: {process.stderr.read().decode()[-2000:]}")
    process.stderr.close()
    return seconds, usage.ru_maxrss / 1024  # Linux reports kilobytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-gpus", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--row", help="a real rank CSV to copy (default: the first in results/cpu-2core-runs)")
    args = parser.parse_args()
    row_path = args.row or sorted(glob.glob(os.path.join(ROOT, "results", "cpu-2core-runs", "*", "rank0.csv")))[0]
    template = real_row(row_path)
    with tempfile.TemporaryDirectory(prefix="ddp_bench-report-at-scale-") as scratch:
        fixture = os.path.join(scratch, "runs")
        files = write_fixture(fixture, template, args.max_gpus, args.repeats)
        print(f"fixture: {files:,} rank files, 1-{args.max_gpus} ranks x {args.repeats} repeats, each a copy of")
        print(f"  {os.path.relpath(row_path, ROOT)} (git commit of that row: {template['git_commit']})")
        measured = [timed_report(fixture, os.path.join(scratch, f"report{r}")) for r in range(args.rounds)]
        summary = os.path.join(scratch, "report0", "summary.csv")
        with open(summary, encoding="utf-8") as handle:
            points = sum(1 for _ in handle) - 1
    seconds = [s for s, _ in measured]
    megabytes = [m for _, m in measured]
    print(f"report ({args.rounds} separate processes; summary of {points} points, 3 figures as PNG and SVG):")
    for index, (s, m) in enumerate(measured):
        print(f"  round {index + 1}: {s:6.2f} s  {m:6.1f} MB peak resident")
    verdicts = []
    median_s = statistics.median(seconds)
    worst_mb = max(megabytes)
    for name, value, target, unit in (
        ("wall time, median", median_s, TARGET_SECONDS, "s"),
        ("peak memory, worst", worst_mb, TARGET_MEGABYTES, "MB"),
    ):
        met = value <= target
        verdicts.append(met)
        print(f"  {name:20s} {value:7.2f} {unit:2s} target <= {target:g} {unit}: {'met' if met else 'MISSED'}")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
