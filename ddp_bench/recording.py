"""This rank's row, built from what was measured, written to disk (or rescued), and the summary printed."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass

import torch

from ddp_bench.config import BenchConfig
from ddp_bench.console import print_summary
from ddp_bench.data import BatchSource, DatasetSpec
from ddp_bench.input_shape import shape_label
from ddp_bench.launch.collectives import align_ranks
from ddp_bench.launch.context import RunContext
from ddp_bench.launch.hardware import HardwarePlan
from ddp_bench.launch.job import Job
from ddp_bench.measurement.compute_drift import quantile_cells
from ddp_bench.measurement.consumption import CounterChoice, peak_rss_mb, stage_energy
from ddp_bench.measurement.job_timing import WaitBeforeTraining
from ddp_bench.measurement.perf import ADVICE, exposed_data_wait_ms, model_flops_utilization, verdict
from ddp_bench.measurement.scaling_model import format_buckets
from ddp_bench.measurement.timing import percentile
from ddp_bench.models import Recipe
from ddp_bench.results.records import (
    ACCURACY_CURVE_COLUMNS,
    ACCURACY_CURVE_FILE,
    RankRecord,
    images_per_second,
    rank_csv_path,
    render_table,
    write_new_file,
    write_rank_csv,
)
from ddp_bench.results.results_dir import rescue_dir, rescue_row
from ddp_bench.training.after_training import AfterTraining, JobTotals, job_totals
from ddp_bench.training.loop import TrainResult
from ddp_bench.user_models import ModelIdentity


@dataclass(frozen=True)
class RunSetup:
    """What one rank's run is, fixed before training starts."""

    cfg: BenchConfig
    job: Job
    plan: HardwarePlan
    context: RunContext
    spec: DatasetSpec
    loader: str
    run_id: str
    started_at: str
    started: float  # perf_counter at process start, for wall_time_s
    flops_per_image: float
    peak_flops: float  # matmul peak measured before training, same device, dtype and math mode
    recipe: Recipe
    waits: WaitBeforeTraining
    energy: CounterChoice  # this rank's energy counter, or why it has none
    cpu_allocator: str  # launch.hardware.steady_cpu_allocator: the malloc settings the process trained with
    identity: ModelIdentity  # where the model came from


@dataclass(frozen=True)
class Written:
    path: str  # where this rank's row is
    failure: str  # '' when the row reached --out; otherwise the one-line reason the run ends with exit 1


def record_rank(
    setup: RunSetup, batches: BatchSource, optimizer, result: TrainResult, extras: AfterTraining
) -> Written:
    """Write this rank's row (or rescue it); rank 0 prints the summary once every rank has done so."""
    energy = rank_energy(setup, result, extras)
    totals = job_totals(result, setup.job, energy.energy_j, counted=setup.energy.counter is not None)  # a collective
    record = build_record(setup, batches, result, extras, energy, totals)
    written = write_row(setup, batches, result, record)
    align_ranks(setup.job)  # rank 0 reports only once every rank's row is on disk
    if setup.job.info.rank == 0:
        print_summary(record, ADVICE[record.verdict], os.path.dirname(written.path))
    return written


@dataclass(frozen=True)
class RankEnergy:
    """This rank's energy over the timed stage."""

    source: str  # the counter it was read from; '' without one
    energy_j: float
    short_note: str  # why the reading is missing or came from a longer window; '' when neither


def rank_energy(setup: RunSetup, result: TrainResult, extras: AfterTraining) -> RankEnergy:
    source = setup.energy.counter.source if setup.energy.counter else ""
    energy_j, short_note = stage_energy(source, result.energy_j, result.train_time_s)
    if extras.energy_window is not None and source == "nvml":
        energy_j, short_note = extras.energy_window.stage_energy(result.samples, result.train_time_s)
    return RankEnergy(source, energy_j, short_note)


def build_record(
    setup: RunSetup,
    batches: BatchSource,
    result: TrainResult,
    extras: AfterTraining,
    energy: RankEnergy,
    totals: JobTotals,
) -> RankRecord:
    """This rank's row: what ran and where, how fast, and at what energy and accuracy."""
    return RankRecord(
        **_run_fields(setup, batches, result),
        **_speed_fields(setup, result, extras, totals),
        **_energy_and_accuracy_fields(setup, result, energy, totals),
        **_provenance_fields(setup),
    )


def _run_fields(setup: RunSetup, batches: BatchSource, result: TrainResult) -> dict[str, object]:
    """What ran, where, and with which settings."""
    cfg, info, context = setup.cfg, setup.job.info, setup.context
    return dict(
        run_id=setup.run_id,
        status="incomplete" if result.stopped_by else "complete",
        started_at=setup.started_at,
        launcher=info.launcher,
        platform=context.platform,
        cluster=context.cluster,
        hostname=context.hostname,
        job_id=info.job_id,
        num_nodes=info.num_nodes,
        node_rank=info.node_rank,
        world_size=info.world_size,
        local_world_size=info.local_world_size,
        rank=info.rank,
        local_rank=info.local_rank,
        backend=setup.plan.backend,
        device=str(setup.job.device),
        device_name=context.device_name,
        mig_slice=context.mig_slice,
        busy_devices_on_node=info.local_world_size if setup.job.device.type == "cuda" else float("nan"),  # CPU: empty
        devices_on_node=context.devices_on_node or float("nan"),
        model=cfg.model,
        model_sha256=setup.identity.source_sha256,
        model_params=setup.identity.params,
        grad_bytes=setup.identity.grad_bytes,
        data=cfg.data,
        input_shape=shape_label(setup.spec),
        num_classes=setup.spec.num_classes,
        loader=setup.loader,
        batch_size=cfg.batch_size,
        global_batch_size=cfg.batch_size * info.world_size,
        scaling=cfg.scaling,
        dataset_size=batches.dataset_size,
        amp=cfg.amp,
        tf32_matmul=torch.backends.cuda.matmul.allow_tf32,  # the math mode in force, read back from torch
        tf32_cudnn=torch.backends.cudnn.allow_tf32,
        cudnn_benchmark=setup.plan.cudnn_benchmark,
        channels_last=cfg.channels_last,
        compile=cfg.compile,
        workers=cfg.workers,
        threads=setup.plan.threads,
        cpu_affinity=context.cpu_affinity,
        cpu_allocator=setup.cpu_allocator,
        lr=setup.recipe.base_lr,
        lr_scaling=cfg.lr_scaling,
        recipe=setup.recipe.name,
        effective_lr=setup.recipe.effective_lr,
        seed=cfg.seed,
        warmup_steps=cfg.warmup_steps,
    )


def _provenance_fields(setup: RunSetup) -> dict[str, object]:
    """The run's labels and the software it ran on."""
    cfg, context = setup.cfg, setup.context
    return dict(
        tag=cfg.tag,
        sweep_key=cfg.sweep_key,
        torch_version=context.torch_version,
        cuda_version=context.cuda_version,
        nccl_version=context.nccl_version,
        driver_version=context.driver_version,
        comm_env=context.comm_env,
        python_version=context.python_version,
        ddp_bench_version=context.ddp_bench_version,
        git_commit=context.git_commit,
    )


def _speed_fields(setup: RunSetup, result: TrainResult, extras: AfterTraining, totals: JobTotals) -> dict[str, object]:
    """How much was trained in how long, where the step time went, and the verdict on it."""
    one_rank = setup.job.info.world_size == 1
    device_type = setup.job.device.type
    rank_images_per_s = images_per_second(result.samples, result.train_time_s)
    achieved = setup.flops_per_image * rank_images_per_s
    mfu = model_flops_utilization(achieved, setup.peak_flops)
    step_ms = percentile(result.step_times_ms, 50)
    wait_ms = percentile(result.data_wait_ms, 50)
    comm_ms = extras.control.exposed_comm_ms
    stage_step_ms = result.train_time_s * 1e3 / result.steps if result.steps else float("nan")
    exposed_wait_ms = exposed_data_wait_ms(wait_ms, step_ms, stage_step_ms, device_type)
    kind = verdict(data_exposed_ms=exposed_wait_ms, step_ms=step_ms, comm_ms=comm_ms, mfu=mfu, device_type=device_type)
    return dict(
        steps=result.steps,
        epochs=setup.cfg.epoch_limit or 0,
        samples=result.samples,
        train_time_s=result.train_time_s,
        wall_time_s=time.perf_counter() - setup.started,
        images_per_s=rank_images_per_s,
        global_images_per_s=totals.images_per_s,
        step_time_median_ms=step_ms,
        step_time_p90_ms=percentile(result.step_times_ms, 90),
        data_wait_median_ms=wait_ms,
        data_exposed_ms=exposed_wait_ms,
        comm_exposed_ms=comm_ms,
        # one rank has no all-reduce to leave out: its timed steps are compute-only steps
        compute_step_ms=step_ms if one_rank else extras.control.compute_step_ms,
        job_compute_step_ms=step_ms if one_rank else extras.control.job_compute_step_ms,
        # the pooled compute-only steps' quantiles: on one rank its timed steps, else every rank's control steps
        **quantile_cells(result.step_times_ms if one_rank else extras.control.pooled_compute_ms),
        grad_buckets=format_buckets(extras.control.buckets),
        flops_per_image=setup.flops_per_image,
        achieved_tflops=achieved / 1e12,
        peak_tflops=setup.peak_flops / 1e12,
        mfu=mfu,
        verdict=kind,
        synthetic_images_per_s=extras.synthetic_images_per_s,
        data_pipeline_ratio=totals.images_per_s / extras.synthetic_images_per_s,
        queue_wait_s=setup.waits.queue_wait_s,
        setup_s=setup.waits.setup_s,
        startup_s=setup.waits.startup_s,
    )


def _energy_and_accuracy_fields(
    setup: RunSetup, result: TrainResult, energy: RankEnergy, totals: JobTotals
) -> dict[str, object]:
    """Energy, memory and what the training reached."""
    cfg, reached, energy_j = setup.cfg, result.reached, energy.energy_j
    return dict(
        energy_source=energy.source,
        energy_note=setup.energy.note or energy.short_note,
        energy_j=energy_j,
        avg_power_w=energy_j / result.train_time_s if result.train_time_s > 0 else float("nan"),
        images_per_joule=result.samples / energy_j if energy_j > 0 else float("nan"),
        job_energy_j=totals.energy_j,
        job_images_per_joule=totals.samples / totals.energy_j if totals.energy_j > 0 else float("nan"),
        peak_rss_mb=peak_rss_mb(),
        peak_device_allocated_mb=result.peak_device_allocated_mb,
        peak_device_reserved_mb=result.peak_device_reserved_mb,
        final_loss=result.final_loss,
        test_accuracy=result.test_accuracy,
        target_accuracy=cfg.target_accuracy if cfg.target_accuracy is not None else float("nan"),
        reached="" if cfg.target_accuracy is None else str(reached is not None),
        time_to_accuracy_s=reached.train_time_s if reached else float("nan"),
        time_to_accuracy_with_eval_s=reached.elapsed_s if reached else float("nan"),
        epochs_to_accuracy=reached.epochs if reached else float("nan"),
        steps_to_accuracy=reached.step if reached else 0,
    )


def write_row(setup: RunSetup, batches: BatchSource, result: TrainResult, record: RankRecord) -> Written:
    """This rank's row in --out, and the files beside it."""
    # A write that fails now (the disk filled during the run, a network filesystem dropped) must not lose the
    # measurement, nor leave the peers waiting below: the row is rescued and this rank still lines up with them.
    cfg = setup.cfg
    failure = ""
    try:
        path = write_rank_csv(cfg.out, record)
    except OSError as exc:
        failure = rescue_row(record, cfg.out, exc)
        path = rank_csv_path(rescue_dir(), record.run_id, record.rank)
    if not failure:
        is_rank0 = setup.job.info.rank == 0
        _write_extras(path, cfg.log_indices, batches, result, write_curve=is_rank0, context=setup.context)
    return Written(path, failure)


def _write_extras(
    row_path: str, log_indices: bool, batches: BatchSource, result: TrainResult, write_curve: bool, context: RunContext
):
    """The files beside a written row: the index log (--log-indices), each GPU node's topology (written by its
    local rank 0) and rank 0's accuracy curve. They are not the measurement: one that cannot be written is noted
    on stderr (the curve printed there in full), and the run still succeeds."""
    if context.topology:
        try:
            topology_path = os.path.join(os.path.dirname(row_path), f"topology-{context.hostname}.txt")
            write_new_file(topology_path, context.topology)
        except OSError as exc:
            print(f"ddp_bench: note: could not write this node's GPU topology ({exc.strerror})", file=sys.stderr)
    try:
        if log_indices:
            _write_indices(row_path, batches, result.batches_per_epoch_done)
    except OSError as exc:
        print(f"ddp_bench: note: could not write the index log beside {row_path} ({exc.strerror})", file=sys.stderr)
    if not (write_curve and result.curve):
        return
    curve = render_table(ACCURACY_CURVE_COLUMNS, [dataclasses.astuple(point) for point in result.curve])
    try:
        write_new_file(os.path.join(os.path.dirname(row_path), ACCURACY_CURVE_FILE), curve)
    except OSError as exc:
        print(
            f"ddp_bench: note: could not write {ACCURACY_CURVE_FILE} ({exc.strerror}); it is:\n{curve}", file=sys.stderr
        )


def _write_indices(csv_path: str, batches: BatchSource, taken_per_epoch: list[int]) -> None:
    """The dataset indices this rank trained on in the measured stage, one per line (for auditing shards)."""
    size = batches.shard.batch_size
    lines = []
    for epoch, taken in enumerate(taken_per_epoch):
        lines += map(str, batches.epoch_indices(epoch)[: taken * size])
    with open(csv_path.removesuffix(".csv") + ".indices.txt", "x", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
