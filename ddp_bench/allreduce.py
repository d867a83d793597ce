"""`python -m ddp_bench allreduce`: the network's limit, to read a scaling plot against.

All-reduce of float32 tensors from KBs to hundreds of MB under any launcher, timed on every rank (device
synchronised, slowest rank counts), reported as nccl-tests defines it (measurement/allreduce.py).
Rank 0 writes `allreduce.csv` and `allreduce.png` in a new directory under --out.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ddp_bench.args import Parser
from ddp_bench.config import BenchConfig, choices
from ddp_bench.flag_bounds import check_bounds
from ddp_bench.measurement.allreduce import bus_bandwidth, default_sizes, size_label
from ddp_bench.results.allreduce_table import AllreduceRow, write_allreduce_csv
from ddp_bench.results.records import new_run_id

if TYPE_CHECKING:
    from ddp_bench.launch.job import Job


def _parse(argv: Sequence[str]):
    parser = Parser(prog="python -m ddp_bench allreduce", description="All-reduce bandwidth, nccl-tests style.")
    parser.add_argument("--max-bytes", type=int, default=256 * 2**20, help="largest message (default 256 MiB)")
    parser.add_argument("--iters", type=int, default=20, help="timed all-reduces per size (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed all-reduces per size (default 5)")
    parser.add_argument("--device", choices=choices("device"), default="auto")
    parser.add_argument("--backend", choices=choices("backend"), default="auto")
    parser.add_argument("--launcher", choices=choices("launcher"), default="auto")
    parser.add_argument("--out", default="results")
    parser.add_argument("--init-timeout", type=float, default=180.0)
    args = parser.parse_args(list(argv))
    check_bounds({"--max-bytes": args.max_bytes, "--iters": args.iters, "--warmup": args.warmup,
                  "--init-timeout": args.init_timeout})  # fmt: skip
    return args


def allreduce_main(argv: Sequence[str]) -> int:
    args = _parse(argv)
    cfg = BenchConfig(
        device=args.device, backend=args.backend, launcher=args.launcher, out=args.out, init_timeout=args.init_timeout
    )
    from ddp_bench.launch.collectives import broadcast_string
    from ddp_bench.launch.context import collect_context
    from ddp_bench.launch.discovery import discover_launch
    from ddp_bench.launch.distributed import apply_comm_defaults, process_group
    from ddp_bench.launch.hardware import plan_hardware
    from ddp_bench.results.results_dir import prove_output_dir

    info = discover_launch(os.environ, cfg.launcher, cfg.init_timeout)
    plan = plan_hardware(cfg, info, os.environ)
    if info.rank == 0:  # the one rank that writes proves it can, before anything is measured
        prove_output_dir(cfg.out)
    apply_comm_defaults(plan.backend, info.launcher)
    context = collect_context(os.environ, plan.device.type, plan.device.index or 0, plan.backend)
    rows = []
    with process_group(info, plan.backend, plan.device, cfg.init_timeout) as job:
        run_id = broadcast_string(job, new_run_id("allreduce", info.world_size))
        for size in default_sizes(args.max_bytes):
            seconds, cpu_seconds = _time_allreduce(job, size, args.warmup, args.iters)
            algbw = size / seconds / 1e9
            rows.append(
                AllreduceRow(
                    run_id,
                    info.launcher,
                    context.platform,
                    context.cluster,
                    context.hostname,
                    info.num_nodes,
                    info.world_size,
                    plan.backend,
                    str(plan.device),
                    context.device_name,
                    size,
                    args.iters,
                    seconds * 1e6,
                    cpu_seconds * 1e6,
                    algbw,
                    bus_bandwidth(algbw, info.world_size),
                    context.torch_version,
                    context.ddp_bench_version,
                    context.git_commit,
                )
            )
    if info.rank == 0:
        _write_and_show(rows, os.path.join(cfg.out, run_id))
    return 0


def _time_allreduce(job: Job, size: int, warmup: int, iters: int) -> tuple[float, float]:
    """Seconds per all-reduce of `size` bytes of float32, wall and CPU, each the slowest rank's mean over iters."""
    import torch
    import torch.distributed as dist

    from ddp_bench.launch.collectives import align_ranks, reduce_floats, synchronize

    tensor = torch.ones(size // 4, dtype=torch.float32, device=job.device)
    job.held.hold(tensor)
    for _ in range(warmup):
        dist.all_reduce(tensor)
    align_ranks(job)  # every rank starts the clock together, device idle
    started, started_cpu = time.perf_counter(), time.process_time()
    for _ in range(iters):
        dist.all_reduce(tensor)
    synchronize(job.device)
    seconds, cpu_seconds = reduce_floats(
        job, [(time.perf_counter() - started) / iters, (time.process_time() - started_cpu) / iters], dist.ReduceOp.MAX
    )
    return seconds, cpu_seconds


def _write_and_show(rows: list[AllreduceRow], directory: str) -> None:
    """Rank 0: allreduce.csv and allreduce.png in a new directory, and the table on the console."""
    from rich.table import Table

    from ddp_bench.console import wide_console
    from ddp_bench.escape import console_text
    from ddp_bench.report.allreduce_plot import draw_allreduce_plot  # matplotlib: only once the rows are in

    os.makedirs(directory)
    write_allreduce_csv(rows, directory)
    first = rows[0]
    table = Table(
        title=f"all-reduce · {first.backend} · {first.world_size} ranks on {first.num_nodes} node(s) · "
        f"{console_text(first.device_name)}",
        title_justify="left",
    )
    for column in ("size", "time (us)", "algbw (GB/s)", "busbw (GB/s)"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            size_label(row.size_bytes), f"{row.time_us:,.1f}", f"{row.algbw_gbps:.3f}", f"{row.busbw_gbps:.3f}"
        )
    console = wide_console()
    console.print(table)
    draw_allreduce_plot(rows, os.path.join(directory, "allreduce.png"))
    console.print(f"wrote {console_text(directory)}/allreduce.csv and allreduce.png", soft_wrap=True)
