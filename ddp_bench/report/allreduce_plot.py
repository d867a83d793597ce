"""allreduce.png: bus and algorithm bandwidth against message size, from one all-reduce benchmark's rows."""

from __future__ import annotations

from ddp_bench.measurement.allreduce import size_label
from ddp_bench.results.allreduce_table import AllreduceRow


def draw_allreduce_plot(rows: list[AllreduceRow], path: str) -> None:
    """Bandwidth by message size (log scale), titled with the world, backend and peak bus bandwidth; saved to path."""
    from matplotlib.figure import Figure  # rendered to a file: no pyplot, no display needed

    first = rows[0]
    sizes = [row.size_bytes for row in rows]
    figure = Figure(figsize=(8, 5))
    axis = figure.subplots()
    axis.plot(sizes, [row.busbw_gbps for row in rows], marker="o", label="bus bandwidth")
    axis.plot(sizes, [row.algbw_gbps for row in rows], marker=".", linestyle="--", label="algorithm bandwidth")
    axis.set_xscale("log", base=2)
    axis.set_xticks(sizes, [size_label(size) for size in sizes], rotation=45)
    axis.set_xlabel("message size")
    axis.set_ylabel("bandwidth (GB/s)")
    axis.set_title(
        f"All-reduce, {first.world_size} ranks ({first.backend}) on {first.num_nodes} node(s): "
        f"peak busbw {max(row.busbw_gbps for row in rows):.2f} GB/s"
    )
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.savefig(path, dpi=150, bbox_inches="tight")
