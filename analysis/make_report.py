"""Make the scaling report from results directories; the same code as `python -m ddp_bench report`.

    python analysis/make_report.py results/ ~/projects/def-me/ddp_bench_results --out report/

For notebooks: `from ddp_bench.report.build import build_report` returns the tables as pandas DataFrames
(`report.summary`, `report.tables.runs`) next to the files it writes.
"""

import sys

from ddp_bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["report", *sys.argv[1:]]))
