"""Predicted DDP step time at rank counts nobody measured: an α–β ring all-reduce with DDP's bucket overlap.

Pure arithmetic (no torch, no pandas), shared by the run, which measures the model's inputs, and the report,
which predicts from them.

One synchronous DDP step on N ranks is modelled as

    step(N) = compute + exposed(N)

- `compute` is a measured compute-only step: forward, backward and optimizer with DDP's all-reduce switched off
  (`no_sync`), timed on every rank of a real run, so it carries whatever that run's ranks did to each other's
  speed (shared cores, memory bandwidth, a hot GPU).
- Gradients are all-reduced in DDP's buckets, each launched as soon as its last gradient is ready during
  backward, one after another. Bucket k, ready `window_k` before the end of backward, starts at
  max(its ready time, the end of bucket k-1) and takes allreduce(N, bytes_k); `exposed` is how far the last
  bucket ends after backward does. The buckets and their windows are measured in the run (`Bucket`).
- allreduce(N, S) is read from a measured all-reduce curve at N ranks where one exists (interpolated between
  message sizes), and otherwise from the ring fitted to the largest measured one, keeping the bandwidth each
  message size reached there (link_model.SizedLink: DDP's 25 MiB buckets do not reach peak bandwidth):

      T(N, S) = 2(N-1)·α + 2(N-1)/N · S/busbw(S)

  α is the per-hop latency, from what the smallest message takes beyond the slope between the two largest
  (`fit_alpha_beta`, whose peak β is kept for published line figures). On NCCL, the tree is taken where it is
  faster (its latency grows with log2 of the nodes). Where curves were measured both inside one node and across
  nodes, the job is modelled instead as two stages (TwoStage), one inside each node and one between nodes, each
  with its own α and bandwidth: a flat ring of N·G ranks at one β is wrong for both NVLink inside a node and the
  network between them.

On CPU ranks (gloo), the all-reduce runs on the same cores as compute: while it overlaps backward, its own CPU
time (`cpu_ms`, measured by the all-reduce benchmark from the process's CPU clock) is added to the step. That is
not the whole cost of communicating on shared cores (the kernel's network work is not on the process's clock), but
no term is fitted to what the model misses at a measured count: a correction fitted to the model's own miss would
hide any error of the communication terms (issue #25). On GPUs NCCL's kernels run beside the model's and no CPU term
is applied.

The prediction is bracketed by two bounds on the overlap: none (every bucket after backward: compute + Σ T)
and perfect (all communication back to back from the first bucket's ready time).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ddp_bench.measurement.link_model import SizedLink, sized_fit

# DDP's defaults: after the first iteration it rebuilds its buckets in the order gradients became ready, closing
# the first at 1 MiB (so communication starts early) and the rest at bucket_cap_mb = 25 MiB.
FIRST_BUCKET_BYTES = 2**20
BUCKET_BYTES = 25 * 2**20


@dataclass(frozen=True)
class Bucket:
    bytes: int  # gradient bytes all-reduced together
    window_ms: float  # from its last gradient being ready to the end of backward: what it can hide behind


def ddp_buckets(
    ready: Sequence[tuple[int, float]], first_cap: int = FIRST_BUCKET_BYTES, cap: int = BUCKET_BYTES
) -> list[Bucket]:
    """DDP's rebuilt buckets from (gradient bytes, ready time in ms) per parameter: parameters in ready order,
    a bucket closed once it holds at least its cap, then the time from each bucket's last gradient to the last
    gradient of all (the end of backward)."""
    if not ready:
        return []
    ordered = sorted(ready, key=lambda item: item[1])
    end = ordered[-1][1]
    buckets, size, limit = [], 0, first_cap
    for index, (nbytes, at) in enumerate(ordered):
        size += nbytes
        if size >= limit or index == len(ordered) - 1:
            buckets.append(Bucket(size, end - at))
            size, limit = 0, cap
    return buckets


def format_buckets(buckets: Sequence[Bucket]) -> str:
    """The CSV cell: 'bytes@window_ms;...' in the order DDP reduces them."""
    return ";".join(f"{bucket.bytes}@{bucket.window_ms:.3f}" for bucket in buckets)


def parse_buckets(text: str) -> list[Bucket]:
    if not isinstance(text, str) or not text:
        return []
    buckets = []
    for part in text.split(";"):
        nbytes, window = part.split("@")
        buckets.append(Bucket(int(nbytes), float(window)))
    return buckets


@dataclass(frozen=True)
class AlphaBeta:
    """The ring all-reduce model's constants, fitted at one world size."""

    alpha_s: float  # latency per ring hop
    beta_bytes_per_s: float  # bandwidth per link
    fitted_at: int  # the world size of the measurement

    def time_s(self, world_size: int, size: int) -> float:
        if world_size <= 1:
            return 0.0
        hops = 2 * (world_size - 1)
        return hops * self.alpha_s + hops / world_size * size / self.beta_bytes_per_s


def fit_alpha_beta(world_size: int, sizes: Sequence[int], times_s: Sequence[float]) -> AlphaBeta:
    """β from the bandwidth end of the curve, α from its latency end, as the Hockney model is measured: the slope
    b between the two largest messages gives β = 2(N-1) / (N·b); what the smallest message takes beyond b·S is
    its latency, α = (T(S_min) - b·S_min) / 2(N-1), kept at zero or above. (A least-squares line through every
    size lets a few noisy small messages set the bandwidth; measured here on a shaped 200 Mbit/s link it
    predicted half the time of a 4.7 MB all-reduce.) Times that do not grow at the large end give b = T/S."""
    if world_size < 2 or len(sizes) < 2:
        raise ValueError("fitting α and β needs at least 2 ranks and 2 message sizes")
    ordered_sizes, ordered_times = zip(*sorted(zip(sizes, times_s, strict=True)), strict=True)
    slope = _large_end_slope(ordered_sizes, ordered_times)
    hops = 2 * (world_size - 1)
    latency = max(0.0, ordered_times[0] - slope * ordered_sizes[0])
    return AlphaBeta(latency / hops, hops / (world_size * slope), world_size)


def _large_end_slope(sizes: Sequence[int], times: Sequence[float]) -> float:
    """Seconds per byte at the large end of a curve (sizes ascending): the slope between the two largest sizes,
    or the largest's time over its size when times do not grow there or only one size was measured."""
    if len(sizes) >= 2:
        slope = (times[-1] - times[-2]) / (sizes[-1] - sizes[-2])
        if slope > 0:
            return slope
    return times[-1] / sizes[-1]


class Link(Protocol):
    """An all-reduce time model: AlphaBeta (peak bandwidth, for published line figures) or SizedLink."""

    alpha_s: float
    fitted_at: int

    def time_s(self, world_size: int, size: int) -> float: ...


@dataclass(frozen=True)
class TwoStage:
    """An all-reduce over nodes of several ranks each, in two stages with their own α and β, as NCCL's hierarchical
    ring and tree behave to first order: a reduce-scatter and, at the end, an all-gather among the G ranks of each
    node over the node's fabric (NVLink, PCIe, or loopback; together a ring all-reduce among G ranks), and between
    them an all-reduce of each rank's 1/G shard across the n nodes, the G shards at once through the node's
    network links, so that each node sends 2(n-1)/n of the whole buffer over them:

        T(n, G, S) = [2(G-1)·α_intra + 2(G-1)/G · S/β_intra] + [2(n-1)·α_inter + 2(n-1)/n · S/β_inter]

    One rank per node leaves the network stage alone; one node, the fabric stage alone (a flat ring)."""

    intra: Link  # inside a node: fitted to an all-reduce measured on one node
    inter: Link  # between nodes, per node: fitted to one measured across nodes, the intra stage taken out

    def time_s(self, nodes: int, per_node: int, size: int) -> float:
        return self.intra.time_s(per_node, size) + self.inter.time_s(nodes, size)

    def algorithm(self, nodes: int, size: int) -> str:
        """Between nodes: ring or tree (SizedLink with NCCL), else ring."""
        pick = getattr(self.inter, "algorithm", None)
        return pick(nodes, size) if pick else "ring"


def fit_two_stage(inside: AllreduceCurve, across: AllreduceCurve, tree: bool = False) -> TwoStage:
    """The intra stage from a curve on one node (several ranks), the inter stage from a curve across nodes: with
    one rank per node it is the network alone; with G per node the intra stage's time at G is taken out first.
    Both keep the bandwidth each message size reached (SizedLink); tree: NCCL's tree may serve the network stage."""
    if inside.num_nodes != 1 or inside.world_size < 2 or across.num_nodes < 2:
        raise ValueError("a two-stage fit needs an all-reduce on one node of several ranks and one across nodes")
    intra = inside.sized()
    per_node = across.world_size // across.num_nodes
    pairs = zip(across.sizes, across.times_s, strict=True)
    network = [max(total - intra.time_s(per_node, size), 1e-12) for size, total in pairs]
    alpha = fit_alpha_beta(across.num_nodes, across.sizes, network).alpha_s
    return TwoStage(intra, sized_fit(across.num_nodes, across.sizes, network, alpha, tree))


@dataclass(frozen=True)
class AllreduceCurve:
    """Measured mean all-reduce times at one world size, by message size."""

    world_size: int
    num_nodes: int
    sizes: tuple[int, ...]  # ascending
    times_s: tuple[float, ...]
    cpu_times_s: tuple[float, ...] = ()  # the process's CPU time per all-reduce; () when not measured

    def time_s(self, size: int) -> float:
        """Linear between the two measured sizes around `size` (the α–β form, locally); past the largest, the
        line through the two largest extended; below the smallest, the smallest message's time (latency does not
        shrink)."""
        if self.world_size <= 1:
            return 0.0
        inside = _interpolate(self.sizes, self.times_s, size)
        if inside is not None:
            return inside
        if size < self.sizes[0]:
            return self.times_s[0]
        return self.times_s[-1] + _large_end_slope(self.sizes, self.times_s) * (size - self.sizes[-1])

    def cpu_time_s(self, size: int, world_size: int | None = None) -> float:
        """CPU time of one all-reduce of `size` bytes, interpolated like time_s (proportional to size outside
        the measured range); at another world size, scaled by the ring's bytes per rank, 2(N-1)/N."""
        if self.world_size <= 1 or not self.cpu_times_s:
            return 0.0
        inside = _interpolate(self.sizes, self.cpu_times_s, size)
        if inside is None:
            end = 0 if size < self.sizes[0] else -1
            inside = self.cpu_times_s[end] * size / self.sizes[end]
        count = world_size or self.world_size
        return inside * ((count - 1) / count) / ((self.world_size - 1) / self.world_size) if count > 1 else 0.0

    def fit(self) -> AlphaBeta:
        return fit_alpha_beta(self.world_size, self.sizes, self.times_s)

    def sized(self, tree: bool = False) -> SizedLink:
        """α from the latency end, and the bandwidth each measured size reached (link_model.sized_fit)."""
        return sized_fit(self.world_size, self.sizes, self.times_s, self.fit().alpha_s, tree)


def _interpolate(xs: Sequence[int], ys: Sequence[float], x: int) -> float | None:
    """Linear between the measured points around x; None outside them."""
    position = bisect.bisect_left(xs, x)
    if position < len(xs) and xs[position] == x:
        return ys[position]
    if 0 < position < len(xs):
        x0, x1, y0, y1 = xs[position - 1], xs[position], ys[position - 1], ys[position]
        return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


@dataclass(frozen=True)
class StepPrediction:
    world_size: int
    compute_ms: float
    comm_ms: float  # Σ all-reduce time of the buckets
    comm_cpu_ms: float  # CPU time of the all-reduces that overlap backward, added to the step (CPU ranks)
    step_ms: float  # compute + exposed, buckets overlapping backward as DDP schedules them
    fastest_step_ms: float  # perfect, free overlap: all communication back to back from the first bucket
    slowest_step_ms: float  # no overlap: compute + every all-reduce


def ring_bytes_per_rank(world_size: int) -> float:
    """What each rank sends in a ring all-reduce, as a share of the message: 2(N-1)/N."""
    return 2 * (world_size - 1) / world_size


def overlap_schedule(
    buckets: Sequence[Bucket], allreduce_ms: Callable[[int], float], cpu_ms: Callable[[int], float]
) -> tuple[float, float]:
    """(exposed ms, overlapped CPU ms): buckets reduced in order, one at a time, each from the moment its
    gradients are ready (times relative to the end of backward); exposed is how far the last one ends after
    backward does, and the CPU time is each all-reduce's share that falls before that end."""
    finished, overlapped_cpu = -math.inf, 0.0
    for bucket in buckets:
        started = max(finished, -bucket.window_ms)
        took = allreduce_ms(bucket.bytes)
        finished = started + took
        if took > 0:
            overlapped_cpu += cpu_ms(bucket.bytes) * min(1.0, max(0.0, -started) / took)
    return (max(0.0, finished), overlapped_cpu) if buckets else (0.0, 0.0)


def predict_step(
    world_size: int,
    compute_ms: float,
    buckets: Sequence[Bucket],
    allreduce_ms: Callable[[int], float],
    cpu_ms: Callable[[int], float] = lambda _size: 0.0,
) -> StepPrediction:
    if world_size <= 1 or not buckets:
        return StepPrediction(world_size, compute_ms, 0.0, 0.0, compute_ms, compute_ms, compute_ms)
    comm = sum(allreduce_ms(bucket.bytes) for bucket in buckets)
    earliest = max(bucket.window_ms for bucket in buckets)
    exposed, overlapped_cpu = overlap_schedule(buckets, allreduce_ms, cpu_ms)
    slowest = compute_ms + comm  # no overlap: nothing competes with compute, everything waits
    return StepPrediction(
        world_size,
        compute_ms,
        comm,
        overlapped_cpu,
        min(slowest, compute_ms + overlapped_cpu + exposed),
        compute_ms + max(0.0, comm - earliest),  # perfect, free overlap from the first bucket's ready time
        slowest,
    )


def prediction_counts(measured: Sequence[int], predict_to: int) -> list[int]:
    """The measured counts, then powers of two past the largest one, up to and including predict_to."""
    counts = sorted(set(measured))
    count = 1
    while count <= predict_to:
        if count > counts[-1]:
            counts.append(count)
        count *= 2
    if predict_to > counts[-1]:
        counts.append(predict_to)
    return counts
