"""Tier 1: the emulated cluster's committed checks re-evaluated offline (ddp_bench/report/model_check.py), and the
check shown to fail when the model is broken on purpose.

The rows under results/emulated-cluster-cpu-2core/ are measurements (benchmarks/emulated_cluster.py, medians of 3
runs): 4 nodes are predicted from the 1- and 2-node rows and the 2-node all-reduce alone. Issue #25: a term fitted
to the model's own miss hid an all-reduce model twice too fast; with no such term, halving or doubling every
measured all-reduce time must move the 4-node prediction out of the 15 % target at both rates.
"""

import os

import pytest

from ddp_bench.report.model_check import check_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(ROOT, "results", "emulated-cluster-cpu-2core")
TOLERANCE = 0.15  # issue #20's target, as tests/test_emulated_cluster.py holds it


def four_nodes(rate: str, scale: float = 1.0):
    out = os.path.join(CLUSTER, rate)
    return check_rows(os.path.join(out, "fit"), os.path.join(out, "check"), 4, allreduce_scale=scale)


@pytest.mark.parametrize("rate", ["200mbit", "1gbit"])
def test_the_committed_four_node_checks_hold_without_a_fitted_term(rate):
    result = four_nodes(rate)
    assert result.comm_from == "α–β fit at 2 ranks (bandwidth by message size)"
    assert abs(result.ratio - 1) <= TOLERANCE, result
    assert result.predicted_low <= result.measured <= result.predicted_high, result  # inside the band
    # the model's parts at the fitted count, in sample (no term there to absorb the miss either)
    assert abs(result.in_sample - 1) <= TOLERANCE, result


@pytest.mark.parametrize("rate", ["200mbit", "1gbit"])
@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_the_check_fails_when_every_allreduce_time_is_halved_or_doubled(rate, scale):
    honest = four_nodes(rate)
    broken = four_nodes(rate, scale)
    assert abs(broken.ratio - 1) > TOLERANCE, broken
    # and in the direction the break pushes: a faster all-reduce, a higher prediction
    assert (broken.predicted > honest.predicted) == (scale < 1)


@pytest.mark.parametrize("scale", [1.0, 0.5, 2.0])
def test_the_two_stage_check_holds_and_fails_when_broken(scale):
    # 4 nodes x 2 from 1 x 2 and 2 x 2 (medians of 3): within 15 % and inside its band as measured; halving or
    # doubling every all-reduce time takes it outside both
    out = os.path.join(CLUSTER, "two-stage-1gbit")
    result = check_rows(os.path.join(out, "fit"), os.path.join(out, "check"), 8, allreduce_scale=scale)
    assert result.comm_from == "two-stage fit (4 node(s) × 2)"
    inside = result.predicted_low <= result.measured <= result.predicted_high
    assert (abs(result.ratio - 1) <= TOLERANCE) == (scale == 1.0), result
    assert inside == (scale == 1.0), result


def test_a_directory_without_rows_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no rank"):
        check_rows(str(tmp_path), str(tmp_path), 4)
