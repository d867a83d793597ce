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

import torch
from torch.nn.parallel import DistributedDataParallel

from ddp_bench.config import BenchConfig
from ddp_bench.console import step_progress
from ddp_bench.data import Shard, build_batches, choose_loader
from ddp_bench.errors import EXIT_INTERRUPTED, EXIT_OK, RunFailure, UsageError
from ddp_bench.faults import fault_from_env
from ddp_bench.input_shape import input_spec
from ddp_bench.launch.collectives import align_ranks, broadcast_string
from ddp_bench.launch.context import collect_context
from ddp_bench.launch.discovery import discover_launch
from ddp_bench.launch.distributed import (
    abort_collectives,
    apply_comm_defaults,
    first_line,
    is_peer_failure,
    process_group,
)
from ddp_bench.launch.hardware import HardwarePlan, apply_math_mode, plan_hardware, steady_cpu_allocator
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
from ddp_bench.models import build_recipe, lr_factor
from ddp_bench.recording import RunSetup, record_rank
from ddp_bench.results.records import new_run_id
from ddp_bench.results.results_dir import check_output_dir, prove_output_dir
from ddp_bench.training.after_training import measure_after_training
from ddp_bench.training.loop import Precision, run_training
from ddp_bench.user_models import build_checked_model


def run(cfg: BenchConfig, started: float, stop: StopRequest) -> int:
    """Run the benchmark on this rank; `started` is the perf_counter reading when the process began work."""
    env = os.environ
    fault = fault_from_env(env)
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

    with process_group(info, plan.backend, plan.device, cfg.init_timeout) as job:
        watch = None
        try:
            register_rank(job)
            if info.world_size > 1:  # names a lost peer even while this rank's main thread is blocked
                watch = WatchThread(PeerWatch(job), lambda: abort_collectives(plan.backend), cfg.init_timeout).start()
            run_id = broadcast_string(job, new_run_id(cfg.model_spec.slug, info.world_size))
            started_at = broadcast_string(job, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            startup_s = time.perf_counter() - started
            # The queue wait is asked of Slurm once, by rank 0, and shared.
            queue_wait = float(broadcast_string(job, repr(slurm_queue_wait_s(env) if info.rank == 0 else 0.0)))
            waits = WaitBeforeTraining(queue_wait, setup_seconds(env), startup_s)
            # The matmul peak, before training: its matrices are freed before the model's memory grows, so a batch
            # that fills the device cannot turn it into an OOM after training. Every rank measures at once, so
            # ranks sharing a node's cores measure the share they have.
            align_ranks(job)
            peak_flops = measured_peak_flops(plan.device, matmul_dtype(cfg.amp))
            energy = energy_counter(job, plan.device, env, cfg.init_timeout)

            model = built.module.to(plan.device)
            if cfg.channels_last:
                model = model.to(memory_format=torch.channels_last)
            if fault is not None:
                fault.slow_down(model, info.rank)
            torch.manual_seed(cfg.seed + 1 + info.rank)  # but independent dropout masks per rank
            x, y = next(iter(batches.epoch(0)))
            # Counted once on the bare model, before any timing, on two images: FLOPs are linear in the batch, and
            # a whole fp32 batch outside autocast would keep twice the activations AMP training does.
            image_flops = flops_per_image(model, x[:2], y[:2])
            del x, y  # a whole batch kept alive for the run would count in the timed stage's peak memory
            # One rank trains the bare model: the single-GPU baseline pays no DDP cost it would not pay alone.
            ddp_model = model
            if info.world_size > 1:
                device_ids = [plan.device.index] if plan.device.type == "cuda" else None
                ddp_model = DistributedDataParallel(model, device_ids=device_ids)
            if cfg.compile:
                ddp_model = torch.compile(ddp_model)
            global_batch = cfg.batch_size * info.world_size
            recipe = build_recipe(
                cfg.model,
                model,
                cfg.lr,
                lr_factor(cfg.lr_scaling, global_batch, cfg.lr_reference_batch),
                warmup_steps=cfg.lr_warmup_epochs * batches.batches_per_epoch,
            )
            optimizer = recipe.optimizer
            precision = Precision(cfg.amp, plan.device.type)
            scaler = precision.grad_scaler()  # one loss scaler for everything this run trains
            setup = RunSetup(
                cfg,
                job,
                plan,
                context,
                spec,
                loader,
                run_id,
                started_at,
                started,
                image_flops,
                peak_flops,
                recipe,
                waits,
                energy,
                cpu_allocator,
                built.identity,
            )
            total_steps = cfg.measured_steps or batches.batches_per_epoch * (cfg.epoch_limit or 0)

            with step_progress(info.rank == 0, total_steps, f"{cfg.model_spec.slug} x{info.world_size}") as on_step:
                result = run_training(
                    job=job,
                    ddp_model=ddp_model,
                    eval_model=model,
                    optimizer=optimizer,
                    scaler=scaler,
                    scheduler=recipe.epoch_scheduler,
                    step_scheduler=recipe.step_scheduler,
                    target_accuracy=cfg.target_accuracy,
                    eval_every=cfg.eval_every,
                    energy=energy.counter,
                    batches=batches,
                    test_batches=test_batches,
                    precision=precision,
                    warmup_steps=cfg.warmup_steps,
                    steps=cfg.measured_steps,
                    epochs=cfg.epoch_limit,
                    stop=stop,
                    fault=fault,
                    on_step=on_step,
                )
            extras = measure_after_training(
                cfg, job, spec, ddp_model, optimizer, scaler, batches, result, energy.counter
            )
            written = record_rank(setup, batches, optimizer, result, extras)  # its last collective
            if watch is not None:
                watch.stop(finished=True)
            del ddp_model  # and with it DDP's reducer and its hold on the process group, before the groups go
        except Exception as exc:
            if watch is not None:
                if not watch.watch.claim():
                    watch.wait_for_its_report()  # the watch is reporting this failure and ending the process
                watch.stop(finished=False)
            if is_out_of_memory(exc):
                reason = f"ran out of memory ({first_line(exc)}); lower --batch-size"
                leave_after_failure(job, plan.backend, reason)
                raise RunFailure(f"rank {info.rank} {reason}") from None
            if is_peer_failure(exc):  # a collective failed because a peer died or left: name it if we can
                message = lost_peer_message(job, find_lost_ranks(job), first_line(exc))
                abort_collectives(plan.backend)
                raise RunFailure(message) from None
            # Anything else happened on this rank: its peers will see it as a lost rank; this rank says what.
            reason = f"failed: {type(exc).__name__}: {first_line(exc)}"
            leave_after_failure(job, plan.backend, reason)
            raise RunFailure(f"rank {info.rank} {reason}") from exc
    if written.failure:
        raise RunFailure(written.failure)  # the row is on stderr and in the temp directory: exit 1, not 0 or 3
    if result.stopped_by:
        if info.rank == 0:
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
