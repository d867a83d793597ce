"""`python -m ddp_bench report RESULTS_DIR [...] --out REPORT_DIR`: summary.csv, summary.md, plots, a table.

Reads per-rank CSVs only (no torch import): a laptop can report on rows copied back from a cluster.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd
from rich.console import Console
from rich.table import Table

from ddp_bench.console import format_number, wide_console
from ddp_bench.errors import UsageError
from ddp_bench.escape import console_text
from ddp_bench.report.data import (
    load_rows,
    scaling_summary,
    summarise_runs,
)
from ddp_bench.report.model_trust import trust_models, with_trust
from ddp_bench.report.platforms import accuracy_series, course_rows, platform_table
from ddp_bench.report.proposal import GOOD_EFFICIENCY, ProposalOptions, build_proposal
from ddp_bench.report.proposal_text import write_proposal
from ddp_bench.report.scaling import SeriesModel, load_allreduce, predict_series, straggler_table
from ddp_bench.report.summary_md import Report, markdown


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
        console.print(f"left out run {console_text(run_id)}: {console_text(why)}", style="yellow", soft_wrap=True)
    for path, why in report.loaded.problems:
        console.print(f"cannot use {console_text(path)}: {console_text(why)}", style="red", soft_wrap=True)


def build_report(
    directories: Sequence[str], out_dir: str, predict_to: int = 0, options: ProposalOptions | None = None
) -> Report:
    """predict_to: the scaling model's largest count (0: the measured counts only); options: the Proposal's
    threshold and request (default: 75 %, no request)."""
    from ddp_bench.report.plots import plot_efficiency, plot_platforms, plot_throughput, plot_time_to_accuracy

    loaded = load_rows(list(directories))
    if not loaded.files:  # a mistyped path must not look like a successful, empty report
        raise UsageError(
            f"no rank*.csv files under {', '.join(directories)} (searched recursively): "
            "give the --out directory of your runs"
        )
    tables = summarise_runs(loaded.rows)
    summary = scaling_summary(tables.runs)
    allreduce, allreduce_problems = load_allreduce(list(directories))
    loaded.problems.extend(allreduce_problems)
    models, not_modelled = predict_series(summary, allreduce, predict_to)
    summary = _with_predictions(summary, models)
    trust = trust_models(summary, allreduce, models)
    proposal = build_proposal(summary, models, trust, not_modelled, options or ProposalOptions())
    stragglers = straggler_table(loaded.rows, tables.runs)
    os.makedirs(out_dir, exist_ok=True)
    files = [os.path.join(out_dir, "summary.csv")]
    summary.to_csv(files[0], index=False)
    if models:
        files.append(os.path.join(out_dir, "predictions.csv"))
        pd.concat([with_trust(*pair) for pair in zip(models, trust, strict=True)]).to_csv(files[-1], index=False)
    if not stragglers.empty:
        files.append(os.path.join(out_dir, "stragglers.csv"))
        stragglers.to_csv(files[-1], index=False)
    platforms = platform_table(tables.runs)
    course = course_rows(tables.runs, platforms)
    accuracy = accuracy_series(tables.runs)
    files += write_proposal(proposal, out_dir)
    if not platforms.empty:
        files.append(os.path.join(out_dir, "platforms.csv"))
        platforms.to_csv(files[-1], index=False)
    if not summary.empty:
        files += plot_throughput(summary, out_dir, models)
        files += plot_efficiency(summary, out_dir)
        files += plot_platforms(summary, out_dir)
    if not accuracy.empty:
        files += plot_time_to_accuracy(accuracy, out_dir)
    parts = (platforms, course, accuracy, models, not_modelled, stragglers, trust, proposal)
    path = os.path.join(out_dir, "summary.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(markdown(Report(loaded, tables, summary, files, *parts)))
    return Report(loaded, tables, summary, [*files, path], *parts)


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
        raise UsageError(f"no such results directory: {', '.join(missing)}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"--out {out_dir} is a file, not a directory")
    if predict_to < 0:
        raise UsageError(f"--predict-to {predict_to}: give a rank count, 1 or more")
    options = ProposalOptions(threshold, request_epochs, request_images)  # a bad value: one line, nothing written
    report = build_report(directories, out_dir, predict_to, options)
    console = wide_console()
    print_console(report, console)
    if report.summary.empty:
        console.print("no complete runs found: nothing to plot", style="yellow")
    console.print(
        f"wrote {', '.join(sorted(os.path.basename(path) for path in report.files))} to {console_text(out_dir)}",
        soft_wrap=True,
    )
    return 0
