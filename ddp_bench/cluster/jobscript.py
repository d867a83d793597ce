"""Slurm batch scripts for ddp_bench, rendered from a cluster profile (PBS scripts: `pbs.py`).

The scripts in slurm/ are this module's output (a test keeps them in sync), and `sweep` writes one per GPU
count. They follow the Alliance conventions: modules, a virtualenv on node-local disk built with
`pip install --no-index` (or, where the site says so, one built on a login node), the dataset staged to
node-local disk, one rank per GPU through `srun --kill-on-bad-exit=1`, results written to a persistent directory,
and Slurm's warning signal so a run that reaches its time limit still writes its rows. The GPU request, cores and
memory are the site's, as its profile has them. Every value that comes from a user is shell-quoted.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from ddp_bench.cluster.site_types import ClusterProfile, GpuNode, MigSlice
from ddp_bench.errors import UsageError
from ddp_bench.escape import shortened

WARNING_SIGNAL = "USR1@120"  # SIGUSR1 two minutes before the time limit: ddp_bench stops and writes its rows
TORCH_FLOOR, TORCHVISION_FLOOR = "2.6", "0.21"  # pyproject.toml's floor, for venvs built from a site's wheelhouse


@dataclass(frozen=True)
class JobShape:
    nodes: int
    tasks_per_node: int  # ranks per node (= GPUs per node used)
    time: str = "00:30:00"
    account: str = ""
    cpus_per_task: int = 0  # 0: the profile's
    gpu_type: str = ""  # which kind of GPU node ('' = the profile's only kind)
    mig: str = ""  # a MIG slice's name: one rank on that slice
    mem_per_gpu: str = ""  # '' = the profile's
    queue: str = ""  # PBS: the queue

    @property
    def ranks(self) -> int:
        return self.nodes * self.tasks_per_node


def mig_slice(node: GpuNode, name: str) -> MigSlice | None:
    return next((mig for mig in node.mig if mig.name == name), None)


def _gpu_line(profile: ClusterProfile, node: GpuNode, shape: JobShape) -> str:
    mig = mig_slice(node, shape.mig)
    if mig:
        return f"--gpus={mig.specifier}:1"
    count = shape.tasks_per_node
    if profile.gpu_request == "untyped":
        return f"--gpus-per-node={count}"
    if profile.gpu_request == "gres":
        return f"--gres=gpu:{node.gpu_type}:{count}"
    if profile.gpu_request == "gpus-on-one-node" and shape.nodes == 1:
        return f"--gpus={node.gpu_type}:{count}"
    return f"--gpus-per-node={node.gpu_type}:{count}"


def cpus_per_task(node: GpuNode, shape: JobShape) -> int:
    mig = mig_slice(node, shape.mig)
    return shape.cpus_per_task or (mig.cpus if mig else node.cpus_per_gpu)


def _memory_line(profile: ClusterProfile, node: GpuNode, shape: JobShape) -> str:
    """Memory per core where the site recommends an amount per GPU, so the request scales with the cores Slurm
    grants; all of each node's memory for whole-node sites; nothing where the site wants no request."""
    mig = mig_slice(node, shape.mig)
    amount = shape.mem_per_gpu or (mig.memory if mig else node.mem_per_gpu)
    if not amount or not profile.memory_requests:
        return ""
    if amount == "0":
        return "--mem=0"
    megabytes = int(amount[:-1]) * (1024 if amount[-1] == "G" else 1)
    return f"--mem-per-cpu={megabytes // cpus_per_task(node, shape)}M"  # rounded down: never above the share


def _sbatch_lines(profile: ClusterProfile, shape: JobShape, job_name: str) -> list[str]:
    node = profile.node(shape.gpu_type)
    options = [f"--job-name={job_name}", f"--nodes={shape.nodes}", f"--ntasks-per-node={shape.tasks_per_node}"]
    if node.gpus:
        options.append(_gpu_line(profile, node, shape))
    options += [f"--cpus-per-task={cpus_per_task(node, shape)}", _memory_line(profile, node, shape)]
    options += [f"--time={shape.time}", f"--signal={WARNING_SIGNAL}", "--output=%x-%j.out"]
    if shape.account:
        options.append(f"--account={shape.account}")
    return [checked_directive(f"#SBATCH {option}") for option in options if option]


def checked_directive(line: str) -> str:
    """#SBATCH and #PBS lines are read by the scheduler, not bash; refuse anything that would not survive either."""
    if any(ch in line for ch in "\n\r`$;&|<>\"'\\"):
        raise UsageError(f"unsafe character in job script line: {shortened(line, 80)!r}")
    return line


def header(profile: ClusterProfile, node: GpuNode) -> str:
    """The site's facts and where they come from, as comment lines."""
    lines = [f"# ddp_bench on {profile.title}"]
    if node.gpu_type and len(profile.nodes) > 1:
        lines[0] += f": {node.gpu_type} nodes ({node.model})"
    lines += [f"#   {line}" for line in profile.facts]
    if profile.sources:
        lines.append("# Sources (stored copies read for ../shared/notes/clusters-2026.md; not checked on the cluster):")
        lines += [f"#   {source}" for source in profile.sources]
    return "\n".join(lines) + "\n"


def render(
    profile: ClusterProfile,
    shape: JobShape,
    flags: Sequence[str] = (),
    job_name: str = "ddp_bench",
    script_name: str = "",
) -> str:
    """A complete batch script. `flags` are ddp_bench flags baked in; more can follow `sbatch SCRIPT`."""
    baked = " ".join(shlex.quote(flag) for flag in flags)
    return (
        _preamble(profile, shape, job_name, script_name)
        + f"""# One rank per task, with the job's cores per task: srun from Slurm 22.05 to 23.02 does not read
# SLURM_CPUS_PER_TASK, and would give each rank one core. --kill-on-bad-exit ends the whole step as soon as one
# rank fails.
# shellcheck disable=SC2016  # flags in single quotes reach ddp_bench literally, on purpose
srun --kill-on-bad-exit=1 --cpus-per-task="$SLURM_CPUS_PER_TASK" python -m ddp_bench "${{data_args[@]}}" \\
    --out "$results" {baked} "$@"
"""
    )


@dataclass(frozen=True)
class SeriesStep:
    """One rank count of a one-job sweep: a launcher step inside the job's allocation."""

    gpus: int
    nodes: int
    flags: tuple[str, ...]  # ddp_bench run flags, sweep key included
    key: str  # the sweep key: rows complete for it mean the step is skipped
    allreduce_flags: tuple[str, ...]  # the all-reduce benchmark's flags (device, backend) for the same ranks


def series_step(step: SeriesStep, launch: str, extra: str = '"$@"') -> str:
    """One count of a series: skipped when its rows are complete, else trained, then the all-reduce benchmark on
    the same ranks (beyond one rank); a failure marks the job failed and goes on with the next count. `extra`: the
    script's own ddp_bench flags (its arguments under Slurm)."""
    run_flags = " ".join(shlex.quote(flag) for flag in step.flags)
    allreduce = ""
    if step.gpus > 1:
        allreduce_flags = " ".join(shlex.quote(flag) for flag in step.allreduce_flags)
        allreduce = f"""
    {launch} \\
        python -m ddp_bench allreduce --out "$results" {allreduce_flags} || failed=1"""
    per_node = step.gpus // step.nodes
    return f"""
# --- {step.gpus} GPU(s): {step.nodes} node(s) x {per_node} ---
if python -m ddp_bench sweep --check-done {shlex.quote(step.key)} --results "$results"; then
    echo "ddp_bench: {step.gpus} GPU(s): complete rows for {step.key} are already in $results: skipped"
else
    # shellcheck disable=SC2016  # flags in single quotes reach ddp_bench literally, on purpose
    {launch} \\
        python -m ddp_bench "${{data_args[@]}}" --out "$results" {run_flags} {extra} || failed=1{allreduce}
fi
"""


def render_series(
    profile: ClusterProfile, shape: JobShape, steps: Sequence[SeriesStep], job_name: str, script_name: str
) -> str:
    """One batch script for a whole series: the environment built and the data staged once per node, then each
    rank count as consecutive srun steps in the same allocation (same nodes, one queue wait), each followed by
    the all-reduce benchmark on the same ranks, for the scaling model. A count whose rows are already complete is
    skipped; a count that fails does not stop the others, and the job then exits 1."""
    parts = [_preamble(profile, shape, job_name, script_name)]
    parts.append(
        "# Each count: one srun step on as few of the allocation's nodes as it needs, with the job's cores per\n"
        "# task (srun from Slurm 22.05 to 23.02 does not read SLURM_CPUS_PER_TASK by itself).\n"
        "failed=0\n"
    )
    for step in steps:
        srun = (
            f"srun --kill-on-bad-exit=1 --nodes={step.nodes} --ntasks={step.gpus} "
            f'--ntasks-per-node={step.gpus // step.nodes} --cpus-per-task="$SLURM_CPUS_PER_TASK"'
        )
        parts.append(series_step(step, srun))
    parts.append('exit "$failed"\n')
    return "".join(parts)


_BUILD_VENV = f"""# Python: a virtualenv on node-local disk of every node, from the cluster's wheelhouse (no internet
# needed), with its newest torch at or above the one ddp_bench supports. ddp_bench itself is pure Python and
# runs from the checkout through PYTHONPATH: nothing is built, so the venv needs neither setuptools nor wheel
# (Python 3.12+ venvs have neither).
if [ -n "${{DDP_BENCH_VENV:-}}" ]; then
    venv=$DDP_BENCH_VENV
else
    venv=$scratch/env
    if [ -z "${{SLURM_TMPDIR:-}}" ]; then
        trap 'rm -rf "$scratch"' EXIT  # our own /tmp directory: nothing else cleans it
    fi
    export venv
    # shellcheck disable=SC2016  # the single-quoted script expands the exported variables on each node
    srun --ntasks="$SLURM_NNODES" --ntasks-per-node=1 bash -c '
        python -m venv "$venv" &&
        "$venv/bin/pip" install --no-index --quiet "torch>={TORCH_FLOOR}" "torchvision>={TORCHVISION_FLOOR}" \\
            numpy pandas matplotlib rich &&
        {{ "$venv/bin/pip" install --no-index --quiet nvidia-ml-py 2>/dev/null ||
          echo "ddp_bench: note: no nvidia-ml-py in this wheelhouse: GPU energy will not be recorded" >&2; }}'
fi
"""


def _login_node_venv(modules: str) -> str:
    return f"""# Python: the virtualenv you built on a login node (a job's $SLURM_TMPDIR is a RAM disk here):
#   module load {modules}; python -m venv ~/ddp_bench_env
#   ~/ddp_bench_env/bin/pip install --no-index "torch>={TORCH_FLOOR}" "torchvision>={TORCHVISION_FLOOR}" \\
#       numpy pandas matplotlib rich nvidia-ml-py
# then submit with DDP_BENCH_VENV=~/ddp_bench_env.
if [ -z "${{DDP_BENCH_VENV:-}}" ]; then
    echo "ddp_bench: error: set DDP_BENCH_VENV to a virtualenv built on a login node (see the script's header)" >&2
    exit 2
fi
venv=$DDP_BENCH_VENV
"""


def _results_guard(profile: ClusterProfile) -> str:
    if not profile.results_under:
        return ""
    name, variable = profile.short_title, profile.results_under
    return f"""if [ -z "${{{variable}:-}}" ] || [[ "$results/" != "${variable}"/* ]]; then
    echo "ddp_bench: error: on {name} results go under \\${variable} (home and project are read-only on compute" \\
        "nodes): set DDP_BENCH_RESULTS there, or submit from \\${variable}" >&2
    exit 2
fi
"""


def _preamble(profile: ClusterProfile, shape: JobShape, job_name: str, script_name: str) -> str:
    """Everything before the training: #SBATCH lines, the environment on every node, the data, the setup time."""
    node = profile.node(shape.gpu_type)
    if profile.modules:
        modules = f"    module load {profile.modules}"
    else:
        modules = "    : # add the modules your site needs before python here, e.g. module load python/3.11"
    account = "aip-yourpi" if profile.cc_cluster in ("killarney", "tamia", "vulcan") else "def-yourpi"
    submit = f"sbatch --account={account} {script_name or reference_script_name(profile, node)}"
    venv = _BUILD_VENV if profile.venv == "node-local" else _login_node_venv(profile.modules)
    venv_help = "an existing virtualenv with torch and torchvision (default: build one on node-local disk)"
    if profile.venv == "login-node":
        venv_help = "the virtualenv you built on a login node (required here; see below)"
    return f"""#!/bin/bash
{header(profile, node)}#
# Submit from your ddp_bench checkout; extra ddp_bench flags go after the script:
#   {submit} --model resnet50 --steps 200
# Optional environment:
#   DDP_BENCH_DATA     dataset directory, copied to node-local disk on every node (fetch it on a login node:
#                      python -m ddp_bench download --data mnist --data-dir ~/scratch/data)
#   DDP_BENCH_RESULTS  persistent results directory (default: $SLURM_SUBMIT_DIR/results)
#   DDP_BENCH_VENV     {venv_help}
#   DDP_BENCH_SRC      the ddp_bench checkout to run (default: $SLURM_SUBMIT_DIR)
{chr(10).join(_sbatch_lines(profile, shape, job_name))}

set -euo pipefail
setup_started=$EPOCHREALTIME  # the environment build and data staging below are timed and handed to ddp_bench

src=${{DDP_BENCH_SRC:-$SLURM_SUBMIT_DIR}}
results=${{DDP_BENCH_RESULTS:-$SLURM_SUBMIT_DIR/results}}
scratch=${{SLURM_TMPDIR:-/tmp/ddp_bench.$SLURM_JOB_ID}}  # node-local disk (SLURM_TMPDIR on Alliance clusters)
{_results_guard(profile)}
set +u  # site scripts (Lmod's module, a venv's activate) need not be written for nounset: off while they run
if command -v module >/dev/null 2>&1; then
{modules}
fi

{venv}# shellcheck disable=SC1091
source "$venv/bin/activate"
set -u
export PYTHONPATH="$src${{PYTHONPATH:+:$PYTHONPATH}}"

# Data: staged to node-local disk on every node; reading a dataset from a network filesystem is slow.
data_args=()
if [ -n "${{DDP_BENCH_DATA:-}}" ]; then
    export scratch
    # shellcheck disable=SC2016  # expanded on each node, from the exported variables
    srun --ntasks="$SLURM_NNODES" --ntasks-per-node=1 bash -c \\
        'mkdir -p "$scratch/data" && cp -r "$DDP_BENCH_DATA"/. "$scratch/data/"'
    data_args=(--data-dir "$scratch/data")
fi

mkdir -p "$results"
DDP_BENCH_SETUP_S=$(awk -v start="$setup_started" -v now="$EPOCHREALTIME" 'BEGIN {{ printf "%.3f", now - start }}')
export DDP_BENCH_SETUP_S  # recorded as setup_s in every row
export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK
"""


def reference_script_name(profile: ClusterProfile, node: GpuNode | None = None) -> str:
    kind = f"-{node.gpu_type}" if node is not None and len(profile.nodes) > 1 else ""
    return f"slurm/{profile.name}{kind}.{'pbs' if profile.scheduler == 'pbs' else 'sbatch'}"


def reference_shape(profile: ClusterProfile, node: GpuNode) -> JobShape:
    """One full node: the shape of the scripts shipped in slurm/ (override with sbatch flags)."""
    gpu_type = node.gpu_type if len(profile.nodes) > 1 else ""
    return JobShape(nodes=1, tasks_per_node=node.gpus or 2, time=profile.default_time, gpu_type=gpu_type)
