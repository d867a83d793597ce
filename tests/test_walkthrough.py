"""The walk-throughs run as written: README's first scaling study (1, 2 and 4 ranks and the all-reduce beside each,
then the report) and docs/own-models.md's (a model file and an image folder made from nothing, one run, a 1-2-4 rank
study under torchrun, and the report with its Proposal)."""

from __future__ import annotations

import os
import re

import pytest

from tests.helpers.paths import BIN, ROOT
from tests.helpers.runs import clean_env, run_group


def _block(path: str, marker: str) -> str:
    """The first ```bash block after `marker` in `path` (relative to the checkout)."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        text = handle.read()
    section = text[text.index(marker) :]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def _run(script: str, tmp_path) -> None:
    env = clean_env(PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONPATH=ROOT)
    done = run_group(["bash", "-e", "-c", script], timeout=840, env=env, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow  # six launches, two of them on 4 ranks
@pytest.mark.timeout(900)
def test_the_readme_first_scaling_study_runs_as_written(tmp_path):
    _run(_block("README.md", "## A first scaling study"), tmp_path)
    proposal = (tmp_path / "study-report" / "proposal.md").read_text(encoding="utf-8")
    assert "| measured | 4 |" in proposal and "| *predicted* | 16 |" in proposal
    assert (tmp_path / "study-report" / "summary.md").is_file()


@pytest.mark.slow  # about 2 minutes on two cores: seven launches, four of them on 4 ranks
@pytest.mark.timeout(900)
def test_the_own_models_walkthrough_runs_as_written(tmp_path):
    _run(_block("docs/own-models.md", "**Walk-through**"), tmp_path)
    proposal = (tmp_path / "study-report" / "proposal.md").read_text(encoding="utf-8")
    assert re.search(r"mymodel\.py:build \(sha256 [0-9a-f]{12}, [\d,]+ parameters\) imagefolder 3x32x32", proposal)
    assert "| measured | 4 |" in proposal and "| *predicted* | 16 |" in proposal
