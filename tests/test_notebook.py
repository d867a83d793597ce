"""Tier 2: the Colab notebook, executed end to end by a real notebook runner (nbclient + ipykernel) on the CPU:
its GPU-only cells say so and skip, every run it starts must succeed, and its rows land where it says. Also:
without ddp_bench and without a repository address, its install cell stops with a message saying so."""

import json
import os
import subprocess
import sys
import zipfile

import pytest
from conftest import clean_env, read_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "analysis", "colab_t4.ipynb")


def test_the_colab_notebook_runs_end_to_end_on_cpu(tmp_path, mnist_dir, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    small = {"STEPS": "3", "EPOCHS": "1", "DATA": mnist_dir, "DEVICE": "cpu"}  # CPU, on a GPU node too
    for name, value in clean_env(**{f"DDP_BENCH_NOTEBOOK_{key}": value for key, value in small.items()}).items():
        monkeypatch.setenv(name, value)  # the kernel inherits this process's environment
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its output, if any cell fails
    printed = "".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert "device: cpu" in printed and "skipped: no GPU" in printed
    rows = read_rows(tmp_path / "colab_results")
    assert sorted(row["tag"] for row in rows) == ["colab-fp32", "colab-mnist", "colab-mnist-dataloader"]
    assert {(row["device"], row["status"]) for row in rows} == {("cpu", "complete")}
    mnist = [row for row in rows if row["data"] == "mnist"]
    assert all(float(row["test_accuracy"]) > 0.9 for row in mnist)
    with zipfile.ZipFile(tmp_path / "colab_results.zip") as archive:
        names = [name.rsplit("/", 1)[-1] for name in archive.namelist()]
    assert names.count("rank0.csv") == 3 and names.count("accuracy.csv") == 2  # the MNIST runs' curves


def test_the_install_cell_says_what_to_do_without_a_repository(tmp_path):
    with open(NOTEBOOK, encoding="utf-8") as handle:
        cells = [cell for cell in json.load(handle)["cells"] if cell["cell_type"] == "code"]
    install = "".join(next(cell["source"] for cell in cells if "REPO_URL =" in "".join(cell["source"])))
    assert "YOUR-ORG" not in install and 'REPO_URL = ""' in install
    # A Python without ddp_bench (isolated: no site-packages), in an empty directory: nothing to install from.
    script = "import importlib.util, os, shutil, subprocess, sys, time\n" + install
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "RuntimeError: ddp_bench is not installed: set REPO_URL in this cell to your ddp_bench repository, or "
        "upload ddp_bench.zip (git archive -o ddp_bench.zip HEAD) in the Files pane, then run this cell again"
    )
    assert os.listdir(tmp_path) == []
