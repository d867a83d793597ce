"""Which rank failed, died or went silent: the store keys every rank leaves (its host and PID, the reason it is
failing), and the roll call survivors of a failed collective take, so that their last line names the lost rank."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta

import torch.distributed as dist

from ddp_bench.launch.job import Job

_ROLL_CALL_S = 5.0  # how long survivors of a failure wait for each other to answer the roll call


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
