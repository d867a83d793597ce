"""Tier 1: the committed predicted-against-published table (results/published-validation.txt) is what one run of
benchmarks/published_validation.py gives on the specs under benchmarks/published/, and every spec cites its
figures. The published numbers are the sources' (each spec's [sources]); the predictions are the model's."""

import glob
import os
import re
import subprocess
import sys

import pytest

from ddp_bench.measurement.prediction import (
    PUBLISHED_IN_BAND,
    PUBLISHED_MAX_NODES,
    PUBLISHED_RATIOS,
    PUBLISHED_ROWS,
    PUBLISHED_SETUPS,
)
from ddp_bench.predict.spec import load_spec
from tests.helpers.runs import clean_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = sorted(glob.glob(os.path.join(ROOT, "benchmarks", "published", "*.toml")))


def test_every_published_spec_cites_its_figures():
    assert SPECS
    for path in SPECS:
        spec = load_spec(path)
        assert spec.published, path  # something to check against
        assert set(spec.published) <= set(spec.gpus), path  # every published count is predicted
        needed = {"compute", "published", "batch", "allreduce_intra"}  # the batch per GPU sets the compute step
        if spec.inter is not None:
            needed.add("allreduce_inter")  # a network stage needs its own figures
        assert needed <= set(spec.sources), (path, needed - set(spec.sources))
        assert all("/" in text for text in spec.sources.values()), path  # a repository path or an address


def test_the_published_set_meets_the_issues_floor():
    """Issue #25 §4: five setups or more, one or more of them past one node, every one with its link figures."""
    specs = [load_spec(path) for path in SPECS]
    assert len(specs) >= 5
    assert any(max(spec.published) > spec.node_gpus for spec in specs)
    for spec in specs:
        assert spec.intra is not None or spec.node_gpus == 1, spec.path
        assert spec.inter is not None or max(spec.gpus) <= spec.node_gpus, spec.path


@pytest.mark.long
def test_the_committed_table_is_what_the_code_gives(tmp_path):
    out = tmp_path / "table.txt"
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "published_validation.py"), "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=clean_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with open(os.path.join(ROOT, "results", "published-validation.txt"), encoding="utf-8") as handle:
        assert out.read_text() == handle.read()


def _committed_rows() -> list[list[str]]:
    with open(os.path.join(ROOT, "results", "published-validation.txt"), encoding="utf-8") as handle:
        names = tuple(os.path.basename(path)[:-5] + " " for path in SPECS)
        return [line.split() for line in handle if line.startswith(names)]


def test_the_proposals_published_error_is_the_committed_tables():
    rows = _committed_rows()
    ratios = [float(row[8]) for row in rows]  # the pred/pub column
    assert len({row[0] for row in rows}) == PUBLISHED_SETUPS == len(SPECS)
    assert len(rows) == PUBLISHED_ROWS and (min(ratios), max(ratios)) == PUBLISHED_RATIOS
    assert max(int(row[2]) for row in rows) == PUBLISHED_MAX_NODES
    assert sum(row[9] == "yes" for row in rows) == PUBLISHED_IN_BAND


def test_readmes_known_errors_are_the_committed_tables():
    """README's "How far the predictions hold" sums the committed tables up: per published source its ranges, counts
    and nodes are what results/published-validation.txt holds, and the emulated cluster's ratios are
    model-check.txt's."""
    rows = _committed_rows()
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read().splitlines()
    sources = (
        ("dgx-a100-", "NVIDIA's published DGX A100 tables"),
        ("dlperf-", "OneFlow's DLPerf"),
        ("lambda-", "Lambda's published benchmark"),
    )
    assert all(row[0].startswith(tuple(prefix for prefix, _ in sources)) for row in rows)  # every row is summed up
    for prefix, label in sources:
        mine = [row for row in rows if row[0].startswith(prefix)]
        ratios = [float(row[8]) for row in mine]
        line = next(line for line in readme if line.startswith(f"| {label}:"))
        assert f"{len({row[0] for row in mine})} setups" in line
        assert f"{min(ratios):.3f}–{max(ratios):.3f}" in line
        assert f"{sum(row[9] == 'yes' for row in mine)} of {len(mine)}" in line
        nodes = max(int(row[2]) for row in mine)
        assert (f"up to {nodes} nodes" if nodes > 1 else "on 1 node") in line
    with open(os.path.join(ROOT, "results", "emulated-cluster-cpu-2core", "model-check.txt"), encoding="utf-8") as f:
        check = f.read()
    four_nodes = [re.search(rf"^{rate} .* (\d\.\d{{3}})$", check, re.M).group(1) for rate in ("200mbit", "1gbit")]
    two_stage = re.search(r"^2 x 2 predicted .*: (\d\.\d{3})$", check, re.M).group(1)
    line = next(line for line in readme if line.startswith("| the emulated cluster"))
    assert f"| {four_nodes[0]}, {four_nodes[1]}; {two_stage} |" in line
