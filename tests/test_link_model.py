"""Tier 1: the all-reduce past the measured counts (ddp_bench/measurement/link_model.py, comm_choice.py), on
hand-worked numbers. The curves below are TEST FIXTURES, not measurements, but for the last test: Azure's published
8 x A100 table, through benchmarks/published/."""

import os

import pytest

from ddp_bench.measurement.comm_choice import comm_at
from ddp_bench.measurement.link_model import SizedLink, link_from_busbw, sized_fit, tree_correction
from ddp_bench.measurement.scaling_model import AllreduceCurve
from ddp_bench.predict.run import intra_curve
from ddp_bench.predict.spec import load_spec

MIB = 2**20
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_bandwidth_each_size_reached_is_kept_past_the_measured_count():
    # measured at 2 ranks, no latency: 10, 20 and 40 GB/s bus bandwidth at 1, 16 and 64 MiB
    link = link_from_busbw(2, [MIB, 16 * MIB, 64 * MIB], [10e9, 20e9, 40e9])
    assert link.busbw == pytest.approx((10e9, 20e9, 40e9))
    # at 8 ranks a 16 MiB bucket moves at the 20 GB/s it reached, not at the 40 GB/s peak: 2·7/8 · S / 20e9
    assert link.time_s(8, 16 * MIB) == pytest.approx(2 * 7 / 8 * 16 * MIB / 20e9)
    # 32 MiB lies halfway between 16 and 64 MiB in log(size): 30 GB/s
    assert link.busbw_at(32 * MIB) == pytest.approx(30e9)
    assert link.busbw_at(256 * MIB) == pytest.approx(40e9) and link.past_sizes(256 * MIB)
    assert link.busbw_at(1024) == pytest.approx(10e9) and not link.past_sizes(MIB)


def test_a_sized_fit_takes_the_ring_latency_out_before_the_bandwidth():
    # 4 ranks, α = 5 µs: 6 hops take 30 µs; 1 MiB in 30 µs + 6/4 · 1 MiB / 10 GB/s
    took = 30e-6 + 1.5 * MIB / 10e9
    link = sized_fit(4, [MIB], [took], alpha_s=5e-6)
    assert link.busbw == pytest.approx((10e9,))
    assert link.time_s(4, MIB) == pytest.approx(took)


def test_nccl_takes_the_tree_where_it_is_faster_and_says_so():
    link = SizedLink(10e-6, (MIB,), (10e9,), 2, tree=True)
    # 64 nodes, 64 KiB: ring 2·63·10 µs + 2·63/64 · 65536 / 10 GB/s = 1272.9 µs; tree 2·6·(2·10 µs) = 240 µs
    # + 2 · 65536 / (0.92 · 0.6 · 10 GB/s) = 23.7 µs (NCCL's Simple tree correction at 64 KiB is 0.6)
    assert tree_correction(65536) == 0.6
    assert link.ring_s(64, 65536) == pytest.approx(1260e-6 + 2 * 63 / 64 * 65536 / 10e9)
    assert link.tree_s(64, 65536) == pytest.approx(240e-6 + 2 * 65536 / (0.92 * 0.6 * 10e9))
    assert link.algorithm(64, 65536) == "tree" and link.time_s(64, 65536) == link.tree_s(64, 65536)
    # 2 nodes, 256 MiB: the ring's bandwidth wins
    assert link.algorithm(2, 256 * MIB) == "ring" and link.time_s(2, 256 * MIB) == link.ring_s(2, 256 * MIB)
    # gloo has no tree
    ring_only = SizedLink(10e-6, (MIB,), (10e9,), 2)
    assert ring_only.algorithm(64, 65536) == "ring" and ring_only.time_s(64, 65536) == link.ring_s(64, 65536)


def test_past_the_measured_counts_the_band_spans_the_models_that_fit_the_same_curve():
    # a curve at 2 ranks whose bus bandwidth grows with size: 5 GB/s at 1 MiB, 10 at 4 MiB, 20 at 16 MiB
    sizes = (MIB, 4 * MIB, 16 * MIB)
    curve = AllreduceCurve(2, 2, sizes, tuple(size / bw for size, bw in zip(sizes, (5e9, 10e9, 20e9), strict=True)))
    measured = comm_at(2, 2, [curve], None, on_cpu=False, tree=True)
    assert measured.slow_ms(4 * MIB) == measured.fast_ms(4 * MIB) == measured.allreduce_ms(4 * MIB)
    assert measured.algorithm(4 * MIB) == "measured"
    past = comm_at(8, 8, [curve], None, on_cpu=False, tree=True)
    point = past.allreduce_ms(4 * MIB)
    assert past.fast_ms(4 * MIB) < point <= past.slow_ms(4 * MIB)  # the peak-β fit is the fast end
    assert past.source == "α–β fit at 2 ranks (bandwidth by message size)"


def test_on_a_published_table_the_bucket_moves_at_its_own_size_not_at_peak():
    # Azure's 8 x A100 all-reduce table (benchmarks/published/dgx-a100-resnet50-amp.toml cites it): a 25 MiB
    # bucket took 0.366 ms there (between the 16 and 32 MiB rows); the peak-bandwidth fit says 0.238 ms, 35 % too
    # fast (issue #25); the fit that keeps the bandwidth by size stays within 1 % of the table.
    curve = intra_curve(load_spec(os.path.join(ROOT, "benchmarks", "published", "dgx-a100-resnet50-amp.toml")))
    bucket = 25 * MIB
    table = curve.time_s(bucket)
    assert table == pytest.approx(0.366e-3, rel=0.01)
    assert curve.fit().time_s(8, bucket) < 0.7 * table
    assert curve.sized().time_s(8, bucket) == pytest.approx(table, rel=0.01)
