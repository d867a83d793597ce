"""The few collectives the harness itself needs, each over the job's groups and each waited for. Every tensor
they lend to a group is held by the job until the group's threads are done with it (see `launch/job.py`)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from ddp_bench.launch.job import Job

_STRING_BYTES = 256  # fixed width for strings shared between ranks (run ids, host names)


def synchronize(device: torch.device) -> None:
    """Wait for all queued device work, so that a clock read next counts it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def align_ranks(job: Job) -> None:
    """Bring every rank to the same point (a tiny all-reduce; works the same for gloo and NCCL)."""
    token = torch.zeros(1, device=job.device)
    job.held.hold(token)
    dist.all_reduce(token)
    synchronize(job.device)


def any_rank(flag: bool, job: Job) -> bool:
    """True on every rank if `flag` is true on any rank (a host-side all-reduce, no device sync)."""
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32)
    job.held.hold(tensor)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=job.control)
    return bool(tensor.item())


def reduce_floats(job: Job, values: list[float], op: dist.ReduceOp) -> list[float]:
    """All-reduce a few float64 numbers (sums of samples, maxima of times) across the ranks."""
    tensor = torch.tensor(values, dtype=torch.float64, device=job.device)
    job.held.hold(tensor)
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def gather_floats(job: Job, values: list[float]) -> list[list[float]]:
    """Every rank's few float64 numbers, in rank order, on every rank."""
    mine = torch.tensor(values, dtype=torch.float64, device=job.device)
    everyone = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    job.held.hold(mine, *everyone)
    dist.all_gather(everyone, mine)
    return [tensor.tolist() for tensor in everyone]


def broadcast_string(job: Job, text: str, src: int = 0) -> str:
    """Rank `src`'s string on every rank, sent as fixed-width bytes (no pickling)."""
    buffer = torch.zeros(_STRING_BYTES, dtype=torch.uint8, device=job.device)
    if dist.get_rank() == src:
        encoded = text.encode()[:_STRING_BYTES]
        buffer[: len(encoded)] = torch.tensor(list(encoded), dtype=torch.uint8)
    job.held.hold(buffer)
    dist.broadcast(buffer, src=src)
    return bytes(buffer.cpu().tolist()).rstrip(b"\0").decode()
