"""The first contact with a GPU, in one command that fits a short lease and brings everything back.

    python benchmarks/gpu_first_contact.py [--budget 540] [--mnist-dir DIR] [--archive PATH.tgz] [--results results]
    python benchmarks/gpu_first_contact.py --dry-run --results /tmp/x     # every step on the CPU, tiny sizes

Writes results/<gpu-model>-first-contact/ (results/cpu-dry-run-first-contact/ with --dry-run):
  steps.csv          every step: ok | failed | timeout | skipped, its seconds, exit code and a one-line note
  first-contact.md   what ran and what each number was (rebuilt after every step)
  runs/              the mission's rank rows: the default run, MNIST on the device loader, resnet50 at fp32, bf16
                     and fp16 with and without channels-last, one --compile run, one run long enough for energy
  allreduce/         the all-reduce benchmark over NCCL on the one GPU, and of two gloo ranks sharing it
  compare/           ddp_bench against a hand-written loop, and against the intro course's DataLoader loop, as
                     whole processes in rotating order (compare.csv: every process's images/s)
  gpu-tier.csv       the `gpu` test tier, test by test
  report/            `ddp_bench report` over the runs, the all-reduce rows and the committed CPU rows (Platforms)
  logs/              each step's output
Each step has its own timeout inside the whole budget; a failed or timed-out step is recorded and the next runs.
With --archive the folder is packed after every step, so what was done comes back even if the lease ends early.
Nothing here needs the network: MNIST comes from --mnist-dir (steps that need it are skipped without it).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import glob
import os
import re
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
REPORT_RESERVE_S = 45  # kept back for the report, the last step
COURSE_TARGET = 10.0  # ddp_bench (device loader, bf16) over the course's DataLoader loop, on an H100-class GPU


class StepFailed(Exception):
    """A command of a step ended badly; the message is the step's one-line note."""


@dataclasses.dataclass
class Lease:
    """What every step needs: where to write, how big to make the runs, and the clock of the whole budget."""

    folder: str
    dry_run: bool
    mnist_dir: str
    deadline: float
    step_deadline: float = 0.0
    commands: list[str] = dataclasses.field(default_factory=list)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def path(self, *parts: str) -> str:
        return os.path.join(self.folder, *parts)

    def device_flags(self) -> list[str]:
        return ["--device", "cpu"] if self.dry_run else ["--device", "cuda"]

    def size(self, gpu: list[str], dry: list[str]) -> list[str]:
        return dry if self.dry_run else gpu

    def run(self, command: list[str], log: str, timeout: float = 600.0, env: dict[str, str] | None = None) -> str:
        """Run one command in a process group of its own, its output to logs/<log>.log; end the whole group at
        the step's deadline. Returns its stdout; raises StepFailed on a timeout or a non-zero exit."""
        limit = max(1.0, min(timeout, self.step_deadline - time.monotonic()))
        self.commands.append(" ".join([*(f"{k}={v}" for k, v in (env or {}).items()), *command]))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
               "PYTHONUNBUFFERED": "1", **(env or {})}  # fmt: skip
        if self.mnist_dir:
            env["DDP_BENCH_MNIST_DIR"] = self.mnist_dir
        with open(self.path("logs", f"{log}.log"), "a", encoding="utf-8") as handle:
            handle.write(f"$ {' '.join(command)}\n")
            handle.flush()
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=handle, text=True, cwd=ROOT, env=env,
                                       start_new_session=True)  # fmt: skip
            try:
                stdout, _ = process.communicate(timeout=limit)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                stdout, _ = process.communicate()
                handle.write(stdout)
                raise StepFailed(f"timeout after {limit:.0f} s: {os.path.basename(command[1])}") from None
            handle.write(stdout)
        if process.returncode != 0:
            raise StepFailed(f"exit {process.returncode}: {last_line(self.path('logs', f'{log}.log'))}")
        return stdout

    def ddp_bench(self, flags: list[str], out: str, log: str, timeout: float = 300.0) -> dict[str, str]:
        """One `python -m ddp_bench` run into its own folder under `out`; returns its rank-0 row."""
        before = set(glob.glob(os.path.join(out, "*", "rank0.csv")))
        self.run([PYTHON, "-m", "ddp_bench", *flags, "--out", out], log, timeout)
        (path,) = set(glob.glob(os.path.join(out, "*", "rank0.csv"))) - before
        with open(path, encoding="utf-8", newline="") as handle:
            return next(csv.DictReader(handle))


def last_line(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = [line.strip() for line in handle if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def row_note(row: dict[str, str]) -> str:
    fields = ("global_images_per_s", "step_time_median_ms", "mfu", "verdict", "peak_device_allocated_mb",
              "energy_j", "energy_note", "test_accuracy")  # fmt: skip
    return "; ".join(f"{name}={row.get(name, '')}" for name in fields if row.get(name, "") != "")


def probe(lease: Lease) -> str:
    lines = []
    if not lease.dry_run:
        lines.append(lease.run(["nvidia-smi", "-L"], "probe", 30).strip())
        lease.run(["nvidia-smi"], "probe", 30)
        lease.run(["nvidia-smi", "topo", "-m"], "probe", 30)
    versions = ("import torch, torchvision, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, "
                "'cuda', torch.version.cuda, 'torchvision', torchvision.__version__, 'gpu', torch.cuda.is_available() "
                "and torch.cuda.get_device_name(0))")  # fmt: skip
    lines.append(lease.run([PYTHON, "-c", versions], "probe", 60).strip())
    lease.run([PYTHON, "-m", "ddp_bench", "check", *lease.device_flags()], "probe", 60)
    return " | ".join(lines)


def default_run(lease: Lease) -> str:
    flags = lease.size([], ["--device", "cpu", "--steps", "3", "--warmup-steps", "1"])
    return row_note(lease.ddp_bench([*flags, "--tag", "default"], lease.path("runs"), "default"))


def mnist_device_loader(lease: Lease) -> str:
    if not lease.mnist_dir:
        return "skipped: no --mnist-dir"
    flags = [
        *lease.device_flags(),
        "--data",
        "mnist",
        "--data-dir",
        lease.mnist_dir,
        "--loader",
        "device",
        *lease.size(["--epochs", "1"], ["--steps", "3", "--warmup-steps", "1"]),
        "--tag",
        "mnist-device-loader",
    ]
    return row_note(lease.ddp_bench(flags, lease.path("runs"), "mnist-device-loader"))


def resnet50_precision(amp: str, channels_last: bool) -> Callable[[Lease], str]:
    def step(lease: Lease) -> str:
        layout = ["--channels-last"] if channels_last else []
        size = lease.size(["--batch-size", "256", "--steps", "60", "--warmup-steps", "15"],
                          ["--batch-size", "4", "--steps", "2", "--warmup-steps", "1"])  # fmt: skip
        tag = f"resnet50-{amp}-{'cl' if channels_last else 'nchw'}"
        precision = "bf16" if lease.dry_run and amp == "fp16" else amp  # fp16 autocast needs CUDA
        flags = [*lease.device_flags(), "--model", "resnet50", "--amp", precision, *layout, *size, "--tag", tag]
        return row_note(lease.ddp_bench(flags, lease.path("runs"), tag, 180))

    step.__name__ = f"resnet50-{'fp32' if amp == 'off' else amp}-{'cl' if channels_last else 'nchw'}"
    return step


def compiled(lease: Lease) -> str:
    size = lease.size(["--steps", "200"], ["--steps", "3", "--warmup-steps", "2"])
    row = lease.ddp_bench(
        [*lease.device_flags(), "--compile", *size, "--tag", "compile"], lease.path("runs"), "compile"
    )
    return row_note(row)


def energy_run(lease: Lease) -> str:
    """Long enough for NVML's energy counter (ddp_bench leaves stages under 5 s empty): about 10 s of training."""
    size = lease.size(["--model", "resnet50", "--amp", "bf16", "--channels-last", "--batch-size", "256",
                       "--steps", "800", "--warmup-steps", "15"], ["--steps", "3", "--warmup-steps", "1"])  # fmt: skip
    return row_note(lease.ddp_bench([*lease.device_flags(), *size, "--tag", "energy"], lease.path("runs"), "energy"))


def allreduce_nccl(lease: Lease) -> str:
    backend = ["--backend", "gloo"] if lease.dry_run else ["--backend", "nccl"]
    out = lease.path("allreduce", "one-rank")
    flags = [*lease.device_flags(), *backend, "--max-bytes", str(64 * 2**20), "--iters", "10", "--out", out]
    lease.run([PYTHON, "-m", "ddp_bench", "allreduce", "--launcher", "single", *flags], "allreduce-nccl", 120)
    return f"{len(glob.glob(os.path.join(out, '*', 'allreduce.csv')))} allreduce.csv (one rank moves no bytes)"


def allreduce_gloo_two_ranks(lease: Lease) -> str:
    out = lease.path("allreduce", "gloo-two-ranks")
    launcher = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ddp_bench"]
    flags = [*lease.device_flags(), "--backend", "gloo", "--max-bytes", str(64 * 2**20), "--iters", "10"]
    # Both ranks bound to GPU 0, as a scheduler binds one GPU to each task: ddp_bench refuses two ranks on one
    # GPU it was not bound to (it would be a mistake in a job script), and NCCL refuses them whatever the binding.
    bound = {} if lease.dry_run else {"CUDA_VISIBLE_DEVICES": "0"}
    lease.run([*launcher, "allreduce", *flags, "--out", out], "allreduce-gloo-two-ranks", 150, bound)
    (path,) = glob.glob(os.path.join(out, "*", "allreduce.csv"))
    with open(path, encoding="utf-8", newline="") as handle:
        largest = list(csv.DictReader(handle))[-1]
    return "largest message: " + ", ".join(f"{key}={value}" for key, value in largest.items() if "bw" in key or
                                           key in ("bytes", "size_bytes", "time_us"))  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Side:
    """One side of a whole-process comparison: a command printing images/s, or ddp_bench flags."""

    name: str
    hand_loop: list[str] | None = None
    ddp_bench: list[str] | None = None


def compare(lease: Lease, name: str, sides: list[Side], rounds: int, ratios: list[tuple[str, str]]) -> str:
    """Whole processes, in an order that rotates each round; each ratio taken within a round, median and range."""
    measured: dict[str, list[float]] = {side.name: [] for side in sides}
    for round_index in range(rounds):
        shift = round_index % len(sides)
        for side in sides[shift:] + sides[:shift]:
            if side.hand_loop is not None:
                command = [PYTHON, os.path.join(ROOT, "benchmarks", "hand_loop.py"), *side.hand_loop]
                value = float(lease.run(command, name, 300).strip().splitlines()[-1])
            else:
                row = lease.ddp_bench(side.ddp_bench or [], lease.path("compare", name), name)
                value = float(row["global_images_per_s"])
            measured[side.name].append(value)
            with open(lease.path("compare", "compare.csv"), "a", encoding="utf-8", newline="") as handle:
                csv.writer(handle).writerow([name, round_index + 1, side.name, f"{value:.1f}"])
    notes = []
    for top, bottom in ratios:
        each = [t / b for t, b in zip(measured[top], measured[bottom], strict=True)]
        notes.append(f"{top} / {bottom} = {statistics.median(each):.3f} ({min(each):.3f}-{max(each):.3f})")
    medians = ", ".join(f"{side} {statistics.median(values):.0f} img/s" for side, values in measured.items())
    return f"{'; '.join(notes)}; medians of {rounds}: {medians}"


def hand_loop_twin(lease: Lease) -> str:
    steps = lease.size(["1000"], ["5"])[0]
    device = "cpu" if lease.dry_run else "cuda"
    ours = Side("ddp_bench", ddp_bench=[*lease.device_flags(), "--launcher", "single", "--loader", "device",
                                        "--steps", steps, "--warmup-steps", "10"])  # fmt: skip
    theirs = Side("hand loop", hand_loop=["--device", device, "--steps", steps, "--warmup", "10"])
    again = Side("hand loop again", hand_loop=theirs.hand_loop)
    pairs = [("ddp_bench", "hand loop"), ("hand loop again", "hand loop")]
    return compare(lease, "hand-loop", [ours, theirs, again], lease.size([3], [1])[0], pairs)


def course_loop(lease: Lease) -> str:
    if not lease.mnist_dir:
        return "skipped: no --mnist-dir"
    device = "cpu" if lease.dry_run else "cuda"
    mnist = ["--data", "mnist", "--data-dir", lease.mnist_dir]
    course = Side("course loop", hand_loop=[*mnist, "--loop", "course", "--device", device,
                                            "--steps", lease.size(["400"], ["5"])[0], "--warmup", "10"])  # fmt: skip
    ours = [*lease.device_flags(), "--launcher", "single", *mnist, "--loader", "device",
            "--steps", lease.size(["1000"], ["5"])[0], "--warmup-steps", "10"]  # fmt: skip
    fast = Side("ddp_bench bf16", ddp_bench=[*ours, "--amp", "bf16"])
    plain = Side("ddp_bench fp32", ddp_bench=ours)
    pairs = [("ddp_bench bf16", "course loop"), ("ddp_bench fp32", "course loop")]
    note = compare(lease, "course-loop", [course, fast, plain], lease.size([2], [1])[0], pairs)
    return f"{note}; target ddp_bench bf16 / course loop >= {COURSE_TARGET:g} on an H100-class GPU"


GPU_TIER_LINE = re.compile(r"(tests/\S+::\S+)\s+(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)|"
                           r"(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\s+(tests/\S+::\S+)")  # fmt: skip


def gpu_tier(lease: Lease) -> str:
    """The tier in two parts: the tests that fill the GPU on purpose (marked gpu_alone) on their own, then the
    rest, on four pytest-xdist workers sharing the GPU where xdist is installed."""
    command = [PYTHON, "-m", "pytest", "tests/test_gpu.py", "-v", "-rA", "-p", "no:cacheprovider", "--timeout", "200"]
    try:
        import xdist  # noqa: F401

        workers = [] if lease.dry_run else ["-n", "4"]
    except ImportError:
        workers = []
    failures = []
    for marks, extra in (("gpu and gpu_alone", []), ("gpu and not gpu_alone", workers)):
        try:
            lease.run([*command, "-m", marks, *extra], "gpu-tier", max(30.0, lease.remaining() - REPORT_RESERVE_S))
        except StepFailed as exc:
            failures.append(str(exc))
    failure = "; ".join(failures) or None
    outcomes: dict[str, str] = {}
    with open(lease.path("logs", "gpu-tier.log"), encoding="utf-8", errors="replace") as handle:
        for match in GPU_TIER_LINE.finditer(handle.read()):
            test, outcome = (match.group(1), match.group(2)) if match.group(1) else (match.group(4), match.group(3))
            outcomes.setdefault(test, outcome)  # -rA repeats each outcome in its summary
    with open(lease.path("gpu-tier.csv"), "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["test", "outcome"])
        writer.writerows(sorted(outcomes.items()))
    counts = {outcome: list(outcomes.values()).count(outcome) for outcome in sorted(set(outcomes.values()))}
    note = ", ".join(f"{count} {outcome.lower()}" for outcome, count in counts.items()) or "no test reported"
    if failure is not None:
        raise StepFailed(f"{note} ({failure})")
    return note


def report(lease: Lease) -> str:
    committed = os.path.join(ROOT, "results", "cpu-2core-runs")
    sources = [lease.path("runs"), committed, lease.path("allreduce")]
    try:
        lease.run([PYTHON, "-m", "ddp_bench", "report", *sources, "--out", lease.path("report")], "report", 120)
        return "report over the runs, the committed CPU rows and the all-reduce rows"
    except StepFailed as exc:  # keep the report of the runs at least; the failure stays in the note
        lease.run([PYTHON, "-m", "ddp_bench", "report", *sources[:2], "--out", lease.path("report-runs")], "report")
        return f"with the all-reduce rows: {exc}; without them: report-runs/ written"


STEPS: list[tuple[str, Callable[[Lease], str], float]] = [  # (name, step, its own timeout in seconds)
    ("probe", probe, 60),
    ("default", default_run, 60),
    ("mnist-device-loader", mnist_device_loader, 60),
    *[(f.__name__, f, 50) for f in (resnet50_precision(a, c) for a in ("off", "bf16", "fp16") for c in (False, True))],
    ("compile", compiled, 150),
    ("energy", energy_run, 90),
    ("allreduce-nccl", allreduce_nccl, 60),
    ("allreduce-gloo-two-ranks", allreduce_gloo_two_ranks, 90),
    ("hand-loop", hand_loop_twin, 150),  # nine whole processes: 9-16 s each on the H200's machine
    ("course-loop", course_loop, 150),
    ("gpu-tier", gpu_tier, 600),
    ("report", report, REPORT_RESERVE_S + 60),
]


def gpu_model_slug(dry_run: bool) -> str:
    if dry_run:
        return "cpu-dry-run"
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_first_contact: torch sees no GPU here; use --dry-run to exercise the steps on a CPU")
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")


def write_outcomes(lease: Lease, outcomes: list[list[str]], archive: str) -> None:
    with open(lease.path("steps.csv"), "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "status", "seconds", "note"])
        writer.writerows(outcomes)
    with open(lease.path("first-contact.md"), "w", encoding="utf-8") as handle:
        title = f"# First contact: {os.path.basename(lease.folder)}"
        handle.write(f"{title}\n\n| step | status | s | note |\n|---|---|--:|---|\n")
        for step, status, seconds, note in outcomes:
            handle.write(f"| {step} | {status} | {seconds} | {note.replace('|', '/')} |\n")
        handle.write("\nCommands, in order:\n\n" + "".join(f"    {command}\n" for command in lease.commands))
    if archive:
        with tarfile.open(archive + ".part", "w:gz") as packed:
            packed.add(lease.folder, arcname=os.path.basename(lease.folder))
        os.replace(archive + ".part", archive)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for everything (default 540)")
    parser.add_argument("--mnist-dir", default=os.environ.get("DDP_BENCH_MNIST_DIR", ""))
    parser.add_argument("--results", default=os.path.join(ROOT, "results"), help="where the folder goes")
    parser.add_argument("--archive", default="", help="pack the folder into this .tgz after every step")
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU with tiny sizes")
    parser.add_argument("--only", default="", help="comma-separated step names (default: all)")
    args = parser.parse_args()
    started = time.monotonic()
    mnist = os.path.abspath(args.mnist_dir) if args.mnist_dir else ""
    if mnist and not os.path.isfile(os.path.join(mnist, "MNIST", "raw", "train-images-idx3-ubyte")):
        mnist = ""  # the steps that need it say they were skipped
    folder = os.path.join(os.path.abspath(args.results), f"{gpu_model_slug(args.dry_run)}-first-contact")
    if os.path.exists(folder):
        raise SystemExit(f"gpu_first_contact: {folder} exists; move it away first (nothing is overwritten)")
    for sub in ("logs", "runs", "allreduce", "compare"):
        os.makedirs(os.path.join(folder, sub))
    lease = Lease(folder, args.dry_run, mnist, started + args.budget)
    chosen = [step for step in STEPS if not args.only or step[0] in args.only.split(",")]
    outcomes: list[list[str]] = []
    for name, step, timeout in chosen:
        step_started = time.monotonic()
        reserve = 0 if name == "report" else REPORT_RESERVE_S
        lease.step_deadline = min(step_started + timeout, lease.deadline - reserve)
        if lease.step_deadline - step_started < 5:
            status, note = "skipped", "no budget left"
        else:
            try:
                note = step(lease)
                status = "skipped" if note.startswith("skipped") else "ok"
            except StepFailed as exc:
                status, note = ("timeout" if "timeout" in str(exc) else "failed"), str(exc)
            except Exception as exc:  # a step's own bug: recorded, and the next step runs
                status, note = "failed", f"{type(exc).__name__}: {exc}"
        outcomes.append([name, status, f"{time.monotonic() - step_started:.1f}", note.replace("\n", " ")])
        print(f"[{time.monotonic() - started:6.1f} s] {name}: {status}: {note}", flush=True)
        write_outcomes(lease, outcomes, args.archive)
    return 0 if all(status in ("ok", "skipped") for _, status, _, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
