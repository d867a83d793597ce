"""After the timed stage: the untimed measurements every rank runs in the same order (the synthetic-data
comparison, then the exposed-communication control), and the job's totals gathered from every rank."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ddp_bench.config import BenchConfig
from ddp_bench.data import BatchSource, DatasetSpec, Shard, build_batches
from ddp_bench.input_shape import synthetic_like
from ddp_bench.launch.collectives import gather_floats
from ddp_bench.launch.job import Job
from ddp_bench.launch.stopping import StopRequest
from ddp_bench.measurement.consumption import EnergyCounter
from ddp_bench.measurement.energy_window import EnergyWindow, measure_energy_window
from ddp_bench.results.records import global_images_per_second
from ddp_bench.training.comm_control import CommControl, comm_control
from ddp_bench.training.loop import LoopLength, LoopParts, Precision, TrainResult, run_training


@dataclass(frozen=True)
class AfterTraining:
    control: CommControl  # exposed communication, compute-only step time, gradient buckets
    synthetic_images_per_s: float  # NaN unless --compare-synthetic
    energy_window: EnergyWindow | None = None  # the timed stage was too short for NVML: its energy came from here


@dataclass(frozen=True)
class JobTotals:
    images_per_s: float  # the job's throughput from what every rank really did (never rank 0 x N)
    samples: int  # images trained by all ranks
    energy_j: float  # the sum of the counters that were read (GPUs: one per rank; CPUs: one per node, read by its
    # local rank 0); NaN when no rank had a counter


def job_totals(result: TrainResult, job: Job, energy_j: float = float("nan"), counted: bool = False) -> JobTotals:
    """Every rank's samples, time and energy (this rank's usable reading; `counted`: this rank has a counter whose
    reading belongs in the job's sum), gathered from all in one collective. The job's energy is the sum of the
    counted readings, or NaN when any of them is missing (a total of some ranks would not be the job's)."""
    per_rank = gather_floats(job, [float(result.samples), result.train_time_s, energy_j, float(counted)])
    samples = [int(n) for n, _, _, _ in per_rank]
    readings = [joules for _, _, joules, has_counter in per_rank if has_counter]
    whole = bool(readings) and all(joules == joules for joules in readings)
    return JobTotals(
        global_images_per_second(samples, [seconds for _, seconds, _, _ in per_rank]),
        sum(samples),
        sum(readings) if whole else float("nan"),
    )


def measure_after_training(
    cfg: BenchConfig,
    job: Job,
    spec: DatasetSpec,
    ddp_model,
    optimizer,
    scaler,
    batches: BatchSource,
    result: TrainResult,
    energy: EnergyCounter | None = None,
) -> AfterTraining:
    """Untimed extras, on the module, optimizer and loss scaler the run trained; every rank runs them in the same
    order (they contain collectives). The exposed-comm control comes last: its no_sync steps leave the replicas
    apart, so nothing that trains may follow it."""
    precision = Precision(cfg.amp, job.device.type)

    def train_more(source: BatchSource, steps: int, warmup: int, counter: EnergyCounter | None) -> TrainResult:
        parts = LoopParts(
            job=job,
            ddp_model=ddp_model,
            eval_model=ddp_model,
            optimizer=optimizer,
            scaler=scaler,
            scheduler=torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0),
            batches=source,
            precision=precision,
            stop=StopRequest(),
            on_step=lambda: None,
            energy=counter,
        )
        return run_training(parts=parts, length=LoopLength(warmup_steps=warmup, steps=steps, epochs=None))

    synthetic = float("nan")
    if cfg.compare_synthetic and cfg.data != "synthetic" and not result.stopped_by:
        # The same model, batch and steps on synthetic data of the same shape, kept on the device: the ratio
        # of the two throughputs prices the input pipeline.
        shard: Shard = batches.shard
        fake = build_batches("synthetic", "", synthetic_like(spec), "device", shard, 0, train=True)
        synthetic = job_totals(train_more(fake, result.steps, cfg.warmup_steps, None), job).images_per_s
    window = None
    if not result.stopped_by:  # a stage too short for NVML's counter: energy from a longer window of the same steps
        window = measure_energy_window(job, energy, result, lambda steps, meter: train_more(batches, steps, 0, meter))
    control = CommControl(0.0, float("nan"), float("nan"), [])
    if not result.stopped_by:
        control = comm_control(ddp_model, optimizer, scaler, batches, precision, job)
    return AfterTraining(control, synthetic, window)
