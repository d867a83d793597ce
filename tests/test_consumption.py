"""Tier 1 + 2: energy, memory and the time before training. RAPL is read from a powercap tree made here (with a
counter that wraps), NVML through a stand-in `pynvml` module at the library boundary, and a real CPU run records
the absence of counters with its reason. The NVML counter values below are a TEST FIXTURE, not a recording:
no GPU was lent to the task that wrote them; the gpu tier (tests/test_gpu.py) reads the real counter."""

import math
import sys
import types

import pytest
import torch
from conftest import read_rows

from ddp_bench.cli import main
from ddp_bench.measurement.consumption import cpu_counter, gpu_counter, rapl_package_zones
from ddp_bench.measurement.job_timing import queue_wait_from_scontrol, setup_seconds, slurm_queue_wait_s
from ddp_bench.measurement.timing import StageClock


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

    def __init__(self, readings_mj: list[int], supported: bool = True) -> None:
        super().__init__("pynvml")
        self.readings = list(readings_mj)
        self.supported = supported
        self.asked_for: list[str] = []

    def nvmlInit(self):  # noqa: N802 (pynvml's names)
        pass

    def nvmlDeviceGetHandleByUUID(self, uuid):  # noqa: N802
        self.asked_for.append(uuid)
        if not uuid.startswith("GPU-"):
            raise self.NVMLError("Not Found")
        return ("handle", uuid)

    def nvmlDeviceGetHandleByIndex(self, index):  # noqa: N802
        return ("handle", index)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):  # noqa: N802
        if not self.supported:
            raise self.NVMLError("Not Supported")
        return self.readings.pop(0)


def test_nvml_energy_over_the_timed_stage_only(monkeypatch):
    # TEST FIXTURE values (mJ): the check reading, then start/stop, start/stop of a clock paused once.
    nvml = FakeNvml([5_000_000, 5_000_100, 5_250_600, 5_300_000, 5_400_000])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    choice = gpu_counter("6c1c2f0e-0000-0000-0000-000000000000", 0)
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
    choice = gpu_counter("x", 0)
    assert choice.counter is None and "NVML energy counter unavailable (Not Supported)" == choice.note


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
