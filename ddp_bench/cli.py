"""Command line: `python -m ddp_bench [run] [flags]`, and the verbs download, report, allreduce, check, sweep,
predict.

The flags live in `args.py` (pure, no torch import), so a bad flag is answered at once.
Every error a user can cause ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence

from ddp_bench.args import Parser, parse_args
from ddp_bench.errors import EXIT_FAILURE, EXIT_USAGE, RunFailure, UsageError
from ddp_bench.launch.stopping import StopRequest


def download_main(argv: Sequence[str]) -> int:
    parser = Parser(
        prog="python -m ddp_bench download",
        description="Fetch a dataset on a machine with internet (a cluster login node).",
    )
    parser.add_argument("--data", choices=("mnist", "cifar10"), required=True)
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args(list(argv))
    from ddp_bench.data import DOWNLOAD_HOSTS, download
    from ddp_bench.launch.preflight import has_internet

    if not has_internet(DOWNLOAD_HOSTS[args.data]):
        raise UsageError(
            f"this node cannot reach {DOWNLOAD_HOSTS[args.data]} (compute nodes usually have no internet): "
            "run download on a login node, then point --data-dir at the result"
        )
    try:
        listing = download(args.data, args.data_dir)
    except OSError as exc:  # urllib's URLError is an OSError: the connection broke off
        print(f"ddp_bench: download failed ({exc}); run this on a machine with internet", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{args.data} is ready under {args.data_dir}: {', '.join(listing)}")
    return 0


def report_cli(argv: Sequence[str]) -> int:
    parser = Parser(
        prog="python -m ddp_bench report",
        description="Scaling tables and plots from per-rank CSVs (summary.csv, summary.md, PNG/SVG).",
    )
    parser.add_argument("results", nargs="+", help="results directories (searched recursively for rank*.csv)")
    parser.add_argument("--out", default="report", help="report directory (default: ./report)")
    parser.add_argument(
        "--predict-to",
        type=int,
        default=0,
        metavar="N",
        help="scaling model: predict up to N ranks, from the runs and allreduce.csv found (default: measured counts)",
    )
    parser.add_argument(
        "--efficiency-threshold",
        type=float,
        default=0.75,
        metavar="F",
        help="Proposal: efficiency counted good, and where the knee is (default: 0.75, the Alliance's 75 %%)",
    )
    request = parser.add_mutually_exclusive_group()
    request.add_argument("--request-epochs", type=float, metavar="E", help="Proposal: what E epochs cost at each count")
    request.add_argument("--request-images", type=int, metavar="N", help="Proposal: what N images cost at each count")
    args = parser.parse_args(list(argv))
    from ddp_bench.report.build import report_main  # pandas and matplotlib: only for this verb

    return report_main(
        args.results, args.out, args.predict_to, args.efficiency_threshold, args.request_epochs, args.request_images
    )


def check_main(argv: Sequence[str]) -> int:
    """Run the pre-flight checks for these run flags (and the cluster's rules for the job flags) and print what
    they found; exit 2 on any error."""
    from rich.table import Table

    from ddp_bench.cluster.site_check import cluster_findings, split_check_args
    from ddp_bench.console import wide_console
    from ddp_bench.escape import console_text
    from ddp_bench.launch.preflight import run_checks

    own, run_argv = split_check_args(argv)
    cfg = parse_args(run_argv)
    findings = [*cluster_findings(own, cfg, os.environ), *run_checks(cfg, os.environ)]
    table = Table(title=f"ddp_bench check · {console_text(socket.gethostname())}", title_justify="left")
    for column in ("check", "", "finding"):
        table.add_column(column)
    marks = {"ok": "[green]ok[/green]", "note": "[yellow]note[/yellow]", "error": "[red]error[/red]"}
    for finding in findings:
        table.add_row(console_text(finding.check), marks[finding.level], console_text(finding.message))
    wide_console().print(table)
    return EXIT_USAGE if any(finding.level == "error" for finding in findings) else 0


def allreduce_cli(argv: Sequence[str]) -> int:
    from ddp_bench.allreduce import allreduce_main  # imports torch

    return allreduce_main(argv)


def predict_cli(argv: Sequence[str]) -> int:
    from ddp_bench.predict.run import predict_main  # torchvision's model list: only for this verb

    return predict_main(argv)


def sweep_cli(argv: Sequence[str]) -> int:
    from ddp_bench.cluster.sweep import sweep_main

    return sweep_main(argv)


VERBS: dict[str, Callable[[Sequence[str]], int]] = {
    "download": download_main,
    "report": report_cli,
    "allreduce": allreduce_cli,
    "check": check_main,
    "sweep": sweep_cli,
    "predict": predict_cli,
}


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()  # wall_time_s counts from here: torch import and start-up included
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] and argv[0] in VERBS:
            return VERBS[argv[0]](argv[1:])
        if argv[:1] == ["run"]:
            argv = argv[1:]
        cfg = parse_args(argv)
        # From here a SIGTERM or SIGUSR1 asks for an early stop: the ranks stop together at their next check
        # (the first comes right after warm-up) and write rows marked incomplete.
        with StopRequest().installed() as stop:
            from ddp_bench.run import run  # imports torch: only once the flags are known to be good

            return run(cfg, started, stop)
    except UsageError as exc:
        if exc.detail:
            print(exc.detail.rstrip("\n"), file=sys.stderr)
        print(f"ddp_bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailure as exc:
        if exc.__cause__ is not None:  # an unexpected error on this rank: its traceback is the bug report
            traceback.print_exception(exc.__cause__, file=sys.stderr)
        print(f"ddp_bench: failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
