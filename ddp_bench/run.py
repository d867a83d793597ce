"""One benchmark run on this rank: check everything, join the job, train, write this rank's row.

Every check that can fail on bad input (launcher variables, hardware, dataset, output directory) runs before
the process group starts and before anything is written, so a bad request ends in one line and exit 2 on
every rank instead of a hang or a half-written results directory.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ddp_bench.config import BenchConfig
from ddp_bench.console import step_progress
from ddp_bench.data import BatchSource, DatasetSpec, Shard, build_batches, choose_loader
from ddp_bench.errors import EXIT_INTERRUPTED, EXIT_OK, RunFailure, UsageError
from ddp_bench.faults import Faults, fault_from_env
from ddp_bench.input_shape import input_spec
from ddp_bench.launch.collectives import align_ranks, broadcast_string
from ddp_bench.launch.context import RunContext, collect_context
from ddp_bench.launch.discovery import discover_launch
from ddp_bench.launch.distributed import (
    abort_collectives,
    apply_comm_defaults,
    first_line,
    is_peer_failure,
    process_group,
)
from ddp_bench.launch.hardware import HardwarePlan, apply_math_mode, plan_hardware, steady_cpu_allocator
from ddp_bench.launch.job import Job
from ddp_bench.launch.launchers import LaunchInfo
from ddp_bench.launch.peer_watch import PERIOD_S as WATCH_PERIOD_S
from ddp_bench.launch.peer_watch import PeerWatch, WatchThread
from ddp_bench.launch.peers import (
    announce_failure,
    find_lost_ranks,
    gpu_counted_by,
    lost_peer_message,
    register_rank,
)
from ddp_bench.launch.preflight import data_location_note, gpu_note, require_launcher_for_allocation
from ddp_bench.launch.stopping import StopRequest
from ddp_bench.measurement.consumption import CounterChoice, cpu_counter, gpu_counter
from ddp_bench.measurement.job_timing import WaitBeforeTraining, setup_seconds, slurm_queue_wait_s
from ddp_bench.measurement.perf import flops_per_image, matmul_dtype, measured_peak_flops
from ddp_bench.models import Recipe, build_recipe, lr_factor
from ddp_bench.recording import RunSetup, Written, record_rank
from ddp_bench.results.records import new_run_id
from ddp_bench.results.results_dir import check_output_dir, prove_output_dir
from ddp_bench.training.after_training import measure_after_training
from ddp_bench.training.loop import LoopLength, LoopParts, Precision, TrainResult, run_training
from ddp_bench.user_models import BuiltModel, build_checked_model


def run(cfg: BenchConfig, started: float, stop: StopRequest) -> int:
    """Run the benchmark on this rank; `started` is the perf_counter reading when the process began work."""
    env = os.environ
    fault = fault_from_env(env)
    checked = check_inputs(cfg, env, fault)
    cfg, info, plan = checked.cfg, checked.info, checked.plan
    with process_group(info, plan.backend, plan.device, cfg.init_timeout) as job:
        watch = None
        try:
            register_rank(job)
            if info.world_size > 1:  # names a lost peer even while this rank's main thread is blocked
                watch = WatchThread(PeerWatch(job), lambda: abort_collectives(plan.backend), cfg.init_timeout).start()
            agreed = agree_on_run(job, cfg, env, started)
            # The matmul peak, before training: its matrices are freed before the model's memory grows, so a batch
            # that fills the device cannot turn it into an OOM after training. Every rank measures at once, so
            # ranks sharing a node's cores measure the share they have.
            align_ranks(job)
            peak_flops = measured_peak_flops(plan.device, matmul_dtype(cfg.amp))
            energy = energy_counter(job, plan.device, env, cfg.init_timeout)
            trainee = prepare_model(checked, job, fault)
            setup = describe_run(checked, job, agreed, trainee, peak_flops, energy, started)
            result = train(checked, job, trainee, energy, stop, fault)
            extras = measure_after_training(
                cfg,
                job,
                checked.spec,
                trainee.ddp_model,
                trainee.recipe.optimizer,
                trainee.scaler,
                checked.batches,
                result,
                energy.counter,
            )
            written = record_rank(setup, checked.batches, trainee.recipe.optimizer, result, extras)  # last collective
            if watch is not None:
                watch.stop(finished=True)
            del trainee  # and with it DDP's reducer and its hold on the process group, before the groups go
        except Exception as exc:
            raise_run_failure(exc, job, plan.backend, watch)
    return finish(written, result, info.rank)


@dataclass(frozen=True)
class CheckedRun:
    """Everything a run needs that can fail on bad input, checked before the process group starts."""

    cfg: BenchConfig  # with the workers the hardware plan chose
    info: LaunchInfo
    plan: HardwarePlan
    cpu_allocator: str
    spec: DatasetSpec
    built: BuiltModel
    loader: str
    batches: BatchSource
    test_batches: BatchSource | None
    context: RunContext


def check_inputs(cfg: BenchConfig, env: Mapping[str, str], fault: Faults | None) -> CheckedRun:
    """Launcher variables, hardware, model, dataset and output directory, checked before anything is written."""
    info = discover_launch(env, cfg.launcher, cfg.init_timeout)
    require_launcher_for_allocation(cfg, env, info)
    plan = plan_hardware(cfg, info, env)
    cfg = cfg.with_workers(plan.threads)  # --workers, or for an image folder the cores per task less one
    apply_comm_defaults(plan.backend, info.launcher)
    torch.set_num_threads(plan.threads)
    apply_math_mode(plan)
    cpu_allocator = steady_cpu_allocator(env)
    check_output_dir(cfg.out)

    spec = input_spec(cfg)
    torch.manual_seed(cfg.seed)  # identical initial weights everywhere (DDP also broadcasts rank 0's)
    built = build_checked_model(cfg.model_spec, spec)  # checked on a dry batch before anything is written
    loader = choose_loader(cfg.loader, spec, plan.device)
    shard = Shard(info.rank, info.world_size, cfg.batch_size, cfg.seed, plan.device, cfg.channels_last)
    batches = build_batches(cfg.data, cfg.data_dir, spec, loader, shard, cfg.workers, train=True)
    if fault is not None:
        batches = fault.slow_data(batches, info.rank)
    if batches.batches_per_epoch == 0:
        raise UsageError(
            f"global batch {cfg.batch_size * info.world_size} ({cfg.batch_size} per rank x {info.world_size} "
            f"ranks) is larger than the {batches.dataset_size} training images: lower --batch-size"
        )
    evaluate = cfg.epoch_limit is not None and cfg.data != "synthetic"  # random labels have no accuracy to find
    test_batches = build_batches(cfg.data, cfg.data_dir, spec, loader, shard, cfg.workers, False) if evaluate else None
    context = collect_context(env, plan.device.type, plan.device.index or 0, plan.backend, info.local_rank == 0)
    prove_output_dir(cfg.out)  # every rank writes its own row: each proves it can, before anything trains
    if info.rank == 0:
        _print_notes(cfg, env, info, plan)
    return CheckedRun(cfg, info, plan, cpu_allocator, spec, built, loader, batches, test_batches, context)


@dataclass(frozen=True)
class RunAgreement:
    """What every rank of the job agrees on before training: rank 0's values, broadcast."""

    run_id: str
    started_at: str
    waits: WaitBeforeTraining


def agree_on_run(job: Job, cfg: BenchConfig, env: Mapping[str, str], started: float) -> RunAgreement:
    run_id = broadcast_string(job, new_run_id(cfg.model_spec.slug, job.info.world_size))
    started_at = broadcast_string(job, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    startup_s = time.perf_counter() - started
    # The queue wait is asked of Slurm once, by rank 0, and shared.
    queue_wait = float(broadcast_string(job, repr(slurm_queue_wait_s(env) if job.info.rank == 0 else 0.0)))
    return RunAgreement(run_id, started_at, WaitBeforeTraining(queue_wait, setup_seconds(env), startup_s))


@dataclass(frozen=True)
class Trainee:
    """The model on its device, as it trains, with what trains it."""

    model: nn.Module  # the bare module
    ddp_model: nn.Module  # the module that trains: DDP-wrapped above one rank, compiled where asked
    image_flops: float
    recipe: Recipe
    precision: Precision
    scaler: torch.amp.GradScaler | None  # one loss scaler for everything this run trains


def prepare_model(checked: CheckedRun, job: Job, fault: Faults | None) -> Trainee:
    cfg, info, device = checked.cfg, checked.info, checked.plan.device
    model = checked.built.module.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if fault is not None:
        fault.slow_down(model, info.rank)
    torch.manual_seed(cfg.seed + 1 + info.rank)  # but independent dropout masks per rank
    x, y = next(iter(checked.batches.epoch(0)))
    # Counted once on the bare model, before any timing, on two images: FLOPs are linear in the batch, and
    # a whole fp32 batch outside autocast would keep twice the activations AMP training does.
    image_flops = flops_per_image(model, x[:2], y[:2])
    del x, y  # a whole batch kept alive for the run would count in the timed stage's peak memory
    # One rank trains the bare model: the single-GPU baseline pays no DDP cost it would not pay alone.
    ddp_model = model
    if info.world_size > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        ddp_model = DistributedDataParallel(model, device_ids=device_ids)
    if cfg.compile:
        ddp_model = torch.compile(ddp_model)
    global_batch = cfg.batch_size * info.world_size
    recipe = build_recipe(
        cfg.model,
        model,
        cfg.lr,
        lr_factor(cfg.lr_scaling, global_batch, cfg.lr_reference_batch),
        warmup_steps=cfg.lr_warmup_epochs * checked.batches.batches_per_epoch,
    )
    precision = Precision(cfg.amp, device.type)
    return Trainee(model, ddp_model, image_flops, recipe, precision, precision.grad_scaler())


def describe_run(
    checked: CheckedRun,
    job: Job,
    agreed: RunAgreement,
    trainee: Trainee,
    peak_flops: float,
    energy: CounterChoice,
    started: float,
) -> RunSetup:
    return RunSetup(
        cfg=checked.cfg,
        job=job,
        plan=checked.plan,
        context=checked.context,
        spec=checked.spec,
        loader=checked.loader,
        run_id=agreed.run_id,
        started_at=agreed.started_at,
        started=started,
        flops_per_image=trainee.image_flops,
        peak_flops=peak_flops,
        recipe=trainee.recipe,
        waits=agreed.waits,
        energy=energy,
        cpu_allocator=checked.cpu_allocator,
        identity=checked.built.identity,
    )


def train(
    checked: CheckedRun, job: Job, trainee: Trainee, energy: CounterChoice, stop: StopRequest, fault: Faults | None
) -> TrainResult:
    """The timed training, with rank 0's progress line."""
    cfg, info, batches = checked.cfg, checked.info, checked.batches
    total_steps = cfg.measured_steps or batches.batches_per_epoch * (cfg.epoch_limit or 0)
    with step_progress(info.rank == 0, total_steps, f"{cfg.model_spec.slug} x{info.world_size}") as on_step:
        parts = LoopParts(
            job=job,
            ddp_model=trainee.ddp_model,
            eval_model=trainee.model,
            optimizer=trainee.recipe.optimizer,
            scaler=trainee.scaler,
            scheduler=trainee.recipe.epoch_scheduler,
            step_scheduler=trainee.recipe.step_scheduler,
            batches=batches,
            test_batches=checked.test_batches,
            precision=trainee.precision,
            stop=stop,
            on_step=on_step,
            energy=energy.counter,
            fault=fault,
        )
        length = LoopLength(
            warmup_steps=cfg.warmup_steps,
            steps=cfg.measured_steps,
            epochs=cfg.epoch_limit,
            target_accuracy=cfg.target_accuracy,
            eval_every=cfg.eval_every,
        )
        return run_training(parts=parts, length=length)


def raise_run_failure(exc: Exception, job: Job, backend: str, watch: WatchThread | None) -> NoReturn:
    """This rank's run failed with `exc`: stop the watch, leave the job and say why in one RunFailure."""
    rank = job.info.rank
    if watch is not None:
        if not watch.watch.claim():
            watch.wait_for_its_report()  # the watch is reporting this failure and ending the process
        watch.stop(finished=False)
    if is_out_of_memory(exc):
        reason = f"ran out of memory ({first_line(exc)}); lower --batch-size"
        leave_after_failure(job, backend, reason)
        raise RunFailure(f"rank {rank} {reason}") from None
    if is_peer_failure(exc):  # a collective failed because a peer died or left: name it if we can
        message = lost_peer_message(job, find_lost_ranks(job), first_line(exc))
        abort_collectives(backend)
        raise RunFailure(message) from None
    # Anything else happened on this rank: its peers will see it as a lost rank; this rank says what.
    reason = f"failed: {type(exc).__name__}: {first_line(exc)}"
    leave_after_failure(job, backend, reason)
    raise RunFailure(f"rank {rank} {reason}") from exc


def finish(written: Written, result: TrainResult, rank: int) -> int:
    """The exit status of a run whose rows are written; rank 0 says where an early stop left them."""
    if written.failure:
        raise RunFailure(written.failure)  # the row is on stderr and in the temp directory: exit 1, not 0 or 3
    if result.stopped_by:
        if rank == 0:
            print(
                f"ddp_bench: stopped early by {result.stopped_by} after {result.steps} measured steps; "
                f"rows written with status=incomplete to {os.path.dirname(written.path)}",
                file=sys.stderr,
            )
        return EXIT_INTERRUPTED
    return EXIT_OK


# What cuDNN, cuBLAS and NCCL say when they, not the caching allocator, run out of device memory (RuntimeErrors and
# torch's DistBackendError, not torch.OutOfMemoryError): the same advice applies. NCCL connects lazily and allocates
# its buffers at the first large all-reduce, in warm-up's first backward at peak activation memory, and reports
# "unhandled cuda error ... Last error: Cuda failure 'out of memory'"; a cuBLAS handle that cannot be created for
# want of memory says CUBLAS_STATUS_NOT_INITIALIZED when calling cublasCreate.
_OUT_OF_MEMORY = re.compile(
    r"CUDNN_STATUS_ALLOC_FAILED|CUBLAS_STATUS_ALLOC_FAILED|Unable to find a valid cuDNN algorithm|"
    r"CUBLAS_STATUS_NOT_INITIALIZED when calling `?cublasCreate|(?i:cuda out of memory|cuda error: out of memory|"
    r"cuda failure '?out of memory)"
)


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and bool(_OUT_OF_MEMORY.search(str(exc)))
    )


def leave_after_failure(job, backend: str, reason: str) -> None:
    """This rank failed: say why through the store, then abort NCCL's communicators. Under NCCL the abort waits one
    and a half watch periods first: the peers' kernels may still use this rank's buffers, and their watches name
    this rank and end them in that time, before the abort can turn their line into a CUDA error."""
    announce_failure(job, reason)
    if backend == "nccl" and job.info.world_size > 1:
        time.sleep(1.5 * WATCH_PERIOD_S)
    abort_collectives(backend)


def energy_counter(job, device: torch.device, env: Mapping[str, str], timeout_s: float) -> CounterChoice:
    """NVML for this rank's GPU (read by the lowest rank on it, where gloo ranks share one), or RAPL for the node's
    CPU packages (read by its local rank 0 only)."""
    info = job.info
    if device.type != "cuda":
        return cpu_counter(info.local_rank)
    uuid = str(torch.cuda.get_device_properties(device.index or 0).uuid)
    if info.local_world_size > 1:
        holder = gpu_counted_by(job.store, info, socket.gethostname(), uuid, timeout_s)
        if holder != info.rank:
            return CounterChoice(None, f"this GPU is shared with rank {holder}, whose row counts its energy once")
    return gpu_counter(uuid, env.get("CUDA_VISIBLE_DEVICES", ""))


def _print_notes(cfg: BenchConfig, env: Mapping[str, str], info: LaunchInfo, plan: HardwarePlan) -> None:
    """Pre-flight notes: not errors, but things that make the numbers worse than they need to be."""
    notes = [data_location_note(cfg, env)]
    if plan.device.type == "cuda":
        notes.append(gpu_note(info.local_world_size, torch.cuda.device_count()))
    for note in notes:
        if note is not None and note.level == "note":
            print(f"ddp_bench: note: {note.message}", file=sys.stderr)
