"""Does a whole ddp_bench run cost anything over a hand-written loop? Separate processes, alternating.

    python benchmarks/whole_process_cost.py [--rounds 6] [--steps 150] [--data-dir ../shared/data/mnist-mini]

Each round runs, as separate processes in an order that rotates from round to round, `python -m ddp_bench` (one
CPU rank, the course CNN, batch 64, the device-resident loader) and benchmarks/hand_loop.py twice (the same
model, optimizer and batch over an in-memory tensor): once to compare with, once more as an A/A control that
shows how far two identical whole runs drift apart on this machine; and once with the malloc settings ddp_bench
gives itself (MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_, see ddp_bench/launch/hardware.py), which a user's own
loop can have too. Synthetic data always; real MNIST too when --data-dir holds it. Each ratio (images/s of the
timed steps, warm-up and start-up excluded on every side) is taken within a round, and the median over rounds is
printed with its range. Target: ddp_bench / hand loop >= 0.98 (median).
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import statistics
import subprocess
import sys
import tempfile

from ddp_bench.launch.hardware import MMAP_THRESHOLD, TRIM_THRESHOLD

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = 0.98


def ddp_bench(data: str, data_dir: str, steps: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "ddp_bench", "--device", "cpu", "--launcher", "single", "--data", data,
                   "--data-dir", data_dir, "--loader", "device", "--steps", str(steps), "--warmup-steps", "10",
                   "--out", out]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=600, cwd=ROOT)
        (path,) = glob.glob(os.path.join(out, "*", "rank0.csv"))
        with open(path, encoding="utf-8", newline="") as handle:
            return float(next(csv.DictReader(handle))["global_images_per_s"])


def hand_loop(data: str, data_dir: str, steps: int, env: dict[str, str] | None = None) -> float:
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "hand_loop.py"), "--data", data, "--data-dir",
               data_dir, "--steps", str(steps), "--warmup", "10"]  # fmt: skip
    done = subprocess.run(
        command, check=True, capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ, **(env or {})}
    )
    return float(done.stdout)


def hand_loop_same_malloc(data: str, data_dir: str, steps: int) -> float:
    """The hand loop with the malloc thresholds ddp_bench sets for itself, given the way a user would: glibc's
    environment tunables."""
    tunables = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}
    return hand_loop(data, data_dir, steps, tunables)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--data-dir", default="")
    args = parser.parse_args()
    datasets = ["synthetic"]
    if args.data_dir and os.path.isfile(os.path.join(args.data_dir, "MNIST", "raw", "train-images-idx3-ubyte")):
        datasets.append("mnist")
    data_dir = os.path.abspath(args.data_dir) if args.data_dir else ""
    sides = {
        "ddp_bench": ddp_bench,
        "hand loop": hand_loop,
        "hand loop again": hand_loop,
        "hand loop, same malloc": hand_loop_same_malloc,
    }
    order = list(sides)
    missed = False
    for data in datasets:
        ratios, controls, same = [], [], []
        for round_index in range(args.rounds):
            turn = order[round_index % len(order) :] + order[: round_index % len(order)]  # each leads in turn
            measured = {name: sides[name](data, data_dir, args.steps) for name in turn}
            ratios.append(measured["ddp_bench"] / measured["hand loop"])
            controls.append(measured["hand loop again"] / measured["hand loop"])
            same.append(measured["ddp_bench"] / measured["hand loop, same malloc"])
            print(
                f"{data} round {round_index + 1} ({' → '.join(turn)}): "
                + ", ".join(f"{name} {measured[name]:.0f}" for name in order),
                flush=True,
            )
        median = statistics.median(ratios)
        verdict = "met" if median >= TARGET else "MISSED"
        missed |= median < TARGET
        print(
            f"{data}: ddp_bench / hand loop {median:.3f} ({min(ratios):.3f}-{max(ratios):.3f}), target >= {TARGET}: "
            f"{verdict}; A/A hand loop again / hand loop {statistics.median(controls):.3f} "
            f"({min(controls):.3f}-{max(controls):.3f}); ddp_bench / hand loop with the same malloc settings "
            f"{statistics.median(same):.3f} ({min(same):.3f}-{max(same):.3f}); {args.rounds} rounds of {args.steps} "
            "steps",
            flush=True,
        )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
