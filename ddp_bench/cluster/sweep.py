"""`python -m ddp_bench sweep --gpus 1,2,4,8,16 [--cluster auto|NAME] [--one-job] [--dry-run] -- RUN FLAGS`

One job script per GPU count (nodes = ceil(GPUs / GPUs per node)), submitted with sbatch (qsub on PBS machines)
unless --dry-run; or, with --one-job, one script on the nodes of the largest count that runs every count as
consecutive steps in that one allocation (one queue wait, the same nodes, the environment built once), each count
followed by the all-reduce benchmark on the same ranks. `--study strong|weak|both` picks the counts an allocation
request needs (study.py). The site's rules (rules.py) are checked before anything is written or submitted.
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
from ddp_bench.cluster.detect import resolve_cluster, this_host
from ddp_bench.cluster.jobscript import JobShape, SeriesStep
from ddp_bench.cluster.profiles import get_profile
from ddp_bench.cluster.rules import JobRequest, check_scheduler_values, first_refusal, parse_walltime
from ddp_bench.cluster.scripts import render_job, render_job_series
from ddp_bench.cluster.site_types import ClusterProfile, GpuNode
from ddp_bench.cluster.study import (
    Calibration,
    calibrate,
    length_warnings,
    sized_flags,
    study_counts,
    warn_partial_node,
)
from ddp_bench.errors import EXIT_FAILURE, UsageError
from ddp_bench.escape import one_line, shortened
from ddp_bench.flag_bounds import check_bounds
from ddp_bench.model_spec import source_sha256
from ddp_bench.results.rank_files import complete_runs

# The scaling model reads the all-reduce at the sizes of DDP's buckets (25 MiB at most, scaling_model.BUCKET_BYTES):
# messages up to 64 MiB cover them and keep each count's all-reduce step short (256 MiB over 1 Gbit/s is seconds
# an iteration).
MODEL_ALLREDUCE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class JobOptions:
    """What every job of a sweep shares: the flags of `sweep` that shape a job."""

    time: str = "00:30:00"
    account: str = ""
    cpus_per_task: int = 0
    gpu_type: str = ""
    mig: str = ""
    mem_per_gpu: str = ""
    queue: str = ""


@dataclass(frozen=True)
class SweepPoint:
    gpus: int
    shape: JobShape
    flags: tuple[str, ...]  # ddp_bench flags for this point, sweep key included
    key: str
    script_name: str
    scaling: str


def parse_gpu_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--gpus takes comma-separated integers, not {text!r}") from None
    if not counts:
        raise UsageError(f"--gpus needs positive GPU counts, not {text!r}")
    for count in counts:
        check_bounds({"--gpus": count})
    return sorted(set(counts))


def job_shape(gpus: int, gpus_per_node: int, options: JobOptions = JobOptions()) -> JobShape:
    nodes = -(-gpus // gpus_per_node)
    if gpus % nodes:
        raise UsageError(
            f"{gpus} GPUs cannot be spread evenly over {nodes} nodes of {gpus_per_node}: "
            "choose GPU counts that are multiples of --gpus-per-node beyond one node"
        )
    o = options
    return JobShape(nodes, gpus // nodes, o.time, o.account, o.cpus_per_task, o.gpu_type, o.mig, o.mem_per_gpu, o.queue)


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
    options: JobOptions = JobOptions(),
    extension: str = "sbatch",
    key_flags: Sequence[str] | None = None,
) -> list[SweepPoint]:
    """`key_flags`: what names each configuration (default: `run_flags`); a study sized with --problem-minutes is
    named by the minutes, not by the steps they came to, so that asked again it finds its own rows."""
    cfg = parse_args(run_flags)  # bad run flags fail here, before any script exists
    source = source_sha256(cfg.model_spec)  # the user's model file: its version names the configuration too
    model_source = [f"model-sha256={source}"] if source else []
    if scaling == "strong" and global_batch is None:
        global_batch = cfg.batch_size * gpu_counts[0]  # the smallest run's global batch, held fixed
    points = []
    for gpus in gpu_counts:
        flags = list(run_flags)
        if scaling == "strong":
            if global_batch % gpus:
                raise UsageError(f"global batch {global_batch} does not divide evenly over {gpus} GPUs")
            flags += ["--batch-size", str(global_batch // gpus)]
        named = [*(run_flags if key_flags is None else key_flags), *model_source]
        key = sweep_key(cluster, named, scaling, gpus)
        flags += ["--scaling", scaling, "--sweep-key", key]
        parse_args(flags)  # what each job will run must itself be valid (e.g. a derived batch of 0)
        name = f"ddp_bench-{cluster}-{scaling}-g{gpus}.{extension}"
        points.append(SweepPoint(gpus, job_shape(gpus, gpus_per_node, options), tuple(flags), key, name, scaling))
    return points


def complete_keys(results_dir: str) -> set[str]:
    """Sweep keys with at least one run whose every rank wrote a complete row."""
    return {rows[0]["sweep_key"] for rows in complete_runs(results_dir) if rows[0]["sweep_key"]}


def _parser() -> Parser:
    parser = Parser(prog="python -m ddp_bench sweep", description="One job per GPU count, or one for all.")
    add = parser.add_argument
    add("--gpus", help="GPU counts, e.g. 1,2,4,8,16 (default with --study: the study's counts)")
    add("--gpus-per-node", type=int, help="default: the cluster profile's")
    add("--cluster", default="auto", help="a profile (fir, nibi, rorqual, trillium, narval, killarney, tamia, "
        "vulcan, polaris, sophia, generic, cpu), or auto (default): recognise this cluster")  # fmt: skip
    add("--gpu-type", default="", help="which GPU nodes, where the cluster has two kinds (killarney, tamia)")
    add("--mig", default="", metavar="SLICE", help="one rank on one MIG slice, e.g. 3g.40gb (one slice per job)")
    add("--mem-per-gpu", default="", help="memory per GPU, e.g. 64G (default: the site's recommendation)")
    add("--queue", default="", help="PBS: the queue (default: the first of the site's queues that fits)")
    series = parser.add_mutually_exclusive_group()
    series.add_argument("--scaling", choices=("weak", "strong"), help="default: weak")
    series.add_argument("--study", choices=("strong", "weak", "both"), help="an allocation request's scaling study")
    add("--global-batch", type=int, help="strong scaling: the global batch held fixed")
    add("--problem-minutes", type=float, help="test problem length: the smallest count's timed stage (30-60)")
    add("--calibration", metavar="DIR", help="--problem-minutes: rows with a measured step time (default --results)")
    add("--time", help="time limit per job (default 00:30:00, or the site's minimum job length where longer)")
    add("--account", default="", help="Slurm account (def-yourpi, aip-yourpi) or PBS project")
    add("--cpus-per-task", type=int, default=0, help="cores per rank (default: the profile's)")
    add("--results", default="results", help="where the jobs write rows (default ./results)")
    add("--scripts-dir", default="sweep_jobs", help="where job scripts are written")
    add("--dry-run", action="store_true", help="print the scripts; write and submit nothing")
    add("--one-job", action="store_true", help="every count as steps of one job on the largest count's nodes")
    add("--check-done", metavar="KEY", help=argparse.SUPPRESS)  # used by --one-job scripts
    return parser


def sweep_main(argv: Sequence[str]) -> int:
    argv = list(argv)
    run_flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = _parser().parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.check_done:  # exit 0 when --results holds complete rows for this sweep key, 1 when not
        done = complete_keys(args.results) if os.path.isdir(args.results) else set()
        return 0 if args.check_done in done else 1
    check_bounds({"--gpus-per-node": args.gpus_per_node, "--cpus-per-task": args.cpus_per_task,
                  "--global-batch": args.global_batch, "--problem-minutes": args.problem_minutes})  # fmt: skip
    detection = resolve_cluster(args.cluster, os.environ, this_host())
    profile = get_profile(detection.name)
    node = profile.node(args.gpu_type)
    _check_sweep_flags(args, run_flags, profile, node)
    args.time = args.time or profile.default_time
    time_s = parse_walltime(args.time)
    gpus_per_node = args.gpus_per_node or node.gpus or 1
    counts = parse_gpu_counts(args.gpus) if args.gpus else study_counts(profile, gpus_per_node)
    scalings = ("strong", "weak") if args.study == "both" else (args.study or args.scaling or "weak",)
    options = JobOptions(args.time, args.account, args.cpus_per_task, args.gpu_type, args.mig, args.mem_per_gpu,
                         args.queue)  # fmt: skip
    flags = [*profile.default_flags, *run_flags]
    extension = "pbs" if profile.scheduler == "pbs" else "sbatch"

    sized = args.problem_minutes is not None
    key_flags = [*flags, "--problem-minutes", f"{args.problem_minutes:g}"] if sized else flags

    def plan(scaling: str, flags: list[str]) -> list[SweepPoint]:
        return plan_sweep(
            profile.name, counts, gpus_per_node, scaling, args.global_batch, flags, options, extension, key_flags
        )

    calibration_dir = args.calibration or args.results
    unsized = [point for scaling in scalings for point in plan(scaling, flags)]
    own = frozenset(point.key for point in unsized) if sized else frozenset()  # a sized study's own runs
    calibration = calibrate(calibration_dir, parse_args(unsized[0].flags), counts[0], own)
    if args.problem_minutes is not None:
        flags = sized_flags(flags, parse_args(flags), args.problem_minutes, calibration, calibration_dir, counts[0])
    points = [point for scaling in scalings for point in plan(scaling, flags)]
    venv = os.environ.get("DDP_BENCH_VENV", "")
    _check_site_rules(args, points, profile, node, time_s, venv)
    _check_paths(args, venv)  # after the site's rules: a refused job leaves no --scripts-dir behind
    print(f"# cluster: {profile.name} ({detection.reason})")
    _print_length_warnings(args, points, scalings, calibration, counts)
    warn_partial_node(counts, gpus_per_node, 0 if args.mig else node.gpus)  # one rank per MIG slice: no node
    done = complete_keys(args.results) if os.path.isdir(args.results) else set()
    if args.one_job:
        return _one_job(profile, points, done, args)
    return _submit_jobs(args, points, done, profile)


def _check_sweep_flags(args, run_flags: list[str], profile: ClusterProfile, node: GpuNode) -> None:
    """The sweep's flags against the site's nodes and each other, before anything is planned."""
    if args.gpus_per_node and node.gpus and args.gpus_per_node > node.gpus:
        raise UsageError(f"{profile.name}'s GPU nodes have {node.gpus} GPUs: --gpus-per-node {args.gpus_per_node}")
    check_scheduler_values({"--account": args.account, "--mem-per-gpu": args.mem_per_gpu, "--queue": args.queue,
                            "--mig": args.mig, "--gpu-type": args.gpu_type})  # fmt: skip
    if any(flag == "--out" or flag.startswith("--out=") for flag in run_flags):
        raise UsageError("give the results directory as sweep --results, not as a run flag --out")
    if not args.gpus and not args.study:
        raise UsageError("sweep needs --gpus, e.g. --gpus 1,2,4,8 (or --study strong|weak|both)")


def _check_site_rules(
    args, points: list[SweepPoint], profile: ClusterProfile, node: GpuNode, time_s: float, venv: str
) -> None:
    """The site's rules, before anything is written (for one job: its allocation, where every count runs)."""
    for point in [max(points, key=lambda point: point.gpus)] if args.one_job else points:
        request = JobRequest(point.gpus, point.shape.nodes, time_s, args.mig, args.mem_per_gpu,
                             os.path.abspath(args.results), venv, args.queue)  # fmt: skip
        first_refusal(profile, node, request, os.environ)


def _print_length_warnings(
    args, points: list[SweepPoint], scalings: tuple[str, ...], calibration: Calibration | None, counts: list[int]
) -> None:
    """Each series' warnings about jobs too short (or too long) to measure well."""
    for scaling in scalings:
        series = [point for point in points if point.scaling == scaling]
        batches = [parse_args(point.flags).batch_size * point.gpus for point in series]
        cfg = parse_args(series[0].flags)
        warnings = length_warnings(cfg, calibration, counts, scaling, args.problem_minutes, batches, bool(args.study))
        for warning in warnings:
            print(f"ddp_bench: warning: {warning}", file=sys.stderr)


def _submit_jobs(args, points: list[SweepPoint], done: set[str], profile: ClusterProfile) -> int:
    """One job per point not already done: printed (--dry-run), or written and submitted."""
    for point in points:
        header = f"# --- {point.gpus} GPU(s): {point.shape.nodes} node(s) x {point.shape.tasks_per_node} ---"
        if point.key in done:
            print(f"{header}\n# skipped: complete rows for {point.key} are already in {args.results}")
            continue
        script = render_job(profile, point.shape, point.flags, f"ddp_bench-g{point.gpus}", point.script_name)
        print(header)
        if args.dry_run:
            print(script)
        elif _submit(profile.scheduler, script, point.script_name, args) != 0:
            return EXIT_FAILURE
    return 0


def _check_paths(args, venv: str) -> None:
    """The paths a job is given: one line each (a job's environment holds no newline), and --scripts-dir a
    directory this process can write, unless nothing is written (--dry-run)."""
    for what, path in (("--results", args.results), ("DDP_BENCH_VENV", venv), ("--scripts-dir", args.scripts_dir)):
        if one_line(path) != path:
            raise UsageError(f"{what} {shortened(path, 120)!r}: a path with a newline or control character")
    if args.dry_run:
        return
    if os.path.lexists(args.scripts_dir) and not os.path.isdir(args.scripts_dir):
        raise UsageError(f"--scripts-dir {shortened(args.scripts_dir, 120)} is a file, not a directory")
    try:
        os.makedirs(args.scripts_dir, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"--scripts-dir {shortened(args.scripts_dir, 120)} cannot be created ({exc.strerror})"
        ) from None
    if not os.access(args.scripts_dir, os.W_OK | os.X_OK):
        raise UsageError(f"--scripts-dir {shortened(args.scripts_dir, 120)} cannot be written")


def _submit(scheduler: str, script: str, name: str, args) -> int:
    """Write the script under --scripts-dir and submit it (sbatch, or qsub), its rows going to --results."""
    path = os.path.join(args.scripts_dir, name)
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(script)
    except OSError as exc:
        raise UsageError(
            f"--scripts-dir {shortened(args.scripts_dir, 120)}: cannot write {name} ({exc.strerror})"
        ) from None
    environment = {**os.environ, "DDP_BENCH_RESULTS": os.path.abspath(args.results)}
    # qsub -v NAME with no value takes the value from qsub's environment: a comma in a path starts no variable
    passed = ",".join(name for name in ("DDP_BENCH_RESULTS", "DDP_BENCH_VENV") if environment.get(name))
    command = ["sbatch", path] if scheduler == "slurm" else ["qsub", "-v", passed, path]
    try:
        submitted = subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment)
    except subprocess.TimeoutExpired:
        print(f"ddp_bench: {command[0]} did not answer within 120 s; {path} was not submitted", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"ddp_bench: sweep could not run {command[0]} ({exc}); use --dry-run to only write scripts",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILURE
    if submitted.returncode != 0:
        print(f"ddp_bench: {command[0]} refused {path}: {submitted.stderr.strip()}", file=sys.stderr)
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
        allreduce = (
            *("--device", cfg.device, "--backend", cfg.backend, "--launcher", cfg.launcher),
            *("--max-bytes", str(MODEL_ALLREDUCE_BYTES)),
        )
        steps.append(SeriesStep(point.gpus, point.shape.nodes, point.flags, point.key, allreduce))
    counts = "-".join(str(point.gpus) for point in todo)
    extension = "pbs" if profile.scheduler == "pbs" else "sbatch"
    name = f"ddp_bench-{profile.name}-series-g{counts}.{extension}"
    script = render_job_series(profile, largest, steps, job_name=f"ddp_bench-g{counts}", script_name=name)
    if args.dry_run:
        shown = counts.replace("-", ",")
        print(f"# --- one job: {largest.nodes} node(s) x {largest.tasks_per_node}, counts {shown} ---")
        print(script)
        return 0
    return _submit(profile.scheduler, script, name, args)
