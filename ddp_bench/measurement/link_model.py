"""All-reduce time at rank counts nobody measured, keeping what a measured curve says about each message size, and
NCCL's choice between its ring and its tree. Pure arithmetic (no torch, no pandas).

A measured all-reduce curve at N0 ranks gives, at each measured size S, the bus bandwidth that size reached once
the ring's latency is taken out:

    busbw(S) = 2(N0-1)/N0 · S / (T0(S) - 2(N0-1)·α)

with α per hop from the curve's latency end (`fit_alpha_beta`). DDP's buckets are 25 MiB, where NCCL reaches about
half of its peak bandwidth; a fit that keeps only the peak (the slope between the two largest messages) makes
them too fast (issue #25: a 25 MiB all-reduce 34 % too fast on a published 8 x A100 table). So at another count N:

    ring(N, S) = 2(N-1)·α + 2(N-1)/N · S / busbw(S)

busbw(S) interpolated in log(size) between the measured sizes; past the largest measured size, the largest
size's (a prediction past the measured sizes, `past_sizes`), below the smallest, the smallest's.

NCCL (GPU ranks) also has a tree, whose latency grows with log2 of the nodes, not with their number. Its time is
modelled as NCCL 2.20.3's tuner models it (src/graph/tuning.cc, commit b6475625, Simple protocol): the tree's
bus bandwidth is 0.92 of the ring's (`busBw*.92`), further scaled at medium sizes by NCCL's
`treeCorrectionFactor` (Simple row, by log2(bytes/64)), its algorithm bandwidth half of that (`ratio *= .5`),
and its network step latency 28 µs against the ring's 14.0 µs (`hwLat`, NET, Simple), so twice α per step:

    tree(n, S) = 2·log2(n)·(2α) + 2·S / (0.92 · correction(S) · busbw(S))

The faster of the two is used for each size and count, as NCCL's tuner picks, and `algorithm` says which. gloo
(CPU ranks) has only the ring.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

TREE_BANDWIDTH_SHARE = 0.92  # NCCL 2.20.3 tuning.cc: if (a == NCCL_ALGO_TREE) busBw = std::min(busBw*.92, ...)
TREE_STEP_LATENCY_RATIO = 28.0 / 14.0  # hwLat[NET]: Tree Simple 28 µs, Ring Simple 14.0 µs
# treeCorrectionFactor[NCCL_PROTO_SIMPLE], powers of two from 64 B (index log2(bytes >> 6)); 1.0 past the table
TREE_CORRECTION_SIMPLE = (
    0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.8, 0.7, 0.6, 0.6, 0.5, 0.5, 0.5, 0.5, 0.6, 0.7, 0.8, 0.7, 0.7, 0.8, 0.9, 0.9,
)  # fmt: skip


def tree_correction(size: int) -> float:
    shifted = int(size) >> 6
    index = shifted.bit_length() - 1 if shifted > 0 else 0
    return TREE_CORRECTION_SIMPLE[index] if index < len(TREE_CORRECTION_SIMPLE) else 1.0


@dataclass(frozen=True)
class SizedLink:
    """α per ring hop and the bus bandwidth reached at each measured message size (bytes/s)."""

    alpha_s: float
    sizes: tuple[int, ...]  # ascending
    busbw: tuple[float, ...]
    fitted_at: int  # ranks (or nodes) of the measurement
    tree: bool = False  # NCCL: the faster of ring and tree; gloo: ring only

    def busbw_at(self, size: int) -> float:
        """Interpolated in log(size) between the measured sizes; the nearest end's outside them."""
        if size <= self.sizes[0]:
            return self.busbw[0]
        if size >= self.sizes[-1]:
            return self.busbw[-1]
        at = bisect.bisect_left(self.sizes, size)
        x0, x1 = math.log(self.sizes[at - 1]), math.log(self.sizes[at])
        share = (math.log(size) - x0) / (x1 - x0)
        return self.busbw[at - 1] + (self.busbw[at] - self.busbw[at - 1]) * share

    def past_sizes(self, size: int) -> bool:
        return size > self.sizes[-1]

    def ring_s(self, count: int, size: int) -> float:
        if count <= 1:
            return 0.0
        hops = 2 * (count - 1)
        return hops * self.alpha_s + hops / count * size / self.busbw_at(size)

    def tree_s(self, count: int, size: int) -> float:
        if count <= 1:
            return 0.0
        latency = 2 * math.ceil(math.log2(count)) * TREE_STEP_LATENCY_RATIO * self.alpha_s
        return latency + 2 * size / (TREE_BANDWIDTH_SHARE * tree_correction(size) * self.busbw_at(size))

    def algorithm(self, count: int, size: int) -> str:
        if not self.tree or count <= 1:
            return "ring"
        return "tree" if self.tree_s(count, size) < self.ring_s(count, size) else "ring"

    def time_s(self, count: int, size: int) -> float:
        if self.algorithm(count, size) == "tree":
            return self.tree_s(count, size)
        return self.ring_s(count, size)

    def describe(self, unit: str = "ranks") -> str:
        low, high = min(self.busbw), max(self.busbw)
        return (
            f"α = {self.alpha_s * 1e6:.1f} µs per hop, bus bandwidth {low / 1e9:.3f}–{high / 1e9:.3f} GB/s by message "
            f"size ({self.sizes[0]:,}–{self.sizes[-1]:,} bytes), fitted at {self.fitted_at} {unit}"
            + ("; ring or tree, the faster" if self.tree else "; ring")
        )


def sized_fit(
    world_size: int, sizes: Sequence[int], times_s: Sequence[float], alpha_s: float, tree: bool = False
) -> SizedLink:
    """The bus bandwidth at each measured size, net of the ring's latency 2(N-1)·α."""
    if world_size < 2 or not sizes:
        raise ValueError("a sized fit needs at least 2 ranks and one message size")
    hops = 2 * (world_size - 1)
    pairs = sorted(zip(sizes, times_s, strict=True))
    busbw = []
    for size, took in pairs:
        net = took - hops * alpha_s
        if net <= 0:
            net = took  # latency-bound: the whole time counts against bandwidth
        busbw.append(hops / world_size * size / net)
    return SizedLink(alpha_s, tuple(size for size, _ in pairs), tuple(busbw), world_size, tree)


def link_from_busbw(
    world_size: int, sizes: Sequence[int], busbw_bytes_per_s: Sequence[float], alpha_s: float = 0.0, tree: bool = False
) -> SizedLink:
    """A published table (nccl-tests' size and busbw, measured at `world_size` ranks) or a line figure (one size)."""
    if len(sizes) != len(busbw_bytes_per_s) or not sizes:
        raise ValueError("sizes and bus bandwidths must pair up, one or more")
    if any(value <= 0 for value in (*sizes, *busbw_bytes_per_s)) or alpha_s < 0:
        raise ValueError("sizes and bus bandwidths must be positive, latency not negative")
    times = [2 * (world_size - 1) / world_size * size / bw for size, bw in zip(sizes, busbw_bytes_per_s, strict=True)]
    hops = 2 * (world_size - 1)
    return sized_fit(world_size, sizes, [t + hops * alpha_s for t in times], alpha_s, tree)
