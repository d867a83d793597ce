"""Timers that count only what they claim to.

`StageClock` times a whole stage in wall-clock seconds and synchronises the device before each reading, so
queued GPU work is inside the interval. `StepTimer` times individual training steps: on CUDA with events
recorded on the stream (no synchronisation inside the loop, read once at the end), on CPU with
`perf_counter`, where every operation has finished when it returns.
"""

from __future__ import annotations

import time

import torch

from ddp_bench.launch.collectives import synchronize
from ddp_bench.measurement.consumption import DevicePeak, EnergyCounter


class StageClock:
    """Wall-clock seconds of a stage, device work included; may be paused (e.g. around evaluation).

    Given an energy counter, it also accumulates the joules spent while it runs, read at the same two moments
    as the clock (after the device is synchronised), so energy and time cover exactly the same intervals; given a
    DevicePeak, the device memory peak is taken over the same intervals too.
    """

    def __init__(
        self, device: torch.device, energy: EnergyCounter | None = None, memory: DevicePeak | None = None
    ) -> None:
        self.device = device
        self.memory = memory
        self.elapsed_s = 0.0
        self.energy_j = 0.0 if energy is not None else float("nan")
        self._energy = energy
        self._started: float | None = None
        self._started_j = 0.0

    def start(self) -> None:
        synchronize(self.device)
        if self.memory is not None:
            self.memory.start()
        self._started = time.perf_counter()
        if self._energy is not None:
            self._started_j = self._energy.read_j()

    def stop(self) -> float:
        if self._started is None:
            raise RuntimeError("StageClock.stop() without start()")
        synchronize(self.device)
        self.elapsed_s += time.perf_counter() - self._started
        if self._energy is not None:
            self.energy_j += self._energy.read_j() - self._started_j
        if self.memory is not None:
            self.memory.stop()
        self._started = None
        return self.elapsed_s


class StepTimer:
    """Per-step durations in milliseconds, from the step's first kernel to its last."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._cpu_ms: list[float] = []
        self._started: torch.cuda.Event | float | None = None

    def start(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._started = event
        else:
            self._started = time.perf_counter()

    def stop(self) -> None:
        if self._started is None:
            raise RuntimeError("StepTimer.stop() without start()")
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((self._started, end))
        else:
            self._cpu_ms.append((time.perf_counter() - self._started) * 1e3)
        self._started = None

    def durations_ms(self) -> list[float]:
        """Every step's duration; on CUDA this waits for the last event, so call it after the timed stage."""
        if self.cuda and self._events:
            self._events[-1][1].synchronize()
            return [start.elapsed_time(end) for start, end in self._events]
        return list(self._cpu_ms)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
