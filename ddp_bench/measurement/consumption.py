"""What a rank consumed: energy over the timed stage, and its peak memory.

Energy counters are read only at the boundaries of the timed stage (never per step):

- GPUs: NVML's total-energy counter (`nvmlDeviceGetTotalEnergyConsumption`, millijoules since the driver
  loaded; Volta and newer, the T4 included), through the maintained `nvidia-ml-py` package.
- CPUs: RAPL package counters under `/sys/class/powercap` (microjoules, wrapping at `max_energy_range_uj`).
  They count whole CPU packages, so only local rank 0 of each node reads them: summing every rank's reading
  would count the node's packages once per rank.

Where no counter can be read (a VM without powercap, a kernel that keeps it root-only, no NVML), the energy
cells stay empty and `energy_note` says why. Nothing is ever estimated from a datasheet.

Memory: the process's peak resident set (every device), and on GPUs the caching allocator's peak allocated and
reserved bytes over the timed stage only (DevicePeak).
"""

from __future__ import annotations

import glob
import os
import resource
from dataclasses import dataclass
from typing import Protocol

from ddp_bench.launch.cuda_build import is_mig

POWERCAP = "/sys/class/powercap"


class EnergyCounter(Protocol):
    source: str

    def read_j(self) -> float:
        """A monotonic energy reading in joules (only differences between two readings mean anything)."""
        ...


@dataclass(frozen=True)
class CounterChoice:
    counter: EnergyCounter | None
    note: str  # why there is no counter ('' when there is one)


class NvmlCounter:
    source = "nvml"

    def __init__(self, nvml, handle) -> None:
        self._nvml = nvml
        self._handle = handle

    def read_j(self) -> float:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1e3  # millijoules


class RaplCounter:
    """The sum of the package zones' counters, each unwrapped (they wrap at their max_energy_range_uj)."""

    source = "rapl"

    def __init__(self, zones: list[str]) -> None:
        self._zones = zones
        self._ranges = [_read_int(os.path.join(zone, "max_energy_range_uj")) for zone in zones]
        self._last = [_read_int(os.path.join(zone, "energy_uj")) for zone in zones]
        self._total_uj = 0

    def read_j(self) -> float:
        for index, zone in enumerate(self._zones):
            now = _read_int(os.path.join(zone, "energy_uj"))
            self._total_uj += (now - self._last[index]) % (self._ranges[index] or 2**63)
            self._last[index] = now
        return self._total_uj / 1e6


def _read_int(path: str) -> int:
    with open(path, encoding="ascii") as handle:
        return int(handle.read().strip())


def rapl_package_zones(root: str = POWERCAP) -> list[str]:
    """The top-level RAPL zones (one per CPU package), not their core/uncore/dram sub-zones."""
    zones = []
    for zone in sorted(glob.glob(os.path.join(root, "intel-rapl:*"))):
        if ":" in os.path.basename(zone).split("intel-rapl:", 1)[1]:
            continue  # intel-rapl:0:0 and the like are parts of a package already counted
        zones.append(zone)
    return zones


def cpu_counter(local_rank: int, root: str = POWERCAP) -> CounterChoice:
    if local_rank != 0:
        return CounterChoice(None, "CPU package energy is read by local rank 0 of each node (RAPL counts the node)")
    zones = rapl_package_zones(root)
    if not zones:
        return CounterChoice(None, f"no RAPL package counters under {root} (common in VMs and containers)")
    try:
        return CounterChoice(RaplCounter(zones), "")
    except (OSError, ValueError) as exc:
        return CounterChoice(None, f"RAPL counters not readable ({exc.strerror if isinstance(exc, OSError) else exc})")


MIG_NOTE = "a MIG slice: NVML's energy counter is the whole board's, other slices' work included, so none is recorded"


def gpu_counter(uuid: str, visible_devices: str) -> CounterChoice:
    """NVML's energy counter for the GPU whose UUID torch reports. Found by UUID only, never by index: NVML numbers
    every GPU of the node, torch only the visible ones, so an index would read another GPU's board. On a MIG slice
    there is no counter of the slice's own."""
    if is_mig(visible_devices):
        return CounterChoice(None, MIG_NOTE)
    try:
        import pynvml  # the nvidia-ml-py package
    except ImportError:
        return CounterChoice(None, "nvidia-ml-py is not installed (pip install nvidia-ml-py)")
    try:
        pynvml.nvmlInit()
        handle = None
        for name in (f"GPU-{uuid}", f"MIG-{uuid}", uuid):  # torch prints the UUID without NVML's prefix
            try:
                handle = pynvml.nvmlDeviceGetHandleByUUID(name)
                break
            except pynvml.NVMLError:
                continue
        if handle is None:
            return CounterChoice(None, f"NVML knows no GPU with this device's UUID ({uuid}); energy not recorded")
        if _is_mig_handle(pynvml, handle):
            return CounterChoice(None, MIG_NOTE)
        counter = NvmlCounter(pynvml, handle)
        counter.read_j()  # pre-Volta GPUs answer NotSupported here
        return CounterChoice(counter, "")
    except pynvml.NVMLError as exc:
        return CounterChoice(None, f"NVML energy counter unavailable ({exc})")


def _is_mig_handle(pynvml, handle) -> bool:
    """NVML documents nvmlDeviceIsMigDeviceHandle for Ampere and newer only: an older GPU (a T4) may answer
    NotSupported, which means it is no MIG slice, not that its energy counter is missing."""
    is_slice = getattr(pynvml, "nvmlDeviceIsMigDeviceHandle", None)
    if is_slice is None:
        return False
    try:
        return bool(is_slice(handle))
    except pynvml.NVMLError:
        return False


# NVML's energy counter advances every 20-100 ms (PETSc's PetscLogGpuEnergyMeter notes on
# nvmlDeviceGetTotalEnergyConsumption): read at a stage's start and stop, it can be off by up to two updates.
# Below 5 s that is more than 4 % of the stage, so shorter stages record no energy.
MIN_NVML_STAGE_S = 5.0


def stage_energy(source: str, joules: float, seconds: float) -> tuple[float, str]:
    """(joules, note) for the row: the reading, or NaN and why, when the stage was too short for this counter."""
    if source == "nvml" and joules == joules and seconds < MIN_NVML_STAGE_S:
        return float("nan"), (
            f"the timed stage lasted {seconds:.2f} s, under the {MIN_NVML_STAGE_S:g} s NVML's energy counter "
            "(updated every 20-100 ms) needs to be within 4 %: run more --steps for energy"
        )
    return joules, ""


class DevicePeak:
    """The caching allocator's peak memory over chosen intervals (the timed stage's), not since the process began:
    the FLOP count, cuDNN's autotuning in warm-up and a second dataset for --compare-synthetic stay out of it.
    Reset when an interval starts, read when it stops; the largest interval's peak is kept."""

    def __init__(self, reset, read_allocated, read_reserved) -> None:
        self._reset, self._allocated, self._reserved = reset, read_allocated, read_reserved
        self.allocated_mb = float("nan")
        self.reserved_mb = float("nan")

    @classmethod
    def of(cls, device) -> DevicePeak | None:
        if device.type != "cuda":
            return None
        import torch

        return cls(
            lambda: torch.cuda.reset_peak_memory_stats(device),
            lambda: torch.cuda.max_memory_allocated(device),
            lambda: torch.cuda.max_memory_reserved(device),
        )

    def start(self) -> None:
        self._reset()

    def stop(self) -> None:
        allocated, reserved = self._allocated() / 2**20, self._reserved() / 2**20
        self.allocated_mb = allocated if not self.allocated_mb >= allocated else self.allocated_mb
        self.reserved_mb = reserved if not self.reserved_mb >= reserved else self.reserved_mb


def peak_rss_mb() -> float:
    """The process's peak resident set, MiB (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
