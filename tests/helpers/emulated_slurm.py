"""A real multi-node Slurm cluster on one machine: every emulated node (tests/helpers/emulated_link.py) runs its own
slurmd under its own hostname inside its namespace; slurmctld runs in the root namespace, reachable on the switch.

Recipe (../shared/notes/local-slurm.md, checked with Slurm 22.05): `ip netns exec` gives the command a fresh /sys
without cgroups, and slurmd will not start without them, so each node's slurmd starts in a new UTS namespace after
mounting the root namespace's cgroup hierarchies again; its node name is `-N <hostname>`, its spool, PID and log
files are the %n forms of the config. Node names resolve through lines this module adds to /etc/hosts and removes
again. Each node's slurmd (and so every task it starts) is pinned to that node's core; task/none leaves the pinning
as it is. The plain single-node Slurm of tests/local_slurm.sh must be down while this one runs (same ports); the
`emulated_slurm` context manager takes the machine's Slurm lock's holder to have done that.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

from ddp_bench.launch.peers import pid_alive
from tests.helpers.emulated_link import Cluster

HOSTS = "/etc/hosts"
CGROUPS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")
# What slurmd needs of /sys/fs/cgroup, mounted again inside a node's namespace.
MOUNT_CGROUPS = " && ".join(
    ["mount -t tmpfs tmpfs /sys/fs/cgroup"]
    + [f"mkdir -p /sys/fs/cgroup/{name} && mount -t cgroup -o {name} cgroup /sys/fs/cgroup/{name}" for name in CGROUPS]
    + [
        "mkdir -p /sys/fs/cgroup/systemd && mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd",
        "mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified",
    ]
)


def memory_mb() -> int:
    with open("/proc/meminfo", encoding="ascii") as handle:
        return int(next(line for line in handle if line.startswith("MemTotal:")).split()[1]) // 1024


def slurm_conf(cluster: Cluster, base: str, cpus_per_node: int) -> str:
    controller = socket.gethostname().split(".")[0]
    share = memory_mb() // len(cluster.nodes)  # the machine's memory, shared out
    nodes = "\n".join(
        f"NodeName={node.hostname} NodeAddr={node.address} CPUs={cpus_per_node} RealMemory={share} State=UNKNOWN"
        for node in cluster.nodes
    )
    return f"""ClusterName=ddpbemu
SlurmctldHost={controller}({cluster.controller_address})
SlurmUser=root
AuthType=auth/munge
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool-%n
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd-%n.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
KillWait=5
SlurmdTimeout=30
{nodes}
PartitionName=emu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _stop(pidfile: str) -> None:
    """End the daemon whose PID the file holds (SIGTERM, then SIGKILL), by its PID."""
    try:
        with open(pidfile, encoding="ascii") as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and pid_alive(pid):  # PID 1 here reaps late: a zombie counts as stopped
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.remove(pidfile)


@contextlib.contextmanager
def hosts_entries(cluster: Cluster) -> Iterator[None]:
    """The nodes' names in /etc/hosts for the block, restored exactly afterwards."""
    with open(HOSTS, encoding="utf-8") as handle:
        saved = handle.read()
    lines = "".join(f"{node.address} {node.hostname}\n" for node in cluster.nodes)
    with open(HOSTS, "w", encoding="utf-8") as handle:
        handle.write(saved + ("" if saved.endswith("\n") else "\n") + lines)
    try:
        yield
    finally:
        with open(HOSTS, "w", encoding="utf-8") as handle:
            handle.write(saved)


@contextlib.contextmanager
def emulated_slurm(cluster: Cluster, base: str, bin_dir: str, cpus_per_node: int = 2) -> Iterator[dict[str, str]]:
    """slurmctld in the root namespace and a slurmd in every node's namespace; yields the environment for Slurm
    clients (SLURM_CONF, and `bin_dir` first on PATH). munged must be running (tests/local_slurm.sh starts it)."""
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(os.path.join(base, "state"))
    os.makedirs(os.path.join(base, "log"))
    conf = os.path.join(base, "slurm.conf")
    with open(conf, "w", encoding="utf-8") as handle:
        handle.write(slurm_conf(cluster, base, cpus_per_node))
    env = {**os.environ, "SLURM_CONF": conf, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    with hosts_entries(cluster):
        try:
            subprocess.run(["slurmctld", "-f", conf], check=True, timeout=60, env=env)
            for node in cluster.nodes:
                start = f"{MOUNT_CGROUPS} && hostname {node.hostname} && exec slurmd -f {conf} -N {node.hostname}"
                subprocess.run(
                    ["ip", "netns", "exec", node.namespace, "taskset", "-c", str(node.cpu), "unshare", "--uts",
                     "--mount", "sh", "-c", start],
                    check=True, timeout=60, env=env,
                )  # fmt: skip
            _wait_until_idle(cluster, env)
            yield env
        finally:
            queued = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=env, timeout=30)
            if queued.stdout.split():
                subprocess.run(["scancel", *queued.stdout.split()], capture_output=True, env=env, timeout=30)
                time.sleep(2)
            for node in cluster.nodes:
                _stop(os.path.join(base, f"slurmd-{node.hostname}.pid"))
            _stop(os.path.join(base, "slurmctld.pid"))


def _wait_until_idle(cluster: Cluster, env: dict[str, str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    states = ""
    while time.monotonic() < deadline:
        states = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, env=env, timeout=30
        ).stdout
        idle = [line for line in states.splitlines() if line.split()[-1].startswith("idle")]
        if len(idle) == len(cluster.nodes):
            return
        for line in states.splitlines():
            if line.split()[-1].startswith(("down", "drain")):
                subprocess.run(["scontrol", "update", f"NodeName={line.split()[0]}", "State=RESUME"],
                               capture_output=True, env=env, timeout=30)  # fmt: skip
        time.sleep(0.3)
    raise RuntimeError(f"the emulated nodes never all became idle: {states.strip()}")
