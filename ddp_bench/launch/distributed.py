"""Process-group set-up and tear-down: the rendezvous, the groups, and how a failed one is named.

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
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import torch
import torch.distributed as dist

from ddp_bench.errors import RunFailure
from ddp_bench.launch.collectives import synchronize
from ddp_bench.launch.job import Job
from ddp_bench.launch.launchers import LaunchInfo
from ddp_bench.launch.peers import refuse_shared_gpus

# How long leaving the job waits for the groups' threads to let go of the tensors the harness lent them.
_RELEASE_S = 30.0
# What ddp_bench sets for a backend unless the user did. 2 is CleanUpOnly: when a collective fails or outlasts the
# timeout, NCCL's watchdog aborts the communicators and leaves the process alive, so that the main thread gets the
# error (or the peer watch finds the lost rank) and names the peer; 1 (TearDown) would end the process from the
# watchdog's thread first, with torch's message and no line saying which rank was lost (torch's default, 3, ends it
# without aborting). The backstop for a collective that hangs with every rank alive, which the watch cannot see.
COMM_DEFAULTS = {"nccl": {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "2"}}


# torchrun's agent exports this to its workers whatever the user did (TearDown, unless the agent's own environment
# had a value): under torchrun that value is the launcher's default, not a choice, and ddp_bench's replaces it.
TORCHRUN_EXPORTS = {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}


def apply_comm_defaults(backend: str, launcher: str) -> None:
    """Put the backend's defaults in force, before the row's provenance is taken, so that every launcher's rows
    record the same settings; a value the user set stays (under torchrun, one that differs from the agent's)."""
    for name, value in COMM_DEFAULTS.get(backend, {}).items():
        if launcher == "torchrun" and os.environ.get(name) == TORCHRUN_EXPORTS.get(name):
            os.environ[name] = value
        os.environ.setdefault(name, value)


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
    # torchrun's agent keeps its store across restarts (--max-restarts): each attempt's keys are its own
    ours, theirs = f"ddp_bench/{info.attempt}", f"process_group/{info.attempt}"
    try:
        store = _rendezvous_store(info, timeout)
        if backend == "nccl" and info.world_size > 1:
            gpu = str(torch.cuda.get_device_properties(device).uuid)
            refuse_shared_gpus(dist.PrefixStore(ours, store), info, socket.gethostname(), gpu, timeout_s)
        dist.init_process_group(
            backend,
            store=dist.PrefixStore(theirs, store),
            rank=info.rank,
            world_size=info.world_size,
            timeout=timeout,
        )
    except dist.DistError as exc:
        raise RunFailure(_rendezvous_failure(info, timeout_s, exc)) from None
    # NCCL collectives run on the GPU stream; agreeing on host-side decisions (stop now?) through NCCL would
    # synchronise the device. A small gloo group answers those without touching the GPU.
    try:
        control = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
    except (dist.DistError, RuntimeError) as exc:
        raise RunFailure(_side_group_failure(info, exc)) from None
    job = Job(info, device, dist.PrefixStore(ours, store), control)
    try:
        yield job
    except BaseException:
        # After a failure a peer may be gone, and tearing down a communicator with a dead peer can block: the
        # process exit releases the groups instead. Their threads must still be done with the harness's tensors
        # first (the wait is bounded: a thread stuck in a collective with a dead peer keeps its tensor).
        job.held.release(timeout_s=2.0)
        raise
    # The block succeeded: every collective it started has been waited for. Leave only once the groups' threads
    # have let go of the tensors they were lent, so that destroying a group never joins a thread that waits for
    # the GIL this thread holds (launch/job.py); the callers have dropped their DDP modules (and so the reducer's
    # hold on the group) by now.
    synchronize(device)
    if not job.held.release(_RELEASE_S):
        raise RunFailure(
            f"rank {info.rank}: a process-group thread still held a tensor {_RELEASE_S:g} s after the run ended; "
            "leaving the groups now could hang, so they are left to the process exit"
        )
    dist.destroy_process_group()


def _side_group_failure(info: LaunchInfo, exc: Exception) -> str:
    """gloo binds the address this host's name resolves to; where that is loopback or unroutable from the other
    nodes (127.0.1.1 in /etc/hosts, a management network), its group cannot form until told which interface."""
    chosen = os.environ.get("GLOO_SOCKET_IFNAME")
    hint = (
        f"GLOO_SOCKET_IFNAME={chosen} is set: is that interface up on every node, and routable between them?"
        if chosen
        else "set GLOO_SOCKET_IFNAME to the interface the nodes reach each other on (e.g. ib0, hsn0, eth0)"
    )
    return (
        f"rank {info.rank}: NCCL started, but the gloo group ddp_bench uses beside it for host-side agreement could "
        f"not form ({first_line(exc)}): {hint}"
    )


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


ABORT_S = 10.0  # NCCL's abort can itself hang after a peer was killed (NVIDIA/nccl#863, #1777): wait this long


def abort_collectives(backend: str, bound_s: float = ABORT_S) -> bool:
    """After a failure, abort NCCL's communicators so that exiting cannot block on a collective that will never
    finish (a kernel waiting for a dead peer). gloo needs nothing: its sockets close with the process. The abort
    runs on a daemon thread and is waited for at most `bound_s`; a hung one is left behind, since the process is
    about to end. True when it finished (or there was nothing to abort)."""
    abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
    if backend != "nccl" or abort is None or not dist.is_initialized():
        return True
    return run_bounded(abort, bound_s)


def run_bounded(action: Callable[[], object], seconds: float) -> bool:
    """`action` on a daemon thread, waited for at most `seconds`: True if it finished in time."""
    finished = threading.Event()

    def attempt() -> None:
        try:
            action()
        except (RuntimeError, ValueError):  # torch 2.6 raises ValueError when the group was aborted already
            return  # nothing is left to abort: the exit that follows releases the rest
        finally:
            finished.set()

    threading.Thread(target=attempt, name="ddp_bench-abort", daemon=True).start()
    return finished.wait(seconds)


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The gist of an exception for a one-line message."""
    text = str(exc).strip()
    peer = re.search(r"Connection (closed|reset) by peer( \[[^\]]*\]:\d+)?", text)
    if peer:  # gloo's message goes on for another 150 characters of advice
        return peer.group(0)
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"
