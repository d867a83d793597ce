"""`python -m ddp_bench sweep --gpus 1,2,4,8,16 --gpus-per-node 4 [--cluster C] [--one-job] [--dry-run] -- RUN FLAGS`

One job script per GPU count (nodes = ceil(GPUs / GPUs per node)), submitted with sbatch unless --dry-run; or,
with --one-job, one script on the nodes of the largest count that runs every count as consecutive srun steps in
that one allocation (one queue wait, the same nodes, the environment built once), each count followed by the
all-reduce benchmark on the same ranks.
Each configuration carries a sweep key in its rows; a configuration whose rows are complete is skipped, so a
sweep re-run after a failure or a time limit redoes only what is missing or incomplete.
Weak scaling (default) keeps --batch-size per GPU; strong scaling keeps the global batch and divides it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from ddp_bench.args import Parser, parse_args
from ddp_bench.cluster.jobscript import JobShape, SeriesStep, render, render_series
from ddp_bench.cluster.profiles import PROFILES, get_profile
from ddp_bench.errors import EXIT_FAILURE, UsageError
from ddp_bench.results.records import find_rank_files, incomplete_reason, read_rank_csv


@dataclass(frozen=True)
class SweepPoint:
    gpus: int
    shape: JobShape
    flags: tuple[str, ...]  # ddp_bench flags for this point, sweep key included
    key: str
    script_name: str


def parse_gpu_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--gpus takes comma-separated integers, not {text!r}") from None
    if not counts or any(count <= 0 for count in counts):
        raise UsageError(f"--gpus needs positive GPU counts, not {text!r}")
    return sorted(set(counts))


def job_shape(gpus: int, gpus_per_node: int, time: str, account: str, cpus_per_task: int = 0) -> JobShape:
    nodes = -(-gpus // gpus_per_node)
    if gpus % nodes:
        raise UsageError(
            f"{gpus} GPUs cannot be spread evenly over {nodes} nodes of {gpus_per_node}: "
            "choose GPU counts that are multiples of --gpus-per-node beyond one node"
        )
    return JobShape(nodes, gpus // nodes, time, account, cpus_per_task)


def sweep_key(cluster: str, run_flags: Sequence[str], scaling: str, gpus: int) -> str:
    """Stable name of one configuration: the same sweep asked again finds its earlier rows."""
    text = "\0".join([cluster, scaling, str(gpus), *run_flags])
    return f"g{gpus}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def plan_sweep(
    cluster: str,
    gpu_counts: list[int],
    gpus_per_node: int,
    scaling: str,
    global_batch: int | None,
    run_flags: Sequence[str],
    time: str,
    account: str,
    cpus_per_task: int = 0,
) -> list[SweepPoint]:
    cfg = parse_args(run_flags)  # bad run flags fail here, before any script exists
    if scaling == "strong" and global_batch is None:
        global_batch = cfg.batch_size * gpu_counts[0]  # the smallest run's global batch, held fixed
    points = []
    for gpus in gpu_counts:
        flags = list(run_flags)
        if scaling == "strong":
            if global_batch % gpus:
                raise UsageError(f"global batch {global_batch} does not divide evenly over {gpus} GPUs")
            flags += ["--batch-size", str(global_batch // gpus)]
        key = sweep_key(cluster, run_flags, scaling, gpus)
        flags += ["--scaling", scaling, "--sweep-key", key]
        parse_args(flags)  # what each job will run must itself be valid (e.g. a derived batch of 0)
        points.append(
            SweepPoint(
                gpus,
                job_shape(gpus, gpus_per_node, time, account, cpus_per_task),
                tuple(flags),
                key,
                f"ddp_bench-{cluster}-g{gpus}.sbatch",
            )
        )
    return points


def complete_keys(results_dir: str) -> set[str]:
    """Sweep keys with at least one run whose every rank wrote a complete row."""
    runs: dict[str, list[dict[str, str]]] = {}
    for path in find_rank_files([results_dir]):
        try:
            for row in read_rank_csv(path):
                runs.setdefault(row["run_id"], []).append(row)
        except (ValueError, OSError):
            continue  # the report names unusable files; here they simply do not count as done
    done = set()
    for rows in runs.values():
        try:
            reason = incomplete_reason(
                [row["status"] for row in rows],
                [int(row["world_size"]) for row in rows],
                [int(row["rank"]) for row in rows],
            )
        except ValueError:
            continue  # a rank or world size that is not a number: not a run that can count as done
        if rows[0]["sweep_key"] and not reason:
            done.add(rows[0]["sweep_key"])
    return done


def sweep_main(argv: Sequence[str]) -> int:
    argv = list(argv)
    run_flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = Parser(prog="python -m ddp_bench sweep", description="One Slurm job per GPU count, or one for all.")
    parser.add_argument("--gpus", help="GPU counts, e.g. 1,2,4,8,16")
    parser.add_argument("--gpus-per-node", type=int, help="default: the cluster profile's")
    parser.add_argument("--cluster", choices=tuple(PROFILES), default="generic")
    parser.add_argument("--scaling", choices=("weak", "strong"), default="weak")
    parser.add_argument("--global-batch", type=int, help="strong scaling: the global batch held fixed")
    parser.add_argument("--time", default="00:30:00", help="time limit per job (default 00:30:00)")
    parser.add_argument("--account", default="", help="Slurm account, e.g. def-yourpi")
    parser.add_argument("--cpus-per-task", type=int, default=0, help="cores per rank (default: the profile's)")
    parser.add_argument("--results", default="results", help="where the jobs write rows (default ./results)")
    parser.add_argument("--scripts-dir", default="sweep_jobs", help="where job scripts are written")
    parser.add_argument("--dry-run", action="store_true", help="print the scripts; write and submit nothing")
    parser.add_argument(
        "--one-job", action="store_true", help="every count as srun steps of one job on the largest count's nodes"
    )
    parser.add_argument("--check-done", metavar="KEY", help=argparse.SUPPRESS)  # used by --one-job scripts
    args = parser.parse_args(own)
    if args.check_done:  # exit 0 when --results holds complete rows for this sweep key, 1 when not
        done = complete_keys(args.results) if os.path.isdir(args.results) else set()
        return 0 if args.check_done in done else 1
    if not args.gpus:
        raise UsageError("sweep needs --gpus, e.g. --gpus 1,2,4,8")
    profile = get_profile(args.cluster)
    if args.gpus_per_node is not None and args.gpus_per_node <= 0:
        raise UsageError(f"--gpus-per-node must be positive, not {args.gpus_per_node}")
    if args.cpus_per_task < 0:
        raise UsageError(f"--cpus-per-task must be zero (the profile's) or more, not {args.cpus_per_task}")
    gpus_per_node = args.gpus_per_node or profile.gpus_per_node or 1
    if any(flag == "--out" or flag.startswith("--out=") for flag in run_flags):
        raise UsageError("give the results directory as sweep --results, not as a run flag --out")
    points = plan_sweep(
        args.cluster,
        parse_gpu_counts(args.gpus),
        gpus_per_node,
        args.scaling,
        args.global_batch,
        run_flags,
        args.time,
        args.account,
        args.cpus_per_task,
    )
    done = complete_keys(args.results) if os.path.isdir(args.results) else set()
    if args.one_job:
        return _one_job(profile, points, done, args)
    for point in points:
        header = f"# --- {point.gpus} GPU(s): {point.shape.nodes} node(s) x {point.shape.tasks_per_node} ---"
        if point.key in done:
            print(f"{header}\n# skipped: complete rows for {point.key} are already in {args.results}")
            continue
        script = render(
            profile, point.shape, point.flags, job_name=f"ddp_bench-g{point.gpus}", script_name=point.script_name
        )
        if args.dry_run:
            print(header)
            print(script)
            continue
        print(header)
        if _submit(script, point.script_name, args) != 0:
            return EXIT_FAILURE
    return 0


def _submit(script: str, name: str, args) -> int:
    """Write the script under --scripts-dir and sbatch it, its rows going to --results."""
    os.makedirs(args.scripts_dir, exist_ok=True)
    path = os.path.join(args.scripts_dir, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(script)
    environment = {**os.environ, "DDP_BENCH_RESULTS": os.path.abspath(args.results)}
    try:
        submitted = subprocess.run(["sbatch", path], capture_output=True, text=True, timeout=120, env=environment)
    except OSError as exc:
        print(f"ddp_bench: sweep could not run sbatch ({exc}); use --dry-run to only write scripts", file=sys.stderr)
        return EXIT_FAILURE
    if submitted.returncode != 0:
        print(f"ddp_bench: sbatch refused {path}: {submitted.stderr.strip()}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{submitted.stdout.strip()} ({path})")
    return 0


def _one_job(profile, points: list[SweepPoint], done: set[str], args) -> int:
    """Write (and submit) the one script that runs the whole series inside a single allocation."""
    todo = [point for point in points if point.key not in done]
    for point in points:
        if point.key in done:
            print(f"# skipped {point.gpus} GPU(s): complete rows for {point.key} are already in {args.results}")
    if not todo:
        return 0
    largest = max(points, key=lambda point: point.gpus).shape  # the allocation: the largest count's nodes
    steps = []
    for point in todo:
        cfg = parse_args(point.flags)
        allreduce = ("--device", cfg.device, "--backend", cfg.backend, "--launcher", cfg.launcher)
        steps.append(SeriesStep(point.gpus, point.shape.nodes, point.flags, point.key, allreduce))
    counts = ",".join(str(point.gpus) for point in todo)
    name = f"ddp_bench-{args.cluster}-series-g{counts.replace(',', '-')}.sbatch"
    script = render_series(profile, largest, steps, job_name=f"ddp_bench-g{counts.replace(',', '-')}", script_name=name)
    if args.dry_run:
        print(f"# --- one job: {largest.nodes} node(s) x {largest.tasks_per_node}, counts {counts} ---")
        print(script)
        return 0
    return _submit(script, name, args)
