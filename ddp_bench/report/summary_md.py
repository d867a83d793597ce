"""summary.md: the report's tables in Markdown. Every text that came from rows or paths goes through
`ddp_bench.escape` (markdown_text for cells, markdown_code for code spans), so a field cannot add a cell, start a
heading, or bring a link, an image or HTML into the page."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from ddp_bench.console import format_number
from ddp_bench.escape import markdown_code, markdown_text, shortened
from ddp_bench.report.data import LoadedRows, RunTables, device_word, provenance_differences, series_title
from ddp_bench.report.model_trust import SeriesTrust, signed_percent, where_text
from ddp_bench.report.proposal import Proposal
from ddp_bench.report.proposal_text import markdown_section
from ddp_bench.report.scaling import SeriesModel, algorithm_note


@dataclass(frozen=True)
class Report:
    loaded: LoadedRows
    tables: RunTables
    summary: pd.DataFrame
    files: list[str]
    platforms: pd.DataFrame  # platforms.platform_table
    course: dict  # platforms.course_rows
    accuracy: pd.DataFrame  # platforms.accuracy_series
    models: list[SeriesModel]  # scaling.predict_series
    not_modelled: list[str]  # series the model could not serve, and why
    stragglers: pd.DataFrame  # scaling.straggler_table
    trust: list[SeriesTrust]  # model_trust.trust_models, one per model
    proposal: Proposal  # proposal.build_proposal


def markdown(report: Report) -> str:
    summary = report.summary
    lines = ["# ddp_bench report", ""]
    lines += [
        f"{len(report.tables.runs)} complete run(s) from {report.loaded.rows['source'].nunique()} rank file(s).",
        "Throughput = images trained by all ranks ÷ the slowest rank's time, warm-up excluded. "
        "Speedup = throughput(N) ÷ throughput(N₀) × N₀ against the smallest run N₀ of the same series; "
        "efficiency = speedup ÷ N. Values are medians over repeats (min–max in brackets).",
        "",
    ]
    modelled = {model.series for model in report.models}
    for series, points in summary.groupby("series", sort=True):
        many, one = device_word(points["device_kind"]), device_word(points["device_kind"], plural=False)
        predicted = series in modelled
        lines += [f"## {markdown_text(series_title(points.iloc[0]))}", ""]
        lines += [
            f"| platform | nodes | {many} | batch/{one} | global batch | images/s | images/s per {one} | speedup | "
            "efficiency | "
            + ("predicted images/s | predicted efficiency | " if predicted else "")
            + "epoch time | step median / p90 (ms) | MFU | verdict | test acc. | runs |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
            + ("---:|---:|" if predicted else "")
            + "---:|---:|---:|---|---:|---:|",
        ]
        for _, row in points.sort_values("world_size").iterrows():
            spread = ""
            if row["repeats"] > 1:
                low, high = row["global_images_per_s_min"], row["global_images_per_s_max"]
                spread = f" ({format_number(low, 0)}–{format_number(high, 0)})"
            accuracy = "—" if row["test_accuracy"] != row["test_accuracy"] else f"{row['test_accuracy'] * 100:.2f} %"
            lines.append(
                f"| {markdown_text(row['label'])} | {row['num_nodes']} | {row['world_size']} | {row['batch_size']} | "
                f"{row['global_batch_size']} | {format_number(row['global_images_per_s'])}{spread} | "
                f"{format_number(row['images_per_s_per_gpu'])} | {row['speedup']:.2f} | "
                f"{row['efficiency'] * 100:.0f} % | "
                + (
                    f"{format_number(row['predicted_images_per_s'])} | {_percent(row['predicted_efficiency'])} | "
                    if predicted
                    else ""
                )
                + f"{format_number(row['epoch_time_s'])} s | {format_number(row['step_time_median_ms'], 2)} / "
                f"{format_number(row['step_time_p90_ms'], 2)} | {format_number(row['mfu'] * 100)} % | "
                f"{markdown_text(row['verdict']) or '—'} | "
                f"{accuracy} | {row['repeats']} |"
            )
        lines.append("")
    lines += model_markdown(report.models, report.not_modelled, summary, report.trust)
    lines += markdown_section(report.proposal)
    lines += straggler_markdown(report.stragglers)
    lines += platform_markdown(report.platforms, report.course)
    lines += provenance_markdown(provenance_differences(report.tables.runs))
    lines += left_out_markdown(report)
    figures = [os.path.basename(path) for path in report.files if path.endswith(".png")]
    if figures:
        lines += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
    return "\n".join(lines)


def left_out_markdown(report: Report) -> list[str]:
    """The runs and files the report left out, each with why (run ids cut short: a cell may be 100 KB)."""
    lines = []
    if report.tables.incomplete:
        lines += ["## Left out: incomplete runs", ""]
        for run_id, why in report.tables.incomplete:
            lines.append(f"- `{markdown_code(shortened(run_id, 120))}`: {markdown_text(why)}")
        lines.append("")
    if report.loaded.problems:
        lines += ["## Left out: unusable files", ""]
        lines += [f"- `{markdown_code(path)}`: {markdown_text(why)}" for path, why in report.loaded.problems]
        lines.append("")
    return lines


def _percent(value: float) -> str:
    return "—" if value != value else f"{value * 100:.0f} %"


def model_markdown(
    models: list[SeriesModel], not_modelled: list[str], summary: pd.DataFrame, trust: list[SeriesTrust]
) -> list[str]:
    """The Scaling model section: what each prediction was built from, then measured beside predicted, with how
    far each row is from the measured counts and the model's error where the rows can check it."""
    if not models and not not_modelled:
        return []
    lines = [
        "## Scaling model",
        "",
        "A model, not a measurement: step = compute + the all-reduce time DDP's gradient buckets leave exposed "
        "after backward, each bucket all-reduced as soon as its gradients are ready, one after another "
        "(α–β ring all-reduce with DDP's bucket overlap; `ddp_bench/measurement/scaling_model.py`); on CPU "
        "ranks, plus the measured CPU time of the all-reduce that overlaps backward on the same cores. "
        "Predicted images/s = "
        "ranks × batch ÷ step; the range (the band) runs from no overlap at all with the slowest all-reduce model that "
        "fits the measured curves to perfect overlap with the fastest (past the measured counts: the bandwidth each "
        "message size reached, the peak-bandwidth fit, ring or tree). Efficiency is against the "
        "series' smallest measured run, as in the measured column. Where: a measured count, an interpolation or "
        "an extrapolation (× the largest measured count); model vs measured = predicted ÷ measured − 1 at measured "
        "counts, where compute and all-reduce come from that count's own runs; checked = the largest measured count "
        "predicted from the smaller ones alone, the rows' own test of an extrapolation.",
        "",
    ]
    for model, checked in zip(models, trust, strict=True):
        lines += _model_series_markdown(model, checked, summary)
    lines += [f"- not modelled: {markdown_text(why)}" for why in not_modelled]
    return lines + ([""] if not_modelled else [])


def _model_series_markdown(model: SeriesModel, checked: SeriesTrust, summary: pd.DataFrame) -> list[str]:
    """One series' scaling model: its sources, then measured beside predicted at each rank count."""
    where = checked.rows.set_index("world_size")
    first = summary[summary["series"] == model.series].iloc[0]
    lines = [f"### {markdown_text(series_title(first))}", ""]
    lines += [
        f"- compute: {markdown_text(model.compute_source)}.",
        f"- all-reduce: {markdown_text(model.allreduce_source)}.",
        "",
    ]
    lines += [
        "| ranks | measured images/s | predicted images/s (range) | measured efficiency | predicted efficiency "
        "| step = compute + comm CPU + exposed (ms) | all-reduce per step (ms) | compute from | all-reduce from "
        "| where | model vs measured |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|",
    ]
    for _, row in model.predictions.iterrows():
        at = where.loc[row["world_size"]]
        lines.append(
            f"| {row['world_size']} | {format_number(row['measured_images_per_s'])} | "
            f"{format_number(row['predicted_images_per_s'])} ({format_number(row['predicted_images_per_s_low'])}"
            f"–{format_number(row['predicted_images_per_s_high'])}) | {_percent(row['measured_efficiency'])} | "
            f"{_percent(row['predicted_efficiency'])} | {format_number(row['compute_ms'], 1)} + "
            f"{format_number(row['comm_cpu_ms'], 1)} + "
            f"{format_number(row['step_ms'] - row['compute_ms'] - row['comm_cpu_ms'], 1)} | "
            f"{format_number(row['comm_ms'], 1)} | "
            f"{markdown_text(row['compute_from'])} | {markdown_text(row['comm_from'])}{algorithm_note(row)} | "
            f"{where_text(at['position'], at['reach'])} | "
            f"{signed_percent(at['error_here'])} |"
        )
    lines += [
        "",
        f"- {checked.backtest.statement()}.",
        f"- model vs measured at each measured count: {checked.errors_here() or 'none predicted'}.",
        "",
    ]
    return lines


def straggler_markdown(stragglers: pd.DataFrame) -> list[str]:
    """Each multi-rank run's per-rank speed, from compute-only steps (the all-reduce makes every rank wait for
    the slowest, so whole-step throughput is the same on all of them)."""
    if stragglers.empty:
        return []
    lines = [
        "## Stragglers",
        "",
        "Each rank's own images/s = batch ÷ its median compute-only step (`compute_step_ms`). A rank more than "
        "10 % below its run's median is flagged: the whole job runs at its pace.",
        "",
        "| run | ranks | images/s per rank: min / median / max | slowest rank (host) | below median | |",
        "|---|---:|---:|---|---:|---|",
    ]
    for _, row in stragglers.iterrows():
        lines.append(
            f"| `{markdown_code(row['run_id'])}` | {row['world_size']} | {format_number(row['images_per_s_min'])} / "
            f"{format_number(row['images_per_s_median'])} / {format_number(row['images_per_s_max'])} | "
            f"{row['slowest_rank']} ({markdown_text(row['slowest_host'])}) | {row['below_median'] * 100:.1f} % | "
            + ("**straggler**" if row["straggler"] else "")
            + " |"
        )
    return lines + [""]


def _seconds(value: float) -> str:
    if value != value:
        return "—"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.1f} h"


def _joules(value: float) -> str:
    if value != value:
        return "—"
    return f"{value / 1000:,.2f} kJ" if value >= 1000 else f"{value:,.0f} J"


def platform_markdown(platforms: pd.DataFrame, course: dict) -> list[str]:
    """The Platforms section: one table per compared workload, then the course's comparison rows."""
    if platforms.empty:
        return []
    lines = [
        "## Platforms",
        "",
        "Workloads that ran on more than one platform (same model, data, per-device batch and precision). Medians "
        "over repeats. Images/s on 1 device and at the largest count measured; × CPU compares 1-device "
        "throughput with the CPU row's; epoch time, energy, device-hours, memory and efficiency are at the largest "
        "count; time to accuracy is training time only, the fastest over the device counts that reached the "
        "target; first result = queue wait + setup + the whole run, on the fewest devices (parts a run did not "
        "record count as 0; there is no queue without a scheduler).",
        "",
    ]
    for workload, table in platforms.groupby("workload", sort=False):
        target = table["target_accuracy"].dropna()
        to = f"time to {target.iloc[0] * 100:g} %" if len(target) else "time to accuracy"
        lines += [f"### {markdown_text(workload)}", ""]
        lines += [
            f"| platform | devices | images/s on 1 | images/s at largest | × CPU | epoch time | {to} | queue wait | "
            "setup | first result | energy / epoch | device-hours / epoch | peak memory | efficiency at largest |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [_platform_row(row) for _, row in table.iterrows()]
        answers = course.get(workload, {})
        names = [name for name in table["name"] if name in answers]  # the table's order: the CPU first
        lines += ["", "The course's comparison, measured:", ""]
        lines += ["| | " + " | ".join(map(markdown_text, names)) + " |", "|---|" + "---|" * len(names)]
        lines.append(
            "| quick experiments: a 1-epoch job, end to end | "
            + " | ".join(_seconds(answers[name]["quick_s"]) for name in names)
            + " |"
        )
        lines.append(
            "| scalability: efficiency at the largest count | "
            + " | ".join(
                "—"
                if answers[name]["efficiency"] != answers[name]["efficiency"]
                else f"{answers[name]['efficiency'] * 100:.0f} % on {answers[name]['devices']}"
                for name in names
            )
            + " |"
        )
        lines.append("| hardware | " + " | ".join(markdown_text(answers[name]["hardware"]) for name in names) + " |")
        lines.append("")
    return lines


def _platform_row(row: pd.Series) -> str:
    """One platform's row of a workload's table."""
    word = device_word([row["device_kind"]], plural=row["devices"] != 1)
    reached = _seconds(row["time_to_accuracy_s"])
    if row["time_to_accuracy_devices"]:
        reached += f" ({row['time_to_accuracy_devices']})"
    return (
        f"| {markdown_text(row['name'])} | {row['devices']} {word} | {format_number(row['images_per_s_1'])} | "
        f"{format_number(row['images_per_s_max'])} | {format_number(row['x_cpu'], 2)} | "
        f"{_seconds(row['epoch_time_s'])} | {reached} | {_seconds(row['queue_wait_s'])} | "
        f"{_seconds(row['setup_s'])} | {_seconds(row['first_result_s'])} | "
        f"{_joules(row['energy_per_epoch_j'])} | {format_number(row['device_hours_per_epoch'], 4)} | "
        f"{format_number(row['peak_memory_mb'], 0)} MB | "
        + ("—" if row["efficiency_max"] != row["efficiency_max"] else f"{row['efficiency_max'] * 100:.0f} %")
        + " |"
    )


def provenance_markdown(differences: list[tuple[str, str, dict[str, int]]]) -> list[str]:
    """What differs between the runs of a compared series: versions, driver, NCCL settings, source commit."""
    lines = ["## Provenance", ""]
    if not differences:
        return lines + [
            "Within every series, all runs had the same torch, CUDA, NCCL and driver versions, NCCL settings, "
            "Python and source commit.",
            "",
        ]
    lines += ["What differs between the runs a series compares (value: runs):", ""]
    for title, key, counts in differences:
        shown = "; ".join(f"`{markdown_code(value or '(none)')}`: {count}" for value, count in counts.items())
        lines.append(f"- {markdown_text(title)}: **{key}** {shown}")
    return lines + [""]
