"""PBS Pro job scripts for the ALCF's machines, rendered from the same profile table as the Slurm scripts.

Each rank is started by the site's MPI launcher (`mpiexec` with `-ppn` and CPU binding on Polaris, as ALCF's
PyTorch page has it); MPI only tells each rank who it is, and training runs over NCCL. The queue is the first of
the profile's default queues that takes the job's nodes and walltime. ddp_bench flags travel in DDP_BENCH_FLAGS
(qsub passes no arguments to a script), after those baked in.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from ddp_bench.cluster.jobscript import JobShape, SeriesStep, checked_directive, header, series_step
from ddp_bench.cluster.rules import parse_walltime, pick_queue
from ddp_bench.cluster.site_types import ClusterProfile
from ddp_bench.errors import UsageError

FILESYSTEMS = "home:eagle"  # -l filesystems=home:eagle: Polaris's docs; the bootcamp's Sophia job asks for eagle:home


def pbs_walltime(time: str) -> str:
    seconds = parse_walltime(time)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _pbs_lines(profile: ClusterProfile, shape: JobShape, job_name: str) -> list[str]:
    queue, why = pick_queue(profile, shape.nodes, parse_walltime(shape.time), shape.queue)
    if queue is None:
        raise UsageError(why)
    options = [f"-N {job_name}", f"-l select={shape.nodes}", f"-l walltime={pbs_walltime(shape.time)}"]
    options += [f"-l filesystems={FILESYSTEMS}", f"-q {queue.name}", "-j oe"]
    if shape.account:
        options.append(f"-A {shape.account}")
    return [checked_directive(f"#PBS {option}") for option in options]


def _python(profile: ClusterProfile) -> str:
    if profile.venv == "conda":
        return """# Python: ALCF's conda module (its torch), or a venv built on it on a login node (DDP_BENCH_VENV).
if command -v module >/dev/null 2>&1; then
    module use /soft/modulefiles
    module load conda
fi
if [ -n "${DDP_BENCH_VENV:-}" ]; then
    # shellcheck disable=SC1091
    source "$DDP_BENCH_VENV/bin/activate"
else
    conda activate
fi
"""
    return """# Python: the virtualenv given as DDP_BENCH_VENV (this machine's Python environment was not found).
if [ -z "${DDP_BENCH_VENV:-}" ]; then
    echo "ddp_bench: error: set DDP_BENCH_VENV (qsub -v) to a virtualenv with ddp_bench's dependencies" >&2
    exit 2
fi
# shellcheck disable=SC1091
source "$DDP_BENCH_VENV/bin/activate"
"""


def _job_env(profile: ClusterProfile) -> str:
    """The site's recommended settings; a value the user already set is kept, and paths are prepended."""
    lines = []
    for name, value in profile.job_env:
        if name.endswith("PATH"):
            lines.append(f'export {name}="{value}${{{name}:+:${name}}}"')
        else:
            lines.append(f'export {name}="${{{name}-{value}}}"')
    return "# The site's recommended settings (a value passed with qsub -v is kept):\n" + "\n".join(lines) + "\n"


def _preamble(profile: ClusterProfile, shape: JobShape, job_name: str, script_name: str) -> str:
    node = profile.node(shape.gpu_type)
    threads = f"export OMP_NUM_THREADS={node.cpus_per_gpu}\n" if node.cpus_per_gpu else ""
    settings = _job_env(profile) if profile.job_env else ""
    return f"""#!/bin/bash
{header(profile, node)}#
# Submit from your ddp_bench checkout; ddp_bench flags go in DDP_BENCH_FLAGS (qsub passes no arguments):
#   qsub -A YOUR_PROJECT -l select=2 -v DDP_BENCH_FLAGS="--model resnet50 --steps 200" {script_name}
# Optional environment (pass with -v): DDP_BENCH_VENV (a virtualenv with mpi4py), DDP_BENCH_RESULTS (default
# ./results), DDP_BENCH_DATA (dataset directory), DDP_BENCH_SRC (the checkout to run; default: where qsub ran).
{chr(10).join(_pbs_lines(profile, shape, job_name))}

set -euo pipefail
setup_started=$EPOCHREALTIME  # the environment set-up below is timed and handed to ddp_bench
cd "${{PBS_O_WORKDIR:-.}}"
src=${{DDP_BENCH_SRC:-$PWD}}
results=${{DDP_BENCH_RESULTS:-$PWD/results}}

set +u  # site scripts (module, conda's activate.d, a venv's activate) need not be written for nounset
{_python(profile)}set -u
export PYTHONPATH="$src${{PYTHONPATH:+:$PYTHONPATH}}"
{settings}
read -r -a flags <<< "${{DDP_BENCH_FLAGS:-}}"  # split on spaces only: nothing is evaluated
data_args=()
if [ -n "${{DDP_BENCH_DATA:-}}" ]; then
    data_args=(--data-dir "$DDP_BENCH_DATA")
fi

mkdir -p "$results"
DDP_BENCH_SETUP_S=$(awk -v start="$setup_started" -v now="$EPOCHREALTIME" 'BEGIN {{ printf "%.3f", now - start }}')
export DDP_BENCH_SETUP_S  # recorded as setup_s in every row
{threads}"""


def render_pbs(
    profile: ClusterProfile, shape: JobShape, flags: Sequence[str], job_name: str, script_name: str, whole_job: bool
) -> str:
    """A PBS script: one rank per GPU on every node of the job (`whole_job`, the shipped scripts: give -l select=N
    to qsub), or exactly the shape's ranks (a sweep's job)."""
    baked = " ".join(shlex.quote(flag) for flag in flags)
    per_node = shape.tasks_per_node
    ranks = f'"$((nodes * {per_node}))"' if whole_job else str(shape.ranks)
    launch = profile.launch.format(ranks=ranks, per_node=per_node)
    nodes = 'nodes=$(sort -u "$PBS_NODEFILE" | wc -l)  # the job\'s nodes (qsub -l select=N)\n' if whole_job else ""
    return (
        _preamble(profile, shape, job_name, script_name)
        + nodes
        + f"""# shellcheck disable=SC2016  # flags in single quotes reach ddp_bench literally, on purpose
{launch} \\
    python -m ddp_bench "${{data_args[@]}}" --out "$results" {baked} "${{flags[@]}}"
"""
    )


def render_pbs_series(
    profile: ClusterProfile, shape: JobShape, steps: Sequence[SeriesStep], job_name: str, script_name: str
) -> str:
    """A whole series in one PBS job: each count on as few of the job's nodes as it needs (a host file of the
    first N), skipped when its rows are complete, followed by the all-reduce benchmark on the same ranks."""
    parts = [_preamble(profile, shape, job_name, script_name)]
    parts.append("hosts=$(mktemp -d)\ntrap 'rm -rf \"$hosts\"' EXIT\nfailed=0\n")
    for step in steps:
        launch = profile.launch.format(ranks=step.gpus, per_node=step.gpus // step.nodes)
        if shape.nodes > 1:
            parts.append(f'sort -u "$PBS_NODEFILE" | head -n {step.nodes} > "$hosts/{step.nodes}"\n')
            launch += f' --hostfile "$hosts/{step.nodes}"'
        parts.append(series_step(step, launch, extra='"${flags[@]}"'))
    parts.append('exit "$failed"\n')
    return "".join(parts)
