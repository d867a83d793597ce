"""Tier 2: time to accuracy on real MNIST digits (8,000 training and 2,000 test images; skipped without them):
one rank and two torchrun ranks reach 97 %, an unreachable target ends with reached=False and exit 0, and the
accuracy curve lands beside the rank files. All on CPU."""

import csv

import pytest

from ddp_bench.results.records import ACCURACY_CURVE_COLUMNS, ACCURACY_CURVE_FILE
from tests.helpers.rank_rows import read_rows
from tests.helpers.runs import run_cli, run_torchrun

CPU = ["--device", "cpu"]


def race(mnist_dir, out, target: float, *extra: str) -> list[str]:
    return [
        *CPU,
        "--data",
        "mnist",
        "--data-dir",
        mnist_dir,
        "--target-accuracy",
        str(target),
        *extra,
        "--out",
        str(out),
    ]


def curve_of(out, row) -> list[dict[str, float]]:
    with open(out / row["run_id"] / ACCURACY_CURVE_FILE, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == ACCURACY_CURVE_COLUMNS
        return [{name: float(value) for name, value in point.items()} for point in reader]


def check_reached(row, curve, target: float) -> None:
    assert (row["reached"], float(row["target_accuracy"])) == ("True", target)
    last = curve[-1]
    assert last["test_accuracy"] >= target and all(point["test_accuracy"] < target for point in curve[:-1])
    # The run stopped at the first evaluation that reached the target: its numbers are that point's.
    assert (
        float(row["time_to_accuracy_s"])
        == pytest.approx(last["train_time_s"])
        == pytest.approx(float(row["train_time_s"]))
    )
    assert float(row["time_to_accuracy_with_eval_s"]) == pytest.approx(last["elapsed_s"])
    assert int(row["steps_to_accuracy"]) == int(last["step"]) == int(row["steps"])
    assert float(row["epochs_to_accuracy"]) == pytest.approx(last["epochs"])
    # evaluation is excluded from the training time, included in the other; both only grow
    assert all(point["elapsed_s"] > point["train_time_s"] for point in curve)
    for earlier, later in zip(curve, curve[1:], strict=False):
        assert later["step"] > earlier["step"] and later["train_time_s"] > earlier["train_time_s"]
    assert float(row["test_accuracy"]) == pytest.approx(last["test_accuracy"])


@pytest.mark.long
def test_one_rank_reaches_97_percent_evaluating_every_40_steps(tmp_path, mnist_dir):
    done = run_cli(race(mnist_dir, tmp_path, 0.97, "--max-epochs", "10", "--eval-every", "40"), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = read_rows(tmp_path)
    curve = curve_of(tmp_path, row)
    check_reached(row, curve, 0.97)
    steps_per_epoch = 8000 // 64
    # every 40 steps, and at every epoch's end (125 steps): 40, 80, 120, 125, 160, ...
    expected = sorted(
        {s for s in range(40, 10 * steps_per_epoch + 1, 40)} | {steps_per_epoch * e for e in range(1, 11)}
    )
    assert [int(point["step"]) for point in curve] == expected[: len(curve)]


@pytest.mark.long
@pytest.mark.distributed
def test_two_torchrun_ranks_reach_97_percent(tmp_path, mnist_dir):
    done = run_torchrun(2, race(mnist_dir, tmp_path, 0.97, "--max-epochs", "12"), timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_rows(tmp_path)
    assert [row["rank"] for row in rows] == ["0", "1"]
    curve = curve_of(tmp_path, rows[0])
    check_reached(rows[0], curve, 0.97)
    # both ranks stopped at the same evaluation, with the same (all-reduced) accuracy
    assert {(row["steps_to_accuracy"], row["epochs_to_accuracy"], row["test_accuracy"]) for row in rows} == {
        (rows[0]["steps_to_accuracy"], rows[0]["epochs_to_accuracy"], rows[0]["test_accuracy"])
    }
    assert int(rows[0]["steps"]) % (8000 // 2 // 64) == 0  # evaluated at epoch ends only


@pytest.mark.long
def test_an_unreachable_target_ends_with_reached_false_exit_0_and_its_rows(tmp_path, mnist_dir):
    flags = race(
        mnist_dir, tmp_path, 0.9999, "--max-epochs", "1", "--lr-scaling", "linear", "--lr-reference-batch", "32"
    )
    done = run_cli(flags, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = read_rows(tmp_path)
    assert (row["status"], row["reached"], row["steps"], row["epochs"]) == ("complete", "False", "125", "1")
    assert row["time_to_accuracy_s"] == row["epochs_to_accuracy"] == "" and row["steps_to_accuracy"] == "0"
    # the recipe's rate, and the rate trained with: global batch 64 against a reference of 32, linear
    assert (float(row["lr"]), row["lr_scaling"], float(row["effective_lr"])) == (1.0, "linear", 2.0)
    (point,) = curve_of(tmp_path, row)
    assert point["step"] == 125 and point["test_accuracy"] < 0.9999
