"""Tier 1 + 2: a lost peer is named even while a survivor's main thread is blocked (as a GPU host is inside a kernel
launch behind a stalled NCCL all-reduce), by the peer watch thread; ranks sharing one GPU under NCCL are refused
before the first collective; OOMs that cuDNN and cuBLAS raise as RuntimeErrors get the out-of-memory line."""

import subprocess
import sys
import threading
import time

import pytest
import torch
import torch.distributed as dist

from ddp_bench.errors import UsageError
from ddp_bench.launch import distributed, peer_watch
from ddp_bench.launch.distributed import abort_collectives, apply_comm_defaults
from ddp_bench.launch.job import Job
from ddp_bench.launch.launchers import LaunchInfo
from ddp_bench.launch.peer_watch import SILENCE_S, PeerWatch, report_and_exit
from ddp_bench.launch.peers import LostRanks, announce_failure, gpu_counted_by, refuse_shared_gpus
from ddp_bench.run import is_out_of_memory
from tests.helpers.failures import last_lines, marked_env, processes_with
from tests.helpers.runs import clean_env, run_torchrun


def rank_of(store: dist.Store, rank: int, world: int, local_world: int = 1) -> Job:
    info = LaunchInfo("torchrun", rank, rank % local_world, world, local_world, rank // local_world, 2, "h", 1)
    return Job(info, torch.device("cpu"), store, None)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def a_dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_peer_on_another_host_that_stops_beating_is_named_after_the_silence():
    store, clock = dist.HashStore(), Clock()
    store.set("pid/0", "nodeA:1")
    store.set("pid/1", "nodeB:2")
    watch = PeerWatch(rank_of(store, 0, 2), clock)
    watch.host = "nodeA"
    watch.learn_peers(timeout_s=5)
    assert (watch.watched, watch.local) == (1, {})
    for beat in range(3):  # rank 1 beats: nothing is lost
        store.set("beat/1", str(beat))
        clock.now += 1
        assert watch.check() is None
    clock.now += SILENCE_S - 1  # silent, but not for long enough yet
    assert watch.check() is None
    clock.now += 2
    assert watch.check() == LostRanks({}, [], [1])
    store.set("done/1", "1")  # a rank that finished is not missed
    assert watch.check() is None


def test_a_dead_process_on_this_host_and_an_announced_failure_are_named_at_the_next_tick():
    store = dist.HashStore()
    for rank, pid in enumerate([1, a_dead_pid(), 1]):
        store.set(f"pid/{rank}", f"here:{pid}")
    watch = PeerWatch(rank_of(store, 0, 3))
    watch.host = "here"
    watch.learn_peers(timeout_s=5)
    assert watch.check() == LostRanks({}, [1], [])
    announce_failure(rank_of(store, 2, 3), "failed: RuntimeError: boom")
    assert watch.check() == LostRanks({2: "failed: RuntimeError: boom"}, [1], [])
    assert watch.claim() and not watch.claim()  # one report per rank: the first to claim it says it


def test_a_watch_that_finds_a_dead_local_rank_tells_the_other_hosts_before_it_exits(monkeypatch, capsys):
    # #28 F1: rank 1 died on nodeA; nodeA's watch announces it, so nodeB's watch names it at its next tick instead
    # of NCCL's error (or 20 s of silence) ending nodeB's ranks unnamed.
    store, ended = dist.HashStore(), []
    for rank, where in enumerate(["nodeA:1", f"nodeA:{a_dead_pid()}", "nodeB:3"]):
        store.set(f"pid/{rank}", where)
    watch = PeerWatch(rank_of(store, 0, 3))
    watch.host = "nodeA"
    watch.learn_peers(timeout_s=5)
    lost = watch.check()
    assert lost == LostRanks({}, [1], [])
    monkeypatch.setattr(peer_watch.os, "_exit", ended.append)
    report_and_exit(watch, lost, lambda: None)
    assert ended == [1] and "lost rank 1" in capsys.readouterr().err
    remote = PeerWatch(rank_of(store, 2, 3))
    remote.host = "nodeB"
    remote.learn_peers(timeout_s=5)
    seen = remote.check()
    assert seen is not None and seen.failed == {1: "its process is gone (seen by rank 0 on nodeA)"}


def test_an_abort_that_hangs_is_left_behind_within_its_bound_and_a_second_abort_is_harmless(monkeypatch):
    # #28 F2: NCCL's abort can hang after a peer was killed; torch 2.6 raises on a second abort.
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist.distributed_c10d, "_abort_process_group", lambda: time.sleep(60), raising=False)
    started = time.monotonic()
    assert abort_collectives("nccl", bound_s=0.5) is False
    assert time.monotonic() - started < 5

    def twice():
        raise ValueError("Invalid process group specified or has been destroyed.")

    monkeypatch.setattr(dist.distributed_c10d, "_abort_process_group", twice, raising=False)
    assert abort_collectives("nccl", bound_s=5) is True
    assert abort_collectives("gloo", bound_s=0.1) is True  # gloo's sockets close with the process


@pytest.mark.parametrize(
    "launcher, before, after",
    [("slurm", None, "2"), ("torchrun", "1", "2"), ("torchrun", "3", "3"), ("slurm", "1", "1"), ("mpi", "0", "0")],
)
def test_nccl_errors_are_cleaned_up_not_torn_down_unless_the_user_chose(monkeypatch, launcher, before, after):
    # CleanUpOnly (2) leaves the process alive for the main thread or the watch to name the lost peer; torchrun's
    # agent exports TearDown (1) whatever the user did, so under torchrun only another value is a choice.
    if before is None:
        monkeypatch.delenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", raising=False)
    else:
        monkeypatch.setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", before)
    apply_comm_defaults("nccl", launcher)
    assert distributed.os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == after


@pytest.mark.long
def test_a_survivor_blocked_in_its_step_still_names_the_rank_that_died(tmp_path):
    # Rank 1 is killed at step 3 while rank 0's main thread blocks (an hour, without the GIL) before the same step:
    # no collective of rank 0 can fail, so only the watch can notice. Without it, rank 0 would hang for the hour.
    env = marked_env(DDP_BENCH_FAULT="rank=1,step=3,kind=sigkill;rank=0,step=3,kind=stall", OMP_NUM_THREADS="1")
    started = time.monotonic()
    done = run_torchrun(
        2, ["--device", "cpu", "--steps", "1000", "--warmup-steps", "1", "--out", str(tmp_path)], env=env, timeout=120
    )
    assert time.monotonic() - started < 60
    assert done.returncode != 0
    assert (
        "ddp_bench: failed: rank 0: stopping because lost rank 1 of 2 (process gone) (noticed by the peer watch)"
        in (last_lines(done.stderr))
    )
    assert processes_with(env) == []


@pytest.mark.long
def test_ranks_that_finish_are_not_missed_by_their_peers(tmp_path):
    # Four ranks end one after another (rank 0 last, since it prints the summary); none may report another lost.
    done = run_torchrun(
        4,
        ["--device", "cpu", "--steps", "3", "--warmup-steps", "1", "--batch-size", "8", "--out", str(tmp_path)],
        env=clean_env(OMP_NUM_THREADS="1"),
        timeout=150,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "peer watch" not in done.stderr


def share_gpus(gpus: list[str], hosts: list[str]) -> list[BaseException | None]:
    """Each rank (a thread) runs the shared-GPU check on one store; what each of them raised."""
    store, world = dist.HashStore(), len(gpus)
    per_host = {host: hosts.count(host) for host in hosts}
    outcome: list[BaseException | None] = [None] * world

    def rank(r: int) -> None:
        local = hosts[:r].count(hosts[r])
        info = LaunchInfo("torchrun", r, local, world, per_host[hosts[r]], 0, len(per_host), "h", 1)
        try:
            refuse_shared_gpus(store, info, hosts[r], gpus[r], timeout_s=10)
        except (UsageError, RuntimeError) as exc:
            outcome[r] = exc

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcome


def test_ranks_sharing_one_gpu_under_nccl_are_all_refused_with_one_line():
    outcome = share_gpus(["GPU-a", "GPU-b", "GPU-c", "GPU-c"], ["n1", "n1", "n2", "n2"])
    assert all(isinstance(error, UsageError) for error in outcome)  # every rank stops, not only the two
    assert {str(error) for error in outcome} == {
        "ranks 2 and 3 on n2 share one GPU (GPU-c), which NCCL cannot do: start one rank per GPU (--ntasks-per-node "
        "or --nproc_per_node equal to the GPUs per node, or --gpus-per-task=1), or pass --backend gloo to share a "
        "GPU on purpose"
    }


def test_gloo_ranks_sharing_one_gpu_count_its_energy_once():
    # #28 F8: NVML's counter is the board's; ranks 1 and 2 share GPU-a on n1 (gloo, on purpose), rank 3 is on n2.
    store, answers = dist.HashStore(), {}
    placed = [("n1", "GPU-b"), ("n1", "GPU-a"), ("n1", "GPU-a"), ("n2", "GPU-a")]

    def ask(rank):
        host, gpu = placed[rank]
        local, local_world = (rank, 3) if host == "n1" else (0, 1)
        info = LaunchInfo("torchrun", rank, local, 4, local_world, 0 if host == "n1" else 1, 2, "h", 1)
        answers[rank] = gpu_counted_by(store, info, host, gpu, timeout_s=10)

    threads = [threading.Thread(target=ask, args=(rank,)) for rank in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == {0: 0, 1: 1, 2: 1, 3: 3}  # rank 2's reading is rank 1's board: not counted again


def test_one_gpu_per_rank_passes_and_the_same_uuid_on_two_hosts_is_no_clash():
    assert share_gpus(["GPU-a", "GPU-b", "GPU-a", "GPU-b"], ["n1", "n1", "n2", "n2"]) == [None] * 4


@pytest.mark.parametrize(
    "error, oom",
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), True),
        (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True),
        (RuntimeError("Unable to find a valid cuDNN algorithm to run convolution"), True),
        (RuntimeError("CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`"), True),
        # NCCL's own face (#28 F5): its buffers are allocated at the first large all-reduce
        (
            torch.distributed.DistBackendError(
                "NCCL error in: ProcessGroupNCCL.cpp:3356, unhandled cuda error (run with NCCL_DEBUG=INFO for "
                "details), NCCL version 2.21.5\nncclUnhandledCudaError: Call to CUDA function failed.\nLast error:\n"
                "Cuda failure 'out of memory'"
            ),
            True,
        ),
        (torch.distributed.DistBackendError("NCCL error: remote process exited or there was a network error"), False),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), False),
        (ValueError("CUDNN_STATUS_ALLOC_FAILED"), False),
    ],
)
def test_out_of_memory_has_several_faces(error, oom):
    assert is_out_of_memory(error) is oom


@pytest.mark.long
def test_a_cudnn_allocation_failure_ends_in_the_out_of_memory_line(tmp_path):
    env = marked_env(DDP_BENCH_FAULT="rank=1,step=1,kind=alloc")
    done = run_torchrun(
        2, ["--device", "cpu", "--steps", "1000", "--warmup-steps", "1", "--out", str(tmp_path)], env=env, timeout=120
    )
    assert done.returncode != 0
    assert (
        "ddp_bench: failed: rank 1 ran out of memory (cuDNN error: CUDNN_STATUS_ALLOC_FAILED (injected on rank 1 at "
        "step 1)); lower --batch-size" in done.stderr
    )
    assert processes_with(env) == []
