"""Process-group set-up and tear-down, and the few collectives the harness itself needs.

This is the only module that turns a `LaunchInfo` into a rendezvous. Every wait it starts is bounded by the
run's `--init-timeout`: torch's own default would leave a job hanging for 30 minutes when a rank never arrives.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator
from datetime import timedelta

import torch
import torch.distributed as dist

from ddp_bench.errors import RunFailure
from ddp_bench.launch import LaunchInfo

_STRING_BYTES = 256  # fixed width for strings shared between ranks (run ids, host names)


def free_port() -> int:
    """A TCP port nobody on this host listens on right now (for launchers that do not choose one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def process_group(info: LaunchInfo, backend: str, device: torch.device, timeout_s: float) -> Iterator[None]:
    """Join the job's process group for the duration of the block, and always leave it."""
    timeout = timedelta(seconds=timeout_s)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL binds a communicator to the current device
    try:
        if info.world_size == 1:
            # One rank needs no rendezvous and no port: an in-memory store cannot collide with another job.
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
        elif info.launcher == "torchrun":
            # torchrun's agent already hosts the store at MASTER_ADDR:MASTER_PORT; env:// makes us its client.
            dist.init_process_group(backend, init_method="env://", timeout=timeout)
        else:
            os.environ["MASTER_ADDR"] = info.master_addr
            os.environ["MASTER_PORT"] = str(info.master_port)
            dist.init_process_group(
                backend, init_method="env://", rank=info.rank, world_size=info.world_size, timeout=timeout
            )
    except dist.DistError as exc:
        raise RunFailure(_rendezvous_failure(info, timeout_s, exc)) from None
    try:
        yield
    finally:
        dist.destroy_process_group()


def _rendezvous_failure(info: LaunchInfo, timeout_s: float, exc: Exception) -> str:
    """One line that says who is missing, from torch's longer rendezvous error."""
    where = f"{info.master_addr}:{info.master_port}"
    joined = re.search(r"(\d+)/(\d+) clients joined", str(exc))
    if joined:
        arrived, expected = int(joined.group(1)), int(joined.group(2))
        return (
            f"rank {info.rank}: only {arrived} of {expected} ranks reached the rendezvous at {where} within "
            f"{timeout_s:g} s; {expected - arrived} rank(s) never started or cannot reach this host "
            "(raise --init-timeout if they are merely slow)"
        )
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"rank {info.rank} of {info.world_size}: could not join the rendezvous at {where} within {timeout_s:g} s "
        f"({first_line}); is rank 0 running, and is MASTER_ADDR reachable from this node?"
    )


def synchronize(device: torch.device) -> None:
    """Wait for all queued device work, so that a clock read next counts it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def align_ranks(device: torch.device) -> None:
    """Bring every rank to the same point (a tiny all-reduce; works the same for gloo and NCCL)."""
    token = torch.zeros(1, device=device)
    dist.all_reduce(token)
    synchronize(device)


def reduce_floats(values: list[float], op: dist.ReduceOp, device: torch.device) -> list[float]:
    """All-reduce a few float64 numbers (sums of samples, maxima of times) across the ranks."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def broadcast_string(text: str, device: torch.device, src: int = 0) -> str:
    """Rank `src`'s string on every rank, sent as fixed-width bytes (no pickling)."""
    buffer = torch.zeros(_STRING_BYTES, dtype=torch.uint8, device=device)
    if dist.get_rank() == src:
        encoded = text.encode()[:_STRING_BYTES]
        buffer[: len(encoded)] = torch.tensor(list(encoded), dtype=torch.uint8)
    dist.broadcast(buffer, src=src)
    return bytes(buffer.cpu().tolist()).rstrip(b"\0").decode()
