"""The scaling model against published multi-GPU measurements: every spec under benchmarks/published/, one run of
one code path (`predict --spec`'s predict_rows) with the same defaults for every setup, no per-setup constants.

    python benchmarks/published_validation.py [--out results/published-validation.txt]

Each spec cites its figures in its [sources] table; its [published] table holds what the source measured at the
predicted counts. The table sets the prediction and its band beside it.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ddp_bench.predict.run import PARTIAL_NODE_SHARE, predict_rows  # noqa: E402
from ddp_bench.predict.spec import load_spec  # noqa: E402

HEADER = (
    "setup                          GPUs nodes  predicted  band (low-high)    width  published  pred/pub  in band"
    "  compute from"
)


def table(directory: str) -> str:
    lines = [HEADER]
    for path in sorted(glob.glob(os.path.join(directory, "*.toml"))):
        spec = load_spec(path)
        for row in predict_rows(spec):
            published = row["published_images_per_s"]
            if published is None:
                continue
            inside = "yes" if row["low"] <= published <= row["high"] else "NO"
            width = (row["high"] - row["low"]) / row["images_per_s"]
            lines.append(
                f"{os.path.basename(path)[:-5]:<30} {row['gpus']:>4} {row['nodes']:>5}  {row['images_per_s']:>9,.0f}  "
                f"{row['low']:>7,.0f}-{row['high']:<7,.0f}  {width * 100:>5.1f} %  {published:>9,.0f}  "
                f"{row['images_per_s'] / published:>8.3f}  {inside:>7}  "
                f"{'part of a node' if row['partial_node'] else 'a full node'}"
            )
    lines += [
        "",
        f"Same defaults for every setup: partial-node widening {PARTIAL_NODE_SHARE * 100:.1f} % of compute (taken from",
        "the DGX A100 AMP row's own source, so that row's band is not an independent check), buckets from the",
        "torchvision model on the meta device, readiness assumed (band: no to perfect overlap).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", default=os.path.join(ROOT, "benchmarks", "published"))
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "published-validation.txt"))
    args = parser.parse_args()
    text = table(args.specs)
    print(text, end="")
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
