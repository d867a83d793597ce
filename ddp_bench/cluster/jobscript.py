"""Slurm batch scripts for ddp_bench, rendered from a cluster profile.

The scripts in slurm/ are this module's output (a test keeps them in sync), and `sweep` writes one per GPU
count. They follow the Alliance conventions: modules, a virtualenv on node-local disk built with
`pip install --no-index`, the dataset staged to node-local disk, one rank per GPU through
`srun --kill-on-bad-exit=1`, results written to a persistent directory, and Slurm's warning signal so a run
that reaches its time limit still writes its rows. Every value that comes from a user is shell-quoted.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from ddp_bench.cluster.profiles import ClusterProfile

WARNING_SIGNAL = "USR1@120"  # SIGUSR1 two minutes before the time limit: ddp_bench stops and writes its rows
TORCH_FLOOR, TORCHVISION_FLOOR = "2.6", "0.21"  # pyproject.toml's floor, for venvs built from a site's wheelhouse


@dataclass(frozen=True)
class JobShape:
    nodes: int
    tasks_per_node: int  # ranks per node (= GPUs per node used)
    time: str = "00:30:00"
    account: str = ""
    cpus_per_task: int = 0  # 0: the profile's

    @property
    def ranks(self) -> int:
        return self.nodes * self.tasks_per_node


def _sbatch_lines(profile: ClusterProfile, shape: JobShape, job_name: str) -> list[str]:
    lines = [
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --nodes={shape.nodes}",
        f"#SBATCH --ntasks-per-node={shape.tasks_per_node}",
    ]
    if profile.gpus_per_node:
        gpus = f"{profile.gpu_type}:{shape.tasks_per_node}" if profile.gpu_type else str(shape.tasks_per_node)
        lines.append(f"#SBATCH --gpus-per-node={gpus}")
    lines += [
        f"#SBATCH --cpus-per-task={shape.cpus_per_task or profile.cpus_per_task}",
        f"#SBATCH --mem-per-cpu={_mem_per_cpu(profile)}",
        f"#SBATCH --time={shape.time}",
        f"#SBATCH --signal={WARNING_SIGNAL}",
        "#SBATCH --output=%x-%j.out",
    ]
    if shape.account:
        lines.append(f"#SBATCH --account={shape.account}")
    return [_checked_sbatch_line(line) for line in lines]


def _mem_per_cpu(profile: ClusterProfile) -> str:
    """Memory per core, so the request scales with the cores Slurm grants (sbatch rounds up)."""
    amount, unit = int(profile.mem_per_task[:-1]), profile.mem_per_task[-1]
    megabytes = amount * (1024 if unit == "G" else 1)
    return f"{-(-megabytes // profile.cpus_per_task)}M"


def _checked_sbatch_line(line: str) -> str:
    """#SBATCH lines are read by sbatch, not bash; refuse anything that would not survive either."""
    if any(ch in line for ch in "\n\r`$;&|<>\"'\\"):
        raise ValueError(f"unsafe character in job script line: {line!r}")
    return line


def render(
    profile: ClusterProfile,
    shape: JobShape,
    flags: Sequence[str] = (),
    job_name: str = "ddp_bench",
    script_name: str = "",
) -> str:
    """A complete batch script. `flags` are ddp_bench flags baked in; more can follow `sbatch SCRIPT`."""
    baked = " ".join(shlex.quote(flag) for flag in (*profile.default_flags, *flags))
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
    """One rank count of a one-job sweep: an srun step inside the job's allocation."""

    gpus: int
    nodes: int
    flags: tuple[str, ...]  # ddp_bench run flags, sweep key included
    key: str  # the sweep key: rows complete for it mean the step is skipped
    allreduce_flags: tuple[str, ...]  # the all-reduce benchmark's flags (device, backend) for the same ranks


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
        per_node = step.gpus // step.nodes
        srun = (
            f"srun --kill-on-bad-exit=1 --nodes={step.nodes} --ntasks={step.gpus} --ntasks-per-node={per_node} "
            '--cpus-per-task="$SLURM_CPUS_PER_TASK"'
        )
        run_flags = " ".join(shlex.quote(flag) for flag in (*profile.default_flags, *step.flags))
        allreduce_flags = " ".join(shlex.quote(flag) for flag in step.allreduce_flags)
        allreduce = ""
        if step.gpus > 1:
            allreduce = f"""
    {srun} \\
        python -m ddp_bench allreduce --out "$results" {allreduce_flags} || failed=1"""
        parts.append(
            f"""
# --- {step.gpus} GPU(s): {step.nodes} node(s) x {per_node} ---
if python -m ddp_bench sweep --check-done {shlex.quote(step.key)} --results "$results"; then
    echo "ddp_bench: {step.gpus} GPU(s): complete rows for {step.key} are already in $results: skipped"
else
    # shellcheck disable=SC2016  # flags in single quotes reach ddp_bench literally, on purpose
    {srun} \\
        python -m ddp_bench "${{data_args[@]}}" --out "$results" {run_flags} "$@" || failed=1{allreduce}
fi
"""
        )
    parts.append('exit "$failed"\n')
    return "".join(parts)


def _preamble(profile: ClusterProfile, shape: JobShape, job_name: str, script_name: str) -> str:
    """Everything before the training: #SBATCH lines, the environment on every node, the data, the setup time."""
    facts = "\n".join(f"#   {line}" for line in profile.facts)
    if profile.modules:
        modules = f"    module load {profile.modules}"
    else:
        modules = "    : # add the modules your site needs before python here, e.g. module load python/3.11"
    submit = f"sbatch --account=def-yourpi {script_name or reference_script_name(profile)}"
    return f"""#!/bin/bash
# ddp_bench on {profile.title}
{facts}
#
# Submit from your ddp_bench checkout; extra ddp_bench flags go after the script:
#   {submit} --model resnet50 --steps 200
# Optional environment:
#   DDP_BENCH_DATA     dataset directory, copied to node-local disk on every node (fetch it on a login node:
#                      python -m ddp_bench download --data mnist --data-dir ~/scratch/data)
#   DDP_BENCH_RESULTS  persistent results directory (default: $SLURM_SUBMIT_DIR/results)
#   DDP_BENCH_VENV     an existing virtualenv with torch and torchvision (default: build one on node-local disk)
#   DDP_BENCH_SRC      the ddp_bench checkout to run (default: $SLURM_SUBMIT_DIR)
{chr(10).join(_sbatch_lines(profile, shape, job_name))}

set -euo pipefail
setup_started=$EPOCHREALTIME  # the environment build and data staging below are timed and handed to ddp_bench

src=${{DDP_BENCH_SRC:-$SLURM_SUBMIT_DIR}}
results=${{DDP_BENCH_RESULTS:-$SLURM_SUBMIT_DIR/results}}
scratch=${{SLURM_TMPDIR:-/tmp/ddp_bench.$SLURM_JOB_ID}}  # node-local disk (SLURM_TMPDIR on Alliance clusters)

if command -v module >/dev/null 2>&1; then
{modules}
fi

# Python: a virtualenv on node-local disk of every node, from the cluster's wheelhouse (no internet needed), with
# its newest torch at or above the one ddp_bench supports. ddp_bench itself is pure Python and runs from the
# checkout through PYTHONPATH: nothing is built, so the venv needs neither setuptools nor wheel (Python 3.12+
# venvs have neither).
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
# shellcheck disable=SC1091
source "$venv/bin/activate"
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


def reference_script_name(profile: ClusterProfile) -> str:
    return f"slurm/{profile.name}.sbatch"


def reference_shape(profile: ClusterProfile) -> JobShape:
    """One full node: the shape of the scripts shipped in slurm/ (override with sbatch flags)."""
    return JobShape(nodes=1, tasks_per_node=profile.gpus_per_node or 2)


def render_reference(profile: ClusterProfile) -> str:
    return render(profile, reference_shape(profile))
