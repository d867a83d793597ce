"""Tier 2: the report's Platforms section, from real CPU runs on MNIST plus TEST FIXTURE rows for a Colab T4
and a cluster's A100s (round numbers chosen so every derived cell can be worked out by hand; not measurements;
tests/helpers/platforms.py).
"""

import math

import pytest

from ddp_bench.report.build import build_report
from tests.helpers.platforms import gpu_fixtures
from tests.helpers.rank_rows import read_rows
from tests.helpers.runs import run_cli, run_torchrun

CPU = ["--device", "cpu"]


def real_cpu_runs(runs, mnist_dir) -> list[dict[str, str]]:
    """One rank for an epoch, one racing to 90 %, two ranks for an epoch: their rows."""
    mnist = [*CPU, "--data", "mnist", "--data-dir", mnist_dir, "--out", str(runs)]
    for launched in (
        run_cli([*mnist, "--epochs", "1"], timeout=300),
        run_cli([*mnist, "--target-accuracy", "0.9", "--max-epochs", "3"], timeout=300),
        run_torchrun(2, [*mnist, "--epochs", "1"], timeout=300),
    ):
        assert launched.returncode == 0, launched.stderr[-2000:]
    return read_rows(runs)


def check_cpu_row(cpu, cpu_rows) -> tuple[list[dict], list[dict], float]:
    """The CPU row, from the real rows; returns the 1-rank runs' rows, the 2-rank run's and the 1-rank throughput."""
    by_run = {}
    for row in cpu_rows:
        by_run.setdefault(row["run_id"], []).append(row)
    one_rank = [rows[0] for rows in by_run.values() if rows[0]["world_size"] == "1"]
    (two_ranks,) = [rows for rows in by_run.values() if rows[0]["world_size"] == "2"]
    (race,) = [row for row in one_rank if row["target_accuracy"]]
    thr1 = sorted(float(row["global_images_per_s"]) for row in one_rank)
    thr1 = sum(thr1) / 2  # the median of two
    thr2 = float(two_ranks[0]["global_images_per_s"])
    assert cpu["devices"] == 2 and cpu["x_cpu"] == 1.0
    assert cpu["images_per_s_1"] == pytest.approx(thr1) and cpu["images_per_s_max"] == pytest.approx(thr2)
    assert cpu["epoch_time_s"] == pytest.approx(8000 / thr2)
    assert cpu["efficiency_max"] == pytest.approx(thr2 / 2 / thr1)
    assert cpu["device_hours_per_epoch"] == pytest.approx(2 * 8000 / thr2 / 3600)
    assert race["reached"] == "True"
    assert (cpu["time_to_accuracy_s"], cpu["time_to_accuracy_devices"]) == (
        pytest.approx(float(race["time_to_accuracy_s"])), 1,
    )  # fmt: skip
    assert cpu["queue_wait_s"] == 0.0 and math.isnan(cpu["setup_s"])  # a workstation: no queue, no job script
    walls = sorted(float(row["wall_time_s"]) for row in one_rank)
    assert cpu["first_result_s"] == pytest.approx(sum(walls) / 2)
    assert math.isnan(cpu["energy_per_epoch_j"])  # no RAPL here: empty, never estimated
    assert cpu["peak_memory_mb"] == pytest.approx(max(float(row["peak_rss_mb"]) for row in two_ranks))
    return one_rank, two_ranks, thr1


def check_t4_row(t4, thr1: float) -> None:
    assert (t4["devices"], t4["images_per_s_1"], t4["images_per_s_max"]) == (1, 4000.0, 4000.0)
    assert t4["x_cpu"] == pytest.approx(4000 / thr1)
    assert (t4["epoch_time_s"], t4["time_to_accuracy_s"], t4["time_to_accuracy_devices"]) == (2.0, 1.5, 1)
    assert (t4["queue_wait_s"], t4["setup_s"], t4["first_result_s"]) == (0.0, 60.0, 69.5)  # median of 70, 69
    assert (t4["energy_per_epoch_j"], t4["peak_memory_mb"]) == (140.0, 500.0)
    assert t4["device_hours_per_epoch"] == pytest.approx(2.0 / 3600) and math.isnan(t4["efficiency_max"])


def check_a100_row(a100, thr1: float) -> None:
    assert (a100["devices"], a100["images_per_s_1"], a100["images_per_s_max"]) == (4, 16000.0, 48000.0)
    assert a100["x_cpu"] == pytest.approx(16000 / thr1)
    assert a100["epoch_time_s"] == pytest.approx(8000 / 48000)
    assert (a100["time_to_accuracy_s"], a100["time_to_accuracy_devices"]) == (0.5, 4)
    assert (a100["queue_wait_s"], a100["setup_s"]) == (600.0, 90.0)  # median of 600, 300, 900, 600, 900
    assert a100["first_result_s"] == 697.5  # one GPU: 600 + 90 + 8 and 600 + 90 + 7
    assert (a100["energy_per_epoch_j"], a100["peak_memory_mb"]) == (200.0, 900.0)
    assert a100["device_hours_per_epoch"] == pytest.approx(4 * 8000 / 48000 / 3600)
    assert a100["efficiency_max"] == pytest.approx(48000 / 4 / 16000)


def check_course_and_accuracy(report, cpu_name: str, one_rank: list[dict], two_ranks: list[dict]) -> None:
    course = report.course["mnist_cnn on mnist · 64 per device · fp32"]
    assert course["GPU: A100-SXM4-40GB · narval"] == {
        "quick_s": 698.0,
        "efficiency": pytest.approx(0.75),
        "devices": 4,
        "hardware": "4 × A100-SXM4-40GB",
    }  # fmt: skip  (1-epoch jobs on 1, 2 and 4 GPUs: 698, 399 and 1,000 s)
    assert course["GPU: Tesla T4 · Colab"]["quick_s"] == 70.0 and course["GPU: Tesla T4 · Colab"]["devices"] == 1
    (epoch_one,) = [row for row in one_rank if not row["target_accuracy"]]
    # 1-epoch jobs on 1 and 2 ranks; a run's wall time is its slowest rank's; no queue, no setup recorded
    walls = [float(epoch_one["wall_time_s"]), max(float(row["wall_time_s"]) for row in two_ranks)]
    assert course[cpu_name]["quick_s"] == pytest.approx(sum(walls) / 2)
    assert course[cpu_name]["hardware"].startswith("2 × ")

    accuracy = report.accuracy.set_index(["series", "world_size"])["time_to_accuracy_s"]
    assert accuracy[("GPU: A100-SXM4-40GB · narval · mnist_cnn on mnist · 64 per device · fp32", 4)] == 0.5
    assert accuracy[("GPU: A100-SXM4-40GB · narval · mnist_cnn on mnist · 64 per device · fp32", 1)] == 1.2


def check_summary(out, cpu_name: str) -> None:
    text = (out / "summary.md").read_text()
    assert "## Platforms" in text and "| GPU: Tesla T4 · Colab | 1 GPU | 4,000.0 |" in text
    assert f"| {cpu_name} | 2 ranks |" in text and "time to 90 %" in text
    assert "| scalability: efficiency at the largest count |" in text and "75 % on 4" in text
    assert "| ranks | batch/rank |" in text  # the CPU scaling table names its devices as ranks
    for name in ("time_to_accuracy", "platforms"):
        assert (out / f"{name}.png").stat().st_size > 5000
    assert (out / "platforms.csv").exists()


@pytest.mark.long
@pytest.mark.distributed
def test_platform_table_from_real_cpu_runs_and_gpu_fixtures(tmp_path, mnist_dir):
    runs = tmp_path / "runs"
    cpu_rows = real_cpu_runs(runs, mnist_dir)
    gpu_fixtures(runs)
    report = build_report([str(runs)], str(tmp_path / "report"))
    table = report.platforms.set_index("name")
    cpu_name = next(name for name in table.index if name.startswith("CPU ("))
    assert cpu_name.endswith(" · local") and set(table.index) == {
        cpu_name, "GPU: Tesla T4 · Colab", "GPU: A100-SXM4-40GB · narval",
    }  # fmt: skip
    assert table["workload"].unique().tolist() == ["mnist_cnn on mnist · 64 per device · fp32"]
    one_rank, two_ranks, thr1 = check_cpu_row(table.loc[cpu_name], cpu_rows)
    check_t4_row(table.loc["GPU: Tesla T4 · Colab"], thr1)
    check_a100_row(table.loc["GPU: A100-SXM4-40GB · narval"], thr1)
    check_course_and_accuracy(report, cpu_name, one_rank, two_ranks)
    check_summary(tmp_path / "report", cpu_name)
