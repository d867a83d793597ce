"""README's walk-through ("Your own network and your own images") runs as written: a model file and an image folder
made from nothing, one run, a 1-2-4 rank study under torchrun, and the report with its Proposal."""

from __future__ import annotations

import os
import re

import pytest

from tests.helpers.paths import BIN, ROOT
from tests.helpers.runs import clean_env, run_group


def _walkthrough() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    section = text[text.index("**Walk-through**") :]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow  # about 2 minutes on two cores: seven launches, four of them on 4 ranks
@pytest.mark.timeout(900)
def test_the_readme_walkthrough_runs_as_written(tmp_path):
    env = clean_env(PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONPATH=ROOT)
    done = run_group(["bash", "-e", "-c", _walkthrough()], timeout=840, env=env, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    proposal = (tmp_path / "study-report" / "proposal.md").read_text(encoding="utf-8")
    assert re.search(r"mymodel\.py:build \(sha256 [0-9a-f]{12}, [\d,]+ parameters\) imagefolder 3x32x32", proposal)
    assert "| measured | 4 |" in proposal and "| *predicted* | 16 |" in proposal
