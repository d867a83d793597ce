"""Tier 1: the committed predicted-against-published table (results/published-validation.txt) is what one run of
benchmarks/published_validation.py gives on the specs under benchmarks/published/, and every spec cites its
figures. The published numbers are the sources' (each spec's [sources]); the predictions are the model's."""

import glob
import os
import subprocess
import sys

from ddp_bench.measurement.prediction import PUBLISHED_RATIOS, PUBLISHED_SETUPS
from ddp_bench.predict.spec import load_spec
from tests.helpers.runs import clean_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = sorted(glob.glob(os.path.join(ROOT, "benchmarks", "published", "*.toml")))


def test_every_published_spec_cites_its_figures():
    assert SPECS
    for path in SPECS:
        spec = load_spec(path)
        assert spec.published, path  # something to check against
        assert {"compute", "published", "allreduce_intra"} <= set(spec.sources), path
        assert all("/" in text for text in spec.sources.values()), path  # a repository path or an address


def test_the_committed_table_is_what_the_code_gives(tmp_path):
    out = tmp_path / "table.txt"
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "published_validation.py"), "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=clean_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with open(os.path.join(ROOT, "results", "published-validation.txt"), encoding="utf-8") as handle:
        assert out.read_text() == handle.read()


def test_the_proposals_published_error_is_the_committed_tables():
    with open(os.path.join(ROOT, "results", "published-validation.txt"), encoding="utf-8") as handle:
        rows = [line.split() for line in handle if line.startswith(tuple(os.path.basename(p)[:-5] for p in SPECS))]
    ratios = [float(row[8]) for row in rows]  # the pred/pub column
    assert len(rows) == PUBLISHED_SETUPS and (min(ratios), max(ratios)) == PUBLISHED_RATIOS
