"""Tier 1: a torch that cannot drive the node's GPUs is refused before training, in one line that names the fix:
a CPU-only build on a GPU node, a build for a newer CUDA than the driver runs, a build without kernels for the
GPU's compute capability. torch's and nvidia-smi's answers are substituted: no GPU is needed."""

import pytest
import torch

from ddp_bench.cli import main
from ddp_bench.config import BenchConfig
from ddp_bench.errors import UsageError
from ddp_bench.launch import cuda_build, hardware
from ddp_bench.launch.cuda_build import DriverView, TorchView, cuda_problem, describe, has_kernels
from ddp_bench.launch.launchers import LaunchInfo

PYPI_2_15 = ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120")  # torch 2.15's wheel, CUDA 13.2
H100 = ("NVIDIA H100 80GB HBM3", (9, 0))
V100 = ("Tesla V100-SXM2-16GB", (7, 0))


def view(cuda="13.2", available=True, arch=PYPI_2_15, devices=(H100,)) -> TorchView:
    return TorchView("2.15.0+cu132", cuda, available, arch if available else (), devices if available else ())


@pytest.mark.parametrize(
    "arch, capability, runs",
    [
        (PYPI_2_15, (7, 0), False),  # V100 on a CUDA 13 build
        (PYPI_2_15, (7, 5), True),  # T4
        (PYPI_2_15, (8, 9), True),  # L40S: sm_86 machine code runs on 8.9
        (("sm_50", "sm_80", "sm_90"), (8, 6), True),
        (("sm_80", "sm_90a"), (9, 0), True),  # arch-specific code, on exactly its capability
        (("sm_80", "sm_90a"), (10, 0), False),  # ... and not beyond, nor sm_80 across a major version
        (("sm_80", "compute_80"), (12, 0), True),  # PTX compiles for anything newer
        ((), (8, 0), False),
    ],
)
def test_which_builds_have_kernels_for_which_gpus(arch, capability, runs):
    assert has_kernels(arch, capability) is runs


def test_a_gpu_this_build_can_drive_is_fine():
    assert cuda_problem(view(), None, {}) == ""


@pytest.mark.parametrize(
    "arch, devices",
    [
        (("gfx90a", "gfx942"), (("AMD Instinct MI250X", (9, 0)),)),  # a ROCm build names AMD targets
        ((), (H100,)),  # get_arch_list() is [] where the build reports no arch flags
    ],
    ids=["rocm", "no-arch-list"],
)
def test_builds_whose_kernels_cannot_be_read_are_not_refused(arch, devices):
    assert cuda_problem(view(cuda="", arch=arch, devices=devices), None, {}) == ""


def test_a_v100_under_a_cuda_13_build_is_told_which_build_keeps_its_kernels():
    problem = cuda_problem(view(devices=(V100,)), None, {})
    assert problem.startswith("Tesla V100-SXM2-16GB has compute capability 7.0, but torch 2.15.0+cu132 (CUDA 13.2)")
    assert "kernels for sm_75 sm_80 sm_86 sm_90 sm_100 sm_120 only" in problem
    assert "https://download.pytorch.org/whl/cu126" in problem and "module load" in problem


def test_a_gpu_newer_than_the_build_is_told_to_upgrade():
    problem = cuda_problem(view(arch=("sm_50", "sm_80", "sm_90"), devices=(("NVIDIA B200", (10, 0)),)), None, {})
    assert "compute capability 10.0" in problem and "install a newer torch" in problem


def test_a_driver_older_than_the_builds_cuda_names_the_build_for_the_driver():
    problem = cuda_problem(view(available=False), DriverView(4, "550.90.07"), {})
    assert problem == (
        "nvidia-smi sees 4 GPU(s) (driver 550.90.07), but torch 2.15.0+cu132 is built for CUDA 13.2, which needs "
        "driver 580 or newer: install a build for CUDA 12 (pip install torch --index-url "
        "https://download.pytorch.org/whl/cu126), or `module load` the cluster's own torch or a newer driver"
    )


def test_a_cpu_only_build_on_a_gpu_node_is_told_to_install_the_cuda_build():
    problem = cuda_problem(TorchView("2.13.0+cpu", "", False, (), ()), DriverView(4, "580.65.06"), {})
    assert problem.startswith("nvidia-smi sees 4 GPU(s) (driver 580.65.06), but torch 2.13.0+cpu is a CPU-only build")
    assert "pip install --no-index torch" in problem and "module load conda" in problem and "--device cpu" in problem


@pytest.mark.parametrize("hidden", ["", "-1"])
def test_gpus_hidden_on_purpose_or_absent_are_no_problem(hidden):
    assert cuda_problem(view(available=False), DriverView(4, "550.90.07"), {"CUDA_VISIBLE_DEVICES": hidden}) == ""
    assert cuda_problem(view(available=False), None, {}) == ""  # no nvidia-smi: a CPU node


def one_rank() -> LaunchInfo:
    return LaunchInfo("single", 0, 0, 1, 1, 0, 1, "127.0.0.1", 0)


def old_driver_node(monkeypatch) -> None:
    """A GPU node whose driver (525) is older than this torch's CUDA needs: torch sees no GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.2")
    monkeypatch.setattr(hardware, "driver_view", lambda: DriverView(2, "525.60.13"))


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_a_gpu_node_whose_gpus_torch_cannot_use_never_trains_on_the_cpu(monkeypatch, device):
    old_driver_node(monkeypatch)
    with pytest.raises(UsageError, match=r"built for CUDA 13\.2, which needs driver 580 or newer"):
        hardware.plan_hardware(BenchConfig(device=device), one_rank(), {})
    plan = hardware.plan_hardware(BenchConfig(device="cpu"), one_rank(), {})  # on purpose: allowed
    assert plan.device.type == "cpu"


def test_the_refusal_is_one_line_and_exit_2_before_anything_is_written(monkeypatch, tmp_path, capsys):
    old_driver_node(monkeypatch)
    assert main(["--steps", "1", "--out", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ddp_bench: error: nvidia-smi sees 2 GPU(s) (driver 525.60.13)")
    assert not (tmp_path / "results").exists()


def test_check_shows_the_build_its_cuda_the_driver_and_the_kernels(monkeypatch, capsys):
    old_driver_node(monkeypatch)
    monkeypatch.setattr(cuda_build, "driver_view", lambda: DriverView(2, "525.60.13"))
    assert main(["check", "--device", "cpu"]) == 0  # the CPU is what was asked for
    shown = capsys.readouterr().out
    assert "CUDA 13.2" in shown and "driver 525.60.13" in shown and "2 GPU(s)" in shown
    assert main(["check"]) == 2  # auto on this node: refused, and check says why
    assert "needs driver 580 or newer" in capsys.readouterr().out


def test_describe_says_what_a_build_is():
    line = describe(view(), DriverView(8, "580.65.06"))
    assert line == (
        "torch 2.15.0+cu132 · CUDA 13.2 · driver 580.65.06, 8 GPU(s) seen by nvidia-smi · "
        "kernels: sm_75 sm_80 sm_86 sm_90 sm_100 sm_120"
    )


def test_several_ranks_on_mig_slices_are_refused_and_one_rank_on_a_slice_is_not(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3 MIG 3g.40gb")
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(PYPI_2_15))
    slice_env = {"CUDA_VISIBLE_DEVICES": "MIG-2a5bc3d0-1111-2222-3333-444455556666"}
    two = LaunchInfo("slurm", 1, 0, 2, 1, 1, 2, "h", 1)
    with pytest.raises(UsageError, match=r"^2 ranks on MIG slices .*: a job may hold one MIG slice"):
        hardware.plan_hardware(BenchConfig(), two, slice_env)
    assert str(hardware.plan_hardware(BenchConfig(), one_rank(), slice_env).device) == "cuda:0"
