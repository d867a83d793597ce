"""Tier 1: `python -m ddp_bench predict --spec FILE.toml [--json]` (ddp_bench/predict/). The spec below is issue
#25's interface, verbatim: its figures are the issue's example (a TEST FIXTURE here, not a claim about a cluster)."""

import json
import subprocess
import sys

import pytest

from ddp_bench.cli import main
from ddp_bench.measurement.compute_drift import compute_drift, slowest_of
from ddp_bench.predict.run import PARTIAL_NODE_SHARE, predict_rows
from ddp_bench.predict.spec import load_spec
from tests.helpers.runs import clean_env

ISSUE_SPEC = """
[model]
torchvision = "resnet50"     # layers, parameters and DDP's buckets from the meta device; or instead:
# gradient_bytes = 467.9e6   # a model known only by its gradient size (readiness spread over backward)
batch_per_gpu = 256
# bucket_cap_mb = 25         # DDP's default
[compute]                    # compute only (no gradient sync): one of the two
images_per_s_per_gpu = 2470
# step_ms = 103.6
busy_gpus = 1                # GPUs training on the node while it was measured
[node]
gpus = 8
[allreduce.intra]            # a measured table, as nccl-tests prints it (size, busbw) ...
sizes_bytes = [1048576, 16777216, 67108864]
busbw_gbs = [36.2, 109.2, 166.6]
[allreduce.inter]            # ... or line figures, per node
alpha_us = 14
busbw_gbs = 25
[predict]
gpus = [8, 16, 64]
"""


def write(tmp_path, text: str, name: str = "spec.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.long
def test_the_issues_spec_predicts_every_count_with_its_band(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ddp_bench", "predict", "--spec", write(tmp_path, ISSUE_SPEC), "--json"],
        capture_output=True, text=True, timeout=120, env=clean_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(row["gpus"], row["nodes"]) for row in rows] == [(8, 1), (16, 2), (64, 8)]
    for row in rows:
        assert {"gpus", "nodes", "images_per_s", "low", "high", "efficiency"} <= set(row)
        assert row["low"] <= row["images_per_s"] <= row["high"]
        assert row["partial_node"] and 0 < row["efficiency"] <= 1
        assert (row["high"] - row["low"]) / row["images_per_s"] <= 0.30  # the issue's bound for a partial node
    assert rows[0]["comm_from"] == "measured at 8 ranks on 1 node(s)"  # the same words as report --predict-to
    assert rows[1]["comm_from"] == "two-stage fit (2 node(s) × 8)" and rows[1]["allreduce_algorithm"] == "ring"


def test_a_full_node_narrows_the_band_and_the_point_stays(tmp_path):
    partial = predict_rows(load_spec(write(tmp_path, ISSUE_SPEC)))
    full = predict_rows(load_spec(write(tmp_path, ISSUE_SPEC.replace("busy_gpus = 1", "busy_gpus = 8"), "full.toml")))
    for one, other in zip(partial, full, strict=True):
        assert one["images_per_s"] == pytest.approx(other["images_per_s"])  # no correction to the point
        assert one["low"] < other["low"] and not other["partial_node"]
        # the slow end: the step longer by PARTIAL_NODE_SHARE of compute
        step = one["gpus"] * 256 * 1e3 / other["low"] + PARTIAL_NODE_SHARE * one["compute_ms"]
        assert one["low"] == pytest.approx(one["gpus"] * 256 * 1e3 / step)


SPREAD = "busy_gpus = 8\nstep_quantiles_ms = [96, 100, 103, 106, 110, 113, 121, 130]\nsteps_pooled = 40"


def test_a_measured_step_spread_makes_compute_the_slowest_of_n_past_the_measured_count(tmp_path):
    full = predict_rows(load_spec(write(tmp_path, ISSUE_SPEC.replace("busy_gpus = 1", "busy_gpus = 8"), "full.toml")))
    spread = load_spec(write(tmp_path, ISSUE_SPEC.replace("busy_gpus = 1", SPREAD)))
    rows = predict_rows(spread)
    assert spread.measured_gpus == 8 and [row["compute_drift"] for row in full] == [None] * 3
    assert rows[0]["compute_drift"] == 1.0 and rows[0]["images_per_s"] == pytest.approx(full[0]["images_per_s"])
    points = spread.step_quantiles.points()
    for row, plain in zip(rows[1:], full[1:], strict=True):  # 16 and 64 GPUs: past the 8 measured
        ratio = slowest_of(row["gpus"], points) / slowest_of(8, points)
        assert row["compute_drift"] == pytest.approx(ratio) and ratio > 1.01
        assert row["compute_ms"] == pytest.approx(spread.compute_ms * ratio)
        assert row["images_per_s"] < plain["images_per_s"] and row["low"] < plain["low"]
        assert row["high"] == pytest.approx(plain["high"])  # the fast end keeps the measured step, undrifted
        assert row["low"] <= row["images_per_s"] <= row["high"]
    # 64 ranks are more than the 40 steps pooled: the slow end reaches past the slowest step recorded
    # (with 1,000 pooled the same spread has no tail): the slow end's step is longer by exactly the tail
    many = predict_rows(load_spec(write(tmp_path, ISSUE_SPEC.replace("busy_gpus = 1", SPREAD + "0"), "many.toml")))
    tail = compute_drift(8, 64, spread.step_quantiles).tail_share * spread.compute_ms
    assert tail > 0 and many[2]["images_per_s"] == pytest.approx(rows[2]["images_per_s"])
    assert 64 * 256e3 / rows[2]["low"] == pytest.approx(64 * 256e3 / many[2]["low"] + tail)


def test_a_model_known_by_its_gradient_bytes(tmp_path):
    text = ISSUE_SPEC.replace('torchvision = "resnet50"', "gradient_bytes = 102.2e6")
    rows = predict_rows(load_spec(write(tmp_path, text)))
    by_name = predict_rows(load_spec(write(tmp_path, ISSUE_SPEC, "named.toml")))
    # ResNet-50's 25.6 M parameters are 102.2 MB of fp32 gradients: the same all-reduce, within rounding
    assert rows[0]["comm_ms"] == pytest.approx(by_name[0]["comm_ms"], rel=0.01)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (("[node]", "[node]\ncolour = 3"), "unknown key 'colour' in [node]"),
        (("[predict]\ngpus = [8, 16, 64]", ""), "missing table [predict]"),
        (("busy_gpus = 1", ""), "[compute] needs busy_gpus"),
        (("busy_gpus = 1", "busy_gpus = 0"), "busy_gpus = 0: give a positive number"),
        (("images_per_s_per_gpu = 2470", "images_per_s_per_gpu = -5"), "give a positive number"),
        (('"resnet50"', '"resnet5000"'), "not a torchvision model name"),
        (("images_per_s_per_gpu = 2470", "images_per_s_per_gpu = 2470\nstep_ms = 9"), "exactly one of"),
        (("[allreduce.inter]", "[allreduce.inter]\nnodes = 2"), "nodes goes with a table"),
        (("gpus = [8, 16, 64]", "gpus = [8, 16, 64"), "is not TOML"),
        (("busy_gpus = 1", "busy_gpus = 1\nsteps_pooled = 40"), "step_quantiles_ms and steps_pooled go together"),
        (("busy_gpus = 1", "busy_gpus = 1\nmeasured_gpus = 8"), "measured_gpus goes with"),
        (("130]", "130, 140]"), "needs 8 rising values"),
        (("[96, 100", "[100, 96"), "needs 8 rising values"),
        (("steps_pooled = 40", "steps_pooled = 2"), "3 or more describe a spread"),
    ],
)
def test_a_bad_spec_ends_in_one_line_and_exit_2(tmp_path, capsys, change, words):
    old, new = change
    text = ISSUE_SPEC.replace("busy_gpus = 1", SPREAD) if "busy_gpus = 1" not in old else ISSUE_SPEC
    text = text.replace(old, new, 1)
    assert text != ISSUE_SPEC.replace("busy_gpus = 1", SPREAD) and text != ISSUE_SPEC
    code = main(["predict", "--spec", write(tmp_path, text)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ddp_bench: error: ") and err.count("\n") == 1, err
    assert words in err
    assert main(["predict", "--spec", str(tmp_path / "absent.toml")]) == 2
