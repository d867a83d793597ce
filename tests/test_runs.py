"""Tier 2: real training runs on CPU: one rank in-process, two ranks through torchrun (gloo), real MNIST."""

import math

import pytest

from ddp_bench.cli import main
from tests.helpers.rank_rows import read_rows
from tests.helpers.runs import run_torchrun


def check_row_arithmetic(row: dict[str, str]) -> None:
    samples, seconds = int(row["samples"]), float(row["train_time_s"])
    assert samples == int(row["steps"]) * int(row["batch_size"])
    assert float(row["images_per_s"]) == pytest.approx(samples / seconds)
    assert 0 < seconds < float(row["wall_time_s"])
    assert float(row["step_time_median_ms"]) <= float(row["step_time_p90_ms"])
    # per-step compute time cannot exceed the stage's whole time per step
    assert float(row["step_time_median_ms"]) / 1e3 <= seconds / int(row["steps"]) * 1.5


def test_single_process_run_writes_one_honest_row(tmp_path, capsys):
    code = main(["--device", "cpu", "--steps", "6", "--warmup-steps", "2", "--out", str(tmp_path), "--tag", "unit"])
    assert code == 0
    (row,) = read_rows(tmp_path)
    assert (row["status"], row["launcher"], row["world_size"], row["rank"]) == ("complete", "single", "1", "0")
    assert (row["model"], row["data"], row["loader"], row["backend"], row["device"]) == (
        "mnist_cnn",
        "synthetic",
        "device",
        "gloo",
        "cpu",
    )
    assert (row["steps"], row["warmup_steps"], row["samples"], row["tag"]) == ("6", "2", "384", "unit")
    assert float(row["global_images_per_s"]) == pytest.approx(float(row["images_per_s"]))
    assert math.isfinite(float(row["final_loss"])) and row["test_accuracy"] == ""
    assert row["torch_version"] and row["ddp_bench_version"] == "0.1.0" and row["platform"] == "local"
    check_row_arithmetic(row)
    assert row["run_id"] in capsys.readouterr().out  # rank 0's summary table


def test_two_runs_never_share_a_directory(tmp_path):
    for _ in range(2):
        assert main(["--device", "cpu", "--steps", "2", "--warmup-steps", "0", "--out", str(tmp_path)]) == 0
    assert len({row["run_id"] for row in read_rows(tmp_path)}) == 2


@pytest.mark.parametrize(
    "flags",
    [
        ["--amp", "bf16", "--channels-last"],
        ["--loader", "torch", "--workers", "1"],
        ["--model", "resnet18", "--batch-size", "4"],
    ],
    ids=["bf16-channels-last", "dataloader-worker", "resnet18"],
)
def test_options_run_on_cpu(tmp_path, flags):
    assert main([*flags, "--device", "cpu", "--steps", "2", "--warmup-steps", "1", "--out", str(tmp_path)]) == 0
    (row,) = read_rows(tmp_path)
    check_row_arithmetic(row)
    if "bf16" in flags:
        assert (row["amp"], row["channels_last"]) == ("bf16", "True")
    if "--workers" in flags:
        assert (row["loader"], row["workers"]) == ("torch", "1")
    if "resnet18" in flags:
        assert (row["model"], row["batch_size"]) == ("resnet18", "4")


@pytest.mark.distributed
def test_torchrun_two_ranks_gloo(tmp_path):
    done = run_torchrun(
        2, ["--device", "cpu", "--steps", "8", "--warmup-steps", "2", "--out", str(tmp_path), "--log-indices"]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_rows(tmp_path)
    assert [row["rank"] for row in rows] == ["0", "1"]
    assert {row["run_id"] for row in rows} == {rows[0]["run_id"]}
    for row in rows:
        assert (row["launcher"], row["world_size"], row["backend"], row["global_batch_size"]) == (
            "torchrun",
            "2",
            "gloo",
            "128",
        )
        assert row["local_rank"] == row["rank"] and row["num_nodes"] == "1"
        assert int(row["samples"]) == 8 * 64
        check_row_arithmetic(row)
    # the job's throughput is gathered, identical on every row, and equals the sum over the slowest time
    assert rows[0]["global_images_per_s"] == rows[1]["global_images_per_s"]
    slowest = max(float(row["train_time_s"]) for row in rows)
    expected = sum(int(row["samples"]) for row in rows) / slowest
    assert float(rows[0]["global_images_per_s"]) == pytest.approx(expected)
    # the two ranks trained on disjoint shards of the data
    run_dir = tmp_path / rows[0]["run_id"]
    shards = [set(map(int, (run_dir / f"rank{r}.indices.txt").read_text().split())) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 8 * 64
    assert not shards[0] & shards[1]
    assert done.stdout.count("global images/s") == 1  # only rank 0 prints the summary


@pytest.mark.long
@pytest.mark.distributed
def test_real_mnist_reaches_95_percent_in_two_epochs_on_two_ranks(tmp_path, mnist_dir):
    # (one rank on real MNIST: tests/test_accuracy.py, test_notebook.py and test_platforms.py)
    flags = ["--device", "cpu", "--data", "mnist", "--data-dir", mnist_dir, "--epochs", "2", "--out", str(tmp_path)]
    done = run_torchrun(2, flags, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_rows(tmp_path)
    assert len(rows) == 2
    per_epoch = (8000 // 2) // 64  # 8,000 training digits, each rank half, in whole batches of 64
    for row in rows:
        assert float(row["test_accuracy"]) >= 0.95
        assert row["epochs"] == "2" and row["data"] == "mnist" and row["reached"] == ""
        assert int(row["steps"]) == 2 * per_epoch
        check_row_arithmetic(row)
    assert len({row["test_accuracy"] for row in rows}) == 1  # one accuracy, all-reduced
    # an evaluation after each epoch, written by rank 0 as the run's accuracy curve
    curve = (tmp_path / rows[0]["run_id"] / "accuracy.csv").read_text().splitlines()
    assert curve[0] == "step,epochs,train_time_s,elapsed_s,test_accuracy" and len(curve) == 3
    assert [line.split(",")[:2] for line in curve[1:]] == [[str(per_epoch), "1"], [str(2 * per_epoch), "2"]]
    assert float(curve[-1].split(",")[-1]) == float(rows[0]["test_accuracy"])


@pytest.mark.long
def test_compile_runs_on_cpu(tmp_path):
    # torch.compile (inductor) builds C++ kernels on CPU; the compile happens in the warm-up, not the clock.
    assert main(["--device", "cpu", "--compile", "--steps", "3", "--warmup-steps", "2", "--out", str(tmp_path)]) == 0
    (row,) = read_rows(tmp_path)
    assert row["compile"] == "True"
    check_row_arithmetic(row)
    assert float(row["train_time_s"]) < float(row["wall_time_s"]) / 3  # compilation is outside the timed stage
