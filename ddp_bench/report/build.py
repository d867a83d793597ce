"""`python -m ddp_bench report RESULTS_DIR [...] --out REPORT_DIR`: summary.csv, summary.md, plots, a table.

Reads per-rank CSVs only (no torch import): a laptop can report on rows copied back from a cluster.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import pandas as pd
from rich.console import Console
from rich.table import Table

from ddp_bench.console import format_number, wide_console
from ddp_bench.errors import UsageError
from ddp_bench.escape import console_text, shortened
from ddp_bench.flag_bounds import check_bounds
from ddp_bench.report.data import LoadedRows, RunTables, load_rows, scaling_summary, summarise_runs
from ddp_bench.report.model_trust import trust_models, with_trust
from ddp_bench.report.platforms import accuracy_series, course_rows, platform_table
from ddp_bench.report.proposal import GOOD_EFFICIENCY, ProposalOptions, build_proposal
from ddp_bench.report.proposal_text import write_proposal
from ddp_bench.report.scaling import SeriesModel, load_allreduce, predict_series, straggler_table
from ddp_bench.report.summary_md import Report, markdown
from ddp_bench.report.transaction import report_transaction


def print_console(report: Report, console: Console) -> None:
    table = Table(title="ddp_bench report", title_justify="left")
    for column in ("platform", "model", "scaling", "GPUs", "images/s", "per GPU", "speedup", "efficiency", "epoch"):
        table.add_column(column, justify="left" if column in ("platform", "model", "scaling") else "right")
    for _, row in report.summary.sort_values(["series", "world_size"]).iterrows():
        table.add_row(
            console_text(row["label"]),
            console_text(f"{row['model']} {row['data']}"),
            console_text(row["scaling"]),
            str(row["world_size"]),
            format_number(row["global_images_per_s"]),
            format_number(row["images_per_s_per_gpu"]),
            f"{row['speedup']:.2f}",
            f"{row['efficiency'] * 100:.0f} %",
            f"{format_number(row['epoch_time_s'])} s",
        )
    console.print(table)
    for run_id, why in report.tables.incomplete:
        console.print(console_text(f"left out run {shortened(run_id, 120)}: {why}"), style="yellow", soft_wrap=True)
    for path, why in report.loaded.problems:
        line = f"cannot use {shortened(path, 200)}: {shortened(why, 300)}"
        console.print(console_text(line), style="red", soft_wrap=True)


def build_report(
    directories: Sequence[str], out_dir: str, predict_to: int = 0, options: ProposalOptions | None = None
) -> Report:
    """predict_to: the scaling model's largest count (0: the measured counts only); options: the Proposal's
    threshold and request (default: 75 %, no request). The report is built beside `out_dir` and replaces it whole
    (transaction.report_transaction): a failure leaves `out_dir` as it was."""
    with report_transaction(out_dir) as staging:
        report = _write_report(_compute(directories, predict_to, options or ProposalOptions()), staging)
    files = [os.path.join(out_dir, os.path.relpath(path, staging)) for path in report.files]
    return dataclasses.replace(report, files=files)


def _compute(directories: Sequence[str], predict_to: int, options: ProposalOptions) -> Report:
    """Every table of the report, nothing written; UsageError when no complete run is left to report."""
    loaded = load_rows(list(directories))
    if not loaded.files:  # a mistyped path must not look like a successful, empty report
        raise UsageError(
            f"no rank*.csv files under {shortened(', '.join(directories), 200)} (searched recursively): "
            "give the --out directory of your runs"
        )
    tables = summarise_runs(loaded.rows)
    if tables.runs.empty:
        raise UsageError(nothing_left(loaded, tables))
    summary = scaling_summary(tables.runs)
    allreduce, allreduce_problems = load_allreduce(list(directories))
    loaded.problems.extend(allreduce_problems)
    models, not_modelled = predict_series(summary, allreduce, predict_to)
    summary = _with_predictions(summary, models)
    trust = trust_models(summary, allreduce, models)
    proposal = build_proposal(summary, models, trust, not_modelled, options)
    stragglers = straggler_table(loaded.rows, tables.runs)
    platforms = platform_table(tables.runs)
    course = course_rows(tables.runs, platforms)
    accuracy = accuracy_series(tables.runs)
    parts = (platforms, course, accuracy, models, not_modelled, stragglers, trust, proposal)
    return Report(loaded, tables, summary, [], *parts)


def nothing_left(loaded: LoadedRows, tables: RunTables) -> str:
    """Why a report has no complete run: how many files were left out and runs incomplete, the first of each."""
    parts = [f"no complete run to report: {loaded.files} rank file(s) found"]
    if loaded.problems:
        path, why = loaded.problems[0]
        parts.append(f"{len(loaded.problems)} left out (first: {shortened(path, 80)}: {shortened(why, 80)})")
    if tables.incomplete:
        run_id, why = tables.incomplete[0]
        parts.append(f"{len(tables.incomplete)} run(s) incomplete (first: {shortened(run_id, 60)}: {why})")
    return "; ".join(parts)


def _write_report(report: Report, out_dir: str) -> Report:
    """Write every file of the report into `out_dir` (an empty directory); the report with their paths."""
    from ddp_bench.report.plots import plot_efficiency, plot_platforms, plot_throughput, plot_time_to_accuracy

    summary, models = report.summary, report.models
    files = [os.path.join(out_dir, "summary.csv")]
    summary.to_csv(files[0], index=False)
    if models:
        files.append(os.path.join(out_dir, "predictions.csv"))
        pairs = zip(models, report.trust, strict=True)
        pd.concat([with_trust(*pair) for pair in pairs]).to_csv(files[-1], index=False)
    if not report.stragglers.empty:
        files.append(os.path.join(out_dir, "stragglers.csv"))
        report.stragglers.to_csv(files[-1], index=False)
    files += write_proposal(report.proposal, out_dir)
    if not report.platforms.empty:
        files.append(os.path.join(out_dir, "platforms.csv"))
        report.platforms.to_csv(files[-1], index=False)
    files += plot_throughput(summary, out_dir, models)
    files += plot_efficiency(summary, out_dir)
    files += plot_platforms(summary, out_dir)
    if not report.accuracy.empty:
        files += plot_time_to_accuracy(report.accuracy, out_dir)
    path = os.path.join(out_dir, "summary.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(markdown(dataclasses.replace(report, files=files)))
    return dataclasses.replace(report, files=[*files, path])


def _with_predictions(summary: pd.DataFrame, models: list[SeriesModel]) -> pd.DataFrame:
    """The model's images/s and efficiency beside the measured ones, at every measured count it predicted."""
    summary = summary.assign(predicted_images_per_s=float("nan"), predicted_efficiency=float("nan"))
    for model in models:
        for _, row in model.predictions.iterrows():
            at = (summary["series"] == model.series) & (summary["world_size"] == row["world_size"])
            summary.loc[at, "predicted_images_per_s"] = row["predicted_images_per_s"]
            summary.loc[at, "predicted_efficiency"] = row["predicted_efficiency"]
    return summary


def report_main(
    directories: Sequence[str],
    out_dir: str,
    predict_to: int = 0,
    threshold: float = GOOD_EFFICIENCY,
    request_epochs: float | None = None,
    request_images: int | None = None,
) -> int:
    missing = [directory for directory in directories if not os.path.isdir(directory)]
    if missing:
        raise UsageError(f"no such results directory: {shortened(', '.join(missing), 200)}")
    options = ProposalOptions(threshold, request_epochs, request_images)  # a bad value: one line, nothing written
    check_bounds({"--predict-to": predict_to, "--efficiency-threshold": threshold, "--request-epochs": request_epochs,
                  "--request-images": request_images})  # fmt: skip
    report = build_report(directories, out_dir, predict_to, options)
    console = wide_console()
    print_console(report, console)
    console.print(
        f"wrote {', '.join(sorted(os.path.basename(path) for path in report.files))} to {console_text(out_dir)}",
        soft_wrap=True,
    )
    return 0
