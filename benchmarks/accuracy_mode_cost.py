"""What time-to-accuracy mode and the energy counters cost the timed stage.

    python benchmarks/accuracy_mode_cost.py --data-dir ../shared/data/mnist-mini [--rounds 5]

1. Whole runs of ddp_bench on real MNIST digits, one CPU rank, in this process, in rotating order per round:
   - `epochs`: --epochs 2 (an evaluation after each epoch, outside the clock);
   - `epochs again`: the same, an A/A control that shows how far two identical runs drift apart here;
   - `race`: --target-accuracy 0.9999 --max-epochs 2, a target no run reaches, so it trains the same two epochs
     and evaluates at the same points: what the mode itself costs;
   - `race, every 50`: the same with --eval-every 50: four more evaluations, outside the clock, but the steps
     after each one start with caches full of test data.
   Throughput is each run's images over its train_time_s. Target: race / epochs, median over rounds, >= 0.98.
2. Energy counter reads: the same runs with a counter that counts its reads in place of the real one. Target:
   the reads do not grow with the steps (they happen where the stage clock starts and stops, never per step).
   And the cost of one RAPL read, on a powercap tree of two packages made in a temporary directory (this machine
   may have none); an NVML read needs a GPU and is not measured here.

Exit code 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from unittest import mock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ddp_bench.cli import main as ddp_bench_main  # noqa: E402
from ddp_bench.measurement.consumption import CounterChoice, RaplCounter  # noqa: E402
from ddp_bench.results.rank_files import read_rank_csv  # noqa: E402

TARGET_RATIO = 0.98


class CountingCounter:
    source = "counting"

    def __init__(self) -> None:
        self.reads = 0

    def read_j(self) -> float:
        self.reads += 1
        return 0.0


def run(flags: list[str], data_dir: str) -> tuple[float, int, int]:
    """images/s over train_time_s, energy counter reads, measured steps of one ddp_bench run."""
    counter = CountingCounter()
    with (
        tempfile.TemporaryDirectory() as out,
        mock.patch("ddp_bench.run.energy_counter", lambda device, local_rank: CounterChoice(counter, "")),
    ):
        argv = [*flags, "--data", "mnist", "--data-dir", data_dir, "--device", "cpu", "--out", out]
        with open(os.devnull, "w") as quiet, mock.patch("sys.stdout", quiet):
            code = ddp_bench_main(argv)
        if code != 0:
            raise SystemExit(f"ddp_bench {' '.join(argv)} exited {code}")
        (path,) = [os.path.join(d, f) for d, _, files in os.walk(out) for f in files if f == "rank0.csv"]
        (row,) = read_rank_csv(path)
    return float(row["images_per_s"]), counter.reads, int(row["steps"])


def rapl_read_cost_us(reads: int = 2000) -> float:
    with tempfile.TemporaryDirectory() as root:
        zones = []
        for package in (0, 1):
            zone = os.path.join(root, f"intel-rapl:{package}")
            os.makedirs(zone)
            for name, value in (("energy_uj", 123456789), ("max_energy_range_uj", 262143328850)):
                with open(os.path.join(zone, name), "w") as handle:
                    handle.write(f"{value}\n")
            zones.append(zone)
        counter = RaplCounter(zones)
        started = time.perf_counter()
        for _ in range(reads):
            counter.read_j()
        return (time.perf_counter() - started) / reads * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="a directory holding MNIST/raw/")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    variants = {
        "epochs": ["--epochs", "2"],
        "epochs again": ["--epochs", "2"],
        "race": ["--target-accuracy", "0.9999", "--max-epochs", "2"],
        "race, every 50": ["--target-accuracy", "0.9999", "--max-epochs", "2", "--eval-every", "50"],
    }
    names = list(variants)
    measured: dict[str, list[tuple[float, int, int]]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            measured[name].append(run(variants[name], args.data_dir))
    print(f"whole runs: mnist_cnn on real MNIST, 1 CPU rank, 2 epochs each, {args.rounds} rounds in rotating order")
    for name in names:
        rates = [rate for rate, _, _ in measured[name]]
        print(f"  {name:16s} {statistics.median(rates):9.1f} images/s  (min {min(rates):.1f}, max {max(rates):.1f})")
    verdicts = []
    for label, numerator, target in (
        ("race / epochs", "race", TARGET_RATIO),
        ("race, every 50 / epochs", "race, every 50", None),
        ("epochs again / epochs (A/A)", "epochs again", None),
    ):
        ratios = [a[0] / b[0] for a, b in zip(measured[numerator], measured["epochs"], strict=True)]
        median = statistics.median(ratios)
        line = f"  {label:28s} {median:.3f}  (per round: {', '.join(f'{r:.3f}' for r in ratios)})"
        if target is not None:
            verdicts.append(median >= target)
            line += f"  target >= {target}: {'met' if median >= target else 'MISSED'}"
        print(line)
    print("energy counter reads per run (a counting counter in place of NVML or RAPL):")
    for name in ("epochs", "race", "race, every 50"):
        _, reads, steps = measured[name][0]
        print(f"  {name:16s} {reads} reads in {steps} measured steps")
    _, long_reads, long_steps = run(["--steps", "400"], args.data_dir)
    _, short_reads, short_steps = run(["--steps", "40"], args.data_dir)
    print(f"  --steps {short_steps:<6d} {short_reads} reads;  --steps {long_steps}: {long_reads} reads")
    flat = long_reads == short_reads
    verdicts.append(flat)
    print(f"  reads grow with the steps: {'no' if flat else 'YES'}  target: no: {'met' if flat else 'MISSED'}")
    print(f"one RAPL read of two packages (powercap files in a temporary directory): {rapl_read_cost_us():.1f} µs")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
