"""Does the harness cost anything? ddp_bench against loops a user would write, in one process, alternating.

    python benchmarks/harness_overhead.py --data-dir ../shared/data/mnist-mini
        [--steps 150] [--rounds 6] [--step-rounds 300]

Per round (the order rotates from round to round), on one CPU rank, MNIST CNN, batch 64, Adadelta (the
course recipe), the same warm-up excluded:
  hand loop again      the hand loop below, measured twice: hand loop again / hand loop is an A/A control
                       that shows how far two identical measurements drift apart on this machine (no target)
  hand loop            a minimal loop over an in-memory tensor: same model, batch and optimizer
  ddp_bench            python -m ddp_bench on synthetic data (in-process)
  ddp_bench real       python -m ddp_bench on real MNIST with the device-resident loader
  course loop          the intro course's loop: torchvision MNIST + ToTensor/Normalize + DataLoader
  ddp_bench real bf16  as `ddp_bench real`, with --amp bf16 --channels-last (not the same arithmetic as the
                       others, so it has no target: it shows what the harness's fast path gives on this CPU)
  ddp_bench real cl    as `ddp_bench real`, with --channels-last only: still fp32, in the channels-last
                       memory layout (no target: the course loop could use it too)
The order is a cycle in which the two sides of every ratio with a target are neighbours.
Each ratio is taken between two measurements of the same round, and the median over rounds is printed with
its range, against the targets ddp_bench / hand >= 0.98, real / synthetic >= 0.95,
ddp_bench real / course >= 1.5. Throughputs are images/s of training steps only; warm-up, start-up and
evaluation are excluded everywhere.

Whole runs drift apart by tens of per cent on a shared machine, far more than the 2 % the first target
allows. So the script ends with interleaved steps: one step at a time, in rotating order, of the hand loop,
the hand loop again (an A/A control) and ddp_bench's per-step path (a batch from its device loader through
its timed fetch, then its training step inside its step timer), each on its own model. Neighbouring steps see
the same machine, so the ratio of summed step times, with a bootstrap 95 % interval over the rounds, can
decide the 0.98 target: met when the whole interval lies above it. Left out, as they are not per step: the
stop check (a one-number all-reduce about twice a second) and the reshuffle at each epoch's start.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import glob
import io
import os
import random
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from ddp_bench.cli import main as ddp_bench_main
from ddp_bench.data import SPECS, Shard, build_batches, load_split
from ddp_bench.measurement.timing import StepTimer
from ddp_bench.models import MnistCNN
from ddp_bench.training.loop import Precision, timed_fetch, train_step

TARGETS = {"ddp_bench / hand loop": 0.98, "real / synthetic (ddp_bench)": 0.95, "ddp_bench real / course loop": 1.5}


def ddp_bench_images_per_s(flags: list[str]) -> float:
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):  # its summary table
        code = ddp_bench_main([*flags, "--launcher", "single", "--device", "cpu", "--out", out])
        if code != 0:
            raise SystemExit(f"ddp_bench exited {code}")
        (path,) = glob.glob(os.path.join(out, "*", "rank0.csv"))
        with open(path, encoding="utf-8") as handle:
            return float(next(csv.DictReader(handle))["global_images_per_s"])


def user_step(model, optimizer, batches):
    """One step of the loop a user would write (next batch, zero_grad, nll_loss, backward, optimizer step), as
    a callable that returns how many images it trained on."""
    model.train()
    iterator = iter(batches)

    def step() -> int:
        x, y = next(iterator)
        optimizer.zero_grad(set_to_none=True)
        F.nll_loss(model(x), y).backward()
        optimizer.step()
        return len(y)

    return step


def timed_loop(step, warmup: int, steps: int) -> float:
    """images/s of `steps` calls of `step` after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    started = time.perf_counter()
    seen = sum(step() for _ in range(steps))
    return seen / (time.perf_counter() - started)


def hand_batches(batch: int):
    """The hand loop's input: the images ddp_bench's synthetic data holds, normalised once, in memory (now,
    not on the first batch, so that no timed step pays for it)."""
    spec = SPECS["mnist"]
    split = load_split("synthetic", spec, "", train=True, seed=0)  # the very images ddp_bench trains on
    data = (split.images.float() / 255 - spec.mean[0]) / spec.std[0]
    labels = split.labels
    order = torch.randperm(spec.train_size)

    def batches():
        for start in range(0, spec.train_size - batch + 1, batch):
            index = order[start : start + batch]
            yield data[index], labels[index]

    return batches()


def hand_step(batch: int):
    """The hand loop's step, on a fresh model and optimizer, over the in-memory tensor."""
    torch.manual_seed(0)
    model = MnistCNN()
    return user_step(model, torch.optim.Adadelta(model.parameters(), lr=1.0), hand_batches(batch))


def make_ddp_bench_step(batch: int, steps: int):
    """What run_training's timed stage does per step on one CPU rank: a batch from ddp_bench's device loader
    through its timed fetch, then its training step inside its step timer."""
    torch.manual_seed(0)
    model = MnistCNN()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    shard = Shard(rank=0, world_size=1, batch_size=batch, seed=0, device=torch.device("cpu"), channels_last=False)
    batches = build_batches("synthetic", "", SPECS["mnist"], "device", shard, workers=0, train=True)
    if steps > batches.batches_per_epoch:
        raise SystemExit(f"--warmup + --step-rounds must stay within one epoch ({batches.batches_per_epoch} batches)")
    stream = timed_fetch(iter(batches.epoch(0)), waits=[])
    timer = StepTimer(torch.device("cpu"))
    precision = Precision("off", "cpu")

    def ddp_bench_step() -> None:
        x, y = next(stream)
        timer.start()
        train_step(model, optimizer, None, precision, x, y)
        timer.stop()

    return ddp_bench_step


def interleaved_steps(rounds: int, warmup: int, batch: int) -> dict[str, list[float]]:
    """Seconds per step of each variant, taking one step of each in turn, `rounds` times."""
    steps = {
        "hand loop": hand_step(batch),
        "hand loop again": hand_step(batch),  # the A/A control: how far identical steps differ here
        "ddp_bench": make_ddp_bench_step(batch, warmup + rounds),
    }
    for _ in range(warmup):
        for step in steps.values():
            step()
    names = list(steps)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        # Rotate the order, so that no variant always runs first or right after the same neighbour.
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            steps[name]()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def throughput_ratio_interval(top: list[float], bottom: list[float], draws: int = 2000) -> tuple[float, float, float]:
    """Throughput of `top` over that of `bottom` (summed `bottom` seconds over summed `top` seconds, the steps
    being the same size) and a bootstrap 95 % interval over the rounds (a fixed seed, so the same times always
    print the same interval)."""
    rng = random.Random(0)
    rounds = list(zip(top, bottom, strict=True))
    estimates = []
    for _ in range(draws):
        sample = rng.choices(rounds, k=len(rounds))
        estimates.append(sum(b for _, b in sample) / sum(t for t, _ in sample))
    estimates.sort()
    return sum(bottom) / sum(top), estimates[int(0.025 * draws)], estimates[int(0.975 * draws) - 1]


def course_loop(data_dir: str, steps: int, warmup: int, batch: int) -> float:
    import torchvision
    from torchvision import transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    dataset = torchvision.datasets.MNIST(data_dir, train=True, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True)

    def forever():
        while True:
            yield from loader

    torch.manual_seed(0)
    model = MnistCNN()
    return timed_loop(user_step(model, torch.optim.Adadelta(model.parameters(), lr=1.0), forever()), warmup, steps)


RATIOS = {  # name: (numerator, denominator)
    "ddp_bench / hand loop": ("ddp_bench", "hand loop"),
    "hand loop again / hand loop (A/A)": ("hand loop again", "hand loop"),
    "real / synthetic (ddp_bench)": ("ddp_bench real", "ddp_bench"),
    "ddp_bench real / course loop": ("ddp_bench real", "course loop"),
    "ddp_bench real cl / course loop": ("ddp_bench real cl", "course loop"),
    "ddp_bench real bf16 / course loop": ("ddp_bench real bf16", "course loop"),
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="directory holding MNIST/raw (torchvision layout)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--step-rounds", type=int, default=300, help="interleaved steps at the end (within an epoch)")
    args = parser.parse_args(argv)
    torch.set_num_threads(len(os.sched_getaffinity(0)))  # what ddp_bench gives a single rank
    common = ["--steps", str(args.steps), "--warmup-steps", str(args.warmup), "--batch-size", "64"]
    real = [*common, "--data", "mnist", "--data-dir", args.data_dir, "--loader", "device"]
    measure = {  # in this order, as a cycle: both sides of every targeted ratio are neighbours
        "hand loop again": lambda: timed_loop(hand_step(64), args.warmup, args.steps),
        "hand loop": lambda: timed_loop(hand_step(64), args.warmup, args.steps),
        "ddp_bench": lambda: ddp_bench_images_per_s(common),
        "ddp_bench real": lambda: ddp_bench_images_per_s(real),
        "course loop": lambda: course_loop(args.data_dir, args.steps, args.warmup, 64),
        "ddp_bench real bf16": lambda: ddp_bench_images_per_s([*real, "--amp", "bf16", "--channels-last"]),
        "ddp_bench real cl": lambda: ddp_bench_images_per_s([*real, "--channels-last"]),
    }
    names = list(measure)
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        # Rotate the order every round, so no variant always runs first (or right after the same neighbour).
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(measure[name]())
        print(
            f"round {round_index + 1}: " + ", ".join(f"{name} {values[-1]:.0f}" for name, values in results.items()),
            file=sys.stderr,
        )
    # A ratio of two measurements from the same round cancels the slow drift of a shared machine's speed.
    ratios = {
        label: [a / b for a, b in zip(results[top], results[bottom], strict=True)]
        for label, (top, bottom) in RATIOS.items()
    }
    print(
        f"MNIST CNN, batch 64, {args.steps} steps after {args.warmup} warm-up, {args.rounds} rounds, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    for name, values in results.items():
        print(f"  {name:<20} {statistics.median(values):8.1f} images/s  ({min(values):.0f}-{max(values):.0f})")
    met = True
    for label, values in ratios.items():
        median = statistics.median(values)
        line = f"  {label:<46} {median:5.3f}  ({min(values):.3f}-{max(values):.3f})"
        if label in TARGETS:
            ok = median >= TARGETS[label]
            met &= ok
            line += f"  target >= {TARGETS[label]}: {'met' if ok else 'MISSED'}"
        print(line)

    seconds = interleaved_steps(args.step_rounds, args.warmup, 64)
    print(
        f"Steps interleaved one by one ({args.step_rounds} rounds after {args.warmup} warm-up), median step: "
        + ", ".join(f"{name} {statistics.median(values) * 1e3:.2f} ms" for name, values in seconds.items())
    )
    target = TARGETS["ddp_bench / hand loop"]
    for label, top in (
        ("ddp_bench / hand loop (interleaved)", "ddp_bench"),
        ("hand loop again / hand loop (A/A, interleaved)", "hand loop again"),
    ):
        ratio, low, high = throughput_ratio_interval(seconds[top], seconds["hand loop"])
        line = f"  {label:<46} {ratio:5.3f}  (95 % interval {low:.3f}-{high:.3f})"
        if top == "ddp_bench":
            # Judged by the whole interval: a point estimate this close to the target could fall either side.
            ok = low >= target
            met &= ok
            line += f"  target >= {target}: " + ("met" if ok else "MISSED" if high < target else "undecided")
        print(line)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
