"""The CSV schema (one dataclass, one row per rank per run), atomic writing, and the throughput arithmetic.

Nothing else in the project lists the columns: writers use `RankRecord`, readers use `COLUMNS`.
This module imports no torch, pandas or matplotlib, so the report and the tests can use it cheaply.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import io
import itertools
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 3  # 2: the model's identity (model_sha256, model_params, grad_bytes), input_shape, recipe
# 3: compute drift (issue #25): the pooled compute-only steps' quantiles (compute_step_min_ms .. compute_step_max_ms,
# compute_steps_pooled) and host contention (busy_devices_on_node, devices_on_node); empty in older rows
# Sane caps for the row validator (rank_files.validate_row): a world of more ranks than any machine has, counts
# and measures beyond any run, are not results (a world_size of 1e9 would make the run checks build huge sets).
MAX_WORLD_SIZE = 2**17
MAX_COUNT = 10**15
MAX_MEASURE = 1e15


def _required_column() -> Any:
    """A column (text, flag, or a number without bounds) every row has had since the first schema: a file without
    it is no results file (REQUIRED_COLUMNS). Newer columns missing from older files read as empty."""
    return dataclasses.field(metadata={"required": True})


def _count(low: int, high: int, *, present: bool = False, required: bool = False, default: int | None = None) -> Any:
    """A whole-number column holding low..high; present: a row without it is unusable; required: a column since
    the first schema (as _required_column's)."""
    extra = {} if default is None else {"default": default}
    bounds = {"low": low, "high": high, "above": False}
    return dataclasses.field(metadata={**bounds, "present": present, "required": required}, **extra)


def _measure(low: float, high: float, *, above: bool = False, present: bool = False, required: bool = False) -> Any:
    """A finite measured column holding low..high; above: on a complete row it must be more than low (a run that
    stopped early may hold low itself); present: a row without it is unusable; required: a column since the first
    schema (as _required_column's)."""
    return dataclasses.field(
        metadata={"low": low, "high": high, "above": above, "present": present, "required": required}
    )


@dataclass(frozen=True)
class RankRecord:
    """One rank's result for one run. Field order is column order; results/README.md documents each."""

    run_id: str = _required_column()
    status: str = _required_column()  # complete | incomplete
    started_at: str = _required_column()  # UTC, ISO 8601, when rank 0 started the run
    launcher: str = _required_column()
    platform: str = _required_column()  # colab | slurm | pbs | local
    cluster: str = _required_column()
    hostname: str = _required_column()
    job_id: str
    num_nodes: int = _count(1, MAX_WORLD_SIZE, present=True, required=True)
    node_rank: int = _count(0, MAX_WORLD_SIZE, required=True)
    world_size: int = _count(1, MAX_WORLD_SIZE, present=True, required=True)
    local_world_size: int = _count(1, MAX_WORLD_SIZE)
    rank: int = _count(0, MAX_WORLD_SIZE - 1, present=True, required=True)
    local_rank: int = _count(0, MAX_WORLD_SIZE - 1, required=True)
    backend: str = _required_column()
    device: str = _required_column()
    device_name: str = _required_column()
    mig_slice: str  # the MIG slice's UUID when the rank ran on one ('' on a whole GPU or a CPU)
    # --model as given: a built-in name, torchvision:NAME, path/to/file.py:factory, package.module:factory
    model: str = _required_column()
    model_sha256: str  # sha256 of the file defining the factory or torchvision builder; '' for the built-ins
    model_params: int = _count(0, MAX_COUNT)  # the model's parameters
    # gradient bytes all-reduced per step (trainable parameters x element size)
    grad_bytes: int = _count(0, MAX_COUNT)
    data: str = _required_column()
    input_shape: str  # channels x height x width of the images trained on, e.g. 3x32x32
    num_classes: int = _count(0, MAX_COUNT)
    loader: str
    batch_size: int = _count(1, MAX_COUNT, present=True, required=True)
    global_batch_size: int = _count(1, MAX_COUNT, present=True, required=True)
    scaling: str  # weak | strong: which scaling series the run belongs to
    # training images in one epoch of the dataset (or of the one synthetic data imitates)
    dataset_size: int = _count(1, MAX_COUNT)
    amp: str = _required_column()
    tf32_matmul: bool  # fp32 matmuls on TF32 tensor cores (CUDA, Ampere and newer)
    tf32_cudnn: bool  # fp32 cuDNN convolutions on TF32 tensor cores (CUDA, Ampere and newer)
    cudnn_benchmark: bool  # cuDNN autotuning on (CUDA)
    channels_last: bool = _required_column()
    compile: bool = _required_column()
    workers: int = _count(0, MAX_COUNT)
    threads: int = _count(0, MAX_COUNT)
    cpu_affinity: str  # CPUs this rank was bound to, as ranges ('0-11'): what the launcher gave it
    cpu_allocator: str  # the host allocator's settings: glibc thresholds ddp_bench fixed, or what the user set
    lr: float = _measure(0, MAX_MEASURE, above=True)  # the recipe's rate, or --lr
    lr_scaling: str  # none | linear | sqrt: how the rate was scaled for the global batch
    recipe: str  # which optimizer recipe, and whether its rate was its own or --lr: 'sgd-momentum:default'
    # the rate trained with (after any warm-up): lr scaled for the global batch
    effective_lr: float = _measure(0, MAX_MEASURE)
    seed: int = _count(0, 2**64 - 1)
    warmup_steps: int = _count(0, MAX_COUNT, required=True)
    steps: int = _count(0, MAX_COUNT, required=True)
    epochs: int = _count(0, MAX_COUNT)
    samples: int = _count(0, MAX_COUNT, present=True, required=True)
    train_time_s: float = _measure(0, MAX_MEASURE, above=True, present=True, required=True)
    wall_time_s: float = _measure(0, MAX_MEASURE, above=True, required=True)
    images_per_s: float = _measure(0, MAX_MEASURE, required=True)
    global_images_per_s: float = _measure(0, MAX_MEASURE, required=True)
    step_time_median_ms: float = _measure(0, MAX_MEASURE, required=True)
    step_time_p90_ms: float = _measure(0, MAX_MEASURE, required=True)
    data_wait_median_ms: float = _measure(0, MAX_MEASURE)  # per step, time the loop waited for its batch (host side)
    data_exposed_ms: float  # per step, the part of that wait the step did not hide (perf.exposed_data_wait_ms)
    comm_exposed_ms: float  # per step, all-reduce time not hidden behind backward (paired no_sync control)
    # median step on this rank with DDP's all-reduce off (no_sync control): its own speed
    compute_step_ms: float = _measure(0, MAX_MEASURE)
    # the same steps' median of the slowest rank's time in each: the job's compute step
    job_compute_step_ms: float = _measure(0, MAX_MEASURE)
    # every rank's no_sync control steps pooled (on one rank, its timed steps): their quantiles (the same on every
    # rank), for the slowest of N ranks at counts not measured (measurement/compute_drift.py)
    compute_step_min_ms: float = _measure(0, MAX_MEASURE)
    compute_step_p25_ms: float = _measure(0, MAX_MEASURE)
    compute_step_p50_ms: float = _measure(0, MAX_MEASURE)
    compute_step_p75_ms: float = _measure(0, MAX_MEASURE)
    compute_step_p90_ms: float = _measure(0, MAX_MEASURE)
    compute_step_p95_ms: float = _measure(0, MAX_MEASURE)
    compute_step_p99_ms: float = _measure(0, MAX_MEASURE)
    compute_step_max_ms: float = _measure(0, MAX_MEASURE)
    compute_steps_pooled: int = _count(0, MAX_COUNT)  # how many steps those quantiles come from
    # GPU runs: the job's ranks on this node, and the GPUs the node has (NVML, else CUDA); empty on CPU
    busy_devices_on_node: int = _count(1, MAX_WORLD_SIZE)
    devices_on_node: int = _count(1, MAX_WORLD_SIZE)
    grad_buckets: str  # DDP's buckets, 'bytes@window_ms;...': window = its last gradient ready to end of backward
    flops_per_image: float = _measure(0, MAX_MEASURE)  # forward + backward, counted by torch.utils.flop_counter
    achieved_tflops: float = _measure(0, MAX_MEASURE)  # this rank: flops_per_image x images_per_s
    # matmul peak measured in this run before training, same device, dtype and math mode
    peak_tflops: float = _measure(0, MAX_MEASURE)
    mfu: float = _measure(0, 1)  # achieved / peak; empty when the run outpaced the measured peak
    verdict: str  # loader-bound | comm-bound | compute-bound | overhead-bound
    # --compare-synthetic: the job's throughput on synthetic data
    synthetic_images_per_s: float = _measure(0, MAX_MEASURE)
    data_pipeline_ratio: float = _measure(0, MAX_MEASURE)  # global_images_per_s / synthetic_images_per_s
    queue_wait_s: float = _measure(0, MAX_MEASURE)  # Slurm: StartTime - SubmitTime of the job; empty elsewhere
    # the job's environment build and data staging, as its script measured it; empty if not given
    setup_s: float = _measure(0, MAX_MEASURE)
    # this process before training: imports, checks, data load, process group
    startup_s: float = _measure(0, MAX_MEASURE)
    energy_source: str  # nvml | rapl | '' (no counter: see energy_note)
    energy_note: str  # why the energy cells are empty, '' when they are not
    # this rank's counter over the timed stage (RAPL: the node's CPU packages, on local rank 0)
    energy_j: float = _measure(0, MAX_MEASURE)
    avg_power_w: float = _measure(0, MAX_MEASURE)  # energy_j / train_time_s
    images_per_joule: float = _measure(0, MAX_MEASURE)  # samples / energy_j
    # the sum over the job's counters (one per GPU, or one per node for RAPL)
    job_energy_j: float = _measure(0, MAX_MEASURE)
    job_images_per_joule: float = _measure(0, MAX_MEASURE)  # the job's images / job_energy_j
    peak_rss_mb: float = _measure(0, MAX_MEASURE)  # the process's peak resident memory, MiB
    # GPU: peak tensor memory during training, MiB; empty on CPU
    peak_device_allocated_mb: float = _measure(0, MAX_MEASURE)
    # GPU: peak memory the caching allocator reserved, MiB; empty on CPU
    peak_device_reserved_mb: float = _measure(0, MAX_MEASURE)
    final_loss: float = _required_column()
    test_accuracy: float = _measure(0, 1, required=True)  # NaN (empty cell) when the run evaluated nothing
    target_accuracy: float = _measure(0, 1)  # --target-accuracy; empty otherwise
    reached: str  # True | False with a target accuracy, '' without
    # training time until the first evaluation at the target (evaluation excluded)
    time_to_accuracy_s: float = _measure(0, MAX_MEASURE)
    time_to_accuracy_with_eval_s: float = _measure(0, MAX_MEASURE)  # the same, evaluation time included
    # epochs trained by then (fractional when reached inside an epoch)
    epochs_to_accuracy: float = _measure(0, MAX_MEASURE)
    steps_to_accuracy: int = _count(0, MAX_COUNT)  # measured steps by then (0 when not reached)
    tag: str
    sweep_key: str  # the sweep configuration this run belongs to ('' outside sweeps)
    torch_version: str = _required_column()
    cuda_version: str = _required_column()
    nccl_version: str  # GPU runs: the NCCL torch uses
    driver_version: str  # GPU runs: the NVIDIA driver
    comm_env: str  # the backend's settings in force for this rank (NCCL_*, TORCH_NCCL_*, GLOO_*): 'NAME=value;...'
    python_version: str
    ddp_bench_version: str = _required_column()
    git_commit: str = _required_column()
    schema_version: int = _count(1, SCHEMA_VERSION, default=SCHEMA_VERSION)


COLUMNS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(RankRecord))
REQUIRED_COLUMNS: tuple[str, ...] = tuple(
    field.name for field in dataclasses.fields(RankRecord) if field.metadata.get("required")
)
NUMERIC_COLUMNS: tuple[str, ...] = tuple(
    field.name for field in dataclasses.fields(RankRecord) if field.type in ("int", "float")
)


def images_per_second(samples: int, train_time_s: float) -> float:
    """One rank's throughput: images it trained on in the measured stage over that stage's time."""
    return samples / train_time_s if train_time_s > 0 else float("nan")


def global_images_per_second(samples_per_rank: list[int], train_times_s: list[float]) -> float:
    """The job's throughput: every rank's images over the slowest rank's time.

    The slowest rank bounds the job (DDP steps in lock-step), so dividing by the max never flatters it;
    summing real per-rank samples never assumes that the ranks that did not report did work.
    """
    if not samples_per_rank or len(samples_per_rank) != len(train_times_s):
        raise ValueError("need one sample count and one time per rank")
    slowest = max(train_times_s)
    return sum(samples_per_rank) / slowest if slowest > 0 else float("nan")


def incomplete_reason(statuses: list[str], world_sizes: list[int], ranks: list[int]) -> str:
    """Why one run's rank rows do not make a complete run, or '' when every rank reported once and all of
    them finished. The report and the sweep both judge runs by this."""
    if any(status != "complete" for status in statuses):
        return "stopped early (status incomplete)"
    if len(set(world_sizes)) != 1:
        return "ranks disagree on the world size"
    if len(set(ranks)) != len(ranks):
        return "a rank reported twice"
    world_size, present = world_sizes[0], set(ranks)
    outside = sorted(rank for rank in present if not 0 <= rank < world_size)
    if outside:
        return f"rank(s) {', '.join(map(str, outside[:8]))} outside a world of {world_size}"
    if len(present) < world_size:  # never a set of range(world_size): the first eight missing are enough
        first = list(itertools.islice((rank for rank in range(world_size) if rank not in present), 8))
        missing = world_size - len(present)
        return f"{missing} of {world_size} rank rows missing (ranks {', '.join(map(str, first))})"
    return ""


def new_run_id(model: str, world_size: int, now: float | None = None) -> str:
    """A run id that sorts by time and cannot collide across nodes or concurrent jobs (64 random bits)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return f"{stamp}-{model}-w{world_size}-{secrets.token_hex(8)}"


def rank_csv_path(out_dir: str, run_id: str, rank: int) -> str:
    return os.path.join(out_dir, run_id, f"rank{rank}.csv")


# The accuracy curve of a run that evaluates (--epochs or --target-accuracy on real data): one small file per run
# beside its rank files, written by rank 0 (the accuracy is all-reduced, so every rank saw the same curve). The
# rank rows stay flat.
ACCURACY_CURVE_FILE = "accuracy.csv"
ACCURACY_CURVE_COLUMNS = ("step", "epochs", "train_time_s", "elapsed_s", "test_accuracy")


def render_table(columns: tuple[str, ...], rows: list[tuple]) -> str:
    """A CSV text with a header, numbers written with every digit (as in rank rows)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_cell(value) for value in row] for row in rows)
    return buffer.getvalue()


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "" if value != value else repr(value)  # NaN is an empty cell; repr keeps every digit
    return str(value)


def render_csv(record: RankRecord) -> str:
    return render_table(COLUMNS, [tuple(getattr(record, name) for name in COLUMNS)])


# What link() says on filesystems that have no hard links: Colab's Google Drive mount and other FUSE mounts, SMB,
# vfat. There the row is renamed into place instead.
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK, errno.EXDEV}


def write_rank_csv(out_dir: str, record: RankRecord) -> str:
    """Write one rank's row atomically, never replacing an existing file; returns the path."""
    path = rank_csv_path(out_dir, record.run_id, record.rank)
    write_new_file(path, render_csv(record))
    return path


def write_new_file(path: str, text: str) -> None:
    """Write a results file atomically, never replacing an existing file (FileExistsError if there is one).

    The text goes to a temporary file in the same directory, is flushed to disk, and is then hard-linked to its
    final name, which fails if that name exists: a reader sees the whole file or none, and no run overwrites
    another. Where the filesystem has no hard links, the temporary file is renamed to the final name after
    checking that the name is free: still atomic for readers; the check and the rename are two steps, but the
    name holds a run id with 64 random bits, which no other writer uses.
    """
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, "a results file of that name exists", path) from None
            os.rename(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)
