"""Tier 1: every predicted row's band (ddp_bench/measurement/prediction.py) holds its point, on any buckets and
all-reduce models, and the Proposal shows it. The curves are TEST FIXTURES; the Proposal test reads the committed
study in results/proposal-cpu-2core/runs (measured rows)."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddp_bench.measurement.comm_choice import comm_at
from ddp_bench.measurement.prediction import predict_at
from ddp_bench.measurement.scaling_model import AllreduceCurve, Bucket
from ddp_bench.report.build import build_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

buckets = st.lists(st.builds(Bucket, st.integers(1_000, 100_000_000), st.floats(0.0, 200.0)), min_size=1, max_size=8)
bandwidths = st.lists(st.floats(1e8, 1e11), min_size=3, max_size=3)


# partial-node widening: none, or from 0.01 ms (a denormal width would vanish beside the step in floating point)
partial_node_ms = st.one_of(st.just(0.0), st.floats(0.01, 50.0))


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(buckets, bandwidths, st.integers(2, 512), st.floats(1.0, 500.0), st.booleans(), partial_node_ms)
def test_the_point_lies_inside_its_band(parts, busbw, count, compute_ms, tree, partial_ms):
    sizes = (2**20, 2**24, 2**26)
    curve = AllreduceCurve(2, 2, sizes, tuple(20e-6 + size / bw for size, bw in zip(sizes, busbw, strict=True)))
    comm = comm_at(count, count, [curve], None, on_cpu=False, tree=tree)
    row = predict_at(count, 64, compute_ms, parts, comm, partial_node_ms=partial_ms)
    low, point, high = (row[f"predicted_images_per_s{end}"] for end in ("_low", "", "_high"))
    assert low <= point * (1 + 1e-12) and point <= high * (1 + 1e-12)
    if partial_ms > 0:  # compute measured on part of a node widens the slow end
        assert low < 64 * count * 1e3 / row["step_ms"]


def test_the_proposal_shows_each_predicted_rows_band(tmp_path):
    report = build_report([os.path.join(ROOT, "results", "proposal-cpu-2core", "runs")], str(tmp_path), predict_to=16)
    predicted = [entry.rows[entry.rows["source"] == "predicted"] for entry in report.proposal.series]
    rows = [row for frame in predicted for _, row in frame.iterrows()]
    assert rows  # the weak series is modelled up to 16
    for row in rows:
        assert row["images_per_s_low"] <= row["images_per_s"] <= row["images_per_s_high"]
    text = (tmp_path / "proposal.md").read_text()
    assert "| *predicted* | 8 | 2 |" in text and "the model's band (low–high" in text
    line = next(line for line in text.splitlines() if line.startswith("| *predicted* | 8 |"))
    assert line.split(" | ")[4].count("–") == 1 and "(" in line.split(" | ")[4]  # images/s (low–high)


def test_measured_counts_keep_only_the_overlap_in_their_band():
    sizes = (2**20, 2**24)
    curve = AllreduceCurve(2, 2, sizes, (1e-3, 10e-3))
    comm = comm_at(2, 2, [curve], None, on_cpu=False, tree=True)
    row = predict_at(2, 32, 50.0, [Bucket(2**24, 0.0)], comm)
    # one bucket ready at the end of backward: no overlap possible, so the band closes on the point
    assert row["predicted_images_per_s_low"] == pytest.approx(row["predicted_images_per_s"])
    assert row["predicted_images_per_s_high"] == pytest.approx(row["predicted_images_per_s"])
    assert row["allreduce_algorithm"] == "measured"
