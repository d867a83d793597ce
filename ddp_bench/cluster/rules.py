"""Site rules: what a cluster would refuse, or accept and then waste, refused by ddp_bench first.

`sweep` raises the first refusal before it writes or submits anything; `check` lists every one as an error. The
rules read only the profile (data, with the page each rule comes from in its facts) and the job asked for.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ddp_bench.cluster.site_types import ClusterProfile, GpuNode, Queue
from ddp_bench.errors import UsageError
from ddp_bench.escape import shortened

_WALLTIME = re.compile(r"(?:(\d{1,4})-)?(\d{1,6})(?::(\d{1,2}))?(?::(\d{1,2}))?")
# Job values that go into #SBATCH / #PBS directives, each checked whole (fullmatch: a trailing newline is no match)
# against what survives the scheduler's syntax: no space to start another option, no ';', quote or newline.
SCHEDULER_VALUES = {
    "--account": (re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"), "def-yourpi"),
    "--mem-per-gpu": (re.compile(r"[1-9]\d{0,6}[MG]"), "64G or 4000M"),
    "--queue": (re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"), "debug or prod"),
    "--mig": (re.compile(r"[0-9A-Za-z][0-9A-Za-z.-]{0,31}"), "3g.40gb"),
    "--gpu-type": (re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}"), "h100"),
}


def check_scheduler_values(values: Mapping[str, str]) -> None:
    """UsageError for the first given value (by flag) that would not survive a scheduler directive."""
    for flag, value in values.items():
        pattern, example = SCHEDULER_VALUES[flag]
        if value and not pattern.fullmatch(value):
            raise UsageError(f"{flag} takes a value such as {example}, not {shortened(repr(value), 60)}")


@dataclass(frozen=True)
class JobRequest:
    """What one job asks of the cluster (fields that are not known are left empty)."""

    gpus: int  # ranks: GPUs, or one MIG slice
    nodes: int
    time_s: int | None = None
    mig: str = ""  # the MIG slice's name, e.g. 3g.40gb (or, inside a job, its UUID: MIG-...)
    mem_per_gpu: str = ""  # an explicit memory request per GPU
    results: str = ""  # where the rows are written
    venv: str = ""  # the virtualenv the job runs (DDP_BENCH_VENV)
    queue: str = ""  # PBS: the queue asked for ('' = the first that fits)


def parse_walltime(text: str) -> int:
    """Seconds in a Slurm or PBS time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS."""
    match = _WALLTIME.fullmatch(text)
    if not match:
        raise UsageError(
            f"--time takes a time limit such as 00:30:00, 90 or 2-00:00:00, not {shortened(repr(text), 60)}"
        )
    days, first, second, third = (int(part) if part else None for part in match.groups())
    if days is None:  # MM, MM:SS or HH:MM:SS
        if third is not None:
            hours, minutes, seconds = first, second, third
        else:
            hours, minutes, seconds = 0, first, second or 0
    else:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = first, second or 0, third or 0
    total = (days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise UsageError(f"--time must be longer than zero, not {text!r}")
    return total


def hours_text(hours: float) -> str:
    return f"{hours / 24:g} days" if hours >= 48 else f"{hours:g} h"


def walltime_text(seconds: int) -> str:
    return hours_text(seconds / 3600) if seconds >= 3600 else f"{seconds / 60:g} min"


def pick_queue(profile: ClusterProfile, nodes: int, time_s: int | None, asked: str = "") -> tuple[Queue | None, str]:
    """The PBS queue for a job: the one asked for, or the first default queue that takes it; else why none does."""
    if not profile.queues:
        return None, ""
    if asked:
        queue = next((queue for queue in profile.queues if queue.name == asked), None)
        if queue is None:
            return None, f"{profile.short_title} has no queue {asked!r}; its queues: {_queue_names(profile)}"
        return (queue, "") if _fits(queue, nodes, time_s) else (None, f"{_limits(queue)}: {_job(nodes, time_s)}")
    for queue in profile.queues:
        if queue.chosen_by_default and _fits(queue, nodes, time_s):
            return queue, ""
    fitting = [queue.name for queue in profile.queues if _fits(queue, nodes, time_s)]
    hint = f" (it fits {', '.join(fitting)}: give --queue)" if fitting else ""
    return None, f"no {profile.short_title} queue takes {_job(nodes, time_s)}{hint}; queues: {_queue_names(profile)}"


def _fits(queue: Queue, nodes: int, time_s: int | None) -> bool:
    if nodes < queue.min_nodes or (queue.max_nodes and nodes > queue.max_nodes):
        return False
    return not (time_s and queue.max_hours and time_s > queue.max_hours * 3600)


def _limits(queue: Queue) -> str:
    nodes = f"{queue.min_nodes}-{queue.max_nodes}" if queue.max_nodes else f"{queue.min_nodes}+"
    hours = f", at most {hours_text(queue.max_hours)}" if queue.max_hours else ""
    return f"queue {queue.name} takes {nodes} nodes{hours}"


def _queue_names(profile: ClusterProfile) -> str:
    return "; ".join(_limits(queue).removeprefix("queue ") for queue in profile.queues)


def _job(nodes: int, time_s: int | None) -> str:
    return f"{nodes} node(s)" + (f" for {walltime_text(time_s)}" if time_s else "")


def site_refusals(profile: ClusterProfile, node: GpuNode, request: JobRequest, env: Mapping[str, str]) -> list[str]:
    """Every rule of the site this job breaks, each as one line naming the rule and what to do instead."""
    title, per_node = profile.short_title, node.gpus
    refusals = []
    if request.mig:
        slices = {mig.name: mig for mig in node.mig}
        if not node.mig:
            refusals.append(f"--mig {request.mig}: {profile.no_mig_reason or f'{title} has no MIG slices'}")
        elif request.mig not in slices and not request.mig.startswith("MIG-"):  # a slice's UUID: seen in a job
            refusals.append(f"{title} has no MIG slice {request.mig!r}; its slices: {', '.join(slices)}")
        if request.gpus > 1:
            refusals.append(
                f"a job may hold only one MIG slice (more is rejected at submission) and DDP cannot span slices "
                f"(no CUDA IPC): {request.gpus} ranks on MIG slices cannot run; use whole GPUs (leave out --mig) "
                "or run 1 rank on the slice"
            )
    elif per_node:
        if profile.gpu_counts == "one-or-whole-nodes" and request.gpus != 1 and request.gpus % per_node:
            refusals.append(
                f"{title} takes exactly 1 GPU or a multiple of {per_node} (whole nodes) per job: "
                f"{request.gpus} GPUs cannot be requested"
            )
        if profile.gpu_counts == "whole-nodes" and request.gpus % per_node:
            refusals.append(
                f"{title} allocates whole nodes: every job uses all {per_node} {node.gpu_type.upper()} GPUs of each "
                f"of its nodes, so {request.gpus} GPU(s) cannot be requested (use a multiple of {per_node})"
            )
    if profile.max_nodes and request.nodes > profile.max_nodes:
        most = "one" if profile.max_nodes == 1 else str(profile.max_nodes)
        refusals.append(f"{title}: {request.nodes} nodes asked, {most} at most here: {profile.max_nodes_reason}")
    if request.time_s and profile.max_walltime_h and request.time_s > profile.max_walltime_h * 3600:
        refusals.append(
            f"{title} accepts jobs of up to {hours_text(profile.max_walltime_h)}: "
            f"--time asks for {walltime_text(request.time_s)}"
        )
    if request.time_s and request.time_s < profile.min_walltime_h * 3600:
        refusals.append(
            f"{title} runs jobs of at least {walltime_text(round(profile.min_walltime_h * 3600))}: --time asks for "
            f"{walltime_text(request.time_s)} (ask for {profile.default_time} or more)"
        )
    _, why = pick_queue(profile, request.nodes, request.time_s, request.queue)
    if why:
        refusals.append(why)
    if request.mem_per_gpu and not profile.memory_requests:
        refusals.append(
            f"{title} ignores memory requests and its docs say not to use --mem: leave out --mem-per-gpu "
            "(each GPU comes with its share of the node's memory)"
        )
    if profile.results_under:
        refusals += _results_refusal(title, profile.results_under, request.results, env)
    if profile.venv == "login-node":
        refusals += _venv_refusal(title, profile.scheduler, request.venv, env)
    return refusals


def _results_refusal(title: str, variable: str, results: str, env: Mapping[str, str]) -> list[str]:
    root = env.get(variable, "")
    reason = "home and project are read-only on compute nodes"
    if not root:
        return [f"{title}: job output must go under ${variable} ({reason}), and ${variable} is not set here"]
    if results and not _under(results, root):
        return [f"{title}: results must go under ${variable} ({root}; {reason}), not {results}"]
    return []


def _venv_refusal(title: str, scheduler: str, venv: str, env: Mapping[str, str]) -> list[str]:
    if not venv and scheduler == "pbs":
        return [f"{title}: its Python environment was not found: set DDP_BENCH_VENV to a virtualenv with ddp_bench's "
                "dependencies and mpi4py"]  # fmt: skip
    if not venv:
        return [
            f"{title}: build the virtualenv on a login node and set DDP_BENCH_VENV to it "
            "(a job's $SLURM_TMPDIR is a RAM disk there, not the place to build one)"
        ]
    local = env.get("SLURM_TMPDIR", "")
    if "$SLURM_TMPDIR" in venv or "${SLURM_TMPDIR" in venv or (local and _under(venv, local)):
        return [f"{title}: DDP_BENCH_VENV {venv} is in $SLURM_TMPDIR, a RAM disk: build it on a login node in $HOME"]
    return []


def _under(path: str, root: str) -> bool:
    path, root = os.path.realpath(os.path.expanduser(path)), os.path.realpath(os.path.expanduser(root))
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def first_refusal(profile: ClusterProfile, node: GpuNode, request: JobRequest, env: Mapping[str, str]) -> None:
    """Raise the first rule this job breaks as a one-line UsageError."""
    refusals = site_refusals(profile, node, request, env)
    if refusals:
        raise UsageError(refusals[0])
