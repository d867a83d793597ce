"""`python -m ddp_bench predict --spec FILE.toml [--json]`: the scaling model for a cluster nobody here can
measure. The same code path as `report --predict-to`: the all-reduce model at each count from
measurement/comm_choice.comm_at (the one-node table as a measured curve, two stages past one node), and the row
and its band from measurement/prediction.predict_at.

Compute measured with fewer GPUs busy than a node holds ([compute] busy_gpus < [node] gpus) is marked
`partial_node`, and the slow end of its band is longer by PARTIAL_NODE_SHARE of the compute step: the host's
contention once every GPU of a node trains (input pipeline, PCIe, CPU) is not in that measurement. The point
keeps the measured compute: no correction is applied to it.

Where the spec gives the compute-only steps' spread ([compute] step_quantiles_ms and steps_pooled, as a ddp_bench
row records them), past the measured count the compute step is the slowest of N ranks' (compute_drift.py, as in
`report --predict-to`); without it the compute step is the same at every count, and the rows say so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ddp_bench.args import Parser
from ddp_bench.measurement.comm_choice import comm_at
from ddp_bench.measurement.compute_drift import compute_drift
from ddp_bench.measurement.link_model import SizedLink, sized_fit
from ddp_bench.measurement.prediction import PARTIAL_NODE_SHARE as PARTIAL_NODE_SHARE  # re-exported: its home
from ddp_bench.measurement.prediction import partial_node, partial_node_ms, predict_at
from ddp_bench.measurement.scaling_model import AllreduceCurve, TwoStage, fit_alpha_beta
from ddp_bench.predict.buckets import assumed_buckets, spread_sizes, torchvision_gradient_sizes
from ddp_bench.predict.spec import Spec, Table, load_spec


def intra_curve(spec: Spec) -> AllreduceCurve | None:
    """nccl-tests' one-node table as the curve the report would have measured: T = 2(G-1)/G · S / busbw + latency."""
    if spec.intra is None or spec.node_gpus < 2:
        return None
    g, table = spec.node_gpus, spec.intra
    times = tuple(
        2 * (g - 1) * table.alpha_s + 2 * (g - 1) / g * s / b for s, b in zip(table.sizes, table.busbw, strict=True)
    )
    return AllreduceCurve(g, 1, table.sizes, times)


def _inter_link(table: Table) -> SizedLink:
    """Between nodes, per node: line figures (one size) or a table measured across `nodes` nodes."""
    if table.nodes == 0:
        return SizedLink(table.alpha_s, table.sizes, table.busbw, 2, tree=True)
    n = table.nodes
    times = [
        2 * (n - 1) * table.alpha_s + 2 * (n - 1) / n * s / b for s, b in zip(table.sizes, table.busbw, strict=True)
    ]
    alpha = table.alpha_s or (fit_alpha_beta(n, table.sizes, times).alpha_s if len(times) > 1 else 0.0)
    return sized_fit(n, table.sizes, times, alpha, tree=True)


def predict_rows(spec: Spec) -> list[dict]:
    sizes = torchvision_gradient_sizes(spec.torchvision) if spec.torchvision else spread_sizes(spec.gradient_bytes)
    buckets = assumed_buckets(sizes, spec.compute_ms, spec.bucket_cap_mb)
    curve = intra_curve(spec)
    curves = [curve] if curve else []
    fabric = curve.sized() if curve else SizedLink(0.0, (1,), (1.0,), 1)  # one GPU per node: no fabric stage
    stages = TwoStage(fabric, _inter_link(spec.inter)) if spec.inter else None
    one_gpu = spec.batch_per_gpu * 1e3 / spec.compute_ms
    rows = []
    for gpus in spec.gpus:
        nodes = -(-gpus // spec.node_gpus)
        if gpus > spec.node_gpus and gpus % spec.node_gpus:
            continue  # whole nodes only past one node
        comm = comm_at(gpus, nodes, curves, stages if nodes > 1 or not curves else _one_node(fabric), False, True)
        partial = partial_node(spec.busy_gpus, spec.node_gpus, gpus)
        extra_ms = partial_node_ms(spec.compute_ms, partial)
        drift = compute_drift(spec.measured_gpus, gpus, spec.step_quantiles)
        row = predict_at(
            gpus, spec.batch_per_gpu, spec.compute_ms * drift.ratio, buckets, comm, extra_ms,
            spec.compute_ms * drift.tail_share, fast_compute_ms=spec.compute_ms,
        )  # fmt: skip
        rows.append(
            {
                "gpus": gpus,
                "nodes": nodes,
                "images_per_s": row["predicted_images_per_s"],
                "low": row["predicted_images_per_s_low"],
                "high": row["predicted_images_per_s_high"],
                "efficiency": row["predicted_images_per_s"] / (gpus * one_gpu),
                "step_ms": row["step_ms"],
                "compute_ms": row["compute_ms"],
                "comm_ms": row["comm_ms"],
                "comm_from": row["comm_from"],
                "allreduce_algorithm": row["allreduce_algorithm"],
                "partial_node": partial,
                "compute_drift": drift.ratio if drift.applied else None,
                "published_images_per_s": spec.published.get(gpus),
            }
        )
    return rows


def _one_node(fabric: SizedLink) -> TwoStage:
    """Inside one node only: the fabric stage (no network stage is ever used at one node)."""
    return TwoStage(fabric, SizedLink(0.0, (1,), (1.0,), 2))


def _text(spec: Spec, rows: Sequence[dict]) -> str:
    lines = [f"{spec.path}: {spec.torchvision or f'{spec.gradient_bytes:,.0f} gradient bytes'}, "
             f"batch {spec.batch_per_gpu} per GPU, compute {spec.compute_ms:.1f} ms, nodes of {spec.node_gpus}",
             "GPUs  nodes  images/s  (low – high)        efficiency  all-reduce from"]  # fmt: skip
    for row in rows:
        mark = " (compute from a partial node)" if row["partial_node"] else ""
        if row["compute_drift"] not in (None, 1.0):
            mark += f" (slowest of {row['gpus']}: compute × {row['compute_drift']:.3f})"
        lines.append(
            f"{row['gpus']:>4}  {row['nodes']:>5}  {row['images_per_s']:>8,.0f}  ({row['low']:,.0f} – "
            f"{row['high']:,.0f})  {row['efficiency'] * 100:>8.1f} %  {row['comm_from']}, "
            f"{row['allreduce_algorithm']}{mark}"
        )
    return "\n".join(lines)


def predict_main(argv: Sequence[str]) -> int:
    parser = Parser(
        prog="python -m ddp_bench predict",
        description=(
            "Predicted DDP throughput for a cluster from its published figures (a TOML spec; docs/scaling-model.md)."
        ),
    )
    parser.add_argument("--spec", required=True, metavar="FILE.toml", help="the cluster, model and compute")
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    args = parser.parse_args(list(argv))
    spec = load_spec(args.spec)
    rows = predict_rows(spec)
    print(json.dumps(rows, indent=1) if args.json else _text(spec, rows))
    return 0
