"""Tier 1: the Proposal (its table, the knee, what a request costs, the paragraph) and the scaling model's trust
statement, on hand-made rows.

The hand-made rows and all-reduce tables below are TEST FIXTURES, not measurements: round numbers chosen so that
every value can be worked out by hand (see each test). timed_fixture_run's ranks each train 100 steps of 64 images of a
60,000-image training set, so one rank in 2 s is 3,200 images/s and efficiency at N ranks is 2 s ÷ the time.
"""

import csv

import pandas as pd
import pytest

from ddp_bench.cli import main
from ddp_bench.report.build import build_report
from ddp_bench.report.model_trust import backtest, position, series_trust
from ddp_bench.report.proposal import HOURS_PER_YEAR, ProposalOptions, rgu_for, series_proposal
from ddp_bench.report.proposal_text import missing, paragraph
from ddp_bench.report.scaling import SeriesModel, load_allreduce
from tests.helpers.report_runs import BUCKETS, allreduce_fixture, timed_fixture_run

A100 = "NVIDIA A100-SXM4-40GB"
H100 = "NVIDIA H100 80GB HBM3"
NAN = float("nan")


def gpu(name: str = A100, **extra) -> dict:
    return dict(launcher="slurm", backend="nccl", device="cuda:0", device_name=name, **extra)


def counts_run(out, times: dict[int, float], name: str = A100, **extra) -> None:
    """One weak-scaling run per count, every rank taking times[count] seconds."""
    for world, seconds in times.items():
        timed_fixture_run(out, f"{name[-8:]}-w{world}", world, [seconds] * world, **gpu(name, **extra))


FOUR_COUNTS = {1: 2.0, 2: 2.5, 4: 2.5, 8: 4.0}  # efficiency 100, 80, 80 and 50 %


def report_of(tmp_path, predict_to: int = 0, **options):
    return build_report([str(tmp_path)], str(tmp_path / "report"), predict_to, ProposalOptions(**options))


def test_knee_is_the_largest_count_still_at_or_above_75_percent(tmp_path):
    counts_run(tmp_path, FOUR_COUNTS)
    (entry,) = report_of(tmp_path).proposal.series
    rows = entry.rows
    assert rows["devices"].tolist() == [1, 2, 4, 8] and set(rows["source"]) == {"measured"}
    assert rows["efficiency"].tolist() == pytest.approx([1.0, 0.8, 0.8, 0.5])
    assert rows["speedup"].tolist() == pytest.approx([1.0, 1.6, 3.2, 4.0])
    assert rows["epoch_time_s"].tolist() == pytest.approx([60000 / 3200, 60000 / 5120, 60000 / 10240, 60000 / 12800])
    assert rows["good"].tolist() == [True, True, True, False]
    knee = entry.knee
    assert (knee.count, knee.source, knee.below_count, knee.below_source) == (4, "measured", 8, "measured")
    assert knee.below_efficiency == pytest.approx(0.5)
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "## Proposal" in text and "| measured | 8 | 1 | 4.7 s | 12,800.0 | 4.00 | 50.0 % |" in text
    assert (
        "Efficiency stays at or above 75 % up to 4 GPUs (measured, 80.0 %); at 8 GPUs it is 50.0 % (measured)." in text
    )
    for name in ("proposal.csv", "proposal.md", "proposal.tex"):
        assert (tmp_path / "report" / name).exists()
    assert "\\toprule" in (tmp_path / "report" / "proposal.tex").read_text()


@pytest.mark.parametrize(
    "threshold, good, sentence",
    [
        ("0.85", [True, False, False, False], "up to 1 GPU (measured, 100.0 %); at 2 GPUs it is 80.0 % (measured)."),
        ("0.5", [True, True, True, True], "up to 8 GPUs (measured, 50.0 %): the knee was not reached within the"),
    ],
)
def test_the_threshold_option_moves_the_knee(tmp_path, threshold, good, sentence):
    counts_run(tmp_path / "runs", FOUR_COUNTS)
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "runs"), "--out", str(out), "--efficiency-threshold", threshold]) == 0
    assert pd.read_csv(out / "proposal.csv")["good"].tolist() == good
    assert sentence in (out / "proposal.md").read_text()


def test_the_knee_stops_at_the_first_count_below_the_line(tmp_path):
    counts_run(tmp_path, {1: 2.0, 2: 2 / 0.7, 4: 2.5})  # 100 %, 70 %, then 80 % again
    knee = report_of(tmp_path).proposal.series[0].knee
    assert (knee.count, knee.below_count) == (1, 2) and knee.below_efficiency == pytest.approx(0.7)


def test_knee_from_predicted_rows_is_marked_predicted(tmp_path):
    counts_run(tmp_path, {1: 2.0, 2: 2.5})  # 3,200 and 5,120 images/s: 100 and 80 %
    points = report_of(tmp_path).summary
    # the model as a black box: hand-made predictions, 78 % at 4, 76 % at 8, 60 % at 16
    efficiency = [1.0, 0.8, 0.78, 0.76, 0.6]
    counts = [1, 2, 4, 8, 16]
    predictions = pd.DataFrame(
        {
            "world_size": counts,
            "measured_images_per_s": [3200.0, 5120.0, NAN, NAN, NAN],
            "predicted_images_per_s": [3200 * n * e for n, e in zip(counts, efficiency, strict=True)],
            "predicted_efficiency": efficiency,
        }
    )
    model = SeriesModel(points["series"].iloc[0], predictions, "fixture", "fixture")
    trust = series_trust(points, load_allreduce([])[0], model)
    options = ProposalOptions(request_images=1_000_000)
    entry = series_proposal(points, model, trust, "", options)
    rows = entry.rows.set_index("devices")
    assert entry.rows["source"].tolist() == ["measured"] * 2 + ["predicted"] * 3
    at8 = rows.loc[8]
    assert at8["images_per_s"] == pytest.approx(8 * 3200 * 0.76)
    assert at8["speedup"] == pytest.approx(8 * 0.76) and at8["global_batch_size"] == 8 * 64
    assert at8["epoch_time_s"] == pytest.approx(60000 / (8 * 3200 * 0.76))
    assert at8["wall_time_s"] == pytest.approx(1e6 / (8 * 3200 * 0.76))
    assert at8["device_hours"] == pytest.approx(8 * 1e6 / (8 * 3200 * 0.76) / 3600)
    knee = entry.knee
    assert (knee.count, knee.source, knee.below_count, knee.below_source) == (8, "predicted", 16, "predicted")
    # the fixture rows have no buckets and there is no all-reduce table: the model cannot predict 2 from 1
    # alone, and the row says so
    assert at8["trust"] == (
        "extrapolation, ×4 past the largest measured count (2); not checked past the measured counts"
    )
    assert trust.backtest.why_not.startswith("2 from the smaller counts alone: ")
    text = paragraph(entry, options)
    assert "up to 8 GPUs (predicted by the scaling model, 76.0 %); at 16 GPUs it is 60.0 %" in text
    assert "That knee is the scaling model's prediction: extrapolation, ×4 past the largest measured" in text
    assert "At 8 GPUs, 1,000,000 images take 51.4 s of training at 19,456.0 images/s (predicted" in text


def test_request_cost_by_hand_with_rgu_years(tmp_path):
    for name in (A100, H100):
        counts_run(tmp_path, {1: 2.0, 2: 2.5}, name=name)  # 3,200 and 5,120 images/s on both
    table = report_of(tmp_path, request_epochs=3).proposal.table()
    at = table.set_index(["device_name", "devices"])
    # 3 epochs of 60,000 images = 180,000 images; at 2 A100s: 180,000 ÷ 5,120 = 35.15625 s, and 2 × that =
    # 0.01953125 device-hours; a year is 8,760 h and an A100-40gb 4.0 RGU
    a100 = at.loc[(A100, 2)]
    assert (a100["request_images"], a100["wall_time_s"], a100["device_hours"]) == pytest.approx(
        (180_000, 35.15625, 0.01953125)
    )
    assert HOURS_PER_YEAR == 8760 and a100["gpu_model"] == "A100-40gb"
    assert a100["rgu_years"] == pytest.approx(0.01953125 / 8760 * 4.0)
    # one H100 (12.2 RGU): 180,000 ÷ 3,200 = 56.25 s, 0.015625 device-hours
    h100 = at.loc[(H100, 1)]
    assert (h100["wall_time_s"], h100["device_hours"]) == pytest.approx((56.25, 0.015625))
    assert h100["gpu_model"] == "H100-80gb" and h100["rgu_years"] == pytest.approx(0.015625 / 8760 * 12.2)
    # by images: 1,024,000 ÷ 5,120 = 200 s on 2 A100s = 0.1111 device-hours = 5.07e-05 RGU-years
    report = report_of(tmp_path, request_images=1_024_000)
    entry = next(entry for entry in report.proposal.series if entry.points["device_name"].iloc[0] == A100)
    assert entry.rows.set_index("devices").loc[2, "wall_time_s"] == pytest.approx(200.0)
    assert (
        "At 2 GPUs, 1,024,000 images take 3.3 min of training at 5,120.0 images/s (measured): 0.111 device-hours, "
        "or 5.07e-05 RGU-years on A100-40gb GPUs (4.0 RGU each)." in paragraph(entry, report.proposal.options)
    )


def test_a_gpu_model_without_an_rgu_value_gets_an_empty_cell_and_the_reason(tmp_path):
    for name in ("Tesla T4", "NVIDIA A100-SXM4-80GB"):
        counts_run(tmp_path, {1: 2.0, 2: 2.5}, name=name)
    report = report_of(tmp_path, request_epochs=1)
    with open(tmp_path / "report" / "proposal.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {(row["gpu_model"], row["rgu_per_device"], row["rgu_years"]) for row in rows} == {("", "", "")}
    notes = {row["device_name"]: row["rgu_note"] for row in rows}
    assert notes == {
        "Tesla T4": "no RGU value for Tesla T4 in the table used (H100-80gb, A100-40gb)",
        "NVIDIA A100-SXM4-80GB": "no RGU value for A100-SXM4-80GB in the table used (H100-80gb, A100-40gb)",
    }
    assert all(row["device_hours"] for row in rows)  # device-hours do not need an RGU value
    texts = [paragraph(entry, report.proposal.options) for entry in report.proposal.series]
    assert any("(no RGU-years: no RGU value for Tesla T4 in the table used" in text for text in texts)
    assert "MIG instance" in rgu_for("GPU", "NVIDIA A100-SXM4-40GB MIG 3g.20gb").note
    assert rgu_for("CPU", "Intel Xeon").note == "CPU ranks: RGUs are defined for GPU models only"


def test_a_series_with_one_count_says_what_is_missing(tmp_path):
    timed_fixture_run(tmp_path, "w1", 1, [2.0], **gpu())
    report = report_of(tmp_path, request_epochs=1)
    (entry,) = report.proposal.series
    assert entry.rows.empty and entry.knee is None
    assert not (tmp_path / "report" / "proposal.csv").exists()  # no table to hand in
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "at 1 GPU only, on 1 node: 3,200.0 images/s, 18.8 s per epoch." in text
    assert "- Scaling: only 1 GPU measured, so there is no speedup, efficiency or knee" in text
    assert "Efficiency stays" not in text and "device-hours" not in paragraph(entry, report.proposal.options)
    check = backtest(report.summary, load_allreduce([])[0])
    assert check.why_not == "one count measured, nothing smaller to predict it from"
    assert check.statement().startswith("not checked past the measured counts: one count measured")


def test_cpu_only_rows_say_that_gpu_numbers_are_missing(tmp_path):
    cpu = dict(device="cpu", backend="gloo", launcher="torchrun", platform="local", cluster="")
    for world, seconds in ((1, 2.0), (2, 2.5)):
        timed_fixture_run(tmp_path, f"c{world}", world, [seconds] * world, device_name="Intel Xeon Processor", **cpu)
    report = report_of(tmp_path)
    (entry,) = report.proposal.series
    text = paragraph(entry, report.proposal.options)
    assert "with ddp_bench on CPU ranks of Intel Xeon Processor (local), at 1 and 2 CPU ranks on 1 node." in text
    gaps = missing(entry, report.proposal.options)
    assert gaps[0].startswith("GPU numbers: these are CPU ranks")
    assert "Counts: 2 measured" in gaps[1] and "--request-epochs" in gaps[-1]
    costed = report_of(tmp_path, request_epochs=1).proposal
    assert "(no RGU-years: CPU ranks: RGUs are defined for GPU models only)." in paragraph(
        costed.series[0], costed.options
    )


def allreduce_table(out, world: int, us_per_mb: float) -> None:
    """An allreduce.csv on one node: exactly `us_per_mb` µs per MB, no latency (CPU time half of it)."""
    allreduce_fixture(out, world, 1, us_per_mb, device_name=A100)


def test_trust_statement_by_hand(tmp_path):
    # 1, 2 and 4 ranks on one node: 3,200, 5,120 and 10,240 images/s; compute 20, 25 and 25 ms; all-reduce at 2
    # ranks, 1 ms per MB (the 4 MB bucket hides behind backward, the 1 MB one is exposed)
    for world, seconds, compute in ((1, 2.0, 20.0), (2, 2.5, 25.0), (4, 2.5, 25.0)):
        timed_fixture_run(tmp_path, f"w{world}", world, [seconds] * world, compute_step_ms=compute,
                    job_compute_step_ms=compute, grad_buckets=BUCKETS, **gpu())  # fmt: skip
    allreduce_table(tmp_path, 2, 1000.0)
    report = report_of(tmp_path, predict_to=16)
    (trust,) = report.trust
    # the backtest: 4 from 1 and 2 alone. The α–β fit at 2 ranks (α = 0, β = 1e9 B/s) gives 6/4 · 1 ms = 1.5 ms
    # per MB at 4 ranks; the 2-rank run's compute 25 ms + the exposed 1 MB bucket = 26.5 ms for 256 images
    check = trust.backtest
    assert (check.count, check.from_counts, check.reach) == (4, (1, 2), 2.0)
    assert (check.predicted, check.measured) == pytest.approx((256_000 / 26.5, 10_240))
    assert check.error == pytest.approx(256_000 / 26.5 / 10_240 - 1)  # -5.7 %
    rows = trust.rows.set_index("world_size")
    assert rows["position"].tolist() == ["measured"] * 3 + ["extrapolation"] * 2
    assert rows.loc[[8, 16], "reach"].tolist() == [2.0, 4.0]
    # at 1 rank no all-reduce: exact; at 2 ranks the measured curve: 25 + 1 ms = 26 ms for 128 images
    assert rows.loc[[1, 2], "error_here"].tolist() == pytest.approx([0.0, 128_000 / 26 / 5120 - 1])
    on_disk = pd.read_csv(tmp_path / "report" / "predictions.csv").set_index("world_size")
    assert on_disk.loc[8, "position"] == "extrapolation" and on_disk.loc[8, "checked_at"] == 4
    assert on_disk.loc[8, "checked_error"] == pytest.approx(check.error)
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "- checked: 4 predicted from 1 and 2 alone (×2 past them): 9,660.4 images/s against 10,240.0 measured " \
           "(-5.7 %)." in text  # fmt: skip
    assert "- model vs measured at each measured count: 1: +0.0 %, 2: -3.8 %, 4: -5.7 %." in text
    assert "| extrapolation ×4 | — |" in text
    predicted = report.proposal.table().set_index("devices").loc[16]
    assert predicted["source"] == "predicted" and predicted["trust"] == (
        "extrapolation, ×4 past the largest measured count (4); checked error -5.7 % (4 predicted from 1 and 2)"
    )
    # the backtest never sees the all-reduce measured at 4 ranks: one three times slower changes the model's
    # prediction at 4, not the backtest's
    allreduce_table(tmp_path, 4, 3000.0)
    again = build_report([str(tmp_path)], str(tmp_path / "report2"), 16)
    assert again.trust[0].backtest.predicted == pytest.approx(check.predicted)
    at4 = again.models[0].predictions.set_index("world_size").loc[4, "predicted_images_per_s"]
    assert at4 != pytest.approx(check.predicted)


def test_positions():
    assert position(2, (2, 8)) == ("measured", 0.25)
    assert position(4, (2, 8)) == ("interpolation", 0.5)
    assert position(32, (2, 8)) == ("extrapolation", 4.0)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--efficiency-threshold", "75"], "--efficiency-threshold 75: give a fraction above 0 and at most 1"),
        (["--efficiency-threshold", "0"], "--efficiency-threshold 0: give a fraction above 0"),
        (["--request-epochs", "0"], "--request-epochs 0: give a number of epochs above 0"),
        (["--request-epochs", "nan"], "--request-epochs nan: give a number of epochs above 0"),
        (["--request-images", "-5"], "--request-images -5: give a number of images, 1 or more"),
        (["--request-epochs", "1", "--request-images", "5"], "not allowed with argument --request-epochs"),
    ],
)
def test_bad_proposal_flags_are_one_line_and_write_nothing(tmp_path, capsys, flags, message):
    timed_fixture_run(tmp_path / "runs", "w1", 1, [2.0])
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "runs"), "--out", str(out), *flags]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("ddp_bench: error: ") and message in line
    assert not out.exists()
