"""Two emulated nodes on one machine: network namespaces joined by a veth pair, rate-limited with tc's tbf.

Traffic stays between the namespaces this module creates; their addresses come from 198.18.0.0/15, the range
reserved for network benchmarks (RFC 2544). Everything is removed on exit, also when a run fails or times out;
processes are ended by their PID. Used by tests/test_emulated_network.py and benchmarks/emulated_network.py.
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
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Node:
    namespace: str
    interface: str
    address: str
    cpu: int  # the one core this node's processes run on


@dataclass(frozen=True)
class Link:
    nodes: tuple[Node, Node]
    rate: str  # tc rate, e.g. 200mbit

    def sent_bytes(self) -> int:
        """Bytes the shaped qdiscs of both ends have sent: proof that traffic crossed this link."""
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
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    if len(os.sched_getaffinity(0)) < 2:
        return "two emulated nodes need two cores, one each"
    return ""


def _ip(*args: str) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@contextlib.contextmanager
def emulated_link(rate: str) -> Iterator[Link]:
    """Namespaces A and B, a veth pair between them shaped to `rate` in both directions, loopback up in each."""
    tag = uuid.uuid4().hex[:6]
    subnet = int(tag, 16) % 256  # 198.18.<subnet>.0/24: a fresh /24 per link, inside 198.18.0.0/15
    cpus = sorted(os.sched_getaffinity(0))[:2]
    nodes = tuple(
        Node(f"ddpb-{tag}-{side}", f"ddpb{tag}{side}", f"198.18.{subnet}.{index + 1}", cpus[index])
        for index, side in enumerate("ab")
    )
    created: list[str] = []
    try:
        for node in nodes:
            _ip("ip", "netns", "add", node.namespace)
            created.append(node.namespace)
        a, b = nodes
        _ip("ip", "link", "add", a.interface, "netns", a.namespace, "type", "veth", "peer", "name", b.interface,
            "netns", b.namespace)  # fmt: skip
        for node in nodes:
            _ip("ip", "-n", node.namespace, "addr", "add", f"{node.address}/24", "dev", node.interface)
            _ip("ip", "-n", node.namespace, "link", "set", "lo", "up")
            _ip("ip", "-n", node.namespace, "link", "set", node.interface, "up")
            # tbf: `rate` sustained; a burst of 256 KB and up to 100 ms of queue, so TCP is shaped, not dropped
            _ip("tc", "-n", node.namespace, "qdisc", "add", "dev", node.interface, "root", "tbf", "rate", rate,
                "burst", "256kb", "latency", "100ms")  # fmt: skip
        yield Link(nodes, rate)
    finally:
        for namespace in created:  # deleting a namespace deletes its end of the veth, and so the pair
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)


def run_on_both(link: Link, module_args: list[str], env: dict[str, str], port: int, timeout: float) -> list:
    """`torchrun --nnodes 2` with one agent per namespace (static rendezvous at node A's address), each agent and
    its rank pinned to its node's core with one thread; gloo sends over the veth. Returns both CompletedProcess
    results (stdout and stderr captured); ends both agents by PID if either outlives `timeout`."""
    processes = []
    try:
        for node_rank, node in enumerate(link.nodes):
            command = [
                "ip", "netns", "exec", node.namespace, "taskset", "-c", str(node.cpu),
                sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node_rank),
                "--nproc_per_node", "1", "--master_addr", link.nodes[0].address, "--master_port", str(port),
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
                    start_new_session=True,  # the agent leads a process group: its rank can be ended with it
                )
            )
        results = []
        for process in processes:
            out, err = process.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # the group this agent's PID leads: agent and rank
                process.communicate()
