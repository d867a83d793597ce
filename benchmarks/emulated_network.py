"""The scaling model against measured 2-node runs over an emulated slow network, repeated (needs root).

    sudo python benchmarks/emulated_network.py [--repeats 3] [--rates 200mbit,2gbit] [--out DIR]

For each rate: two network namespaces joined by a veth pair shaped with tc tbf (tests/helpers/emulated_link.py), one
torchrun agent in each pinned to one core with OMP_NUM_THREADS=1, the course CNN at batch 64 on synthetic data,
--repeats times, each followed by `ddp_bench allreduce` over the same link; plus one rank alone on one core with
one thread, for the baseline. Then `ddp_bench report --predict-to 16` over that rate's rows. Rows, allreduce.csv
and each report land under --out/<rate>/; the table of measured against predicted 2-node throughput is printed
and written to --out/model-check.txt.

Target (issue #12): the predicted 2-node images/s within 15 % of the measured at both rates.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The checkout's root (not tests/): the emulation is the test suite's, imported as the package tests.helpers.
sys.path.insert(0, ROOT)

from ddp_bench.launch.discovery import free_port  # noqa: E402
from tests.helpers.emulated_link import cannot_emulate, emulated_link, run_on_both  # noqa: E402

TOLERANCE = 0.15
RUN = ["--device", "cpu", "--batch-size", "64", "--warmup-steps", "10", "--steps", "60"]
ALLREDUCE = ["allreduce", "--device", "cpu", "--max-bytes", str(16 * 2**20), "--iters", "10", "--warmup", "2"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rates", default="200mbit,2gbit")
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "emulated-network-cpu-2core"))
    args = parser.parse_args()
    why = cannot_emulate()
    if why:
        print(f"emulated_network: {why}", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONUNBUFFERED": "1"}
    lines = [
        "rate      2-node images/s measured   predicted (range)          predicted/measured",
    ]
    worst = 0.0
    for rate in args.rates.split(","):
        runs = os.path.join(args.out, rate, "runs")
        alone = ["taskset", "-c", "0", sys.executable, "-m", "ddp_bench", *RUN, "--out", runs, "--launcher", "single"]
        subprocess.run(alone, env={**env, "OMP_NUM_THREADS": "1"}, check=True, capture_output=True, timeout=300)
        with emulated_link(rate) as link:
            for _ in range(args.repeats):
                for verb in (RUN, ALLREDUCE):
                    for result in run_on_both(link, [*verb, "--out", runs], env, free_port(), timeout=300):
                        if result.returncode != 0:
                            print(result.stderr[-3000:], file=sys.stderr)
                            return 1
        report = os.path.join(args.out, rate, "report")
        subprocess.run(
            [sys.executable, "-m", "ddp_bench", "report", runs, "--out", report, "--predict-to", "16"],
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        with open(os.path.join(report, "predictions.csv"), newline="") as handle:
            (two,) = [row for row in csv.DictReader(handle) if row["world_size"] == "2"]
        measured, predicted = float(two["measured_images_per_s"]), float(two["predicted_images_per_s"])
        low, high = float(two["predicted_images_per_s_low"]), float(two["predicted_images_per_s_high"])
        worst = max(worst, abs(predicted / measured - 1))
        lines.append(
            f"{rate:<9} {measured:>10.1f} (median of {args.repeats})  {predicted:>8.1f} ({low:.0f}–{high:.0f})"
            f"{predicted / measured:>16.3f}"
        )
    lines.append(f"largest deviation {worst * 100:.1f} % (target: within {TOLERANCE * 100:.0f} %)")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    with open(os.path.join(args.out, "model-check.txt"), "w", encoding="utf-8") as handle:
        handle.write(text)
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
