"""Energy of a timed stage too short for NVML's counter, from a window of the same training long enough for it.

NVML's energy counter advances every 20-100 ms, so a stage under 5 s cannot be read within 4 % (consumption.py).
On a GPU the default runs last well under that: 0.27 s for the course CNN's 100 steps on an H200 (the first GPU
contact, results/nvidia-h200-first-contact). Rather than leave energy empty, every rank then trains on for a window
of about 6 s (the same model, batches, precision and optimizer, after the timed stage, untimed for throughput), the
counter is read around that window alone, and the stage's energy is the window's energy per image times the
stage's images. The row says so in `energy_note`. A window that still ran under the floor (its steps faster than
the stage's) runs once more, sized from its own steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.distributed as dist

from ddp_bench.launch.collectives import reduce_floats
from ddp_bench.launch.job import Job
from ddp_bench.measurement.consumption import MIN_NVML_STAGE_S, EnergyCounter, stage_energy

WINDOW_S = 6.0  # aimed at: 20 % above the floor, so that a window a little faster than the stage still clears it
MAX_WINDOW_STEPS = 100_000


@dataclass(frozen=True)
class EnergyWindow:
    steps: int
    samples: int  # images this rank trained in the window
    seconds: float
    energy_j: float  # this rank's counter over the window; NaN if even the window was too short

    def stage_energy(self, stage_samples: int, stage_s: float) -> tuple[float, str]:
        """(joules, note) for the timed stage: the window's energy per image times the stage's images."""
        if not self.energy_j == self.energy_j or self.samples <= 0:
            return float("nan"), (
                f"the timed stage lasted {stage_s:.2f} s and the energy window of {self.steps} steps "
                f"{self.seconds:.2f} s, both under the {MIN_NVML_STAGE_S:g} s NVML's counter needs"
            )
        return self.energy_j * stage_samples / self.samples, (
            f"NVML over an energy window of {self.steps} more steps ({self.seconds:.1f} s, {self.samples} images) "
            f"after the timed stage ({stage_s:.2f} s, under the {MIN_NVML_STAGE_S:g} s the counter needs), "
            "scaled to the stage's images"
        )


def window_steps(needed: bool, step_s: float) -> int:
    """Steps of about WINDOW_S at this step time (the slowest rank's), or 0 when no rank needs a window."""
    if not needed or not step_s > 0:
        return 0
    return min(MAX_WINDOW_STEPS, math.ceil(WINDOW_S / step_s))


def measure_energy_window(job: Job, counter: EnergyCounter | None, stage, train_window) -> EnergyWindow | None:
    """Every rank takes part (the window's steps hold collectives): the window runs when any rank's NVML stage was
    too short, as many steps everywhere as the slowest rank needs. `stage`: this rank's TrainResult;
    `train_window(steps, counter)`: trains that many more steps and returns their TrainResult."""
    short = counter is not None and counter.source == "nvml" and stage.train_time_s < MIN_NVML_STAGE_S
    step_s = stage.train_time_s / stage.steps if stage.steps else 0.0
    needed, slowest = reduce_floats(job, [float(short), step_s], dist.ReduceOp.MAX)
    steps = window_steps(needed > 0, slowest)
    if steps == 0:
        return None
    window = train_window(steps, counter)
    # The stage's steps can be slower than the window's (a short stage's first steps); a window that ran too fast to
    # clear the floor runs once more, sized from its own steps, and that one is read.
    window_s = window.train_time_s / window.steps if window.steps else 0.0
    again, slowest = reduce_floats(job, [float(window.train_time_s < MIN_NVML_STAGE_S), window_s], dist.ReduceOp.MAX)
    if again > 0 and window_steps(True, slowest) > steps:
        window = train_window(window_steps(True, slowest), counter)
    joules, _ = stage_energy("nvml", window.energy_j, window.train_time_s)
    return EnergyWindow(window.steps, window.samples, window.train_time_s, joules)
