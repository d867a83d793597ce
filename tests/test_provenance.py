"""Tier 1 + 2: provenance. Rows say which NCCL, driver and NCCL settings produced them, one rank per GPU node
keeps the node's topology beside the rows, and the report names what differs between runs it compares."""

import os
import stat

import pytest
import torch

from ddp_bench.cli import main
from ddp_bench.launch.context import collect_context, comm_env
from ddp_bench.launch.distributed import apply_comm_defaults
from ddp_bench.report.build import build_report
from tests.helpers.platforms import platform_fixture_run
from tests.helpers.rank_rows import read_rows
from tests.helpers.runs import clean_env, run_cli, run_torchrun

TOPOLOGY = "\tGPU0\tGPU1\tCPU Affinity\nGPU0\t X \tNV12\t0-23\nGPU1\tNV12\t X \t0-23\n"  # a fixture, not a reading


def test_comm_env_is_every_setting_of_the_backend_in_force_sorted():
    env = {"NCCL_IB_HCA": "mlx5_0", "PATH": "/bin", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "NCCL_DEBUG": "WARN",
           "GLOO_SOCKET_IFNAME": "ib0"}  # fmt: skip
    assert comm_env(env, "nccl") == (
        "GLOO_SOCKET_IFNAME=ib0;NCCL_DEBUG=WARN;NCCL_IB_HCA=mlx5_0;TORCH_NCCL_ASYNC_ERROR_HANDLING=1"
    )  # an NCCL job's gloo side group reads GLOO_SOCKET_IFNAME too
    assert comm_env(env, "gloo") == "GLOO_SOCKET_IFNAME=ib0"  # NCCL's settings are no provenance of a gloo run
    assert comm_env({"PATH": "/bin"}, "nccl") == ""


def test_an_nccl_row_records_the_default_ddp_bench_sets_whatever_launched_it(monkeypatch):
    monkeypatch.delenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", raising=False)
    apply_comm_defaults("nccl", "slurm")  # what run() does before it takes the provenance (srun and mpiexec set none)
    assert "TORCH_NCCL_ASYNC_ERROR_HANDLING=2" in collect_context(os.environ, "cpu", 0, "nccl").comm_env
    monkeypatch.setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3")
    apply_comm_defaults("nccl", "slurm")  # the user's choice stays, and is what the row says
    assert "TORCH_NCCL_ASYNC_ERROR_HANDLING=3" in collect_context(os.environ, "cpu", 0, "nccl").comm_env


@pytest.mark.long
def test_rows_of_one_series_from_torchrun_and_a_plain_process_agree_on_comm_env(tmp_path):
    # torchrun exports TORCH_NCCL_ASYNC_ERROR_HANDLING to its workers; a gloo run must not record it as a setting.
    flags = ["--device", "cpu", "--steps", "2", "--warmup-steps", "1", "--out", str(tmp_path)]
    assert run_cli(flags).returncode == 0
    done = run_torchrun(2, flags, env=clean_env(OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_rows(tmp_path)
    assert {row["launcher"] for row in rows} == {"single", "torchrun"} and {row["comm_env"] for row in rows} == {""}


def test_a_gpu_node_leader_keeps_the_topology_and_the_nccl_version(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\n[ \"$1 $2\" = 'topo -m' ] && printf '{TOPOLOGY.encode('unicode_escape').decode()}'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "NVIDIA A100-SXM4-40GB")
    monkeypatch.setattr(torch.cuda.nccl, "version", lambda: (2, 21, 5))
    leader = collect_context({"NCCL_DEBUG": "INFO"}, "cuda", 0, "nccl", node_leader=True)
    assert (leader.nccl_version, leader.comm_env, leader.topology) == ("2.21.5", "NCCL_DEBUG=INFO", TOPOLOGY)
    assert collect_context({}, "cuda", 1, "nccl", node_leader=False).topology == ""  # one per node is enough


def test_a_cpu_row_records_its_gloo_settings_and_no_gpu_stack(tmp_path, monkeypatch):
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "eth0")
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    assert main(["--device", "cpu", "--steps", "2", "--warmup-steps", "1", "--out", str(tmp_path)]) == 0
    (row,) = read_rows(tmp_path)
    assert (row["nccl_version"], row["driver_version"], row["comm_env"]) == ("", "", "GLOO_SOCKET_IFNAME=lo")
    assert not list(tmp_path.glob("*/topology-*.txt"))


def test_the_report_names_what_differs_between_compared_runs(tmp_path):
    a100 = dict(platform="slurm", cluster="narval", device_name="NVIDIA A100-SXM4-40GB", epochs=0)
    platform_fixture_run(tmp_path, "w1", [dict(samples=6400, train_time_s=1.0)], nccl_version="2.21.5", **a100)
    platform_fixture_run(tmp_path, "w2", [dict(samples=6400, train_time_s=1.0)] * 2, nccl_version="2.21.5", **a100)
    platform_fixture_run(tmp_path, "w4", [dict(samples=6400, train_time_s=1.0)] * 4, nccl_version="2.18.3",
                comm_env="NCCL_IB_DISABLE=1", **a100)  # fmt: skip
    report = build_report([str(tmp_path)], str(tmp_path / "report"))
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "**nccl_version** `2.21.5`: 2; `2.18.3`: 1" in text  # values in the order of the runs (by run id)
    assert "**comm_env**" in text and "`NCCL_IB_DISABLE=1`: 1" in text
    assert "**torch_version**" not in text  # the same everywhere: not listed
    assert len(report.tables.runs) == 3


def test_a_row_records_the_comm_defaults_run_put_in_force_before_it_took_the_provenance(tmp_path, monkeypatch):
    # The W1 guard through run() itself (#28 §3): a default run() sets must be in the row it writes, whatever the
    # order of the calls inside run(). gloo on a CPU stands in for NCCL: its GLOO_* settings are its provenance.
    from ddp_bench.launch import distributed

    monkeypatch.delenv("GLOO_DDP_BENCH_TEST_DEFAULT", raising=False)
    monkeypatch.setitem(distributed.COMM_DEFAULTS, "gloo", {"GLOO_DDP_BENCH_TEST_DEFAULT": "set-by-run"})
    flags = ["--device", "cpu", "--steps", "2", "--warmup-steps", "1", "--out", str(tmp_path)]
    assert main(flags) == 0
    (row,) = read_rows(tmp_path)
    assert "GLOO_DDP_BENCH_TEST_DEFAULT=set-by-run" in row["comm_env"]
