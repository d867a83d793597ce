"""`sweep --study`: the scaling study an allocation committee reads (issue 21's Alliance RAC guidance: a fixed
problem at 5-6 or more resource counts, as strong and as weak scaling, with a test problem of 30-60 minutes).

The counts double from the smallest the site allows, as many as the guidance asks. The test problem's length is
set from a measured step time (`--problem-minutes` reads complete runs of the same configuration at the smallest
count); each count's timed stage is then estimated with ideal scaling (a lower bound for strong scaling: real
runs are slower), and a run too short for the counters or timers to measure well is warned about.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from ddp_bench.cluster.site_types import ClusterProfile
from ddp_bench.config import BenchConfig
from ddp_bench.errors import UsageError
from ddp_bench.measurement.consumption import MIN_NVML_STAGE_S
from ddp_bench.model_spec import source_sha256
from ddp_bench.results.rank_files import complete_runs

STUDY_COUNTS = 5  # "5-6 or more resource counts"
PROBLEM_MINUTES = (30, 60)  # "a test problem of 30-60 minutes"
MIN_STEPS = 10  # below 10 measured steps the p90 step time is simply the slowest step


def study_counts(profile: ClusterProfile, gpus_per_node: int) -> list[int]:
    """1, 2, 4, 8, 16 ... (or from one whole node where jobs take whole nodes), keeping the counts the site allows,
    until there are STUDY_COUNTS of them or the profile's node limit is reached."""
    per_node = max(gpus_per_node, 1)
    count = per_node if profile.gpu_counts == "whole-nodes" else 1
    counts: list[int] = []
    while len(counts) < STUDY_COUNTS:
        if profile.max_nodes and -(-count // per_node) > profile.max_nodes:
            break
        allowed = profile.gpu_counts == "any" or count % per_node == 0
        if allowed or (profile.gpu_counts == "one-or-whole-nodes" and count == 1):
            counts.append(count)
        count *= 2
    return counts


def partial_node_warning(counts: Sequence[int], gpus_per_node: int, node_gpus: int) -> str:
    """Why no count of this sweep keeps every GPU of a node busy, or '' when one does: compute measured on part of
    a node misses the host's contention once a node is full, and the report then widens its band (issue #25).
    --study's default counts (study_counts: 1, 2, 4, ... from the node's GPUs) always hold one full node."""
    if node_gpus <= 0 or (gpus_per_node >= node_gpus and any(count % node_gpus == 0 for count in counts)):
        return ""
    return (
        f"no count fills a node of {node_gpus} GPUs ({gpus_per_node} per node, counts {', '.join(map(str, counts))}): "
        "compute is measured on part of a node, which misses the host's contention once a node is full (the report "
        "widens the band only where the job could see the node's other GPUs: measure one full node)"
    )


def warn_partial_node(counts: Sequence[int], gpus_per_node: int, node_gpus: int) -> None:
    """partial_node_warning on stderr, where it has one."""
    warning = partial_node_warning(counts, gpus_per_node, node_gpus)
    if warning:
        print(f"ddp_bench: warning: {warning}", file=sys.stderr)


@dataclass(frozen=True)
class Calibration:
    step_ms: float  # median over runs of the slowest rank's median step
    gpus: int
    runs: int
    dataset_size: int  # images in one epoch


def calibrate(directory: str, cfg: BenchConfig, gpus: int, exclude: frozenset[str] = frozenset()) -> Calibration | None:
    """The measured step time of this configuration at `gpus` ranks: complete runs in `directory` with the same
    model, data, per-rank batch, precision and memory format (and device, unless it is auto); runs whose sweep key
    is in `exclude` (the study's own, which its length must not drift with) do not count."""
    wanted = {
        "model": cfg.model,
        "data": cfg.data,
        "batch_size": str(cfg.batch_size),
        "amp": cfg.amp,
        "channels_last": str(cfg.channels_last),
        "compile": str(cfg.compile),
        "world_size": str(gpus),
    }
    source = source_sha256(cfg.model_spec)  # the user's model: only runs of this version of its file
    if source:
        wanted["model_sha256"] = source
    steps, sizes = [], []
    for rows in complete_runs(directory):
        first = rows[0]
        if any(first.get(name) != value for name, value in wanted.items()) or first["sweep_key"] in exclude:
            continue
        if cfg.device != "auto" and not first["device"].startswith(cfg.device):
            continue
        try:
            steps.append(max(float(row["step_time_median_ms"]) for row in rows))
            sizes.append(int(first["dataset_size"]))
        except ValueError:
            continue
    if not steps:
        return None
    return Calibration(statistics.median(steps), gpus, len(steps), sizes[0])


def problem_steps(minutes: float, calibration: Calibration) -> int:
    return max(1, math.ceil(minutes * 60_000 / calibration.step_ms))


def timed_stage_s(calibration: Calibration, steps: int, gpus: int, scaling: str) -> float:
    """The timed stage at `gpus` ranks under ideal scaling: weak keeps the step, strong divides it."""
    share = calibration.gpus / gpus if scaling == "strong" else 1.0
    return steps * calibration.step_ms * share / 1000


def run_steps(cfg: BenchConfig, calibration: Calibration | None, global_batch: int) -> int | None:
    """Measured steps of a run with these flags (epochs converted with the dataset's size), None if unknown."""
    if cfg.epochs is None:
        return cfg.measured_steps  # --steps, or the default when neither --steps nor --epochs is given
    if calibration is None:
        return None
    return cfg.epochs * (calibration.dataset_size // max(global_batch, 1))


def length_warnings(
    cfg: BenchConfig,
    calibration: Calibration | None,
    counts: Sequence[int],
    scaling: str,
    minutes: float | None,
    global_batches: Sequence[int],
    study: bool = False,
) -> list[str]:
    """Why some runs of this study would be shorter than the timers or counters can measure well (and, for a
    --study, whether it has the counts the guidance asks for)."""
    warnings = []
    if minutes is not None and not PROBLEM_MINUTES[0] <= minutes <= PROBLEM_MINUTES[1]:
        warnings.append(
            f"--problem-minutes {minutes:g}: the Alliance's Scalability page asks for a test problem of "
            f"{PROBLEM_MINUTES[0]}-{PROBLEM_MINUTES[1]} minutes"
        )
    if study and len(counts) < STUDY_COUNTS:
        warnings.append(
            f"{len(counts)} count(s) ({', '.join(map(str, counts))}): the Alliance's Scalability page asks for "
            f"{STUDY_COUNTS}-6 or more"
        )
    few, short = {}, {}  # count -> steps; count -> estimated seconds
    for gpus, global_batch in zip(counts, global_batches, strict=True):
        steps = run_steps(cfg, calibration, global_batch)
        if steps is not None and steps < MIN_STEPS:
            few[gpus] = steps
        if steps is not None and calibration is not None and cfg.device != "cpu":
            stage = timed_stage_s(calibration, steps, gpus, scaling)
            if stage < MIN_NVML_STAGE_S:
                short[gpus] = stage
    if few:
        at = ", ".join(f"{steps} at {gpus}" for gpus, steps in few.items())
        warnings.append(
            f"measured steps per run ({at} GPU(s)): with fewer than {MIN_STEPS} the p90 step time is the slowest "
            "step; give more --steps"
        )
    if short:
        at = ", ".join(f"{stage:.1f} s at {gpus}" for gpus, stage in short.items())
        warnings.append(
            f"the timed stage would last about {at} GPU(s) ({scaling} scaling, ideal, from {calibration.step_ms:.1f} "
            f"ms per step at {calibration.gpus}): under the {MIN_NVML_STAGE_S:g} s NVML's energy counter needs, so "
            "no energy would be recorded; make the problem longer"
        )
    return warnings


def sized_flags(run_flags: Sequence[str], cfg: BenchConfig, minutes: float, calibration: Calibration | None,
                calibration_dir: str, gpus: int) -> list[str]:  # fmt: skip
    """The run flags with --steps set so the smallest count's timed stage lasts about `minutes`."""
    if cfg.steps is not None or cfg.epochs is not None or cfg.target_accuracy is not None:
        raise UsageError("--problem-minutes sets the run's --steps: leave out --steps, --epochs and --target-accuracy")
    if calibration is None:
        raise UsageError(
            f"--problem-minutes needs a measured step time of this configuration at {gpus} GPU(s) in "
            f"{calibration_dir}: run it once with a few steps (sweep --gpus {gpus} --results {calibration_dir} -- "
            "... --steps 50), then ask again"
        )
    return [*run_flags, "--steps", str(problem_steps(minutes, calibration))]
