"""Tier 4, `-m gpu`: the whole GPU path on one CUDA GPU. Every test here skips cleanly where torch sees no GPU
(CI has none); on a GPU node, `python -m pytest -m gpu` runs them. They need no second GPU: NCCL is exercised
by one-rank process groups and the all-reduce benchmark under torchrun with one process."""

import csv
import math
import shutil

import pytest
import torch
from conftest import clean_env, read_rows, run_cli, run_group, torchrun_command

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the gpu tier)"),
]

GPU = ["--device", "cuda"]


def capability() -> tuple[int, int]:
    return torch.cuda.get_device_capability(0)


def run_on_gpu(tmp_path, flags: list[str], timeout: float = 300) -> dict[str, str]:
    done = run_cli([*GPU, *flags, "--out", str(tmp_path)], timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = read_rows(tmp_path)
    return row


def check_gpu_row(row: dict[str, str]) -> None:
    assert row["device"] == "cuda:0" and row["backend"] == "nccl"
    assert row["nccl_version"].count(".") == 2 and row["driver_version"]  # provenance of the GPU stack
    assert "TORCH_NCCL_ASYNC_ERROR_HANDLING=" in row["comm_env"]
    assert row["device_name"] == torch.cuda.get_device_name(0)
    assert 0 < float(row["mfu"]) <= 1, row["mfu"]  # never above 1: TF32 decided for matmuls and convolutions alike
    assert row["cudnn_benchmark"] == "True"
    tf32 = capability() >= (8, 0)
    assert (row["tf32_matmul"], row["tf32_cudnn"]) == (str(tf32), str(tf32))
    # CUDA-event step times agree with the synchronised stage clock: the median step cannot exceed the stage's
    # time per step (data waits only add to the latter), nor be far below it with data on the device.
    per_step_ms = float(row["train_time_s"]) * 1e3 / int(row["steps"])
    assert 0.5 * per_step_ms <= float(row["step_time_median_ms"]) <= 1.05 * per_step_ms


@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels-last"])
def test_precisions_and_layouts(tmp_path, amp, channels_last):
    if amp == "bf16" and capability() < (8, 0):
        pytest.skip("bf16 needs an Ampere or newer GPU")
    flags = ["--amp", amp, "--steps", "50", "--warmup-steps", "10"] + (["--channels-last"] if channels_last else [])
    row = run_on_gpu(tmp_path, flags)
    check_gpu_row(row)
    assert (row["amp"], row["channels_last"]) == (amp, str(channels_last))
    if shutil.which("nvidia-smi"):  # local rank 0 keeps the node's GPU topology beside the rows
        (topology,) = (tmp_path / row["run_id"]).glob("topology-*.txt")
        assert "GPU0" in topology.read_text()
    assert math.isfinite(float(row["final_loss"]))


def test_compile(tmp_path):
    row = run_on_gpu(tmp_path, ["--compile", "--steps", "50", "--warmup-steps", "5"], timeout=600)
    check_gpu_row(row)
    assert float(row["train_time_s"]) < float(row["wall_time_s"]) / 2  # compilation stays in the warm-up


@pytest.mark.parametrize("loader", ["device", "torch"])
def test_both_loaders_on_synthetic_data(tmp_path, loader):
    row = run_on_gpu(tmp_path, ["--loader", loader, "--workers", "2" if loader == "torch" else "0", "--steps", "50"])
    assert row["loader"] == loader
    if loader == "device":  # with the DataLoader, waiting for data makes the stage slower than its steps
        check_gpu_row(row)


@pytest.mark.parametrize("loader", ["device", "torch"])
def test_both_loaders_on_real_mnist_reach_97_percent(tmp_path, mnist_dir, loader):
    row = run_on_gpu(tmp_path, ["--data", "mnist", "--data-dir", mnist_dir, "--loader", loader, "--epochs", "2"])
    assert row["loader"] == loader and float(row["test_accuracy"]) >= 0.97


def test_resnet18_in_fp16_with_channels_last(tmp_path):
    row = run_on_gpu(tmp_path, ["--model", "resnet18", "--batch-size", "128", "--amp", "fp16", "--channels-last"])
    check_gpu_row(row)


def test_allreduce_benchmark_on_nccl(tmp_path):

    command = torchrun_command(
        1, ["allreduce", *GPU, "--max-bytes", str(2**24), "--iters", "5", "--out", str(tmp_path)]
    )
    done = run_group(command, timeout=300, env=clean_env())
    assert done.returncode == 0, done.stderr[-2000:]
    (directory,) = list(tmp_path.iterdir())
    with open(directory / "allreduce.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {(row["backend"], row["device"]) for row in rows} == {("nccl", "cuda:0")}
    assert all(float(row["time_us"]) > 0 for row in rows)


def test_out_of_memory_is_one_line_and_exit_1(tmp_path):
    # ResNet-50 activations for 49,000 CIFAR-sized images run to terabytes: no GPU holds them.
    done = run_cli(
        [*GPU, "--model", "resnet50", "--batch-size", "49000", "--steps", "1", "--warmup-steps", "1",
         "--out", str(tmp_path)],
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("ddp_bench: ")]
    assert len(lines) == 1 and "ran out of memory" in lines[0] and lines[0].endswith("lower --batch-size")
    assert "Traceback" not in done.stderr


def test_bf16_is_refused_on_a_pre_ampere_capability(tmp_path, monkeypatch, capsys):
    from ddp_bench.cli import main

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert main([*GPU, "--amp", "bf16", "--steps", "1", "--out", str(tmp_path)]) == 2
    assert "has no bf16 units, use --amp fp16" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_energy_and_memory_are_read_from_the_gpu(tmp_path):
    row = run_on_gpu(tmp_path, ["--model", "resnet18", "--batch-size", "128", "--steps", "200"])
    if row["energy_source"] != "nvml":  # a pre-Volta GPU, or NVML not installed: the note says which
        pytest.skip(f"no NVML energy counter: {row['energy_note']}")
    energy, seconds = float(row["energy_j"]), float(row["train_time_s"])
    assert energy > 0 and float(row["avg_power_w"]) == pytest.approx(energy / seconds)
    assert 10 < float(row["avg_power_w"]) < 1500  # a GPU under load: tens to hundreds of watts
    assert float(row["job_energy_j"]) == pytest.approx(energy)  # one rank, one GPU
    assert float(row["images_per_joule"]) == pytest.approx(int(row["samples"]) / energy)
    allocated, reserved = float(row["peak_device_allocated_mb"]), float(row["peak_device_reserved_mb"])
    assert 0 < allocated <= reserved
