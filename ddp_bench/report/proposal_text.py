"""The Proposal in words: the Markdown section (summary.md and proposal.md), the booktabs LaTeX tables
(proposal.tex) and the paragraph a user can adapt. Every number comes from the Proposal's rows; what the rows
cannot show is said, not filled in."""

from __future__ import annotations

import os

import pandas as pd

from ddp_bench.console import format_number
from ddp_bench.escape import latex_text, markdown_text
from ddp_bench.measurement.prediction import published_error_text
from ddp_bench.report.data import series_title, short_device, where_label
from ddp_bench.report.identity import model_identity
from ddp_bench.report.model_trust import counts_text
from ddp_bench.report.proposal import (
    HOURS_PER_YEAR,
    RGU_SOURCE,
    RGU_VALUES,
    Knee,
    Proposal,
    ProposalOptions,
    SeriesProposal,
)

SCALABILITY_PAGE = "the Alliance's Scalability page (https://docs.alliancecan.ca/wiki/Scalability/en)"
RECOMMENDED_COUNTS = 5  # "We recommend at least five or six values" (the Scalability page)


def duration(seconds: float) -> str:
    if seconds != seconds:
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:,.1f} h"


def amount(value: float) -> str:
    """Device-hours and RGU-years: whole numbers when large, three significant digits when small."""
    if value != value:
        return "—"
    return f"{value:,.0f}" if value >= 100 else (f"{value:.1f}" if value >= 10 else f"{value:.3g}")


def _devices(entry: SeriesProposal, plural: bool = True) -> str:
    cpu = entry.points["device_kind"].iloc[0] == "CPU"
    return ("CPU ranks" if plural else "CPU rank") if cpu else ("GPUs" if plural else "GPU")


def _counted(entry: SeriesProposal, count: int) -> str:
    """`1 GPU`, `4 GPUs`, `2 CPU ranks`."""
    return f"{count} {_devices(entry, plural=count != 1)}"


def _source_words(source: str) -> str:
    return "measured" if source == "measured" else "predicted by the scaling model"


def _request_words(options: ProposalOptions, epoch_images: float) -> str:
    if options.request_images is not None:
        return f"{options.request_images:,} images"
    return f"{options.request_epochs:g} epochs of the {epoch_images:,.0f}-image training set"


def _hardware(first: pd.Series) -> str:
    where = where_label(first["platform"], first["cluster"])
    device = short_device(first["device_name"])
    return f"CPU ranks of {device} ({where})" if first["device_kind"] == "CPU" else f"{device} GPUs ({where})"


def _workload(first: pd.Series, entry: SeriesProposal) -> str:
    one = _devices(entry, plural=False)
    batch = (
        f"{int(first['batch_size'])} images per {one}"
        if first["scaling"] == "weak"
        else f"a fixed global batch of {int(first['global_batch_size'])} images"
    )
    precision = "fp32" if first["amp"] == "off" else first["amp"]
    return f"{model_identity(first)} on {first['data']} ({batch}, {precision})"


def percent(fraction: float) -> str:
    """One decimal, as the Alliance's tables give efficiency: 74.8 % is not shown as a rounded-up 75 %."""
    return "—" if fraction != fraction else f"{fraction * 100:.1f} %"


def knee_sentence(knee: Knee, entry: SeriesProposal) -> str:
    line = f"{knee.threshold * 100:g} %"
    if knee.below_count:
        below = f"{_counted(entry, knee.below_count)} it is {percent(knee.below_efficiency)}"
        return (
            f"Efficiency stays at or above {line} up to {_counted(entry, knee.count)} ({_source_words(knee.source)}, "
            f"{percent(knee.efficiency)}); at {below} ({_source_words(knee.below_source)})."
        )
    return (
        f"Efficiency stays at or above {line} at every count shown, up to {_counted(entry, knee.count)} "
        f"({_source_words(knee.source)}, {percent(knee.efficiency)}): the knee was not reached within the "
        "counts shown."
    )


def cost_sentence(entry: SeriesProposal, options: ProposalOptions) -> str:
    at = entry.rows[entry.rows["devices"] == entry.knee.count].iloc[0]
    rgu = (
        f", or {amount(at['rgu_years'])} RGU-years on {at['gpu_model']} GPUs ({at['rgu_per_device']:.1f} RGU each)"
        if at["gpu_model"]
        else f" (no RGU-years: {at['rgu_note']})"
    )
    request = _request_words(options, float(entry.points["dataset_size"].iloc[-1]))
    return (
        f"At {_counted(entry, int(at['devices']))}, {request} take {duration(at['wall_time_s'])} of training at "
        f"{format_number(at['images_per_s'])} images/s "
        f"({_source_words(at['source'])}): {amount(at['device_hours'])} device-hours{rgu}."
    )


def missing(entry: SeriesProposal, options: ProposalOptions) -> list[str]:
    """What the rows of this series cannot show, one sentence each."""
    first, counts = entry.points.iloc[0], len(entry.points)
    out = []
    if first["device_kind"] == "CPU":
        out.append(
            "GPU numbers: these are CPU ranks, so they show the method, not the throughput or cost of a GPU "
            "request; run the same study on the GPUs you will ask for."
        )
    if counts == 1:
        out.append(
            f"Scaling: only {_counted(entry, int(first['world_size']))} measured, "
            "so there is no speedup, "
            f"efficiency or knee; {SCALABILITY_PAGE} recommends at least five or six counts."
        )
    elif counts < RECOMMENDED_COUNTS:
        out.append(f"Counts: {counts} measured; {SCALABILITY_PAGE} recommends at least five or six.")
    if counts > 1 and entry.not_modelled:
        out.append(f"Predictions past {int(entry.points['world_size'].iloc[-1])}: {entry.not_modelled}.")
    if not options.requested:
        out.append("What a request costs: give `report --request-epochs E` or `--request-images N`.")
    return out


def paragraph(entry: SeriesProposal, options: ProposalOptions) -> str:
    """What was run, on which hardware, where the knee is and what the request costs at the knee."""
    first, last = entry.points.iloc[0], entry.points.iloc[-1]
    devices = _devices(entry)
    counts = [int(count) for count in entry.points["world_size"]]
    nodes = sorted(set(int(n) for n in entry.points["num_nodes"]))
    on = f"{nodes[0]} node" + ("s" if nodes[0] != 1 else "") if len(nodes) == 1 else f"{nodes[0]} to {nodes[-1]} nodes"
    if len(counts) == 1:
        return (
            f"We measured {_workload(first, entry)} with ddp_bench on {_hardware(first)} at "
            f"{_counted(entry, counts[0])} only, on {on}: "
            f"{format_number(first['global_images_per_s'])} images/s, {duration(first['epoch_time_s'])} per epoch."
        )
    text = (
        f"We measured {first['scaling']} scaling of {_workload(first, entry)} with ddp_bench on {_hardware(first)}, "
        f"at {counts_text(counts)} {devices} on {on}. From {counts[0]} to {counts[-1]} {devices}, throughput went "
        f"from {format_number(first['global_images_per_s'])} to {format_number(last['global_images_per_s'])} "
        f"images/s: a speedup of {last['speedup']:.2f} and an efficiency of {percent(last['efficiency'])} "
        f"against {counts[0]}. {knee_sentence(entry.knee, entry)}"
    )
    if entry.knee.source == "predicted":
        at = entry.rows[entry.rows["devices"] == entry.knee.count].iloc[0]
        text += f" That knee is the scaling model's prediction: {at['trust']}."
    return text + (" " + cost_sentence(entry, options) if options.requested else "")


def _images_cell(row: pd.Series) -> str:
    """Measured: the median's images/s; predicted: the point and, in parentheses, its band."""
    low, high = row.get("images_per_s_low", float("nan")), row.get("images_per_s_high", float("nan"))
    if row["source"] != "predicted" or low != low:
        return format_number(row["images_per_s"])
    return f"{format_number(row['images_per_s'])} ({format_number(low)}–{format_number(high)})"


def _table_lines(entry: SeriesProposal, options: ProposalOptions) -> list[str]:
    devices = _devices(entry)
    cost = options.requested
    head = f"| | {devices} | nodes | time per epoch | images/s | speedup | efficiency |"
    rule = "|---|---:|---:|---:|---:|---:|---:|"
    if cost:
        head += " wall time | device-hours | RGU-years |"
        rule += "---:|---:|---:|"
    lines = [head + " how far the model is trusted |", rule + "---|"]
    for _, row in entry.rows.iterrows():
        efficiency = percent(row["efficiency"])
        cells = [
            "measured" if row["source"] == "measured" else "*predicted*",
            str(int(row["devices"])),
            str(row["nodes"]) if row["nodes"] != "" else "—",
            duration(row["epoch_time_s"]),
            _images_cell(row),
            f"{row['speedup']:.2f}",
            f"**{efficiency}**" if row["good"] else efficiency,
        ]
        if cost:
            rgu = amount(row["rgu_years"]) if row["gpu_model"] else "—"
            cells += [duration(row["wall_time_s"]), amount(row["device_hours"]), rgu]
        lines.append("| " + " | ".join([*cells, markdown_text(row["trust"] or "")]) + " |")
    return lines


def markdown_section(proposal: Proposal, level: int = 2) -> list[str]:
    """The Proposal section: per series its table (measured rows, then predicted ones), knee and paragraph."""
    if not proposal.series:
        return []
    options, mark = proposal.options, "#" * level
    lines = [
        f"{mark} Proposal",
        "",
        "Each scaling series as an allocation committee reads it: time per epoch, throughput, speedup and efficiency "
        "against the series' smallest count. Measured rows come first; *predicted* rows are the scaling model's, "
        "at counts nobody measured, each with how far the model is trusted there and, after its images/s, the model's "
        "band (low–high: bucket overlap unknown, and past the measured counts the all-reduce models that fit the "
        "same curves). Efficiency in bold is "
        f'{options.threshold * 100:g} % or more ("an efficiency of 75% or more is good", {SCALABILITY_PAGE}); '
        "the knee is the largest count still at or above that line, walking up from the smallest.",
    ]
    if any((entry.rows["source"] == "predicted").any() for entry in proposal.series if not entry.rows.empty):
        lines += ["", published_error_text()]
    if options.requested:
        table = ", ".join(f"{value.model} = {value.rgu:.1f}" for value in RGU_VALUES)
        lines += [
            "",
            "Wall time = the requested images ÷ images/s (training only: no start-up, evaluation or queue wait); "
            "device-hours = devices × wall time; RGU-years = device-hours ÷ "
            f"{HOURS_PER_YEAR:,} × the GPU model's RGU value ({table}; from {RGU_SOURCE}). A device the table "
            "does not name gets no RGU-years, with the reason.",
        ]
    lines.append("")
    for entry in proposal.series:
        lines += [f"{mark}# {markdown_text(_title(entry))}", ""]
        if not entry.rows.empty:
            lines += _table_lines(entry, options) + [""]
        lines += ["> " + markdown_text(paragraph(entry, options)), ""]
        gaps = missing(entry, options)
        if gaps:
            lines += ["What these rows do not show:", ""] + [f"- {markdown_text(gap)}" for gap in gaps] + [""]
    return lines


def _title(entry: SeriesProposal) -> str:
    return series_title(entry.points.iloc[0])


def markdown_document(proposal: Proposal) -> str:
    """proposal.md: the section on its own."""
    lines = markdown_section(proposal, level=1)
    return "\n".join(lines or ["# Proposal", "", "No complete runs.", ""])


def _latex_header(entry: SeriesProposal, cost: bool) -> list[str]:
    """Two header lines, so that the table fits a page's text width."""
    words = _devices(entry).split()
    pairs = [(" ".join(words[:-1]), words[-1]), ("", "Nodes"), ("Time per", "epoch"), ("", "Images/s")]
    pairs += [("", "Speedup"), ("", "Efficiency")]
    if cost:
        pairs += [("Wall", "time"), ("Device-", "hours"), ("RGU-", "years")]
    return [" & ".join(pair[line] for pair in pairs) + " \\\\" for line in (0, 1)]


def _latex_row(row: pd.Series, cost: bool) -> str:
    efficiency = percent(row["efficiency"]).replace(" %", "\\,\\%")
    cells = [
        str(int(row["devices"])),
        str(row["nodes"]) if row["nodes"] != "" else "--",
        latex_text(duration(row["epoch_time_s"])),
        latex_text(format_number(row["images_per_s"], 0)),
        f"{row['speedup']:.2f}",
        f"\\textbf{{{efficiency}}}" if row["good"] else efficiency,
    ]
    if cost:
        rgu = amount(row["rgu_years"]) if row["gpu_model"] else "--"
        cells += [latex_text(duration(row["wall_time_s"])), latex_text(amount(row["device_hours"])), rgu]
    return " & ".join(cells) + " \\\\"


def latex(proposal: Proposal) -> str:
    """proposal.tex: one booktabs table per series with rows, for \\input into a proposal (the preamble needs
    \\usepackage{booktabs})."""
    cost = proposal.options.requested
    out = [
        "% ddp_bench proposal tables: \\input{proposal.tex} with \\usepackage{booktabs} in the preamble.",
        f"% Bold efficiency: {proposal.options.threshold * 100:g} % or more. Predicted rows are the scaling model's.",
    ]
    for entry in proposal.series:
        if entry.rows.empty:
            continue
        header = _latex_header(entry, cost)
        width = header[0].count("&") + 1
        out += ["\\begin{table}[htbp]", "\\centering", "\\small", "\\setlength{\\tabcolsep}{3pt}"]
        out += [f"\\caption{{{latex_text(_title(entry))}}}", "\\begin{tabular}{" + "r" * width + "}", "\\toprule"]
        out += [*header, "\\midrule"]
        measured = entry.rows[entry.rows["source"] == "measured"]
        predicted = entry.rows[entry.rows["source"] == "predicted"]
        out += [_latex_row(row, cost) for _, row in measured.iterrows()]
        if not predicted.empty:
            label = "\\emph{Predicted by the scaling model, not measured}"
            out += ["\\midrule", f"\\multicolumn{{{width}}}{{l}}{{{label}}} \\\\"]
            out += [_latex_row(row, cost) for _, row in predicted.iterrows()]
        out += ["\\bottomrule", "\\end{tabular}"]
        if not predicted.empty:
            notes = "; ".join(f"{int(row['devices'])}: {row['trust']}" for _, row in predicted.iterrows())
            out += ["\\par\\smallskip\\footnotesize", latex_text(f"Predicted rows. {notes}.")]
        out += ["\\end{table}", ""]
    return "\n".join(out)


def write_proposal(proposal: Proposal, out_dir: str) -> list[str]:
    """proposal.csv, proposal.md and proposal.tex when some series has two counts or more; the paths written."""
    table = proposal.table()
    if table.empty:
        return []
    paths = [os.path.join(out_dir, name) for name in ("proposal.csv", "proposal.md", "proposal.tex")]
    table.to_csv(paths[0], index=False)
    for path, text in zip(paths[1:], (markdown_document(proposal), latex(proposal)), strict=True):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    return paths
