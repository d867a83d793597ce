"""Tier 1 + 2: the report's scaling model and straggler table on hand-made rows, and a straggler made on purpose.

The hand-made rows and all-reduce tables below are TEST FIXTURES, not measurements: round numbers chosen so that
every prediction can be worked out by hand (see each test).
"""

import csv
import os

import pandas as pd
import pytest

from ddp_bench.report.build import build_report
from ddp_bench.report.data import load_rows, summarise_runs
from ddp_bench.report.scaling import straggler_table
from tests.helpers.rank_rows import read_rows
from tests.helpers.report_runs import BUCKETS, GPU, allreduce_fixture, timed_fixture_run
from tests.helpers.runs import clean_env, run_cli, run_torchrun


def gpu_series(out) -> None:
    # 1 rank: 100 steps x 64 in 2 s = 3200 images/s; 2 ranks: 12800 images, slowest 2.5 s = 5120 images/s
    timed_fixture_run(out, "w1", 1, [2.0], compute_step_ms=20.0, job_compute_step_ms=20.0, grad_buckets=BUCKETS, **GPU)
    timed_fixture_run(
        out, "w2", 2, [2.5, 2.5], compute_step_ms=25.0, job_compute_step_ms=25.0, grad_buckets=BUCKETS, **GPU
    )


def test_predictions_at_measured_and_extrapolated_counts_by_hand(tmp_path):
    gpu_series(tmp_path)
    allreduce_fixture(tmp_path, world=2, nodes=2)
    report = build_report([str(tmp_path)], str(tmp_path / "report"), predict_to=4)
    (model,) = report.models
    rows = model.predictions.set_index("world_size")
    assert list(rows.index) == [1, 2, 4]
    # 1 rank: no all-reduce; 64 images per 20 ms
    assert rows.loc[1, "predicted_images_per_s"] == pytest.approx(3200)
    # 2 ranks, measured curve, 1 ms per MB: the 4 MB bucket runs from -30 to -26 ms (hidden), the 1 MB bucket
    # from 0 to 1 ms (exposed): step 25 + 1 = 26 ms, 128 images per step
    assert rows.loc[2, "step_ms"] == pytest.approx(26.0)
    assert rows.loc[2, "predicted_images_per_s"] == pytest.approx(128_000 / 26)
    assert rows.loc[2, "predicted_images_per_s_low"] == pytest.approx(128_000 / 30)  # no overlap: 25 + 5
    assert rows.loc[2, "predicted_images_per_s_high"] == pytest.approx(128_000 / 25)  # all 5 ms hidden
    assert rows.loc[2, "predicted_efficiency"] == pytest.approx(128_000 / 26 / 2 / 3200)
    assert rows.loc[2, "comm_cpu_ms"] == 0.0  # NCCL on GPUs: the CPU term does not apply
    assert rows.loc[2, "measured_images_per_s"] == pytest.approx(5120)
    # 4 ranks, extrapolated: the fit at 2 ranks is α = 0, β = 1e9 B/s, so T(4, S) = 6/4 · S/β = 1.5 ms per MB;
    # the 1 MB bucket is exposed for 1.5 ms: step 26.5 ms for 256 images
    assert rows.loc[4, "comm_from"] == "α–β fit at 2 ranks (bandwidth by message size)"
    assert rows.loc[4, "compute_from"] == "largest run (2)" and rows.loc[4, "allreduce_algorithm"] == "ring"
    assert rows.loc[4, "predicted_images_per_s"] == pytest.approx(256_000 / 26.5)
    assert "bus bandwidth 1.000–1.000 GB/s by message size (1,000,000–16,000,000 bytes), fitted at 2 ranks" in (
        model.allreduce_source
    )
    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert summary.set_index("world_size").loc[2, "predicted_images_per_s"] == pytest.approx(128_000 / 26)
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "## Scaling model" in text and "predicted images/s | predicted efficiency" in text
    assert os.path.exists(tmp_path / "report" / "predictions.csv")


def test_cpu_ranks_add_the_overlapped_allreduce_cpu_time(tmp_path):
    cpu = dict(launcher="slurm", backend="nccl", device="cpu")  # device kind CPU; keys match the fixture table
    timed_fixture_run(
        tmp_path, "w1", 1, [2.0], compute_step_ms=20.0, job_compute_step_ms=20.0, grad_buckets=BUCKETS, **cpu
    )
    timed_fixture_run(
        tmp_path, "w2", 2, [2.5, 2.5], compute_step_ms=25.0, job_compute_step_ms=25.0, grad_buckets=BUCKETS, **cpu
    )
    allreduce_fixture(tmp_path, world=2, nodes=2)
    (model,) = build_report([str(tmp_path)], str(tmp_path / "report")).models
    two = model.predictions.set_index("world_size").loc[2]
    # the 4 MB bucket overlaps backward for all of its 4 ms, using 2 ms of CPU (cpu_time_us = time_us / 2);
    # the 1 MB bucket starts at the end of backward and competes with nothing
    assert two["comm_cpu_ms"] == pytest.approx(2.0)
    assert two["step_ms"] == pytest.approx(25 + 2 + 1)


def test_nothing_fitted_to_the_largest_runs_miss_is_carried_past_it(tmp_path):
    # issue #25: a measured step longer than the model's (32 ms against 28) must not come back as a term past it
    for device in ("cpu", "cuda:0"):
        out = tmp_path / device.replace(":", "")
        kind = dict(launcher="slurm", backend="nccl", device=device)
        timed_fixture_run(
            out, "w1", 1, [2.0], compute_step_ms=20.0, job_compute_step_ms=20.0, grad_buckets=BUCKETS, **kind
        )
        timed_fixture_run(
            out, "w2", 2, [3.2, 3.2], compute_step_ms=25.0, job_compute_step_ms=25.0, grad_buckets=BUCKETS, **kind
        )
        allreduce_fixture(out, world=2, nodes=2)
        (model,) = build_report([str(out)], str(out / "report"), predict_to=4).models
        rows = model.predictions.set_index("world_size")
        assert "shared_core_ms" not in rows.columns
        # 4 ranks: 1.5 ms per MB, the 1 MB bucket exposed for 1.5 ms; on CPU ranks the 4 MB bucket's 3 ms of CPU
        # time (2 ms at 2 ranks x 1.5) overlaps backward: 25 + 3 + 1.5 ms, on GPUs 25 + 1.5 ms
        assert rows.loc[4, "step_ms"] == pytest.approx(29.5 if device == "cpu" else 26.5)


def test_series_the_model_cannot_serve_say_why(tmp_path):
    gpu_series(tmp_path)  # no allreduce.csv at all
    timed_fixture_run(
        tmp_path,
        "s2",
        2,
        [2.0, 2.0],
        scaling="strong",
        compute_step_ms=25.0,
        job_compute_step_ms=25.0,
        grad_buckets=BUCKETS,
        **GPU,
    )
    report = build_report([str(tmp_path)], str(tmp_path / "report"))
    assert not report.models
    assert any("no allreduce.csv from slurm with nccl" in why for why in report.not_modelled)
    assert any("strong scaling" in why for why in report.not_modelled)
    allreduce_fixture(tmp_path, world=2, nodes=1)
    timed_fixture_run(
        tmp_path, "w4", 4, [2.0] * 4, compute_step_ms=25.0, job_compute_step_ms=25.0, grad_buckets="not buckets", **GPU
    )
    report = build_report([str(tmp_path)], str(tmp_path / "report2"))
    assert any("grad_buckets cell" in why for why in report.not_modelled)


def test_predict_to_must_be_a_count(tmp_path):
    gpu_series(tmp_path)
    done = run_cli(["report", str(tmp_path), "--out", str(tmp_path / "r"), "--predict-to", "-4"])
    assert (
        done.returncode == 2
        and "--predict-to must be zero or more, not -4" in done.stderr
        and "Traceback" not in done.stderr
    )
    done = run_cli(["report", str(tmp_path), "--out", str(tmp_path / "r"), "--predict-to", "many"])
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_straggler_table_by_hand(tmp_path):
    # 4 ranks, rank 3's compute-only step 25 ms against 20: 2560 against 3200 images/s, 20 % below the median
    timed_fixture_run(tmp_path, "slow", 4, [2.0] * 4, compute_step_ms=20.0, **GPU)
    rows = load_rows([str(tmp_path)]).rows
    rows.loc[rows["rank"] == 3, "compute_step_ms"] = 25.0
    rows.loc[rows["rank"] == 3, "hostname"] = "node-b"
    timed_fixture_run(tmp_path, "even", 2, [2.0, 2.0], compute_step_ms=20.0, **GPU)
    even = load_rows([str(tmp_path)]).rows
    even = even[even["run_id"] == "even"].copy()
    even.loc[even["rank"] == 1, "compute_step_ms"] = 21.0  # 4.8 % slower: 2.4 % below the median of two
    both = pd.concat([rows, even], ignore_index=True)
    table = straggler_table(both, summarise_runs(both).runs).set_index("run_id")
    slow = table.loc["slow"]
    assert (slow["images_per_s_min"], slow["images_per_s_median"], slow["images_per_s_max"]) == pytest.approx(
        (2560, 3200, 3200)
    )
    assert (slow["slowest_rank"], slow["slowest_host"], bool(slow["straggler"])) == (3, "node-b", True)
    assert slow["below_median"] == pytest.approx(0.2)
    assert not table.loc["even", "straggler"] and table.loc["even", "below_median"] == pytest.approx(
        1 - (64_000 / 21) / ((3200 + 64_000 / 21) / 2)
    )


@pytest.mark.long
@pytest.mark.distributed
def test_a_rank_slowed_on_purpose_is_named_the_straggler(tmp_path):
    env = clean_env(DDP_BENCH_FAULT="rank=1,kind=slow,ms=40", OMP_NUM_THREADS="1")
    out = tmp_path / "results"
    done = run_torchrun(2, ["--device", "cpu", "--steps", "10", "--warmup-steps", "2", "--out", str(out)], env=env)
    assert done.returncode == 0, done.stderr
    rows = read_rows(out)
    # rank 1's own steps carry the 40 ms; rank 0's do not (while with the all-reduce both wait for rank 1)
    assert float(rows[1]["compute_step_ms"]) > float(rows[0]["compute_step_ms"]) + 30
    # the gradient buckets are the ones DDP builds for the course CNN: fc layers first, then the convolutions
    assert [part.split("@")[0] for part in rows[0]["grad_buckets"].split(";")] == ["4724264", "75264"]
    report = run_cli(["report", str(out), "--out", str(tmp_path / "report")])
    assert report.returncode == 0, report.stderr
    with open(tmp_path / "report" / "stragglers.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["slowest_rank"] == "1" and row["straggler"] == "True" and float(row["below_median"]) > 0.1
    assert "**straggler**" in (tmp_path / "report" / "summary.md").read_text()


def test_slow_fault_needs_its_delay(tmp_path):
    env = clean_env(DDP_BENCH_FAULT="rank=1,kind=slow")
    done = run_cli(["--device", "cpu", "--steps", "1", "--out", str(tmp_path)], env=env)
    assert done.returncode == 2 and "kind=slow,ms=M" in done.stderr and "Traceback" not in done.stderr


def test_a_job_of_multi_gpu_nodes_is_predicted_in_two_stages_by_hand(tmp_path):
    # TEST FIXTURE curves: inside one node (2 ranks) 100 µs per MB, so α = 0 and β_intra = 2·1/2 / 1e-10 = 10 GB/s;
    # across 2 nodes × 2 ranks 1100 µs per MB, of which the intra stage at 2 ranks takes 100: the network's
    # 1000 µs per MB gives β_inter = 2·1/2 / 1e-9 = 1 GB/s per node. At 4 nodes × 2: T = 2·1/2·S/10e9 + 2·3/4·S/1e9
    # = 0.1 + 1.5 = 1.6 ms per MB (a flat ring fitted at 4 ranks would say 1.1 × (14/8)/(6/4) = 1.283).
    timed_fixture_run(
        tmp_path, "w1", 1, [2.0], compute_step_ms=20.0, job_compute_step_ms=20.0, grad_buckets=BUCKETS, **GPU
    )
    timed_fixture_run(tmp_path, "w2", 2, [2.5] * 2, compute_step_ms=25.0, job_compute_step_ms=25.0,
                      grad_buckets=BUCKETS, **GPU)  # fmt: skip
    timed_fixture_run(tmp_path, "w4", 4, [2.5] * 4, compute_step_ms=25.0, job_compute_step_ms=25.0,
                      grad_buckets=BUCKETS, num_nodes=2, local_world_size=2, **GPU)  # fmt: skip
    allreduce_fixture(tmp_path, world=2, nodes=1, us_per_mb=100.0)
    allreduce_fixture(tmp_path, world=4, nodes=2, us_per_mb=1100.0)
    report = build_report([str(tmp_path)], str(tmp_path / "report"), predict_to=8)
    (model,) = report.models
    rows = model.predictions.set_index("world_size")
    assert rows.loc[4, "comm_from"] == "measured at 4 ranks on 2 node(s)"
    assert (rows.loc[8, "comm_from"], rows.loc[8, "num_nodes"]) == ("two-stage fit (4 node(s) × 2)", 4)
    # the 4 MB bucket (6.4 ms from 30 ms before the end) is hidden; the 1 MB one is exposed for 1.6 ms
    assert rows.loc[8, "step_ms"] == pytest.approx(25.0 + 1.6)
    assert rows.loc[8, "predicted_images_per_s"] == pytest.approx(8 * 64 * 1000 / 26.6)
    assert "between nodes, per node, α = 0.0 µs per hop, bus bandwidth 1.000–1.000 GB/s" in (model.allreduce_source)
    assert "inside a node α = 0.0 µs per hop, bus bandwidth 10.000–10.000 GB/s" in model.allreduce_source
