"""Tier 2: a real CPU scaling study made into the Proposal. Strong and weak scaling at 1, 2 and 4 ranks under
torchrun (gloo, --device cpu, tiny runs), the all-reduce benchmark under torchrun at 2 and 4 ranks, then `report
--predict-to 8 --request-epochs 1`: the Proposal section, proposal.csv, proposal.md and proposal.tex, whose tables
pdflatex compiles (Debian's texlive, installed by the fixture where it can be, else the test skips saying why).

Marked slow: the eight launches took 65 s on the project's 2-core machine when it was quiet and 100 to 125 s when
it was not (a 4-rank torchrun alone is 12-14 s, almost all of it five processes importing torch on two cores),
however tiny the runs.
"""

import os
import shutil
import subprocess

import pandas as pd
import pytest

from tests.helpers.runs import clean_env, run_cli, run_torchrun

TEXLIVE = ("texlive-latex-base", "texlive-latex-recommended")  # booktabs is in texlive-latex-recommended
RUN = ["--device", "cpu", "--steps", "3", "--warmup-steps", "1"]
GLOBAL_BATCH = 32  # strong scaling: 32, 16 and 8 images per rank
WEAK_BATCH = 8
COUNTS = (1, 2, 4)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The study's report directory."""
    root = tmp_path_factory.mktemp("study")
    runs = root / "runs"
    env = clean_env(OMP_NUM_THREADS="1")
    for count in COUNTS:
        for scaling, batch in (("weak", WEAK_BATCH), ("strong", GLOBAL_BATCH // count)):
            flags = [*RUN, "--scaling", scaling, "--batch-size", str(batch), "--out", str(runs)]
            done = run_torchrun(count, flags, timeout=120, env=env)
            assert done.returncode == 0, done.stderr[-2000:]
    for count in (2, 4):
        flags = ["allreduce", "--device", "cpu", "--max-bytes", str(2**23), "--iters", "3", "--warmup", "1"]
        done = run_torchrun(count, [*flags, "--out", str(runs)], timeout=120, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
    report = root / "report"
    done = run_cli(["report", str(runs), "--out", str(report), "--predict-to", "8", "--request-epochs", "1"])
    assert done.returncode == 0, done.stderr
    return report


@pytest.mark.slow
@pytest.mark.distributed
def test_a_real_cpu_study_makes_the_proposal(study):
    table = pd.read_csv(study / "proposal.csv", keep_default_na=False)
    weak, strong = (table[table["scaling"] == kind] for kind in ("weak", "strong"))
    assert weak["devices"].tolist() == [1, 2, 4, 8] and strong["devices"].tolist() == [1, 2, 4]
    assert weak["source"].tolist() == ["measured"] * 3 + ["predicted"]
    assert set(strong["source"]) == {"measured"} and set(strong["global_batch_size"]) == {GLOBAL_BATCH}
    assert strong["batch_size"].tolist() == [32, 16, 8] and weak["batch_size"].tolist() == [WEAK_BATCH] * 4
    assert set(table["rgu_note"]) == {"CPU ranks: RGUs are defined for GPU models only"}
    assert (table["device_hours"] > 0).all() and (table["rgu_years"] == "").all()
    assert (
        table.loc[table["source"] == "predicted", "trust"]
        .str.startswith("extrapolation, ×2 past the largest measured count (4); checked error ")
        .all()
    )
    text = (study / "summary.md").read_text()
    proposal = text[text.index("## Proposal") :]
    for part in ("We measured weak scaling", "We measured strong scaling", "GPU numbers: these are CPU ranks"):
        assert part in proposal
    assert "(weak)" in proposal and "(strong)" in proposal and "| *predicted* | 8 |" in proposal
    # the Scaling model section: the backtest predicted 4 ranks from 1 and 2 and the all-reduce at 2
    assert "- checked: 4 predicted from 1 and 2 alone (×2 past them):" in text
    predictions = pd.read_csv(study / "predictions.csv").set_index("world_size")
    assert predictions["position"].tolist() == ["measured"] * 3 + ["extrapolation"]
    assert predictions.loc[4, "error_here"] == pytest.approx(
        predictions.loc[4, "predicted_images_per_s"] / predictions.loc[4, "measured_images_per_s"] - 1
    )
    assert (study / "proposal.md").read_text().startswith("# Proposal")


@pytest.fixture(scope="session")
def pdflatex() -> str:
    """pdflatex; installed with apt-get where this runs as root on Debian, else the test skips saying why."""
    found = shutil.which("pdflatex")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(f"no pdflatex, and installing it needs apt-get as root: apt-get install -y {' '.join(TEXLIVE)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        done = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", *TEXLIVE],
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"no pdflatex: apt-get install {' '.join(TEXLIVE)} took over 900 s")
    found = shutil.which("pdflatex")
    if done.returncode != 0 or not found:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"no pdflatex: apt-get install {' '.join(TEXLIVE)} failed: {last}")
    return found


@pytest.mark.slow
@pytest.mark.distributed
def test_the_proposal_tables_compile_with_pdflatex(study, pdflatex, tmp_path):
    shutil.copy(study / "proposal.tex", tmp_path / "proposal.tex")
    (tmp_path / "document.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n\\input{proposal.tex}\n\\end{document}\n"
    )
    done = subprocess.run(
        [pdflatex, "-interaction=nonstopmode", "-halt-on-error", "document.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "document.pdf").stat().st_size > 10_000
    log = (tmp_path / "document.log").read_text(errors="replace")
    assert "Undefined control sequence" not in log and "Missing character" not in log
    assert "Overfull \\hbox" not in log  # the tables fit an article's text width
