"""Emulated nodes on one machine: network namespaces joined by a bridge in a "switch" namespace, each node's link
shaped with tc's tbf in both directions (the node's egress and the switch's egress towards it), so that every byte
between two nodes crosses two shaped links, as on a real switch.

Traffic stays between the namespaces this module creates; their addresses come from 198.18.0.0/15, the range
reserved for network benchmarks (RFC 2544). The root namespace joins the switch too, unshaped, at .254 (a Slurm
controller listens there; see tests/helpers/emulated_slurm.py). Everything is removed on exit, also when a run fails or
times out; processes are ended by their PID. Used by tests/test_emulated_network.py, tests/test_emulated_cluster.py
and benchmarks/emulated_network.py and benchmarks/emulated_cluster.py.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

CONTROLLER = 254  # the root namespace's host number on the switch


@dataclass(frozen=True)
class Node:
    namespace: str
    interface: str  # its end of the link to the switch
    address: str
    hostname: str  # what it calls itself under Slurm (tests/helpers/emulated_slurm.py)
    cpu: int  # the core its processes run on, unless a run says otherwise


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[Node, ...]
    rate: str  # tc rate of every node's link, e.g. 200mbit
    switch: str  # the switch namespace
    controller_address: str  # the root namespace's address on the switch

    def sent_bytes(self) -> int:
        """Bytes the nodes' shaped qdiscs have sent: proof that traffic crossed the links."""
        total = 0
        for node in self.nodes:
            shown = _ip("tc", "-s", "-n", node.namespace, "qdisc", "show", "dev", node.interface)
            total += sum(int(n) for n in re.findall(r"Sent (\d+) bytes", shown))
        return total


def cannot_emulate() -> str:
    """Why this machine cannot run the emulation ('' when it can)."""
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    for tool in ("ip", "tc", "taskset", "unshare"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    if len(os.sched_getaffinity(0)) < 2:
        return "emulated nodes need two cores"
    return ""


def _ip(*args: str) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _shape(namespace: str, interface: str, rate: str) -> None:
    # tbf: `rate` sustained; a burst of 256 KB and up to 100 ms of queue, so TCP is shaped, not dropped
    _ip("tc", "-n", namespace, "qdisc", "add", "dev", interface, "root", "tbf", "rate", rate, "burst", "256kb",
        "latency", "100ms")  # fmt: skip


@contextlib.contextmanager
def emulated_cluster(count: int, rate: str) -> Iterator[Cluster]:
    """`count` node namespaces and a switch namespace with a bridge; each node's veth to the switch shaped to
    `rate` in both directions; the root namespace on the bridge too, unshaped; loopback up everywhere."""
    tag = uuid.uuid4().hex[:6]
    subnet = int(tag, 16) % 256  # 198.18.<subnet>.0/24: a fresh /24 per cluster, inside 198.18.0.0/15
    cpus = sorted(os.sched_getaffinity(0))
    switch = f"ddpb-{tag}-sw"
    nodes = tuple(
        Node(f"ddpb-{tag}-n{i}", f"ddpb{tag}n{i}", f"198.18.{subnet}.{i}", f"e{tag}n{i}", cpus[(i - 1) % len(cpus)])
        for i in range(1, count + 1)
    )
    created: list[str] = []
    root_end = f"ddpb{tag}c"
    try:
        for namespace in (switch, *(node.namespace for node in nodes)):
            _ip("ip", "netns", "add", namespace)
            created.append(namespace)
        _ip("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("ip", "-n", switch, "link", "set", "br0", "up")
        for node in nodes:
            port = f"ddps{tag}n{node.address.rsplit('.', 1)[1]}"
            _ip("ip", "link", "add", node.interface, "netns", node.namespace, "type", "veth", "peer", "name", port,
                "netns", switch)  # fmt: skip
            _ip("ip", "-n", switch, "link", "set", port, "master", "br0")
            _ip("ip", "-n", switch, "link", "set", port, "up")
            _shape(switch, port, rate)  # towards the node
            _ip("ip", "-n", node.namespace, "addr", "add", f"{node.address}/24", "dev", node.interface)
            _ip("ip", "-n", node.namespace, "link", "set", "lo", "up")
            _ip("ip", "-n", node.namespace, "link", "set", node.interface, "up")
            _shape(node.namespace, node.interface, rate)  # from the node
        controller = f"198.18.{subnet}.{CONTROLLER}"
        _ip("ip", "link", "add", root_end, "type", "veth", "peer", "name", f"ddps{tag}c", "netns", switch)
        _ip("ip", "-n", switch, "link", "set", f"ddps{tag}c", "master", "br0")
        _ip("ip", "-n", switch, "link", "set", f"ddps{tag}c", "up")
        _ip("ip", "addr", "add", f"{controller}/24", "dev", root_end)
        _ip("ip", "link", "set", root_end, "up")
        yield Cluster(nodes, rate, switch, controller)
    finally:
        subprocess.run(["ip", "link", "del", root_end], capture_output=True, timeout=30)
        for namespace in created:  # deleting a namespace deletes its ends of the veths, and so the pairs
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)


@contextlib.contextmanager
def emulated_link(rate: str) -> Iterator[Cluster]:
    """Two nodes (each with a core of its own) on a switch: every byte between them crosses two links of `rate`."""
    with emulated_cluster(2, rate) as cluster:
        yield cluster


def run_on_nodes(
    cluster: Cluster,
    module_args: list[str],
    env: dict[str, str],
    port: int,
    timeout: float,
    cpus: Sequence[int] | None = None,
    ranks_per_node: int = 1,
) -> list[subprocess.CompletedProcess]:
    """`torchrun --nnodes N` with one agent per namespace (static rendezvous at the first node's address), each agent
    and its ranks pinned to that node's core (`cpus[i]` if given) with one thread each; gloo sends over the links.
    Returns every agent's CompletedProcess (stdout and stderr captured); ends all agents with their ranks (their
    process groups, by the agents' PIDs) if any outlives `timeout`."""
    processes = []
    try:
        for node_rank, node in enumerate(cluster.nodes):
            cpu = cpus[node_rank] if cpus is not None else node.cpu
            command = [
                "ip", "netns", "exec", node.namespace, "taskset", "-c", str(cpu),
                sys.executable, "-m", "torch.distributed.run", "--nnodes", str(len(cluster.nodes)),
                "--node_rank", str(node_rank), "--nproc_per_node", str(ranks_per_node),
                "--master_addr", cluster.nodes[0].address, "--master_port", str(port),
                "-m", "ddp_bench", *module_args,
            ]  # fmt: skip
            node_env = {**env, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": node.interface}
            processes.append(
                subprocess.Popen(
                    command,
                    env=node_env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,  # the agent leads a process group: its ranks can be ended with it
                )
            )
        results = []
        for process in processes:
            out, err = process.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
        return results
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the group this agent's PID leads: agent and ranks
            if process.poll() is None:
                process.communicate()


def run_on_both(link: Cluster, module_args: list[str], env: dict[str, str], port: int, timeout: float) -> list:
    """Two nodes, one rank each on its own core (the 2-node tests)."""
    return run_on_nodes(link, module_args, env, port, timeout)
