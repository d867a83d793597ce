"""Tier 1: `python -m ddp_bench predict --spec FILE.toml [--json]` (ddp_bench/predict/). The spec below is issue
#25's interface, verbatim: its figures are the issue's example (a TEST FIXTURE here, not a claim about a cluster)."""

import json
import subprocess
import sys

import pytest

from ddp_bench.cli import main
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
    ],
)
def test_a_bad_spec_ends_in_one_line_and_exit_2(tmp_path, capsys, change, words):
    old, new = change
    text = ISSUE_SPEC.replace(old, new, 1)
    code = main(["predict", "--spec", write(tmp_path, text)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ddp_bench: error: ") and err.count("\n") == 1, err
    assert words in err
    assert main(["predict", "--spec", str(tmp_path / "absent.toml")]) == 2
