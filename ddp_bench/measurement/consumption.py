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
reserved bytes since the last reset (the run resets them after its peak-FLOP measurement, so they are training's).
"""

from __future__ import annotations

import glob
import os
import resource
from dataclasses import dataclass
from typing import Protocol

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


def gpu_counter(uuid: str, index: int) -> CounterChoice:
    """NVML's energy counter for the GPU torch calls `index` (found by UUID: NVML numbers every GPU of the node,
    torch only the visible ones)."""
    try:
        import pynvml  # the nvidia-ml-py package
    except ImportError:
        return CounterChoice(None, "nvidia-ml-py is not installed (pip install nvidia-ml-py)")
    try:
        pynvml.nvmlInit()
        handle = None
        for name in (uuid, f"GPU-{uuid}"):
            try:
                handle = pynvml.nvmlDeviceGetHandleByUUID(name)
                break
            except pynvml.NVMLError:
                continue
        if handle is None:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        counter = NvmlCounter(pynvml, handle)
        counter.read_j()  # pre-Volta GPUs answer NotSupported here
        return CounterChoice(counter, "")
    except pynvml.NVMLError as exc:
        return CounterChoice(None, f"NVML energy counter unavailable ({exc})")


@dataclass(frozen=True)
class PeakMemory:
    rss_mb: float  # the process's peak resident set, MiB
    device_allocated_mb: float  # GPU: peak bytes held by tensors, MiB; NaN on CPU
    device_reserved_mb: float  # GPU: peak bytes the caching allocator held from the driver, MiB; NaN on CPU


def peak_memory(device) -> PeakMemory:
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kilobytes
    if device.type != "cuda":
        return PeakMemory(rss_mb, float("nan"), float("nan"))
    import torch

    return PeakMemory(
        rss_mb, torch.cuda.max_memory_allocated(device) / 2**20, torch.cuda.max_memory_reserved(device) / 2**20
    )
