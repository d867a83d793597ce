"""How long the user waited before training began, besides the training itself: the queue, the job's own setup.

- `queue_wait_s`: Slurm's StartTime minus SubmitTime of this job, from `scontrol show job` (asked once, by rank
  0). Empty outside Slurm, or when scontrol cannot answer.
- `setup_s`: what the job script or notebook measured for building its environment and staging data, handed
  over in `DDP_BENCH_SETUP_S` (the shipped job scripts and the Colab notebook set it). Empty when not given.
- `startup_s`: this process, from `python -m ddp_bench` starting to the job being ready to train: torch's
  import, the checks, the data load and the process group.
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

SETUP_ENV = "DDP_BENCH_SETUP_S"
_TIME_FIELD = re.compile(r"\b(SubmitTime|StartTime)=(\S+)")


def queue_wait_from_scontrol(text: str) -> float:
    """StartTime - SubmitTime in seconds from `scontrol show job` output; NaN if either is missing or unknown."""
    fields = dict(_TIME_FIELD.findall(text))
    try:
        submitted = datetime.fromisoformat(fields["SubmitTime"])
        started = datetime.fromisoformat(fields["StartTime"])
    except (KeyError, ValueError):
        return float("nan")  # 'Unknown', 'None', or a field this Slurm does not print
    return max(0.0, (started - submitted).total_seconds())


def slurm_queue_wait_s(env: Mapping[str, str], run: Callable = subprocess.run) -> float:
    """This Slurm job's time in the queue, or NaN outside Slurm or when scontrol cannot say."""
    job_id = env.get("SLURM_JOB_ID", "")
    if not job_id:
        return float("nan")
    try:
        shown = run(["scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return float("nan")  # no scontrol on this node, or the controller did not answer in time
    return queue_wait_from_scontrol(shown.stdout) if shown.returncode == 0 else float("nan")


def setup_seconds(env: Mapping[str, str]) -> float:
    """DDP_BENCH_SETUP_S as seconds; NaN when unset or not a non-negative number."""
    try:
        value = float(env.get(SETUP_ENV, "nan"))
    except ValueError:
        return float("nan")
    return value if math.isfinite(value) and value >= 0 else float("nan")


@dataclass(frozen=True)
class WaitBeforeTraining:
    """The time to a result besides training: the queue, the job's setup, this process's start-up."""

    queue_wait_s: float
    setup_s: float
    startup_s: float  # from `python -m ddp_bench` starting (imports included) to the job ready to train
