"""Tier 1: the scaling model's arithmetic (ddp_bench/measurement/scaling_model.py), on hand-worked numbers."""

import math

import pytest

from ddp_bench.measurement.allreduce import bus_bandwidth
from ddp_bench.measurement.scaling_model import (
    AllreduceCurve,
    AlphaBeta,
    Bucket,
    ddp_buckets,
    fit_alpha_beta,
    fit_two_stage,
    format_buckets,
    overlap_schedule,
    parse_buckets,
    predict_step,
    prediction_counts,
)
from ddp_bench.models import build_model

# What DDP itself reported (`_get_ddp_logging_data()`) after a real 2-rank gloo run of
# build_model("resnet18", 3, 10, 32): the order gradients became ready, and the buckets it rebuilt from it.
RESNET18_READY_ORDER = [
    61, 60, 58, 59, 57, 55, 56, 54, 52, 53, 51, 49, 50, 48, 46, 47, 45, 43, 44, 42, 40, 41, 39, 37, 38, 36, 34,
    35, 33, 31, 32, 30, 28, 29, 27, 25, 26, 24, 22, 23, 21, 19, 20, 18, 16, 17, 15, 13, 14, 12, 10, 11, 9, 7, 8,
    6, 4, 5, 3, 1, 2, 0,
]  # fmt: skip
RESNET18_DDP_BUCKET_BYTES = [9461800, 26494976, 8739072]


def test_buckets_are_the_ones_ddp_rebuilds():
    params = list(build_model("resnet18", 3, 10, 32).parameters())
    ready = [(params[index].numel() * 4, float(at)) for at, index in enumerate(RESNET18_READY_ORDER)]
    buckets = ddp_buckets(ready)
    assert [bucket.bytes for bucket in buckets] == RESNET18_DDP_BUCKET_BYTES
    end = len(RESNET18_READY_ORDER) - 1  # the last gradient's time
    assert buckets[-1].window_ms == 0  # the last bucket waits for the end of backward
    assert buckets[0].window_ms == end - 4  # the first closes at its 5th parameter (the 9.4 MB conv weight)


def test_the_course_cnn_has_one_big_early_bucket_and_one_late_small_one():
    params = list(build_model("mnist_cnn", 1, 10, 28).parameters())
    ready = [(param.numel() * 4, float(at)) for at, param in enumerate(reversed(params))]
    assert [bucket.bytes for bucket in ddp_buckets(ready)] == [4724264, 75264]  # as the 2-rank rows record


def test_buckets_round_trip_through_the_csv_cell():
    buckets = [Bucket(4724264, 46.856), Bucket(75264, 0.0)]
    assert format_buckets(buckets) == "4724264@46.856;75264@0.000"
    assert parse_buckets(format_buckets(buckets)) == buckets
    assert parse_buckets("") == [] and parse_buckets(float("nan")) == []


def test_alpha_beta_fit_recovers_the_ring_constants():
    alpha, beta, n = 20e-6, 10e9, 4
    sizes = [4096 * 4**k for k in range(8)]
    times = [2 * (n - 1) * alpha + 2 * (n - 1) / n * size / beta for size in sizes]
    fit = fit_alpha_beta(n, sizes, times)
    assert fit.alpha_s == pytest.approx(alpha, rel=1e-6)
    assert fit.beta_bytes_per_s == pytest.approx(beta, rel=1e-6)
    # at 16 ranks, 100 MB: 30 hops of latency and 15/8 of the message over each link
    assert fit.time_s(16, 100_000_000) == pytest.approx(30 * alpha + 30 / 16 * 1e8 / beta)
    # noise at the small end does not move β: it comes from the two largest messages
    noisy = list(times)
    noisy[0], noisy[1] = noisy[0] * 3, noisy[1] * 0.5
    assert fit_alpha_beta(n, sizes, noisy).beta_bytes_per_s == pytest.approx(beta, rel=1e-6)
    # times that shrink at the large end: all of the largest message's time counts as bandwidth
    assert fit_alpha_beta(2, [4096, 8192], [1.0, 0.5]).beta_bytes_per_s == pytest.approx(2 / 2 * 8192 / 0.5)


def test_busbw_for_large_messages_is_the_fitted_link_bandwidth():
    """Units: allreduce.csv's busbw is nccl-tests' definition, algbw × 2(N-1)/N in GB/s = 1e9 bytes/s. For large
    messages it tends to β, the per-link bandwidth of the α–β model; at the model's message size (a few MB of
    gradients) latency still counts and busbw sits below β, so a large-message busbw from nccl-tests overstates
    what a small model's buckets get."""
    alpha, beta, n = 50e-6, 2e9, 8
    time_of = lambda size: 2 * (n - 1) * alpha + 2 * (n - 1) / n * size / beta  # noqa: E731
    busbw = lambda size: bus_bandwidth(size / time_of(size), n)  # noqa: E731  bytes/s, as the benchmark computes
    assert busbw(2**30) == pytest.approx(beta, rel=0.01)  # 1 GiB: within 1 % of β
    assert busbw(4_800_000) < 0.9 * beta  # the course CNN's 4.8 MB of gradients: latency still shows
    # in closed form, busbw(S) = S / (S/β + N·α): the latency term never vanishes at the model's size
    assert busbw(4_800_000) == pytest.approx(4_800_000 / (4_800_000 / beta + n * alpha))


def test_curve_interpolates_between_measured_sizes_and_fits_outside():
    curve = AllreduceCurve(2, 2, (1000, 2000, 4000), (0.010, 0.015, 0.030), (0.001, 0.002, 0.004))
    assert curve.time_s(2000) == 0.015
    assert curve.time_s(1500) == pytest.approx(0.0125)
    assert curve.time_s(8000) == pytest.approx(0.030 + 4000 * (0.015 / 2000))  # the large end's line, extended
    assert curve.time_s(10) == 0.010  # below the smallest size: its latency
    assert curve.cpu_time_s(3000) == pytest.approx(0.003)
    assert curve.cpu_time_s(8000) == pytest.approx(0.008)  # proportional past the largest size
    assert curve.cpu_time_s(3000, 4) == pytest.approx(0.003 * (3 / 4) / (1 / 2))  # ring bytes per rank
    assert AllreduceCurve(2, 1, (1, 2), (1.0, 2.0)).cpu_time_s(1) == 0.0  # not measured


def test_overlap_schedule_by_hand():
    one_ms_per_kb = lambda size: size / 1000  # noqa: E731
    # 8 KB ready 10 ms before the end of backward: 8 ms, hidden; then 3 KB at the end: 3 ms exposed
    assert overlap_schedule([Bucket(8000, 10.0), Bucket(3000, 0.0)], one_ms_per_kb, lambda _s: 0)[0] == 3.0
    # 20 KB ready 10 ms before: runs 10 ms past backward, and the last bucket queues behind it
    assert overlap_schedule([Bucket(20000, 10.0), Bucket(3000, 0.0)], one_ms_per_kb, lambda _s: 0)[0] == 13.0
    # CPU time counts for the share before the end of backward: half of the 20 KB bucket's
    _exposed, cpu = overlap_schedule([Bucket(20000, 10.0)], one_ms_per_kb, lambda size: size / 4000)
    assert cpu == pytest.approx(5.0 * 0.5)


def test_step_prediction_and_its_bounds():
    buckets = [Bucket(20000, 10.0), Bucket(3000, 0.0)]
    step = predict_step(4, 50.0, buckets, lambda size: size / 1000)
    assert (step.comm_ms, step.step_ms) == (23.0, 63.0)
    assert step.slowest_step_ms == 73.0  # no overlap: 50 + 23
    assert step.fastest_step_ms == 63.0  # all 23 ms from 10 ms before the end
    assert step.fastest_step_ms <= step.step_ms <= step.slowest_step_ms
    alone = predict_step(1, 50.0, buckets, lambda size: math.inf)
    assert alone.step_ms == alone.slowest_step_ms == 50.0


def test_prediction_counts():
    assert prediction_counts([1, 2], 16) == [1, 2, 4, 8, 16]
    assert prediction_counts([1, 2, 3], 12) == [1, 2, 3, 4, 8, 12]
    assert prediction_counts([1, 8], 8) == [1, 8]


def test_the_two_stage_model_recovers_its_stages_and_predicts_by_hand():
    # TEST FIXTURE curves made from known stages: inside a node α = 5 µs, β = 50 GB/s; between nodes α = 20 µs,
    # β = 1 GB/s per node. Measured: 2 ranks on one node, and 2 nodes × 2 ranks.
    intra, inter = AlphaBeta(5e-6, 50e9, 2), AlphaBeta(20e-6, 1e9, 2)
    sizes = (2**20, 4 * 2**20, 16 * 2**20)
    inside = AllreduceCurve(2, 1, sizes, tuple(intra.time_s(2, size) for size in sizes))
    across = AllreduceCurve(4, 2, sizes, tuple(intra.time_s(2, s) + inter.time_s(2, s) for s in sizes))
    stages = fit_two_stage(inside, across)
    # the bandwidth at every measured size (the size dependence kept: here none, so each size gives β back)
    assert stages.intra.alpha_s == pytest.approx(5e-6) and stages.intra.busbw == pytest.approx([50e9] * 3)
    assert stages.inter.alpha_s == pytest.approx(20e-6) and stages.inter.busbw == pytest.approx([1e9] * 3)
    # 4 MB on 4 nodes × 2: intra 2·1·5 µs + 2·1/2 · 4e6/50e9 = 10 + 80 µs; inter 2·3·20 µs + 2·3/4 · 4e6/1e9 =
    # 120 + 6000 µs; 6210 µs in all
    assert stages.time_s(4, 2, 4_000_000) == pytest.approx(6210e-6)
    assert stages.time_s(4, 1, 4_000_000) == pytest.approx(6120e-6)  # one rank per node: the network alone
    assert stages.time_s(1, 2, 4_000_000) == pytest.approx(90e-6)  # one node: the fabric alone
    with pytest.raises(ValueError):
        fit_two_stage(across, across)
