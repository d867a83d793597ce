"""The scaling model where it was not fitted, on an emulated 4-node network (needs root).

    sudo python benchmarks/emulated_cluster.py [--repeats 3] [--rates 200mbit,1gbit] [--two-stage-rate 1gbit]
        [--earlier results/emulated-cluster-cpu-2core-earlier]

1. Extrapolation: fit on 1 and 2 nodes (one rank each), predict 4, measure 4 on the same network, at each rate
   (tests/helpers/emulated_extrapolation.py: every rank has half a core in both, the course CNN at batch 32).
2. Nodes with two ranks each (loopback inside a node, the shaped links between): fit the two-stage model on one node
   and on two, predict 4 nodes x 2 ranks, measure them (a quarter of a core per rank at 2 and 4 nodes; the one-node
   runs, which the intra-node stage is fitted on, half a core).

Rows, allreduce.csv and reports land under --out; the table is printed and written to --out/model-check.txt.
--earlier re-evaluates saved extrapolation checks with today's model: every directory under
it named <rate>-<when> holding fit/ and check/ rows. --evaluate-only measures nothing: it re-evaluates the rows
already under --out (after a change to the model, or to finish a run whose table was not written).
Target (issue #20): the 4-node throughput within 15 % of the prediction at both rates.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The checkout's root (not tests/): the emulation is the test suite's, imported as the package tests.helpers.
sys.path.insert(0, ROOT)

from tests.helpers.emulated_extrapolation import (  # noqa: E402
    Extrapolation,
    check_extrapolation,
    check_two_stage,
    evaluate_extrapolation,
    evaluate_two_stage,
)
from tests.helpers.emulated_link import cannot_emulate  # noqa: E402

TOLERANCE = 0.15
HEADER = "run                      2 nodes: predicted / measured   4 nodes: predicted (band)  measured   pred/meas"


def _line(name: str, result: Extrapolation) -> str:
    in_sample = result.predicted_2 / result.measured_2
    return (
        f"{name:<24} {result.predicted_2:>8.1f} / {result.measured_2:<8.1f} ({in_sample:.3f})"
        f"   {result.predicted_4:>8.1f} ({result.predicted_4_low:.0f}-{result.predicted_4_high:.0f})"
        f"      {result.measured_4:>8.1f}   {result.ratio:.3f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rates", default="200mbit,1gbit")
    parser.add_argument("--two-stage-rate", default="1gbit")
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "emulated-cluster-cpu-2core"))
    parser.add_argument("--earlier", help="saved checks to re-evaluate: <rate>-<when>/{fit,check}/ under it")
    parser.add_argument("--evaluate-only", action="store_true", help="re-evaluate the rows under --out")
    parser.add_argument("--skip", default="", help="parts not to measure now: extrapolation, two-stage")
    args = parser.parse_args()
    why = cannot_emulate()
    if why:
        print(f"emulated_cluster: {why}", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONUNBUFFERED": "1"}
    lines = [
        f"Extrapolation: fitted on 1 and 2 nodes, 4 predicted; medians of {args.repeats} runs, half a core per rank",
        HEADER,
    ]
    worst = 0.0
    skip = set(filter(None, args.skip.split(",")))
    for rate in [] if "extrapolation" in skip else args.rates.split(","):
        out = os.path.join(args.out, rate)
        if args.evaluate_only:
            result = evaluate_extrapolation(rate, out, env)
        else:
            result = check_extrapolation(rate, out, args.repeats, env)
        worst = max(worst, abs(result.ratio - 1))
        lines.append(_line(rate, result))
    lines.append(f"largest deviation at 4 nodes {worst * 100:.1f} % (target: within {TOLERANCE * 100:.0f} %)")
    if args.earlier:
        lines += ["", f"Earlier checks, re-evaluated from their rows ({os.path.relpath(args.earlier, ROOT)})", HEADER]
        for name in sorted(os.listdir(args.earlier)):
            if not os.path.isdir(os.path.join(args.earlier, name, "fit")):
                continue  # its README
            rate = name.split("-")[0]
            with tempfile.TemporaryDirectory() as scratch:  # the saved rows stay as they are
                for part in ("fit", "check"):
                    shutil.copytree(os.path.join(args.earlier, name, part), os.path.join(scratch, part))
                lines.append(_line(name, evaluate_extrapolation(rate, scratch, env)))
    rate = args.two_stage_rate
    if "two-stage" in skip:
        print("\n".join(lines))
        return 0  # a part of the run only: no table written
    out = os.path.join(args.out, f"two-stage-{rate}")
    if args.evaluate_only:
        stages = evaluate_two_stage(rate, out, env)
    else:
        stages = check_two_stage(rate, out, args.repeats, env)
    lines += [
        "",
        f"Two stages (2 ranks per node, loopback inside, {rate} between): fitted on 1 node x 2 and 2 nodes x 2",
        f"2 x 2 predicted {stages.predicted_4:.1f}, measured {stages.measured_4:.1f} "
        f"({stages.predicted_4 / stages.measured_4:.3f}); 4 x 2 predicted {stages.predicted_8:.1f} "
        f"({stages.comm_from_8}), "
        f"measured {stages.measured_8:.1f}: {stages.ratio:.3f}",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if skip:
        return 0  # a part of the run only: no table written
    with open(os.path.join(args.out, "model-check.txt"), "w", encoding="utf-8") as handle:
        handle.write(text)
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
