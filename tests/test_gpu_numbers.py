"""Tier 1 + 2: the GPU path's numbers, checked where no GPU is needed: the math mode a plan decides and records,
MFU that can never exceed 1, the matmul peak measured before training, the exposed-comm control running the
module, optimizer and loss scaler the run trained, and which failures count as a lost peer. The same paths on a
real GPU are the `gpu` tier (tests/test_gpu.py)."""

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ddp_bench.cli import main
from ddp_bench.config import BenchConfig
from ddp_bench.data import SPECS, Shard, build_batches
from ddp_bench.launch.distributed import is_peer_failure
from ddp_bench.launch.hardware import HardwarePlan, apply_math_mode, plan_hardware
from ddp_bench.launch.job import Job
from ddp_bench.launch.launchers import LaunchInfo
from ddp_bench.measurement.perf import model_flops_utilization
from ddp_bench.models import MnistCNN
from ddp_bench.training.comm_control import comm_control
from ddp_bench.training.loop import Precision
from tests.helpers.launch_info import info


@pytest.mark.parametrize(
    "capability, tf32_flag, tf32",
    [((8, 0), "on", True), ((9, 0), "off", False), ((7, 5), "on", False)],
    ids=["A100 on", "H100 off", "T4 has none"],
)
def test_a_gpu_plan_decides_tf32_and_autotuning(two_fake_gpus, monkeypatch, capability, tf32_flag, tf32):  # noqa: F811
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    plan = plan_hardware(BenchConfig(tf32=tf32_flag), info(), {})
    assert (plan.tf32, plan.cudnn_benchmark) == (tf32, True)


def test_a_cpu_plan_claims_no_gpu_math_mode():
    plan = plan_hardware(BenchConfig(device="cpu"), info(), {})
    assert (plan.tf32, plan.cudnn_benchmark) == (False, False)


def test_the_math_mode_is_applied_to_matmuls_and_convolutions_alike():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        apply_math_mode(HardwarePlan(torch.device("cpu"), "gloo", 1, tf32=True, cudnn_benchmark=True))
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.benchmark
        apply_math_mode(HardwarePlan(torch.device("cpu"), "gloo", 1, tf32=False, cudnn_benchmark=False))
        # torch's own defaults differ (matmul off, cuDNN on): the plan makes them agree
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


@pytest.mark.parametrize(
    "achieved, peak, expected",
    [(5e12, 1e13, 0.5), (1e13, 1e13, 1.0), (1.2e13, 1e13, float("nan")), (1e12, 0.0, float("nan"))],
)
def test_mfu_never_exceeds_one(achieved, peak, expected):
    mfu = model_flops_utilization(achieved, peak)
    assert mfu == pytest.approx(expected, nan_ok=True)


def test_rows_record_the_math_mode_and_the_peak_is_measured_before_training(tmp_path, monkeypatch):
    order = []
    import ddp_bench.run as run_module

    measure, train = run_module.measured_peak_flops, run_module.run_training
    monkeypatch.setattr(run_module, "measured_peak_flops", lambda *a, **k: order.append("peak") or measure(*a, **k))
    monkeypatch.setattr(run_module, "run_training", lambda **k: order.append("train") or train(**k))
    assert main(["--device", "cpu", "--steps", "2", "--warmup-steps", "1", "--out", str(tmp_path)]) == 0
    assert order == ["peak", "train"]
    from tests.helpers.rank_rows import read_rows

    (row,) = read_rows(tmp_path)
    assert (row["tf32_matmul"], row["tf32_cudnn"], row["cudnn_benchmark"]) == ("False", "False", "False")
    assert 0 < float(row["mfu"]) <= 1


class CountingScaler:
    """A loss scaler that only counts: proves the control phase steps with the run's own scaler."""

    def __init__(self) -> None:
        self.updates = 0

    def scale(self, loss):
        return loss

    def step(self, optimizer):
        optimizer.step()

    def update(self):
        self.updates += 1


class CompiledStandIn(torch.nn.Module):
    """What torch.compile returns, reduced to what the control phase relies on: `_orig_mod` is the DDP module,
    and calling the wrapper runs it. Counts the calls."""

    def __init__(self, ddp: DistributedDataParallel) -> None:
        super().__init__()
        self._orig_mod = ddp
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self._orig_mod(x)


def test_exposed_comm_steps_run_the_compiled_module_with_the_runs_scaler():
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model = MnistCNN()
        wrapper = CompiledStandIn(DistributedDataParallel(model))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        scaler = CountingScaler()
        shard = Shard(0, 1, 8, 0, torch.device("cpu"), False)
        batches = build_batches("synthetic", "", SPECS["mnist"], "device", shard, 0, train=True)
        job = Job(LaunchInfo("single", 0, 0, 1, 1, 0, 1, "127.0.0.1", 0), torch.device("cpu"), store, None)
        control = comm_control(wrapper, optimizer, scaler, batches, Precision("off", "cpu"), job, 3, readiness_steps=2)
    finally:
        dist.destroy_process_group()
    assert control.exposed_comm_ms >= 0
    # every step, the untimed first pair and the 2 gradient-readiness steps included
    assert wrapper.calls == scaler.updates == 2 * (3 + 1) + 2


@pytest.mark.parametrize(
    "error, lost",
    [
        (RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:4431"), True),
        (
            RuntimeError(
                "NCCL error in: ProcessGroupNCCL.cpp:1970, remote process exited or there was a network error, "
                "NCCL version 2.21.5\nncclRemoteError: A call failed possibly due to a network error"
            ),
            True,
        ),
        (dist.DistNetworkError("Broken pipe"), True),
        (RuntimeError("NCCL error in: ProcessGroupNCCL.cpp:1970, invalid usage, NCCL version 2.21.5"), False),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), False),
        (ValueError("Connection closed by peer"), False),  # not from a collective
    ],
    ids=["gloo peer closed", "NCCL remote error", "network error", "NCCL invalid usage", "CUDA error", "ValueError"],
)
def test_only_failures_that_name_a_peer_count_as_a_lost_peer(error, lost):
    assert is_peer_failure(error) is lost
