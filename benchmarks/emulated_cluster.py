"""The scaling model where it was not fitted, on an emulated 4-node network (needs root).

    sudo python benchmarks/emulated_cluster.py [--repeats 3] [--rates 200mbit,1gbit] [--two-stage-rate 1gbit]

1. Extrapolation: fit on 1 and 2 nodes (one rank each), predict 4, measure 4 on the same network, at each rate
   (tests/emulated_extrapolation.py: every rank has half a core in both, the course CNN at batch 32).
2. Nodes with two ranks each (loopback inside a node, the shaped links between): fit the two-stage model on one node
   and on two, predict 4 nodes x 2 ranks, measure them (a quarter of a core per rank at 2 and 4 nodes; the one-node
   runs, which the intra-node stage is fitted on, half a core).

Rows, allreduce.csv and reports land under --out; the table is printed and written to --out/model-check.txt.
Target (issue #20): the 4-node throughput within 15 % of the prediction at both rates.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from emulated_extrapolation import check_extrapolation, check_two_stage  # noqa: E402
from emulated_link import cannot_emulate  # noqa: E402

TOLERANCE = 0.15


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rates", default="200mbit,1gbit")
    parser.add_argument("--two-stage-rate", default="1gbit")
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "emulated-cluster-cpu-2core"))
    args = parser.parse_args()
    why = cannot_emulate()
    if why:
        print(f"emulated_cluster: {why}", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONUNBUFFERED": "1"}
    lines = [
        f"Extrapolation: fitted on 1 and 2 nodes, 4 predicted; medians of {args.repeats} runs, half a core per rank",
        "rate      2 nodes: predicted / measured   4 nodes: predicted (no-perfect overlap)  measured   pred/meas",
    ]
    worst = 0.0
    for rate in args.rates.split(","):
        result = check_extrapolation(rate, os.path.join(args.out, rate), args.repeats, env)
        worst = max(worst, abs(result.ratio - 1))
        in_sample = result.predicted_2 / result.measured_2
        lines.append(
            f"{rate:<9} {result.predicted_2:>8.1f} / {result.measured_2:<8.1f} ({in_sample:.3f})"
            f"   {result.predicted_4:>8.1f} ({result.predicted_4_low:.0f}-{result.predicted_4_high:.0f})"
            f"          {result.measured_4:>8.1f}   {result.ratio:.3f}"
        )
    lines.append(f"largest deviation at 4 nodes {worst * 100:.1f} % (target: within {TOLERANCE * 100:.0f} %)")
    rate = args.two_stage_rate
    stages = check_two_stage(rate, os.path.join(args.out, f"two-stage-{rate}"), args.repeats, env)
    lines += [
        "",
        f"Two stages (2 ranks per node, loopback inside, {rate} between): fitted on 1 node x 2 and 2 nodes x 2",
        f"2 x 2 predicted {stages.predicted_4:.1f}, measured {stages.measured_4:.1f} "
        f"({stages.predicted_4 / stages.measured_4:.3f}); 4 x 2 predicted {stages.predicted_8:.1f} "
        f"({stages.comm_from_8}), measured {stages.measured_8:.1f}: {stages.ratio:.3f}",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    with open(os.path.join(args.out, "model-check.txt"), "w", encoding="utf-8") as handle:
        handle.write(text)
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
