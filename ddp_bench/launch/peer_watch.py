"""A host thread that watches the other ranks once a second, whatever the training loop is doing.

Why a thread: on a GPU the host does not wait for DDP's all-reduce, so when an NCCL peer dies the survivor keeps
launching kernels until the CUDA launch queue is full, then blocks inside a launch, long before its next gloo stop
check; NCCL's watchdog would end it only after --init-timeout, with no line saying which rank was lost. The main
thread may be blocked, but this thread is not: kernel launches and sleeps release the GIL.

Each tick it (1) leaves a heartbeat in the store, (2) reads one counter of failures the ranks announced, (3) checks
the processes of the ranks on its own host, and (4) reads the heartbeat of the next rank on another host (each
rank watches one: about five store operations per rank and second, all on the store's host, at any scale). When
it finds a lost peer it claims the report (the main thread, failing at the same time, claims it too: the first
one says it), prints the same `stopping because ...` line, aborts NCCL's communicators and ends the process with
exit code 1. Ranks that finished mark themselves done and are not missed.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable

import torch.distributed as dist

from ddp_bench.errors import EXIT_FAILURE
from ddp_bench.launch.job import Job
from ddp_bench.launch.peers import FAILURES_KEY, LostRanks, announce_lost, lost_peer_message, pid_alive

PERIOD_S = 1.0
SILENCE_S = 20.0  # a heartbeat unchanged for this long: that rank's host is gone (its watch thread never starves
# this long: it needs the GIL for microseconds a second, and a busy main thread hands it over every 5 ms)
STORE_ERRORS = 3  # consecutive failed store operations before the store (rank 0 or torchrun's agent) counts as gone


class PeerWatch:
    """The state of one rank's watch; `check()` is one tick, and is what the tests drive with a fake clock."""

    def __init__(self, job: Job, clock: Callable[[], float] = time.monotonic) -> None:
        self.job = job
        self.clock = clock
        self.host = socket.gethostname()
        self.ticks = 0
        self.local: dict[int, int] = {}  # rank -> PID, for the other ranks on this host
        self.watched = -1  # the next rank on another host, whose heartbeat this rank reads
        self.last_beat: tuple[str, float] = ("", clock())  # its last heartbeat, and when it changed
        self.store_errors = 0
        self._claimed = threading.Lock()

    def learn_peers(self, timeout_s: float) -> None:
        """Where every rank runs, from the PIDs they registered (launch/peers.register_rank)."""
        world, me = self.job.info.world_size, self.job.info.rank
        keys = [f"pid/{rank}" for rank in range(world)]
        deadline = self.clock() + timeout_s
        while not self.job.store.check(keys):  # polled: a blocking wait would hold the store from the main thread
            if self.clock() > deadline:
                raise RuntimeError(f"not every rank registered within {timeout_s:g} s")
            time.sleep(0.1)
        hosts = {}
        for rank in range(world):
            host, _, pid = self.job.store.get(f"pid/{rank}").decode().rpartition(":")
            hosts[rank] = host
            if host == self.host and rank != me:
                self.local[rank] = int(pid)
        others = [(me + step) % world for step in range(1, world)]
        self.watched = next((rank for rank in others if hosts[rank] != self.host), -1)

    def claim(self) -> bool:
        """True for the first caller only: the one that reports this rank's failure."""
        return self._claimed.acquire(blocking=False)

    def check(self) -> LostRanks | None:
        """One tick: the lost ranks if any (failed, dead on this host, silent elsewhere), else None. Raises
        DistError or RuntimeError when the store cannot be reached."""
        store, me = self.job.store, self.job.info.rank
        self.ticks += 1
        store.set(f"beat/{me}", str(self.ticks))
        failed = {}
        if store.add(FAILURES_KEY, 0) > 0:
            for rank in range(self.job.info.world_size):
                if rank != me and store.check([f"failed/{rank}"]):
                    failed[rank] = store.get(f"failed/{rank}").decode()
        dead = [rank for rank, pid in sorted(self.local.items()) if not pid_alive(pid) and not self._done(rank)]
        silent = []
        if self.watched >= 0 and not self._done(self.watched):
            beat = store.get(f"beat/{self.watched}").decode() if store.check([f"beat/{self.watched}"]) else ""
            now = self.clock()
            if beat != self.last_beat[0]:
                self.last_beat = (beat, now)
            elif now - self.last_beat[1] > SILENCE_S:
                silent = [self.watched]
        return LostRanks(failed, dead, silent) if failed or dead or silent else None

    def _done(self, rank: int) -> bool:
        return self.job.store.check([f"done/{rank}"])

    def done(self) -> None:
        """This rank has finished its part of the job: its peers stop watching it."""
        self.job.store.set(f"done/{self.job.info.rank}", "1")


def report_and_exit(watch: PeerWatch, lost: LostRanks | None, abort: Callable[[], None]) -> None:
    """The watch's last act: what it saw announced to the other hosts, the survivor's line, the communicators
    aborted (within a bound: launch.distributed.abort_collectives), the process ended (the main thread may be
    blocked inside a kernel launch)."""
    if lost is not None and not lost.failed:  # a failure already announced is the cause the other hosts will read;
        # ranks that died after it are survivors ending on it, not news
        me = f"rank {watch.job.info.rank} on {watch.host}"
        announce_lost(watch.job, lost.dead, f"its process is gone (seen by {me})")
        announce_lost(watch.job, lost.silent, f"its host went silent for {SILENCE_S:g} s (seen by {me})")
    message = lost_peer_message(watch.job, lost, "noticed by the peer watch")
    print(f"ddp_bench: failed: {message}", file=sys.stderr, flush=True)
    try:
        abort()
    finally:
        os._exit(EXIT_FAILURE)


class WatchThread:
    """Runs a PeerWatch every PERIOD_S on a daemon thread until stopped."""

    def __init__(self, watch: PeerWatch, abort: Callable[[], None], timeout_s: float) -> None:
        self.watch = watch
        self._abort = abort
        self._timeout_s = timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ddp_bench-peer-watch", daemon=True)

    def start(self) -> WatchThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.watch.learn_peers(self._timeout_s)
        except (dist.DistError, RuntimeError):
            return  # the job is failing at start-up already: the main thread's rendezvous errors say so
        while not self._stop.wait(PERIOD_S):
            try:
                lost = self.watch.check()
                self.watch.store_errors = 0
            except (dist.DistError, RuntimeError):
                self.watch.store_errors += 1
                if self.watch.store_errors < STORE_ERRORS:
                    continue
                lost = None  # the store itself is gone
            if (lost is not None or self.watch.store_errors) and not self._stop.is_set() and self.watch.claim():
                report_and_exit(self.watch, lost, self._abort)

    def wait_for_its_report(self) -> None:
        """The watch claimed the report first: it prints the line and ends the process within moments."""
        self._thread.join(timeout=60)

    def stop(self, finished: bool) -> None:
        """End the watch; `finished`: this rank's part is done (peers stop watching it). Bounded waits only."""
        self._stop.set()
        self._thread.join(timeout=2 * PERIOD_S + 5)
        if finished:
            try:
                self.watch.done()
            except (dist.DistError, RuntimeError):
                return  # the store is gone already: nobody is left to miss this rank
