"""`python -m ddp_bench sweep --gpus 1,2,4,8,16 --gpus-per-node 4 [--cluster C] [--dry-run] -- RUN FLAGS`

One job script per GPU count (nodes = ceil(GPUs / GPUs per node)), submitted with sbatch unless --dry-run.
Each configuration carries a sweep key in its rows; a configuration whose rows are complete is skipped, so a
sweep re-run after a failure or a time limit redoes only what is missing or incomplete.
Weak scaling (default) keeps --batch-size per GPU; strong scaling keeps the global batch and divides it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from ddp_bench.args import Parser, parse_args
from ddp_bench.clusters import PROFILES, get_profile
from ddp_bench.errors import EXIT_FAILURE, UsageError
from ddp_bench.jobscript import JobShape, render
from ddp_bench.records import find_rank_files, incomplete_reason, read_rank_csv


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
    parser = Parser(prog="python -m ddp_bench sweep", description="One Slurm job per GPU count.")
    parser.add_argument("--gpus", required=True, help="GPU counts, e.g. 1,2,4,8,16")
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
    args = parser.parse_args(own)
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
    results = os.path.abspath(args.results)
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
        os.makedirs(args.scripts_dir, exist_ok=True)
        path = os.path.join(args.scripts_dir, point.script_name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(script)
        environment = {**os.environ, "DDP_BENCH_RESULTS": results}
        try:
            submitted = subprocess.run(["sbatch", path], capture_output=True, text=True, timeout=120, env=environment)
        except OSError as exc:
            print(
                f"ddp_bench: sweep could not run sbatch ({exc}); use --dry-run to only write scripts", file=sys.stderr
            )
            return EXIT_FAILURE
        if submitted.returncode != 0:
            print(f"ddp_bench: sbatch refused {path}: {submitted.stderr.strip()}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"{header}\n{submitted.stdout.strip()} ({path})")
    return 0
