"""Tier 1 + 2: the report's arithmetic on hand-made rows, and a report built from real CPU runs.

The hand-made rows below are TEST FIXTURES, not measurements: round numbers chosen so that every expected
speedup and efficiency can be checked exactly.
"""

import os

import pandas as pd
import pytest

from ddp_bench.cli import main
from ddp_bench.report.build import build_report
from ddp_bench.report.data import load_rows, platform_label, scaling_summary, summarise_runs
from tests.helpers.report_runs import timed_fixture_run
from tests.helpers.runs import run_cli, run_group, run_torchrun


def summary_for(out) -> pd.DataFrame:
    return scaling_summary(summarise_runs(load_rows([str(out)]).rows).runs).sort_values(["series", "world_size"])


def test_speedup_and_efficiency_are_exact(tmp_path):
    timed_fixture_run(tmp_path, "w1", 1, [2.0])  # 6400 images in 2 s: 3200/s
    timed_fixture_run(tmp_path, "w2", 2, [2.0, 2.5])  # 12800 images, slowest 2.5 s: 5120/s
    timed_fixture_run(tmp_path, "w4", 4, [4.0] * 4)  # 25600 images in 4 s: 6400/s
    summary = summary_for(tmp_path)
    assert summary["world_size"].tolist() == [1, 2, 4]
    assert summary["global_images_per_s"].tolist() == [3200.0, 5120.0, 6400.0]
    assert summary["images_per_s_per_gpu"].tolist() == [3200.0, 2560.0, 1600.0]
    assert summary["speedup"].tolist() == pytest.approx([1.0, 1.6, 2.0])
    assert summary["efficiency"].tolist() == pytest.approx([1.0, 0.8, 0.5])
    assert summary["epoch_time_s"].tolist() == pytest.approx([60000 / 3200, 60000 / 5120, 60000 / 6400])
    assert summary["label"].tolist() == [
        "fixture · FIXTURE-GPU ×1",
        "fixture · FIXTURE-GPU ×2",
        "fixture · FIXTURE-GPU ×4",
    ]


def test_baseline_is_the_smallest_world_size_measured(tmp_path):
    timed_fixture_run(tmp_path, "w2", 2, [1.0, 1.0])  # 12800/s
    timed_fixture_run(tmp_path, "w8", 8, [2.0] * 8)  # 25600/s: speedup 25600/12800 x 2 = 4 on 8 GPUs
    summary = summary_for(tmp_path)
    assert summary["speedup"].tolist() == pytest.approx([2.0, 4.0])
    assert summary["efficiency"].tolist() == pytest.approx([1.0, 0.5])


def test_repeats_are_summarised_by_their_median_with_the_spread_kept(tmp_path):
    for run_id, seconds in (("a", 2.0), ("b", 4.0), ("c", 1.0)):  # 3200, 1600, 6400 images/s
        timed_fixture_run(tmp_path, run_id, 1, [seconds])
    (row,) = summary_for(tmp_path).to_dict("records")
    assert (row["repeats"], row["global_images_per_s"]) == (3, 3200.0)
    assert (row["global_images_per_s_min"], row["global_images_per_s_max"]) == (1600.0, 6400.0)


def test_weak_and_strong_scaling_are_separate_series(tmp_path):
    timed_fixture_run(tmp_path, "weak1", 1, [2.0], batch=64)
    timed_fixture_run(tmp_path, "weak2", 2, [2.0, 2.0], batch=64)
    # strong: global batch 128 held fixed, so 128 per rank on 1 GPU and 64 per rank on 2
    timed_fixture_run(tmp_path, "strong1", 1, [4.0], batch=128, scaling="strong", global_batch_size=128)
    timed_fixture_run(tmp_path, "strong2", 2, [2.5, 2.5], batch=64, scaling="strong", global_batch_size=128)
    summary = summary_for(tmp_path)
    strong = summary[summary["scaling"] == "strong"]
    weak = summary[summary["scaling"] == "weak"]
    assert strong["series"].nunique() == weak["series"].nunique() == 1
    assert strong["speedup"].tolist() == pytest.approx([1.0, 12800 / 2.5 / 3200])  # 1.6
    assert weak["speedup"].tolist() == pytest.approx([1.0, 2.0])


def test_different_hardware_or_options_never_share_a_series(tmp_path):
    timed_fixture_run(tmp_path, "a", 1, [2.0])
    timed_fixture_run(tmp_path, "b", 2, [2.0, 2.0], amp="bf16")
    timed_fixture_run(tmp_path, "c", 2, [2.0, 2.0], device_name="Tesla T4", platform="colab")
    summary = summary_for(tmp_path)
    assert summary["series"].nunique() == 3
    # each series is its own baseline: speedup N0 and efficiency 1 at its smallest world size
    assert (summary["speedup"] == summary["world_size"]).all()
    assert (summary["efficiency"] == 1.0).all()


def test_incomplete_runs_and_malformed_files_are_named_and_left_out(tmp_path):
    timed_fixture_run(tmp_path, "good", 1, [2.0])
    timed_fixture_run(tmp_path, "missing-rank", 2, [2.0])  # rank 1 never wrote its row
    timed_fixture_run(tmp_path, "stopped", 1, [2.0], status="incomplete")
    broken = tmp_path / "broken-run"
    broken.mkdir()
    (broken / "rank0.csv").write_text("run_id,status\nbroken,complete\n")
    report = build_report([str(tmp_path)], str(tmp_path / "report"))
    assert report.summary["world_size"].tolist() == [1]
    assert dict(report.tables.incomplete) == {
        "missing-rank": "1 of 2 rank rows missing (ranks 1)",
        "stopped": "stopped early (status incomplete)",
    }
    ((path, why),) = report.loaded.problems
    assert path.endswith("broken-run/rank0.csv") and "missing columns" in why
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "missing-rank" in text and "broken-run/rank0.csv" in text


@pytest.mark.long
def test_report_command_names_unusable_files_and_goes_on(tmp_path):
    timed_fixture_run(tmp_path / "runs", "good", 1, [2.0])
    (tmp_path / "runs" / "junk").mkdir()
    (tmp_path / "runs" / "junk" / "rank0.csv").write_text("not,a\nschema,file\n")
    done = run_cli(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")], timeout=120)
    assert done.returncode == 0, done.stderr
    assert "cannot use" in done.stdout and "junk/rank0.csv" in done.stdout
    assert (tmp_path / "report" / "summary.csv").exists()


def test_report_of_a_missing_directory_is_exit_2(tmp_path):
    done = run_cli(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r")], timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"ddp_bench: error: no such results directory: {tmp_path / 'nope'}"]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "args, label",
    [
        (("colab", "", "Tesla T4", 1), "Colab · Tesla T4 ×1"),
        (("slurm", "narval", "NVIDIA A100-SXM4-40GB", 8), "narval · A100-SXM4-40GB ×8"),
        (("local", "", "Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz", 2), "local · Intel Xeon Gold 6148 ×2"),
    ],
)
def test_platform_labels(args, label):
    assert platform_label(*args) == label


@pytest.mark.long
@pytest.mark.distributed
def test_report_from_real_one_and_two_rank_cpu_runs(tmp_path):
    runs = tmp_path / "runs"
    assert main(["--device", "cpu", "--steps", "5", "--warmup-steps", "2", "--out", str(runs)]) == 0
    done = run_torchrun(2, ["--device", "cpu", "--steps", "5", "--warmup-steps", "2", "--out", str(runs)])
    assert done.returncode == 0, done.stderr[-2000:]
    report = build_report([str(runs)], str(tmp_path / "report"))
    summary = report.summary.sort_values("world_size")
    assert summary["world_size"].tolist() == [1, 2]
    assert summary["speedup"].iloc[0] == 1.0
    assert summary["efficiency"].iloc[1] == pytest.approx(summary["speedup"].iloc[1] / 2)
    assert not report.tables.incomplete and not report.loaded.problems
    for name in ("throughput", "efficiency", "platforms"):
        for extension in ("png", "svg"):
            assert (tmp_path / "report" / f"{name}.{extension}").stat().st_size > 5000
    on_disk = pd.read_csv(tmp_path / "report" / "summary.csv")
    required = [
        "platform",
        "device_name",
        "num_nodes",
        "world_size",
        "model",
        "data",
        "batch_size",
        "global_batch_size",
        "amp",
        "global_images_per_s",
        "images_per_s_per_gpu",
        "speedup",
        "efficiency",
    ]
    assert set(required) <= set(on_disk.columns)
    assert "| local · " in (tmp_path / "report" / "summary.md").read_text()


@pytest.mark.long
def test_analysis_script_makes_the_same_report(tmp_path):
    import os
    import sys

    from tests.helpers.runs import clean_env

    timed_fixture_run(tmp_path / "runs", "w1", 1, [2.0])
    timed_fixture_run(tmp_path / "runs", "w2", 2, [2.0, 2.5])
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "analysis", "make_report.py")
    done = run_group(
        [sys.executable, script, str(tmp_path / "runs"), "--out", str(tmp_path / "report")],
        timeout=120,
        env=clean_env(),
    )
    assert done.returncode == 0, done.stderr
    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert summary["speedup"].tolist() == pytest.approx([1.0, 1.6])


def test_every_unusable_file_is_named_once_among_many_good_ones(tmp_path):
    for index in range(20):
        timed_fixture_run(tmp_path, f"good{index:02d}", 2, [2.0, 2.0])
    timed_fixture_run(tmp_path, "garbled-world", 1, [2.0])
    path = tmp_path / "garbled-world" / "rank0.csv"
    text = path.read_text().splitlines()
    header = text[0].split(",")
    cells = text[1].split(",")
    cells[header.index("world_size")] = "two"
    path.write_text(text[0] + "\n" + ",".join(cells) + "\n")
    timed_fixture_run(tmp_path, "odd-status", 1, [2.0], status="maybe")
    loaded = load_rows([str(tmp_path)])
    assert loaded.files == 42
    assert sorted((os.path.basename(os.path.dirname(p)), why) for p, why in loaded.problems) == [
        ("garbled-world", "not a number in world_size: 'two'"),
        ("odd-status", "unknown status 'maybe'"),
    ]
    assert sorted(loaded.rows["run_id"].unique()) == [f"good{index:02d}" for index in range(20)]
    summary = summary_for(tmp_path)
    assert summary["world_size"].tolist() == [2] and summary["repeats"].tolist() == [20]
