"""Tier 2: bad input through the real command line. Each case: exit 2, one line on stderr, no traceback,
nothing written (the results directory is not even created), and existing files untouched."""

import os
import struct

import pytest
import torch

from tests.helpers.runs import run_cli

NO_CUDA = not torch.cuda.is_available()


def _truncated_mnist(root) -> str:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 50), ("t10k", 10)):
        header = struct.pack(">BBBBIII", 0, 0, 8, 3, n, 28, 28)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(header + bytes(100))  # cut short
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, n) + bytes(n))
    return str(root)


# (flags, what the one line must say); {tmp} is a fresh temporary directory
CASES = [
    (["--model", "vgg16"], "--model"),
    (["--data", "imagenet"], "--data"),
    (["--launcher", "pbs"], "--launcher"),
    (["--batch-size", "0"], "--batch-size must be positive"),
    (["--batch-size", "-64"], "--batch-size must be positive"),
    (["--steps", "0"], "--steps must be positive"),
    (["--epochs", "0"], "--epochs must be positive"),
    (["--workers", "-2"], "--workers must be zero or more"),
    (["--steps", "3", "--epochs", "1"], "not allowed with argument"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--data", "cifar10"], "mnist_cnn is the course network"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["--batch-size", "70000", "--steps", "1"], "larger than the"),
    (["--data", "mnist", "--data-dir", "{tmp}/absent"], "does not exist"),
    (["--data", "mnist", "--data-dir", "{tmp}"], "python -m ddp_bench download --data mnist"),
    (["--data", "mnist", "--data-dir", "{truncated}"], "corrupt"),
    (["--launcher", "torchrun"], "start with torchrun"),
    (["--launcher", "slurm"], "srun"),
    (["--launcher", "mpi"], "mpiexec"),
    (["--out", "{file}"], "is a file, not a directory"),
    (["--out", "{file}/sub"], "cannot be created"),
]
CASES += [  # CPU requests the CPU cannot honour, refused on any machine
    (["--amp", "fp16"], "--amp fp16 needs a CUDA GPU"),
    (["--backend", "nccl"], "--backend nccl needs CUDA"),
]
if NO_CUDA:  # on a GPU machine this request is valid
    CASES += [(["--device", "cuda"], "no CUDA GPU is visible")]


@pytest.mark.parametrize("flags, fragment", CASES, ids=[" ".join(flags) for flags, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, flags, fragment):
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    values = {"tmp": str(tmp_path), "file": str(keep), "truncated": ""}
    if any("{truncated}" in flag for flag in flags):
        values["truncated"] = _truncated_mnist(tmp_path / "truncated")
    argv = [flag.format(**values) for flag in flags]
    out = tmp_path / "results"
    if "--out" not in argv:
        argv += ["--out", str(out)]
    if "--device" not in argv:
        argv += ["--device", "cpu"]  # these cases mean CPU, on a GPU node too
    before = sorted(os.listdir(tmp_path))

    done = run_cli(argv, timeout=120)

    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ddp_bench: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == before
    assert keep.read_text() == "precious"
