"""Hand-made GPU runs for the report's Platforms section: TEST FIXTURES for a Colab T4 and a cluster's A100s, not
measurements; round numbers chosen so every derived cell can be worked out by hand."""

from __future__ import annotations

import dataclasses

from ddp_bench.results.records import write_rank_csv
from tests.helpers.rank_rows import make_record

NAN = float("nan")
T4 = dict(platform="colab", cluster="", device_name="Tesla T4")
A100 = dict(platform="slurm", cluster="narval", device_name="NVIDIA A100-SXM4-40GB")


def platform_fixture_run(out, run_id: str, ranks: list[dict], **shared) -> None:
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


def t4_fixtures(out) -> None:
    """Colab T4, one GPU: 4,000 images/s in both runs; a race to 90 % in 1.5 s."""
    platform_fixture_run(
        out,
        "t4-epoch",
        [dict(samples=8000, train_time_s=2.0, peak_device_allocated_mb=500.0)],
        wall_time_s=10.0,
        setup_s=60.0,
        job_energy_j=140.0,
        **T4,
    )
    platform_fixture_run(
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


A100_MEMORY = [800.0, 900.0, 850.0, 820.0]  # each of the 4-GPU runs' ranks' peak


def a100_epoch_fixtures(out) -> None:
    """narval A100s: 16,000 images/s on 1, 28,000 on 2, 48,000 on 4."""
    platform_fixture_run(
        out,
        "a100-w1",
        [dict(samples=16000, train_time_s=1.0, peak_device_allocated_mb=700.0)],
        wall_time_s=8.0,
        setup_s=90.0,
        queue_wait_s=600.0,
        job_energy_j=400.0,
        **A100,
    )
    platform_fixture_run(
        out,
        "a100-w2",
        [dict(samples=14000, train_time_s=1.0, peak_device_allocated_mb=750.0)] * 2,
        wall_time_s=9.0,
        setup_s=90.0,
        queue_wait_s=300.0,
        job_energy_j=700.0,
        **A100,
    )
    platform_fixture_run(
        out,
        "a100-w4",
        [dict(samples=12000, train_time_s=1.0, peak_device_allocated_mb=m) for m in A100_MEMORY],
        wall_time_s=10.0,
        setup_s=90.0,
        queue_wait_s=900.0,
        job_energy_j=1200.0,
        **A100,
    )


def a100_race_fixtures(out) -> None:
    """narval A100s: races to 90 % in 1.2 s on 1 and 0.5 s on 4."""
    platform_fixture_run(
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
    platform_fixture_run(out, "a100-race4",
                         [dict(samples=6000, train_time_s=0.5, peak_device_allocated_mb=m) for m in A100_MEMORY],
                         wall_time_s=9.0, setup_s=90.0, queue_wait_s=900.0, job_energy_j=600.0, epochs=5,
                         target_accuracy=0.9, reached="True", time_to_accuracy_s=0.5, **A100)  # fmt: skip


def gpu_fixtures(out) -> None:
    """Every GPU fixture run, in the order the Platforms test always wrote them."""
    t4_fixtures(out)
    a100_epoch_fixtures(out)
    a100_race_fixtures(out)
