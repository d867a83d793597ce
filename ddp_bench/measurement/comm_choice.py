"""Which all-reduce model serves a rank count, and how far apart the defensible models are there. Pure arithmetic.

At a count with a measured curve, the curve (interpolated between message sizes): nothing to choose, so the
slowest and fastest model are the curve itself. Past the measured counts, the point is the curve's fit that keeps
the bandwidth each size reached (link_model.SizedLink), in two stages where curves inside one node and across
nodes exist; how far that is from the truth is not known, so the band takes the slowest and fastest of the
models that fit the same curves equally well: the sized fit with the ring alone, with the tree where NCCL has
one, and the peak-bandwidth α–β fit (fit_alpha_beta), which is what a fit without the size dependence says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ddp_bench.measurement.link_model import SizedLink
from ddp_bench.measurement.scaling_model import AllreduceCurve, AlphaBeta, TwoStage, fit_two_stage


@dataclass(frozen=True)
class CommAt:
    source: str  # where the all-reduce times come from (predictions.csv's comm_from)
    allreduce_ms: Callable[[int], float]  # the point: ms per all-reduce of S bytes
    cpu_ms: Callable[[int], float]  # its CPU time on CPU ranks (0 on GPUs)
    algorithm: Callable[[int], str]  # ring | tree | measured
    slow_ms: Callable[[int], float]  # the slowest defensible model (the point where a curve was measured)
    fast_ms: Callable[[int], float]  # the fastest


def _curve_ms(curve: AllreduceCurve) -> Callable[[int], float]:
    return lambda size: curve.time_s(size) * 1e3


def _spread(models: Sequence[Callable[[int], float]]) -> tuple[Callable[[int], float], Callable[[int], float]]:
    return (lambda size: max(model(size) for model in models)), (lambda size: min(model(size) for model in models))


def two_stage_of(curves: Sequence[AllreduceCurve], tree: bool) -> TwoStage | None:
    """The two-stage model, where one curve was measured on one node of several ranks and another across nodes."""
    inside = [curve for curve in curves if curve.num_nodes == 1 and curve.world_size > 1]
    across = [curve for curve in curves if curve.num_nodes > 1]
    if not inside or not across:
        return None
    return fit_two_stage(
        max(inside, key=lambda curve: curve.world_size),
        max(across, key=lambda curve: (curve.num_nodes, curve.world_size)),
        tree,
    )


def stage_models(stages: TwoStage, nodes: int, per_node: int) -> list[Callable[[int], float]]:
    """The two-stage model's alternatives between nodes: its own choice, the ring alone, and the peak-β fit of the
    same network times where the inter stage is a SizedLink with more than one size."""
    models = [lambda size: stages.time_s(nodes, per_node, size) * 1e3]
    inter = stages.inter
    if isinstance(inter, SizedLink):
        models.append(lambda size: (stages.intra.time_s(per_node, size) + inter.ring_s(nodes, size)) * 1e3)
        if len(inter.sizes) >= 2:
            times = [2 * (inter.fitted_at - 1) * inter.alpha_s + 2 * (inter.fitted_at - 1) / inter.fitted_at * s / b
                     for s, b in zip(inter.sizes, inter.busbw, strict=True)]  # fmt: skip
            peak = _peak(inter.fitted_at, inter.sizes, times, inter.alpha_s)
            models.append(lambda size: (stages.intra.time_s(per_node, size) + peak.time_s(nodes, size)) * 1e3)
    return models


def _peak(world_size: int, sizes: Sequence[int], times_s: Sequence[float], alpha_s: float) -> AlphaBeta:
    """The peak-bandwidth ring: β from the slope between the two largest sizes, with the sized fit's α."""
    slope = (times_s[-1] - times_s[-2]) / (sizes[-1] - sizes[-2])
    slope = slope if slope > 0 else times_s[-1] / sizes[-1]
    return AlphaBeta(alpha_s, 2 * (world_size - 1) / (world_size * slope), world_size)


def _nothing(_size: int) -> float:
    return 0.0


def comm_at(
    count: int,
    nodes: int,
    curves: Sequence[AllreduceCurve],
    stages: TwoStage | None,
    on_cpu: bool,
    tree: bool,
) -> CommAt | None:
    """The all-reduce at `count` ranks on `nodes`: the curve measured at that count (on the same number of nodes if
    there is one); else the two-stage model; else the sized fit to the biggest curve; None when nothing measured
    more than one rank. The CPU term applies on CPU ranks only (gloo shares their cores with backward)."""
    if count == 1:
        return CommAt("none (one rank)", _nothing, _nothing, lambda _size: "none", _nothing, _nothing)
    biggest = max(curves, key=lambda curve: (curve.world_size, curve.num_nodes)) if curves else None
    exact = [curve for curve in curves if curve.world_size == count]
    if exact:
        curve = max(exact, key=lambda curve: (curve.num_nodes == nodes, curve.num_nodes))
        source = f"measured at {count} ranks on {curve.num_nodes} node(s)"
        models, algorithm = [_curve_ms(curve)], (lambda _size: "measured")
    elif stages is not None:
        curve, per_node = biggest, max(1, count // nodes)
        source = f"two-stage fit ({nodes} node(s) × {per_node})"
        models, algorithm = stage_models(stages, nodes, per_node), (lambda size: stages.algorithm(nodes, size))
    elif biggest is not None and biggest.world_size > 1:
        curve, sized, peak = biggest, biggest.sized(tree), biggest.fit()
        source = f"α–β fit at {sized.fitted_at} ranks (bandwidth by message size)"
        models = [lambda size: sized.time_s(count, size) * 1e3, lambda size: sized.ring_s(count, size) * 1e3,
                  lambda size: peak.time_s(count, size) * 1e3]  # fmt: skip
        algorithm = lambda size: sized.algorithm(count, size)  # noqa: E731
    else:
        return None
    slow, fast = _spread(models)

    def cpu_ms(size: int) -> float:
        return curve.cpu_time_s(size, count) * 1e3 if on_cpu and curve is not None else 0.0

    return CommAt(source, models[0], cpu_ms, algorithm, slow, fast)
