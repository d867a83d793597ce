"""Tier 1 + 2: compute drift (issue #25): the slowest of N ranks from the recorded per-step quantiles, by hand and
against Monte Carlo draws; the point inside its band; the report's drift on hand-made rows; and a real 2-rank gloo
run that records the quantiles and is predicted at 4 ranks.

The hand-made rows and distributions are TEST FIXTURES, not measurements.
"""

import csv
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddp_bench.measurement.comm_choice import comm_at
from ddp_bench.measurement.compute_drift import (
    NO_DRIFT,
    QUANTILE_COLUMNS,
    QUANTILE_LEVELS,
    StepQuantiles,
    compute_drift,
    quantile_cells,
    slowest_of,
    step_quantiles,
    tail_ms,
)
from ddp_bench.measurement.prediction import PARTIAL_NODE_SHARE, predict_at
from ddp_bench.measurement.scaling_model import AllreduceCurve, Bucket
from ddp_bench.report.build import build_report
from ddp_bench.results.records import COLUMNS
from tests.helpers.rank_rows import read_rows
from tests.helpers.report_runs import BUCKETS, GPU, allreduce_fixture, timed_fixture_run
from tests.helpers.runs import clean_env, run_cli, run_torchrun

UNIFORM = [(0.0, 0.0), (1.0, 1.0)]


@pytest.mark.parametrize("n", [1, 2, 3, 8, 100])
def test_the_slowest_of_n_uniform_draws_by_hand(n):
    assert slowest_of(n, UNIFORM) == pytest.approx(n / (n + 1))  # E[max of n U(0,1)] = n/(n+1)


def test_the_slowest_of_a_two_piece_distribution_by_hand():
    # half the steps uniform on 1-2 ms, half on 2-4 ms: the mean is 0.5 x 1.5 + 0.5 x 3 = 2.25 ms;
    # the slowest of two is 4 − ∫F² = 4 − (1/0.5 x 0.5³/3 + 2/0.5 x (1 − 0.5³)/3) = 4 − 1.25 = 2.75 ms
    points = [(0.0, 1.0), (0.5, 2.0), (1.0, 4.0)]
    assert slowest_of(1, points) == pytest.approx(2.25)
    assert slowest_of(2, points) == pytest.approx(2.75)


@pytest.mark.parametrize("n", [1, 2, 8, 64])
def test_the_slowest_of_n_matches_monte_carlo_draws(n):
    quantiles = StepQuantiles((40.0, 41.0, 42.0, 43.0, 45.0, 48.0, 52.0, 60.0), 500)
    rng = np.random.default_rng(25)
    draws = np.interp(rng.random((100_000, n)), QUANTILE_LEVELS, quantiles.values_ms)  # inverse-CDF sampling
    assert slowest_of(n, quantiles.points()) == pytest.approx(draws.max(axis=1).mean(), rel=2e-3)


def test_the_recorded_quantiles_describe_samples_drawn_from_a_skewed_distribution():
    rng = np.random.default_rng(7)
    samples = 50 + rng.exponential(5.0, 4000)
    quantiles = step_quantiles(list(samples))
    assert quantiles.samples == 4000
    assert quantiles.values_ms == pytest.approx(tuple(np.quantile(samples, QUANTILE_LEVELS)))
    # within the pooled steps' reach, the model's slowest of 8 is the draws' own
    empirical = samples[: 4000 // 8 * 8].reshape(-1, 8).max(axis=1).mean()
    assert slowest_of(8, quantiles.points()) == pytest.approx(empirical, rel=0.015)
    assert set(quantile_cells(list(samples))) <= set(COLUMNS)


def test_the_drift_grows_with_the_count_and_stops_at_the_recorded_max():
    quantiles = StepQuantiles((40.0, 41.0, 42.0, 43.0, 45.0, 48.0, 52.0, 60.0), 20)
    ratios = [compute_drift(2, m, quantiles).ratio for m in (2, 4, 16, 1024)]
    assert ratios[0] == 1 and ratios == sorted(ratios) and ratios[1] > 1
    assert compute_drift(2, 1024, quantiles).ratio < 60 / slowest_of(2, quantiles.points())  # the CDF ends at 60
    assert not compute_drift(2, 16, quantiles).capped and tail_ms(16, quantiles) == 0
    far = compute_drift(2, 1024, quantiles)
    # past the 20 steps pooled: b = (60 − 42) / ln(21/2), tail = b · ln(1025/21), as a share of the slowest of 2
    assert far.capped and far.tail_share == pytest.approx(
        18 / math.log(10.5) * math.log(1025 / 21) / slowest_of(2, quantiles.points())
    )
    assert compute_drift(2, 4, None) == NO_DRIFT and "before schema 3" in NO_DRIFT.note()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(1.0, 500.0), min_size=8, max_size=8),
    st.integers(3, 400),
    st.integers(1, 64),
    st.integers(1, 4096),
    st.floats(0.0, 50.0),
)
def test_the_drifted_point_lies_inside_its_band(values, pooled, measured, count, partial_ms):
    quantiles = StepQuantiles(tuple(sorted(values)), pooled)
    drift = compute_drift(measured, count, quantiles)
    anchor = quantiles.values_ms[2]  # the median
    curve = AllreduceCurve(2, 2, (2**20, 2**24), (1e-3, 10e-3))
    comm = comm_at(count, count, [curve], None, on_cpu=False, tree=True)
    row = predict_at(count, 32, anchor * drift.ratio, [Bucket(2**24, 5.0)], comm, partial_ms, anchor * drift.tail_share)
    low, point, high = (row[f"predicted_images_per_s{end}"] for end in ("_low", "", "_high"))
    assert low <= point * (1 + 1e-12) and point <= high * (1 + 1e-12)
    # never faster than the measured count, never past the slowest step recorded (in the anchor's scale)
    ceiling = quantiles.values_ms[-1] / slowest_of(min(measured, count), quantiles.points())
    assert 1 - 1e-12 <= drift.ratio <= ceiling * (1 + 1e-12)


QUANTILES = dict(
    compute_step_min_ms=20.0,
    compute_step_p25_ms=22.0,
    compute_step_p50_ms=24.0,
    compute_step_p75_ms=25.0,
    compute_step_p90_ms=26.0,
    compute_step_p95_ms=28.0,
    compute_step_p99_ms=30.0,
    compute_step_max_ms=32.0,
    compute_steps_pooled=20,
)


def test_the_report_applies_the_drift_past_the_largest_run_by_hand(tmp_path):
    # 2 GPUs busy on a node of 4: the 4-rank prediction is marked part of a node
    node = dict(busy_devices_on_node=2, devices_on_node=4)
    timed_fixture_run(tmp_path, "w1", 1, [2.0], compute_step_ms=20.0, job_compute_step_ms=20.0,
                      grad_buckets=BUCKETS, **GPU, **QUANTILES, busy_devices_on_node=1, devices_on_node=4)  # fmt: skip
    timed_fixture_run(tmp_path, "w2", 2, [2.5] * 2, compute_step_ms=25.0, job_compute_step_ms=25.0,
                      grad_buckets=BUCKETS, **GPU, **QUANTILES, **node)  # fmt: skip
    allreduce_fixture(tmp_path, world=2, nodes=2)
    report = build_report([str(tmp_path)], str(tmp_path / "report"), predict_to=4)
    (model,) = report.models
    rows = model.predictions.set_index("world_size")
    points = [(level, QUANTILES[column]) for level, column in zip(QUANTILE_LEVELS, QUANTILE_COLUMNS, strict=True)]
    ratio = slowest_of(4, points) / slowest_of(2, points)
    assert ratio > 1 and rows.loc[2, "compute_drift"] == 1 and not rows.loc[2, "partial_node"]
    assert rows.loc[4, "compute_drift"] == pytest.approx(ratio) and rows.loc[4, "compute_ms"] == pytest.approx(
        25 * ratio
    )
    # as in test_report_scaling's by-hand case, the 1 MB bucket is exposed 1.5 ms at 4 ranks; no overlap: + 7.5 ms
    assert rows.loc[4, "step_ms"] == pytest.approx(25 * ratio + 1.5)
    assert rows.loc[4, "partial_node"] and "part of a node" in rows.loc[4, "compute_from"]
    slow_end = 25 * ratio + 7.5 + PARTIAL_NODE_SHARE * 25  # 4 ranks are fewer than the 20 steps pooled: no tail
    assert rows.loc[4, "predicted_images_per_s_low"] == pytest.approx(256_000 / slow_end)
    # the fast end takes the drift's own error as well: the measured compute step undrifted, perfect overlap
    assert rows.loc[4, "predicted_images_per_s_high"] == pytest.approx(256_000 / 25)
    predictions = pd.read_csv(tmp_path / "report" / "predictions.csv")
    assert {"compute_drift", "partial_node"} <= set(predictions.columns)
    assert "compute drift past 2" in (tmp_path / "report" / "summary.md").read_text()


def test_rows_without_quantiles_get_no_drift_and_the_notes_say_so(tmp_path):
    nan = float("nan")
    empty = {column: nan for column in QUANTILE_COLUMNS}
    for run_id, world, step in (("w1", 1, 20.0), ("w2", 2, 25.0)):
        timed_fixture_run(tmp_path, run_id, world, [2.0] * world, compute_step_ms=step, job_compute_step_ms=step,
                          grad_buckets=BUCKETS, **GPU, **empty)  # fmt: skip
    allreduce_fixture(tmp_path, world=2, nodes=2)
    report = build_report([str(tmp_path)], str(tmp_path / "report"), predict_to=4)
    (model,) = report.models
    assert model.predictions.set_index("world_size").loc[4, "compute_ms"] == pytest.approx(25.0)
    assert "no compute drift past 2" in model.compute_source
    assert math.isnan(model.predictions.set_index("world_size").loc[4, "compute_drift"])  # not modelled: not 1


def test_ranks_on_mig_slices_are_not_part_of_a_node(tmp_path):
    # one rank per MIG slice (as sweep's warning): busy slices say nothing of a node's other GPUs
    for run_id, world in (("w1", 1), ("w2", 2)):
        timed_fixture_run(tmp_path, run_id, world, [2.0] * world, compute_step_ms=25.0, job_compute_step_ms=25.0,
                          grad_buckets=BUCKETS, **GPU, **QUANTILES, busy_devices_on_node=world, devices_on_node=4,
                          mig_slice="MIG-5c5b1f7e-0000-0000-0000-000000000000")  # fmt: skip
    allreduce_fixture(tmp_path, world=2, nodes=2)
    report = build_report([str(tmp_path)], str(tmp_path / "report"), predict_to=4)
    (model,) = report.models
    assert not model.predictions.set_index("world_size").loc[4, "partial_node"]


@pytest.mark.long
@pytest.mark.distributed
def test_a_real_two_rank_run_records_the_quantiles_and_is_predicted_at_four(tmp_path):
    out = tmp_path / "results"
    env = clean_env(OMP_NUM_THREADS="1")
    done = run_torchrun(2, ["--device", "cpu", "--steps", "6", "--warmup-steps", "1", "--out", str(out)], env=env)
    assert done.returncode == 0, done.stderr
    rows = read_rows(out)
    for row in rows:
        values = [float(row[column]) for column in QUANTILE_COLUMNS]
        assert values == sorted(values) and values[0] > 0 and row["compute_steps_pooled"] == "20"  # 2 ranks x 10
        assert row["busy_devices_on_node"] == row["devices_on_node"] == ""  # CPU ranks: not applicable
    assert [row[QUANTILE_COLUMNS[4]] for row in rows] == [rows[0][QUANTILE_COLUMNS[4]]] * 2  # pooled: one on all
    allreduce = ["allreduce", "--device", "cpu", "--max-bytes", str(2**22), "--iters", "3", "--warmup", "1"]
    done = run_torchrun(2, [*allreduce, "--out", str(out / "allreduce")], env=env)
    assert done.returncode == 0, done.stderr
    report = run_cli(["report", str(out), "--out", str(tmp_path / "report"), "--predict-to", "4"])
    assert report.returncode == 0, report.stderr
    with open(tmp_path / "report" / "predictions.csv", newline="") as handle:
        predicted = {int(row["world_size"]): row for row in csv.DictReader(handle)}
    assert float(predicted[2]["compute_drift"]) == 1 and float(predicted[4]["compute_drift"]) >= 1
    assert "compute drift past 2" in (tmp_path / "report" / "summary.md").read_text()
