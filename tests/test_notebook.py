"""Tier 2: the Colab notebook as a new Colab user runs it, executed end to end by a real notebook runner (nbclient +
ipykernel) on the CPU, in a virtualenv that holds this suite's stack (on CI's Colab stack: Colab's Python, torch
2.11, numpy and pandas) and no ddp_bench at all. ddp_bench arrives through the install cell, from an uploaded
`ddp_bench.zip` or from a repository address; torch and torchvision must be exactly what they were before; what it
installs must run from any directory, even one holding a `ddp_bench/` folder. Its GPU-only cells say so and skip,
every run it starts must succeed, and its rows land where it says. Without a source, the install cell stops with
a message saying so."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT
from tests.helpers.rank_rows import read_rows
from tests.helpers.runs import clean_env, run_group

NOTEBOOK = os.path.join(ROOT, "analysis", "colab_t4.ipynb")
VERSIONS = "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.__file__)"


def is_ddp_bench(name: str) -> bool:
    """site-packages entries of an installed ddp_bench (editable or not)."""
    return name == "ddp_bench" or name.startswith(("ddp_bench-", "__editable__.ddp_bench", "__editable___ddp_bench"))


@pytest.fixture
def colab_stack(tmp_path) -> Path:
    """A new virtualenv whose site-packages is this suite's, hard-linked (seconds, not gigabytes), minus ddp_bench.
    pip can add to it and even remove from it without touching the suite's own files."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    source = Path(sysconfig.get_paths()["purelib"])
    target = venv / source.relative_to(sys.prefix)
    try:
        for entry in source.iterdir():
            if is_ddp_bench(entry.name):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.copytree(entry, target / entry.name, symlinks=True, copy_function=os.link)
            else:
                os.link(entry, target / entry.name, follow_symlinks=False)
    except OSError as exc:
        pytest.skip(f"cannot hard-link this suite's site-packages into {tmp_path} ({exc.strerror})")
    python = venv / "bin" / "python"
    probe = run_group([str(python), "-c", "import importlib.util as u; print(u.find_spec('ddp_bench'))"], 60, cwd="/")
    assert probe.stdout.strip() == "None", probe.stderr  # ddp_bench is not there
    return python


def source_files() -> list[str]:
    listed = run_group(["git", "-C", ROOT, "ls-files", "--cached", "--others", "--exclude-standard"], timeout=60)
    if listed.returncode != 0:
        pytest.skip("the checkout is not a git repository: there is nothing to zip or clone as a user would")
    return [name for name in listed.stdout.splitlines() if os.path.isfile(os.path.join(ROOT, name))]


def upload_zip(directory: Path) -> None:
    """ddp_bench.zip as `git archive -o ddp_bench.zip HEAD` makes it, from the working tree."""
    with zipfile.ZipFile(directory / "ddp_bench.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for name in source_files():
            archive.write(os.path.join(ROOT, name), name)


def repository(directory: Path) -> str:
    """A git repository of the working tree, to give the install cell as its REPO_URL."""
    for name in source_files():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.join(ROOT, name), directory / name)
    git = ["git", "-C", str(directory), "-c", "user.name=test", "-c", "user.email=test@example.org"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        assert run_group(git + command, timeout=120).returncode == 0
    return str(directory)


def execute(python: Path, notebook: dict, cwd: Path, env: dict[str, str]) -> dict:
    """Run the notebook top to bottom in `python`'s own kernel; returns it executed (raises with the failing cell)."""
    (cwd / "in.ipynb").write_text(json.dumps(notebook))
    runner = (
        "import nbclient, nbformat\n"
        "notebook = nbformat.read('in.ipynb', as_version=4)\n"
        "nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3').execute()\n"
        "nbformat.write(notebook, 'out.ipynb')\n"
    )
    done = run_group([str(python), "-c", runner], timeout=900, env=env, cwd=str(cwd))
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((cwd / "out.ipynb").read_text())


# slow: its subject is Colab's runtime, so CI runs it on the Colab stack only (about 45 s a source on 2 cores, and a
# hard-linked copy of the stack's gigabytes); the quick command leaves it out as before.
@pytest.mark.slow
@pytest.mark.long
@pytest.mark.parametrize("source", ["uploaded zip", "repository address"])
def test_a_new_colab_user_runs_the_notebook_end_to_end_and_keeps_colabs_torch(tmp_path, colab_stack, mnist_dir, source):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    before = run_group([str(colab_stack), "-c", VERSIONS], timeout=120).stdout
    work = tmp_path / "content"  # Colab's working directory
    work.mkdir()
    with open(NOTEBOOK, encoding="utf-8") as handle:
        notebook = json.load(handle)
    if source == "uploaded zip":
        upload_zip(work)
    else:
        clone = tmp_path / "repo"
        clone.mkdir()
        url = repository(clone)
        (install,) = [cell for cell in notebook["cells"] if 'REPO_URL = ""' in "".join(cell["source"])]
        install["source"] = [line.replace('REPO_URL = ""', f"REPO_URL = {url!r}") for line in install["source"]]
    small = {"STEPS": "3", "EPOCHS": "1", "DATA": mnist_dir, "DEVICE": "cpu"}  # CPU, on a GPU node too
    env = clean_env(**{f"DDP_BENCH_NOTEBOOK_{key}": value for key, value in small.items()})
    executed = execute(colab_stack, notebook, work, env)

    after = run_group([str(colab_stack), "-c", VERSIONS], timeout=120).stdout
    assert after == before and after.strip()  # torch and torchvision untouched
    decoy = tmp_path / "elsewhere"
    (decoy / "ddp_bench").mkdir(parents=True)  # what the old install cell left: a folder named like the package
    version = run_group([str(colab_stack), "-m", "ddp_bench", "--version"], timeout=120, cwd=str(decoy))
    assert version.returncode == 0 and version.stdout.startswith("ddp_bench "), version.stderr[-2000:]

    code = [cell for cell in executed["cells"] if cell["cell_type"] == "code"]
    printed = "".join("".join(output.get("text", "")) for cell in code for output in cell["outputs"])
    assert "device: cpu" in printed and "skipped: no GPU" in printed
    assert f"with torch {before.split()[0].split('+')[0]}" in printed  # the cell says which torch it runs on
    rows = read_rows(work / "colab_results")
    assert sorted(row["tag"] for row in rows) == ["colab-fp32", "colab-mnist", "colab-mnist-dataloader"]
    assert {(row["device"], row["status"]) for row in rows} == {("cpu", "complete")}
    assert {row["torch_version"] for row in rows} == {before.split()[0]}
    assert all(float(row["setup_s"]) > 0 for row in rows)  # the install was timed and recorded
    mnist = [row for row in rows if row["data"] == "mnist"]
    assert all(float(row["test_accuracy"]) > 0.9 for row in mnist)
    with zipfile.ZipFile(work / "colab_results.zip") as archive:
        names = [name.rsplit("/", 1)[-1] for name in archive.namelist()]
    assert names.count("rank0.csv") == 3 and names.count("accuracy.csv") == 2  # the MNIST runs' curves


def test_the_install_cell_says_what_to_do_without_a_repository(tmp_path, colab_stack):
    with open(NOTEBOOK, encoding="utf-8") as handle:
        cells = [cell for cell in json.load(handle)["cells"] if cell["cell_type"] == "code"]
    install = "".join(next(cell["source"] for cell in cells if "REPO_URL =" in "".join(cell["source"])))
    assert "YOUR-ORG" not in install and 'REPO_URL = ""' in install
    imports = "".join(cells[0]["source"]).split("\n\n")[0]  # the first cell's imports
    empty = tmp_path / "content"
    empty.mkdir()
    done = run_group([str(colab_stack), "-c", imports + "\n" + install], timeout=120, cwd=str(empty))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "RuntimeError: ddp_bench is not installed: set REPO_URL in this cell to your ddp_bench repository, or "
        "upload ddp_bench.zip (git archive -o ddp_bench.zip HEAD) in the Files pane, then run this cell again"
    )
    assert os.listdir(empty) == []
