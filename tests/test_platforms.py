"""Tier 2: the report's Platforms section, from real CPU runs on MNIST plus TEST FIXTURE rows for a Colab T4
and a cluster's A100s (round numbers chosen so every derived cell can be worked out by hand; not measurements).
"""

import dataclasses
import math

import pytest
from conftest import read_rows, run_cli, run_torchrun
from test_records import make_record

from ddp_bench.report.build import build_report
from ddp_bench.results.records import write_rank_csv

CPU = ["--device", "cpu"]
NAN = float("nan")


def fixture_run(out, run_id: str, ranks: list[dict], **shared) -> None:
    """One fixture run: every rank gets `shared`, then its own entries (samples, train_time_s, memory...)."""
    world = len(ranks)
    for rank, own in enumerate(ranks):
        values = dict(
            run_id=run_id, rank=rank, local_rank=rank, world_size=world, local_world_size=world, num_nodes=1,
            status="complete", model="mnist_cnn", data="mnist", loader="device", amp="off", channels_last=False,
            compile=False, scaling="weak", batch_size=64, global_batch_size=64 * world, dataset_size=8000,
            device=f"cuda:{rank}", hostname="TEST-FIXTURE", tag="TEST FIXTURE", target_accuracy=NAN, reached="",
            time_to_accuracy_s=NAN, queue_wait_s=NAN, setup_s=NAN, job_energy_j=NAN, peak_rss_mb=3000.0,
            peak_device_allocated_mb=NAN, epochs=1, model_sha256="", input_shape="1x28x28", num_classes=10,
        )  # fmt: skip
        values.update(shared)
        values.update(own)
        write_rank_csv(str(out), dataclasses.replace(make_record(), **values))


T4 = dict(platform="colab", cluster="", device_name="Tesla T4")
A100 = dict(platform="slurm", cluster="narval", device_name="NVIDIA A100-SXM4-40GB")


def gpu_fixtures(out) -> None:
    # Colab T4, one GPU: 4,000 images/s in both runs; a race to 90 % in 1.5 s.
    fixture_run(
        out,
        "t4-epoch",
        [dict(samples=8000, train_time_s=2.0, peak_device_allocated_mb=500.0)],
        wall_time_s=10.0,
        setup_s=60.0,
        job_energy_j=140.0,
        **T4,
    )
    fixture_run(
        out,
        "t4-race",
        [dict(samples=6400, train_time_s=1.6, peak_device_allocated_mb=500.0)],
        wall_time_s=9.0,
        setup_s=60.0,
        job_energy_j=112.0,
        epochs=5,
        target_accuracy=0.9,
        reached="True",
        time_to_accuracy_s=1.5,
        **T4,
    )
    # narval A100s: 16,000 images/s on 1, 28,000 on 2, 48,000 on 4; races to 90 % in 1.2 s on 1 and 0.5 s on 4.
    fixture_run(
        out,
        "a100-w1",
        [dict(samples=16000, train_time_s=1.0, peak_device_allocated_mb=700.0)],
        wall_time_s=8.0,
        setup_s=90.0,
        queue_wait_s=600.0,
        job_energy_j=400.0,
        **A100,
    )
    fixture_run(
        out,
        "a100-w2",
        [dict(samples=14000, train_time_s=1.0, peak_device_allocated_mb=750.0)] * 2,
        wall_time_s=9.0,
        setup_s=90.0,
        queue_wait_s=300.0,
        job_energy_j=700.0,
        **A100,
    )
    memory = [800.0, 900.0, 850.0, 820.0]
    fixture_run(
        out,
        "a100-w4",
        [dict(samples=12000, train_time_s=1.0, peak_device_allocated_mb=m) for m in memory],
        wall_time_s=10.0,
        setup_s=90.0,
        queue_wait_s=900.0,
        job_energy_j=1200.0,
        **A100,
    )
    fixture_run(
        out,
        "a100-race1",
        [dict(samples=8000, train_time_s=0.5, peak_device_allocated_mb=700.0)],
        wall_time_s=7.0,
        setup_s=90.0,
        queue_wait_s=600.0,
        job_energy_j=200.0,
        epochs=5,
        target_accuracy=0.9,
        reached="True",
        time_to_accuracy_s=1.2,
        **A100,
    )
    fixture_run(out, "a100-race4", [dict(samples=6000, train_time_s=0.5, peak_device_allocated_mb=m) for m in memory],
                wall_time_s=9.0, setup_s=90.0, queue_wait_s=900.0, job_energy_j=600.0, epochs=5,
                target_accuracy=0.9, reached="True", time_to_accuracy_s=0.5, **A100)  # fmt: skip


@pytest.mark.distributed
def test_platform_table_from_real_cpu_runs_and_gpu_fixtures(tmp_path, mnist_dir):
    runs = tmp_path / "runs"
    mnist = [*CPU, "--data", "mnist", "--data-dir", mnist_dir, "--out", str(runs)]
    for launched in (
        run_cli([*mnist, "--epochs", "1"], timeout=300),
        run_cli([*mnist, "--target-accuracy", "0.9", "--max-epochs", "3"], timeout=300),
        run_torchrun(2, [*mnist, "--epochs", "1"], timeout=300),
    ):
        assert launched.returncode == 0, launched.stderr[-2000:]
    cpu_rows = read_rows(runs)
    gpu_fixtures(runs)
    report = build_report([str(runs)], str(tmp_path / "report"))
    table = report.platforms.set_index("name")
    cpu_name = next(name for name in table.index if name.startswith("CPU ("))
    assert cpu_name.endswith(" · local") and set(table.index) == {
        cpu_name, "GPU: Tesla T4 · Colab", "GPU: A100-SXM4-40GB · narval",
    }  # fmt: skip
    assert table["workload"].unique().tolist() == ["mnist_cnn on mnist · 64 per device · fp32"]

    # The CPU row, from the real rows.
    by_run = {}
    for row in cpu_rows:
        by_run.setdefault(row["run_id"], []).append(row)
    one_rank = [rows[0] for rows in by_run.values() if rows[0]["world_size"] == "1"]
    (two_ranks,) = [rows for rows in by_run.values() if rows[0]["world_size"] == "2"]
    (race,) = [row for row in one_rank if row["target_accuracy"]]
    thr1 = sorted(float(row["global_images_per_s"]) for row in one_rank)
    thr1 = sum(thr1) / 2  # the median of two
    thr2 = float(two_ranks[0]["global_images_per_s"])
    cpu = table.loc[cpu_name]
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

    t4 = table.loc["GPU: Tesla T4 · Colab"]
    assert (t4["devices"], t4["images_per_s_1"], t4["images_per_s_max"]) == (1, 4000.0, 4000.0)
    assert t4["x_cpu"] == pytest.approx(4000 / thr1)
    assert (t4["epoch_time_s"], t4["time_to_accuracy_s"], t4["time_to_accuracy_devices"]) == (2.0, 1.5, 1)
    assert (t4["queue_wait_s"], t4["setup_s"], t4["first_result_s"]) == (0.0, 60.0, 69.5)  # median of 70, 69
    assert (t4["energy_per_epoch_j"], t4["peak_memory_mb"]) == (140.0, 500.0)
    assert t4["device_hours_per_epoch"] == pytest.approx(2.0 / 3600) and math.isnan(t4["efficiency_max"])

    a100 = table.loc["GPU: A100-SXM4-40GB · narval"]
    assert (a100["devices"], a100["images_per_s_1"], a100["images_per_s_max"]) == (4, 16000.0, 48000.0)
    assert a100["x_cpu"] == pytest.approx(16000 / thr1)
    assert a100["epoch_time_s"] == pytest.approx(8000 / 48000)
    assert (a100["time_to_accuracy_s"], a100["time_to_accuracy_devices"]) == (0.5, 4)
    assert (a100["queue_wait_s"], a100["setup_s"]) == (600.0, 90.0)  # median of 600, 300, 900, 600, 900
    assert a100["first_result_s"] == 697.5  # one GPU: 600 + 90 + 8 and 600 + 90 + 7
    assert (a100["energy_per_epoch_j"], a100["peak_memory_mb"]) == (200.0, 900.0)
    assert a100["device_hours_per_epoch"] == pytest.approx(4 * 8000 / 48000 / 3600)
    assert a100["efficiency_max"] == pytest.approx(48000 / 4 / 16000)

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

    text = (tmp_path / "report" / "summary.md").read_text()
    assert "## Platforms" in text and "| GPU: Tesla T4 · Colab | 1 GPU | 4,000.0 |" in text
    assert f"| {cpu_name} | 2 ranks |" in text and "time to 90 %" in text
    assert "| scalability: efficiency at the largest count |" in text and "75 % on 4" in text
    assert "| ranks | batch/rank |" in text  # the CPU scaling table names its devices as ranks
    for name in ("time_to_accuracy", "platforms"):
        assert (tmp_path / "report" / f"{name}.png").stat().st_size > 5000
    assert (tmp_path / "report" / "platforms.csv").exists()
