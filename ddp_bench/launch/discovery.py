"""Rank discovery through MPI: what `mpiexec` does not put in the environment (world size under PMIx, local
ranks, nodes, a rendezvous address), asked of MPI itself, with a deadline MPI does not have.

MPI only tells ranks who they are; training then runs over gloo or NCCL (PyPI's torch has no MPI backend).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
from collections.abc import Iterator, Mapping
from dataclasses import replace

from ddp_bench.errors import UsageError
from ddp_bench.launch.launchers import LaunchInfo, MpiLaunchInfo, detect_launch


def free_port() -> int:
    """A TCP port nobody on this host listens on right now (for launchers that do not choose one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def discover_launch(env: Mapping[str, str], launcher: str, timeout_s: float) -> LaunchInfo:
    """This process's place in the job: what the launcher's variables say, completed by MPI where needed."""
    return complete_with_mpi(detect_launch(env, launcher), timeout_s)


def complete_with_mpi(info: LaunchInfo, timeout_s: float = 180.0) -> LaunchInfo:
    """Ask MPI what its environment could not say, and share rank 0's address and port with every rank.

    Refuses a job whose MPI world does not match what the launcher promised: that is the signature of ranks
    that each started alone (for example `srun` without the right `--mpi=` plugin), which would otherwise run
    N separate single-rank benchmarks and report them as one.
    """
    if not isinstance(info, MpiLaunchInfo) or info.complete:
        return info
    # MPI has no timeouts: MPI_Init waits for every rank, and so does each collective. A watchdog ends this
    # rank, with one line, if a peer never gets here (it failed before starting MPI, or never started).
    with _watchdog(
        timeout_s, f"MPI rank {info.rank}: not every rank started MPI within {timeout_s:g} s (--init-timeout)"
    ):
        return _complete_with_mpi(info, socket.gethostname())


@contextlib.contextmanager
def _watchdog(timeout_s: float, message: str) -> Iterator[None]:
    """Kill this process with a one-line message if the block has not finished within `timeout_s`.

    A forked watcher, not a thread: a rank stuck in MPI_Init holds the GIL and ignores Python signal handlers,
    so nothing inside the process could act. The watcher exits quietly as soon as the block ends.
    """
    read_end, write_end = os.pipe()
    parent = os.getpid()
    watcher = os.fork()
    if watcher == 0:  # the watcher: wait for the pipe to close (block done) or for the deadline
        os.close(write_end)
        finished, _, _ = select.select([read_end], [], [], timeout_s)
        if not finished:
            os.write(2, f"ddp_bench: failed: {message}\n".encode())
            os.kill(parent, signal.SIGKILL)
        os._exit(0)
    os.close(read_end)
    try:
        yield
    finally:
        os.close(write_end)  # end of file wakes the watcher, which exits
        os.waitpid(watcher, 0)


def _complete_with_mpi(info: MpiLaunchInfo, hostname: str) -> LaunchInfo:
    try:
        from mpi4py import MPI
    except ImportError:
        if info.env_world_size and info.master_addr and info.master_port:
            return replace(info, complete=True)
        raise UsageError(
            "launched by MPI, but mpi4py is not installed: pip install 'ddp_bench[mpi]', "
            "or set MASTER_ADDR and MASTER_PORT yourself"
        ) from None
    comm = MPI.COMM_WORLD
    if info.env_world_size and comm.Get_size() != info.env_world_size:
        raise UsageError(
            f"MPI sees a world of {comm.Get_size()} but the launcher promised {info.env_world_size}: "
            "the ranks started as separate jobs (check srun --mpi= or the MPI that mpi4py was built with)"
        )
    if comm.Get_rank() != info.rank:
        raise UsageError(f"MPI rank {comm.Get_rank()} differs from the launcher's rank {info.rank}")
    node_comm = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    hosts = comm.allgather(hostname)
    node_names = list(dict.fromkeys(hosts))  # in order of first rank on each node
    # Rank 0's choice wins; only rank 0 needs a free port, but every rank computing one keeps this collective simple.
    master_addr, master_port = comm.bcast((info.master_addr or hostname, info.master_port or free_port()), root=0)
    completed = replace(
        info,
        world_size=comm.Get_size(),
        local_rank=node_comm.Get_rank(),
        local_world_size=node_comm.Get_size(),
        node_rank=node_names.index(hostname),
        num_nodes=len(node_names),
        master_addr=master_addr,
        master_port=master_port,
        complete=True,
    )
    node_comm.Free()
    return completed
