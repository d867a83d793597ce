"""Which rank failed, died or went silent: the store keys every rank leaves (its host and PID, the reason it is
failing), and the roll call survivors of a failed collective take, so that their last line names the lost rank."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta

import torch.distributed as dist

from ddp_bench.errors import RunFailure, UsageError
from ddp_bench.launch.job import Job
from ddp_bench.launch.launchers import LaunchInfo

_ROLL_CALL_S = 5.0  # how long survivors of a failure wait for each other to answer the roll call
FAILURES_KEY = "failures"  # how many ranks have announced their own failure


def pid_alive(pid: int) -> bool:
    """Is this process (on this host) still running? A zombie has already died."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def register_rank(job: Job) -> None:
    """Leave this rank's host and PID in the store, so survivors of a failure can tell dead from stuck."""
    job.store.set(f"pid/{job.info.rank}", f"{socket.gethostname()}:{os.getpid()}")


def announce_failure(job: Job, reason: str) -> None:
    """Tell the other ranks, through the store, that this rank is failing and why (best effort)."""
    try:
        job.store.set_timeout(timedelta(seconds=2))
        job.store.set(f"failed/{job.info.rank}", reason)
        job.store.add(FAILURES_KEY, 1)  # one counter every rank's peer watch reads
    except (dist.DistError, RuntimeError):
        return  # the store is gone as well: the peers will find this rank silent instead


def announce_lost(job: Job, ranks: list[int], how: str) -> None:
    """Tell every rank's watch, through the store, that these ranks are gone and how this rank found out, unless
    they said so themselves: the watches on other hosts then name them within a tick, before NCCL's own error
    (seconds, across nodes) or the heartbeat's silence (20 s) would end them unnamed. Best effort."""
    try:
        job.store.set_timeout(timedelta(seconds=2))
        for rank in ranks:
            if not job.store.check([f"failed/{rank}"]):
                job.store.set(f"failed/{rank}", how)
                job.store.add(FAILURES_KEY, 1)
    except (dist.DistError, RuntimeError):
        return  # the store is gone too: the other hosts find these ranks silent instead


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
                    elif pid_alive(int(pid)):
                        stuck.append(rank)
                    else:
                        dead.append(rank)
            if not (silent or stuck) or time.monotonic() > deadline:
                return LostRanks(failed, dead, silent)
            time.sleep(0.2)
    except (dist.DistError, RuntimeError):
        return None


def refuse_shared_gpus(store: dist.Store, info: LaunchInfo, host: str, gpu: str, timeout_s: float) -> None:
    """Several ranks of an NCCL job on one GPU would fail at their first collective with NCCL's "Duplicate GPU
    detected" and a traceback. Every rank leaves its GPU's UUID in the store, reads those of its node, and says
    whether it found a GPU held twice; once every rank has looked, all of them stop with the same line if any did.
    (Ranks can share a GPU only by mistake: --gres=gpu:1 with two tasks, or CUDA_VISIBLE_DEVICES=0 exported
    before torchrun --nproc_per_node 2.)"""
    timeout = timedelta(seconds=timeout_s)
    store.set(f"gpu/{host}/{info.local_rank}", f"{info.rank}={gpu}")
    keys = [f"gpu/{host}/{local}" for local in range(info.local_world_size)]
    store.wait(keys, timeout)
    holders: dict[str, list[str]] = {}
    for key in keys:
        rank, _, uuid = store.get(key).decode().partition("=")
        holders.setdefault(uuid, []).append(rank)
    shared = [ranks for ranks in holders.values() if len(ranks) > 1]
    if shared:
        store.set(
            "gpu/shared",
            f"ranks {' and '.join(shared[0])} on {host} share one GPU ({gpu}), which NCCL cannot do: start one rank "
            "per GPU (--ntasks-per-node or --nproc_per_node equal to the GPUs per node, or --gpus-per-task=1), or "
            "pass --backend gloo to share a GPU on purpose",
        )
    store.add("gpu/checked", 1)
    deadline = time.monotonic() + timeout_s
    while store.add("gpu/checked", 0) < info.world_size:
        if time.monotonic() > deadline:
            raise RunFailure(f"rank {info.rank}: not every rank said which GPU it holds within {timeout_s:g} s")
        time.sleep(0.05)
    if store.check(["gpu/shared"]):
        raise UsageError(store.get("gpu/shared").decode())


def gpu_counted_by(store: dist.Store, info: LaunchInfo, host: str, gpu: str, timeout_s: float) -> int:
    """The rank whose energy reading counts for this GPU: the lowest rank on this host that holds it. Ranks share a
    GPU only under gloo, on purpose; NVML's counter is the board's, so the job counts it once (#28 F8)."""
    store.set(f"energy-gpu/{host}/{info.local_rank}", f"{info.rank}={gpu}")
    keys = [f"energy-gpu/{host}/{local}" for local in range(info.local_world_size)]
    store.wait(keys, timedelta(seconds=timeout_s))
    holders = [store.get(key).decode().partition("=") for key in keys]
    return min(int(rank) for rank, _, uuid in holders if uuid == gpu)


def lost_peer_message(job: Job, lost: LostRanks | None, cause: str) -> str:
    """The survivor's one line: which ranks failed (and why), died, or went silent; `cause` is what noticed."""
    rank, world = job.info.rank, job.info.world_size
    if lost is None:
        who = (
            "the torchrun agent" if job.info.launcher == "torchrun" else "rank 0 (it hosts the rendezvous) or its node"
        )
        return f"rank {rank}: lost contact with {who} during training ({cause})"
    parts = [f"rank {r} {why}" for r, why in sorted(lost.failed.items())]
    if lost.dead:
        parts.append(f"lost rank {', '.join(map(str, lost.dead))} of {world} (process gone)")
    if lost.silent:
        parts.append(f"rank {', '.join(map(str, lost.silent))} of {world} on other nodes stopped answering")
    if not parts:
        return f"rank {rank}: a collective failed though every rank still answers ({cause})"
    return f"rank {rank}: stopping because " + "; ".join(parts) + f" ({cause})"
