"""Tier 1 + 2: energy, memory and the time before training. RAPL is read from a powercap tree made here (with a
counter that wraps), NVML through a stand-in `pynvml` module at the library boundary, and a real CPU run records
the absence of counters with its reason. The NVML counter values below are a TEST FIXTURE, not a recording:
no GPU was lent to the task that wrote them; the gpu tier (tests/test_gpu.py) reads the real counter."""

import math
import re
import sys
import time
import types

import pytest
import torch

from ddp_bench.cli import main
from ddp_bench.measurement.consumption import (
    MIG_NOTE,
    MIN_NVML_STAGE_S,
    CounterChoice,
    DevicePeak,
    cpu_counter,
    gpu_counter,
    rapl_package_zones,
    stage_energy,
)
from ddp_bench.measurement.energy_window import EnergyWindow, window_steps
from ddp_bench.measurement.job_timing import queue_wait_from_scontrol, setup_seconds, slurm_queue_wait_s
from ddp_bench.measurement.timing import StageClock
from tests.helpers.rank_rows import read_rows


def powercap_tree(root, zones: dict[str, tuple[int, int]]):
    for name, (energy_uj, max_range_uj) in zones.items():
        zone = root / name
        zone.mkdir(parents=True)
        (zone / "energy_uj").write_text(f"{energy_uj}\n")
        (zone / "max_energy_range_uj").write_text(f"{max_range_uj}\n")


def set_energy(root, name: str, energy_uj: int) -> None:
    (root / name / "energy_uj").write_text(f"{energy_uj}\n")


def test_rapl_sums_the_packages_unwraps_their_counters_and_skips_sub_zones(tmp_path):
    powercap_tree(
        tmp_path,
        {"intel-rapl:0": (999_000_000, 1_000_000_000), "intel-rapl:0:0": (5, 10**9), "intel-rapl:1": (10, 10**9)},
    )
    assert [zone.rsplit("/", 1)[1] for zone in rapl_package_zones(str(tmp_path))] == ["intel-rapl:0", "intel-rapl:1"]
    choice = cpu_counter(0, str(tmp_path))
    assert choice.note == "" and choice.counter.source == "rapl"
    clock = StageClock(torch.device("cpu"), choice.counter)
    clock.start()
    set_energy(tmp_path, "intel-rapl:0", 1_500_000)  # wrapped past 1e9 µJ: 1.0 J + 1.5 J
    set_energy(tmp_path, "intel-rapl:1", 2_000_010)  # 2.0 J
    set_energy(tmp_path, "intel-rapl:0:0", 999_999)  # a sub-zone, already inside package 0: not counted
    clock.stop()
    assert clock.energy_j == pytest.approx(4.5)
    set_energy(tmp_path, "intel-rapl:1", 9_000_010)  # spent while the clock was paused: not counted
    clock.start()
    set_energy(tmp_path, "intel-rapl:1", 9_500_010)
    clock.stop()
    assert clock.energy_j == pytest.approx(5.0)


def test_rapl_is_read_by_local_rank_0_only_and_its_absence_is_explained(tmp_path):
    powercap_tree(tmp_path, {"intel-rapl:0": (1, 10**9)})
    assert cpu_counter(1, str(tmp_path)).counter is None
    assert "local rank 0" in cpu_counter(1, str(tmp_path)).note
    empty = cpu_counter(0, str(tmp_path / "absent"))
    assert empty.counter is None and "no RAPL package counters" in empty.note


class FakeNvml(types.ModuleType):
    """The slice of pynvml that ddp_bench calls, answering from a fixed counter sequence in millijoules."""

    class NVMLError(Exception):
        pass

    def __init__(
        self, readings_mj: list[int], supported: bool = True, known: tuple[str, ...] = ("GPU-",), mig_query=True
    ) -> None:
        super().__init__("pynvml")
        self.readings = list(readings_mj)
        self.supported = supported
        self.mig_query = mig_query  # False: a pre-Ampere GPU, which NVML documents no MIG query for
        self.known = known  # the UUID prefixes NVML answers to
        self.asked_for: list[str] = []

    def nvmlInit(self):  # noqa: N802 (pynvml's names)
        pass

    def nvmlDeviceGetHandleByUUID(self, uuid):  # noqa: N802
        self.asked_for.append(uuid)
        if not uuid.startswith(self.known):
            raise self.NVMLError("Not Found")
        return ("handle", uuid)

    def nvmlDeviceGetHandleByIndex(self, index):  # noqa: N802
        raise AssertionError("a GPU is never looked up by index: NVML's numbers are not torch's")

    def nvmlDeviceIsMigDeviceHandle(self, handle):  # noqa: N802
        if not self.mig_query:
            raise self.NVMLError("Not Supported")
        return handle[1].startswith("MIG-")

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):  # noqa: N802
        if not self.supported:
            raise self.NVMLError("Not Supported")
        return self.readings.pop(0)


def test_nvml_energy_over_the_timed_stage_only(monkeypatch):
    # TEST FIXTURE values (mJ): the check reading, then start/stop, start/stop of a clock paused once.
    nvml = FakeNvml([5_000_000, 5_000_100, 5_250_600, 5_300_000, 5_400_000])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    choice = gpu_counter("6c1c2f0e-0000-0000-0000-000000000000", "")
    assert choice.note == "" and choice.counter.source == "nvml"
    assert nvml.asked_for[-1] == "GPU-6c1c2f0e-0000-0000-0000-000000000000"  # NVML's form of torch's UUID
    clock = StageClock(torch.device("cpu"), choice.counter)
    clock.start()
    clock.stop()
    clock.start()
    clock.stop()
    assert clock.energy_j == pytest.approx((250_500 + 100_000) / 1e3)
    assert nvml.readings == []  # read at the clock's starts and stops, nowhere else


def test_a_gpu_without_the_energy_counter_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([], supported=False))
    choice = gpu_counter("x", "")
    assert choice.counter is None and "NVML energy counter unavailable (Not Supported)" == choice.note


def test_a_gpu_that_cannot_answer_the_mig_query_keeps_its_energy_counter(monkeypatch):
    # A T4 (Turing): NVML documents the MIG-handle query for Ampere and newer only (#28 F4).
    nvml = FakeNvml([7_000_000, 7_000_000, 7_500_000], mig_query=False)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    choice = gpu_counter("6c1c2f0e-0000-0000-0000-000000000000", "")
    assert choice.note == "" and choice.counter.source == "nvml"
    assert choice.counter.read_j() == 7_000.0 and choice.counter.read_j() == 7_500.0


def test_a_mig_slice_records_no_energy_of_another_gpu(monkeypatch):
    nvml = FakeNvml([1, 2], known=("MIG-",))
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    choice = gpu_counter("6c1c2f0e-0000-0000-0000-000000000000", "")  # NVML finds it only as a MIG device
    assert choice.counter is None and choice.note == MIG_NOTE
    assert nvml.asked_for == ["GPU-6c1c2f0e-0000-0000-0000-000000000000", "MIG-6c1c2f0e-0000-0000-0000-000000000000"]
    by_env = gpu_counter("6c1c2f0e", "MIG-2a5bc3d0-1111-2222-3333-444455556666")  # Slurm handed over a slice
    assert by_env.counter is None and by_env.note == MIG_NOTE


def test_a_gpu_nvml_does_not_know_is_never_read_by_index(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([1, 2], known=("nothing",)))
    choice = gpu_counter("6c1c2f0e", "")
    assert (
        choice.counter is None
        and choice.note == "NVML knows no GPU with this device's UUID (6c1c2f0e); energy not recorded"
    )


@pytest.mark.parametrize(
    "source, seconds, recorded", [("nvml", 0.4, False), ("nvml", 5.0, True), ("rapl", 0.4, True), ("", 0.4, False)]
)
def test_nvml_energy_of_a_stage_shorter_than_five_seconds_is_left_empty_with_the_reason(source, seconds, recorded):
    joules, note = stage_energy(source, 123.0 if source else float("nan"), seconds)
    assert (joules == 123.0) is recorded
    assert ("under the 5 s NVML's energy counter" in note) is (source == "nvml" and not recorded)


def test_the_device_memory_peak_is_the_timed_intervals_only():
    # A fake allocator: the peak since the last reset. Warm-up and an evaluation between the intervals allocate
    # more than training does; neither may show.
    peak = {"now": 900 * 2**20}  # left over from the FLOP count and cuDNN's autotuning
    resets = []

    def reset():
        resets.append(1)
        peak["now"] = 0

    memory = DevicePeak(reset, lambda: peak["now"], lambda: 2 * peak["now"])
    clock = StageClock(torch.device("cpu"), memory=memory)
    clock.start()
    peak["now"] = 300 * 2**20  # training
    clock.stop()
    peak["now"] = 700 * 2**20  # evaluation, with the clock paused
    clock.start()
    peak["now"] = 320 * 2**20
    clock.stop()
    assert (memory.allocated_mb, memory.reserved_mb, len(resets)) == (320.0, 640.0, 2)
    assert DevicePeak.of(torch.device("cpu")) is None  # a CPU has no allocator peak: the cells stay empty


def test_a_clock_without_a_counter_has_no_energy():
    clock = StageClock(torch.device("cpu"))
    clock.start()
    clock.stop()
    assert math.isnan(clock.energy_j)


SCONTROL = (
    "JobId=42 JobName=ddp_bench UserId=me(1000) JobState=RUNNING Reason=None SubmitTime=2026-11-22T02:30:05 "
    "EligibleTime=2026-11-22T02:30:05 StartTime=2026-11-22T02:41:35 EndTime=2026-11-22T03:11:35 NodeList=gpu001"
)  # the fields as scontrol --oneliner prints them (times here are a fixture)


def test_queue_wait_is_start_minus_submit_time():
    assert queue_wait_from_scontrol(SCONTROL) == 690.0
    assert math.isnan(queue_wait_from_scontrol(SCONTROL.replace("StartTime=2026-11-22T02:41:35", "StartTime=Unknown")))
    assert math.isnan(slurm_queue_wait_s({}))  # not a Slurm job

    def scontrol(args, **kwargs):
        assert args == ["scontrol", "show", "job", "--oneliner", "42"]
        return types.SimpleNamespace(returncode=0, stdout=SCONTROL)

    assert slurm_queue_wait_s({"SLURM_JOB_ID": "42"}, run=scontrol) == 690.0

    def no_scontrol(args, **kwargs):
        raise FileNotFoundError("scontrol")

    assert math.isnan(slurm_queue_wait_s({"SLURM_JOB_ID": "42"}, run=no_scontrol))


@pytest.mark.parametrize("value, expected", [("12.5", 12.5), ("0", 0.0), ("-3", math.nan), ("soon", math.nan)])
def test_setup_time_comes_from_the_job_script(value, expected):
    assert setup_seconds({"DDP_BENCH_SETUP_S": value}) == pytest.approx(expected, nan_ok=True)


def test_a_cpu_row_records_memory_time_before_training_and_why_energy_is_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("DDP_BENCH_SETUP_S", "7.25")
    assert main(["--device", "cpu", "--steps", "3", "--warmup-steps", "1", "--out", str(tmp_path)]) == 0
    (row,) = read_rows(tmp_path)
    assert float(row["setup_s"]) == 7.25 and row["queue_wait_s"] == ""  # not under Slurm
    assert 0 < float(row["startup_s"]) < float(row["wall_time_s"])
    assert float(row["peak_rss_mb"]) > 100  # torch alone takes more
    assert row["peak_device_allocated_mb"] == row["peak_device_reserved_mb"] == ""
    if rapl_package_zones():  # a machine that exposes RAPL: the node's packages, read by this (local rank 0) rank
        assert row["energy_source"] == "rapl" and float(row["energy_j"]) > 0
        assert float(row["job_energy_j"]) == pytest.approx(float(row["energy_j"]))
    else:  # VMs and containers (CI): empty cells and the reason, never an estimate
        assert row["energy_source"] == "" and "no RAPL package counters" in row["energy_note"]
        assert row["energy_j"] == row["avg_power_w"] == row["images_per_joule"] == row["job_energy_j"] == ""


def test_the_jobs_energy_is_the_sum_of_every_counter_or_none(monkeypatch):
    # Gathered per rank: samples, seconds, joules, and whether the rank has a counter (CPU ranks other than a
    # node's local rank 0 have none by design). One counted rank without a usable reading (a stage under NVML's
    # 5 s) leaves the job's total empty instead of the sum of the others.
    from ddp_bench.training import after_training

    result = types.SimpleNamespace(samples=640, train_time_s=6.0)

    def totals(per_rank):
        monkeypatch.setattr(after_training, "gather_floats", lambda job, values: per_rank)
        return after_training.job_totals(result, None).energy_j

    assert totals([[640, 6.0, 300.0, 1.0], [640, 6.0, 310.0, 1.0]]) == 610.0
    assert totals([[640, 6.0, 300.0, 1.0], [640, 6.0, math.nan, 0.0]]) == 300.0  # the second rank has no counter
    assert math.isnan(totals([[640, 6.0, 300.0, 1.0], [640, 4.9, math.nan, 1.0]]))  # a counter without a reading


class SteadyBoard:
    """A stand-in NVML counter for a board drawing a steady 100 W: joules = 100 x seconds of the process clock."""

    source = "nvml"

    def read_j(self) -> float:
        return 100.0 * time.monotonic()


@pytest.mark.long
def test_a_stage_too_short_for_nvml_gets_its_energy_from_a_window_of_the_same_steps(tmp_path, monkeypatch):
    # #28 F3: a default-length GPU stage lasts well under NVML's 5 s; the window after it is long enough
    from ddp_bench import run as run_module

    monkeypatch.setattr(run_module, "energy_counter", lambda *args: CounterChoice(SteadyBoard(), ""))
    assert main(["--device", "cpu", "--steps", "2", "--warmup-steps", "1", "--out", str(tmp_path)]) == 0
    (row,) = read_rows(tmp_path)
    assert row["energy_j"], f"no energy: {row['energy_source']!r}, {row['energy_note']!r}"
    stage_s, joules = float(row["train_time_s"]), float(row["energy_j"])
    assert stage_s < MIN_NVML_STAGE_S and row["energy_source"] == "nvml"
    assert (
        row["energy_note"].startswith("NVML over an energy window of ")
        and "scaled to the stage's images" in (row["energy_note"])
    )
    window = re.search(r"window of (\d+) more steps \(([\d.]+) s, (\d+) images\)", row["energy_note"])
    window_s, window_images = float(window.group(2)), int(window.group(3))
    assert window_s >= MIN_NVML_STAGE_S
    # the stage's share of a 100 W board: the window's joules per image times the stage's images (not the window's
    # joules, nor the stage's own too-short reading)
    assert joules == pytest.approx(100.0 * window_s * int(row["samples"]) / window_images, rel=0.03)


@pytest.mark.parametrize(
    "needed, step_s, steps", [(False, 0.01, 0), (True, 0.01, 600), (True, 0.0, 0), (True, 1e-9, 100_000)]
)
def test_the_window_is_about_six_seconds_of_the_slowest_ranks_steps(needed, step_s, steps):
    assert window_steps(needed, step_s) == steps


def test_a_window_that_was_still_too_short_records_no_energy_and_says_both_lengths():
    joules, note = EnergyWindow(10, 640, 3.2, float("nan")).stage_energy(6400, 0.5)
    assert joules != joules and "0.50 s" in note and "3.20 s" in note
    assert EnergyWindow(600, 38_400, 6.0, 600.0).stage_energy(6_400, 1.0) == pytest.approx(
        (100.0, EnergyWindow(600, 38_400, 6.0, 600.0).stage_energy(6_400, 1.0)[1])
    )


def test_a_window_that_ran_faster_than_its_stage_runs_once_more_sized_from_its_own_steps(monkeypatch):
    # seen in CI: a 2-step stage at 65 ms a step sized a window of 93 steps, which ran at 52 ms a step: 4.8 s
    from ddp_bench.measurement import energy_window

    monkeypatch.setattr(energy_window, "reduce_floats", lambda job, values, op: values)  # one rank
    stage = types.SimpleNamespace(train_time_s=0.13, steps=2)
    asked = []

    def train_window(steps, counter):
        asked.append(steps)
        seconds = steps * 0.052
        return types.SimpleNamespace(steps=steps, samples=steps * 64, train_time_s=seconds, energy_j=100.0 * seconds)

    window = energy_window.measure_energy_window(None, SteadyBoard(), stage, train_window)
    assert asked == [window_steps(True, 0.065), window_steps(True, 0.052)] == [93, 116]
    assert window.seconds >= MIN_NVML_STAGE_S and window.energy_j == pytest.approx(100.0 * window.seconds)
