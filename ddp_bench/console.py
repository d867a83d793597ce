"""What a person sees: a progress bar and a summary table on rank 0; other ranks stay quiet."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ddp_bench.escape import console_text
from ddp_bench.results.records import RankRecord


@contextlib.contextmanager
def step_progress(enabled: bool, total: int, description: str) -> Iterator[Callable[[], None]]:
    """A callable to advance by one step; a live bar on rank 0 when stderr is a terminal, else nothing."""
    if not enabled or not sys.stderr.isatty():
        yield lambda: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # Redrawn once a second, not rich's default ten: each redraw takes about 0.5 ms of Python (measured on the
    # 2-core machine), held under the GIL while the training loop waits to launch its next operation.
    with Progress(*columns, console=Console(stderr=True), transient=True, refresh_per_second=1) as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)


def wide_console() -> Console:
    """A console for tables: the terminal's width, or 120 columns (COLUMNS if set) for files and job logs."""
    console = Console()
    if console.is_terminal:
        return console
    columns = os.environ.get("COLUMNS", "")
    return Console(width=int(columns) if columns.isdigit() else 120)


def format_number(value: float, digits: int = 1) -> str:
    """A number for people: thousands separated, NaN as a dash."""
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def data_wait_row(record: RankRecord) -> tuple[str, str]:
    """The host's wait for data beside the exposed communication. On a GPU the verdict judges the exposed wait
    (the stage's time per step beyond the device's step): the host also waits behind a full launch queue, which the
    device hides, so both are shown there; on a CPU the two are the same."""
    comm = f"{format_number(record.comm_exposed_ms, 2)} ms per step"
    if record.device.startswith("cuda"):
        waits = f"{format_number(record.data_wait_median_ms, 2)} ({format_number(record.data_exposed_ms, 2)})"
        return "data wait (exposed) / exposed comm", f"{waits} / {comm}"
    return "data wait / exposed comm", f"{format_number(record.data_wait_median_ms, 2)} / {comm}"


def print_summary(record: RankRecord, advice: str, run_dir: str) -> None:
    """Rank 0's table of the run; `advice` says what to try about the verdict."""
    table = Table(title=f"ddp_bench · {record.run_id}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("status", record.status),
        ("model · data", f"{record.model} · {record.data} ({record.loader} loader)"),
        ("job", f"{record.launcher} · {record.world_size} rank(s) on {record.num_nodes} node(s) · {record.platform}"),
        ("device", f"{record.device_name} ({record.device}, {record.backend})"),
        ("precision", f"amp {record.amp} · channels-last {record.channels_last} · compile {record.compile}"),
        ("batch", f"{record.batch_size} per rank · {record.global_batch_size} global"),
        ("measured", f"{record.steps} steps after {record.warmup_steps} warm-up"),
        ("global images/s", format_number(record.global_images_per_s)),
        ("rank 0 images/s", format_number(record.images_per_s)),
        (
            "step time median / p90",
            f"{format_number(record.step_time_median_ms, 2)} / {format_number(record.step_time_p90_ms, 2)} ms",
        ),
        data_wait_row(record),
        (
            "FLOP/s (rank 0)",
            f"{format_number(record.achieved_tflops * 1e3, 1)} GFLOP/s = "
            f"{format_number(record.mfu * 100, 1)} % of a measured "
            f"{format_number(record.peak_tflops * 1e3, 1)} GFLOP/s matmul peak",
        ),
        ("verdict (rank 0)", f"{record.verdict} — {advice}"),
        ("train / wall time", f"{format_number(record.train_time_s, 2)} s / {format_number(record.wall_time_s, 2)} s"),
        ("final loss (rank 0)", format_number(record.final_loss, 4)),
        ("real ÷ synthetic data", format_number(record.data_pipeline_ratio, 3)),
        (
            "test accuracy",
            format_number(record.test_accuracy * 100, 2)
            + (" %" if record.test_accuracy == record.test_accuracy else ""),
        ),
    ]
    for name, value in rows:
        table.add_row(name, console_text(value))
    console = wide_console()
    console.print(table)
    console.print(f"rows: {console_text(run_dir)}/rank*.csv", soft_wrap=True)
