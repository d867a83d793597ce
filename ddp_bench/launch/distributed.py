"""Process-group set-up and tear-down, and the few collectives the harness itself needs.

This is the only module that turns a `LaunchInfo` into a rendezvous. Every wait it starts is bounded by the
run's `--init-timeout`: torch's own default would leave a job hanging for 30 minutes when a rank never arrives.
It builds the rendezvous store itself (rather than `env://`) so that, when a collective fails, the surviving
ranks can use the store to find out which rank is gone and say so.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ddp_bench.errors import RunFailure
from ddp_bench.launch.launchers import LaunchInfo

_STRING_BYTES = 256  # fixed width for strings shared between ranks (run ids, host names)
_ROLL_CALL_S = 5.0  # how long survivors of a failure wait for each other to answer the roll call


@dataclass(frozen=True)
class Job:
    """This rank's handle on the running job."""

    info: LaunchInfo
    device: torch.device
    store: dist.Store  # ddp_bench's own keys, beside the process group's
    control: dist.ProcessGroup | None  # a gloo group for host-side agreement (None: use the default group)


def _rendezvous_store(info: LaunchInfo, timeout: timedelta) -> dist.Store:
    if info.world_size == 1:
        return dist.HashStore()  # one rank needs no rendezvous and no port: nothing can collide
    if info.launcher == "torchrun":
        # torchrun's agent hosts the store at MASTER_ADDR:MASTER_PORT; every worker is a client.
        return dist.TCPStore(info.master_addr, info.master_port, info.world_size, is_master=False, timeout=timeout)
    # Rank 0 hosts it; it waits (up to the timeout) until every other rank has connected.
    return dist.TCPStore(info.master_addr, info.master_port, info.world_size, is_master=info.rank == 0, timeout=timeout)


@contextlib.contextmanager
def process_group(info: LaunchInfo, backend: str, device: torch.device, timeout_s: float) -> Iterator[Job]:
    """Join the job's process group for the duration of the block; leave it cleanly when the block succeeds."""
    timeout = timedelta(seconds=timeout_s)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL binds a communicator to the current device
    if backend == "nccl":
        # NCCL's watchdog aborts the communicator and ends the process when a collective fails or outlasts the
        # timeout (torch's default, 3, ends it without aborting). ddp_bench's own stop checks over gloo find a lost
        # peer within about a second and say which, long before that; this bounds the case they cannot see.
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    try:
        store = _rendezvous_store(info, timeout)
        dist.init_process_group(
            backend,
            store=dist.PrefixStore("process_group", store),
            rank=info.rank,
            world_size=info.world_size,
            timeout=timeout,
        )
        # NCCL collectives run on the GPU stream; agreeing on host-side decisions (stop now?) through NCCL would
        # synchronise the device. A small gloo group answers those without touching the GPU.
        control = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
    except dist.DistError as exc:
        raise RunFailure(_rendezvous_failure(info, timeout_s, exc)) from None
    yield Job(info, device, dist.PrefixStore("ddp_bench", store), control)
    # Reached only when the block succeeded: after a failure a peer may be gone, and tearing down a
    # communicator with a dead peer can block; the process exit releases everything instead.
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
    return (
        f"rank {info.rank} of {info.world_size}: could not join the rendezvous at {where} within {timeout_s:g} s "
        f"({first_line(exc)}); is rank 0 running, and is MASTER_ADDR reachable from this node?"
    )


# What a collective says when a peer went away: gloo (a RuntimeError or DistBackendError naming the socket) and
# NCCL (ncclRemoteError, or an aborted communicator once the watchdog has seen the failure). An NCCL error that
# names no peer (invalid usage, a CUDA error on this rank) is this rank's own failure, not a lost peer.
_PEER_LOST = re.compile(
    r"Connection (closed|reset) by peer|Broken pipe|remote process exit|ncclRemoteError|communicator was aborted|"
    r"timed out|timeout",
    re.IGNORECASE,
)


def is_peer_failure(exc: BaseException) -> bool:
    """Did a collective fail because another rank is gone (rather than because of this rank)?"""
    if isinstance(exc, (dist.DistNetworkError, dist.DistStoreError)):
        return True  # a broken connection, or the rendezvous store (rank 0 or torchrun's agent) gone
    return isinstance(exc, RuntimeError) and bool(_PEER_LOST.search(str(exc)))


def abort_collectives(backend: str) -> None:
    """After a failure, abort NCCL's communicators so that exiting cannot block on a collective that will never
    finish (a kernel waiting for a dead peer). gloo needs nothing: its sockets close with the process."""
    abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
    if backend == "nccl" and abort is not None and dist.is_initialized():
        abort()


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The gist of an exception for a one-line message."""
    text = str(exc).strip()
    peer = re.search(r"Connection (closed|reset) by peer( \[[^\]]*\]:\d+)?", text)
    if peer:  # gloo's message goes on for another 150 characters of advice
        return peer.group(0)
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def register_rank(job: Job) -> None:
    """Leave this rank's host and PID in the store, so survivors of a failure can tell dead from stuck."""
    job.store.set(f"pid/{job.info.rank}", f"{socket.gethostname()}:{os.getpid()}")


def announce_failure(job: Job, reason: str) -> None:
    """Tell the other ranks, through the store, that this rank is failing and why (best effort)."""
    try:
        job.store.set_timeout(timedelta(seconds=2))
        job.store.set(f"failed/{job.info.rank}", reason)
    except (dist.DistError, RuntimeError):
        return  # the store is gone as well: the peers will find this rank silent instead


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has already died
    except OSError:
        return False


@dataclass(frozen=True)
class LostRanks:
    failed: dict[int, str]  # ranks that announced their own failure, with the reason
    dead: list[int]  # ranks on this host whose process is gone
    silent: list[int]  # ranks elsewhere that did not answer the roll call


def find_lost_ranks(job: Job, wait_s: float = _ROLL_CALL_S) -> LostRanks | None:
    """After a failed collective: which ranks failed, died, or no longer answer?

    Survivors answer a roll call in the store. A rank that is alive but stuck in a collective with the dead one
    cannot answer, so ranks on this host are judged by their process instead. Returns None when the store itself
    is gone (it lives in rank 0, or in torchrun's agent).
    """
    store, me, host = job.store, job.info.rank, socket.gethostname()
    try:
        store.set_timeout(timedelta(seconds=wait_s))
        store.set(f"alive/{me}", "1")
        deadline = time.monotonic() + wait_s
        while True:
            failed, dead, silent, stuck = {}, [], [], []
            for rank in range(job.info.world_size):
                if store.check([f"failed/{rank}"]):
                    failed[rank] = store.get(f"failed/{rank}").decode()
                elif not store.check([f"alive/{rank}"]):
                    where, _, pid = store.get(f"pid/{rank}").decode().rpartition(":")
                    if where != host:
                        silent.append(rank)
                    elif _pid_alive(int(pid)):
                        stuck.append(rank)
                    else:
                        dead.append(rank)
            if not (silent or stuck) or time.monotonic() > deadline:
                return LostRanks(failed, dead, silent)
            time.sleep(0.2)
    except (dist.DistError, RuntimeError):
        return None


def synchronize(device: torch.device) -> None:
    """Wait for all queued device work, so that a clock read next counts it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def align_ranks(device: torch.device) -> None:
    """Bring every rank to the same point (a tiny all-reduce; works the same for gloo and NCCL)."""
    token = torch.zeros(1, device=device)
    dist.all_reduce(token)
    synchronize(device)


def any_rank(flag: bool, job: Job) -> bool:
    """True on every rank if `flag` is true on any rank (a host-side all-reduce, no device sync)."""
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=job.control)
    return bool(tensor.item())


def reduce_floats(values: list[float], op: dist.ReduceOp, device: torch.device) -> list[float]:
    """All-reduce a few float64 numbers (sums of samples, maxima of times) across the ranks."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def gather_floats(values: list[float], device: torch.device) -> list[list[float]]:
    """Every rank's few float64 numbers, in rank order, on every rank."""
    mine = torch.tensor(values, dtype=torch.float64, device=device)
    everyone = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine)
    return [tensor.tolist() for tensor in everyone]


def broadcast_string(text: str, device: torch.device, src: int = 0) -> str:
    """Rank `src`'s string on every rank, sent as fixed-width bytes (no pickling)."""
    buffer = torch.zeros(_STRING_BYTES, dtype=torch.uint8, device=device)
    if dist.get_rank() == src:
        encoded = text.encode()[:_STRING_BYTES]
        buffer[: len(encoded)] = torch.tensor(list(encoded), dtype=torch.uint8)
    dist.broadcast(buffer, src=src)
    return bytes(buffer.cpu().tolist()).rstrip(b"\0").decode()
