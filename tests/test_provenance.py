"""Tier 1 + 2: provenance. Rows say which NCCL, driver and NCCL settings produced them, one rank per GPU node
keeps the node's topology beside the rows, and the report names what differs between runs it compares."""

import os
import stat

import torch
from conftest import read_rows
from test_platforms import fixture_run

from ddp_bench.cli import main
from ddp_bench.report.build import build_report
from ddp_bench.results.context import collect_context, comm_env

TOPOLOGY = "\tGPU0\tGPU1\tCPU Affinity\nGPU0\t X \tNV12\t0-23\nGPU1\tNV12\t X \t0-23\n"  # a fixture, not a reading


def test_comm_env_is_every_nccl_setting_sorted():
    env = {"NCCL_IB_HCA": "mlx5_0", "PATH": "/bin", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "NCCL_DEBUG": "WARN"}
    assert comm_env(env) == "NCCL_DEBUG=WARN;NCCL_IB_HCA=mlx5_0;TORCH_NCCL_ASYNC_ERROR_HANDLING=1"
    assert comm_env({"PATH": "/bin"}) == ""


def test_a_gpu_node_leader_keeps_the_topology_and_the_nccl_version(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\n[ \"$1 $2\" = 'topo -m' ] && printf '{TOPOLOGY.encode('unicode_escape').decode()}'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "NVIDIA A100-SXM4-40GB")
    monkeypatch.setattr(torch.cuda.nccl, "version", lambda: (2, 21, 5))
    leader = collect_context({"NCCL_DEBUG": "INFO"}, "cuda", 0, node_leader=True)
    assert (leader.nccl_version, leader.comm_env, leader.topology) == ("2.21.5", "NCCL_DEBUG=INFO", TOPOLOGY)
    assert collect_context({}, "cuda", 1, node_leader=False).topology == ""  # one per node is enough


def test_a_cpu_row_records_its_nccl_settings_and_no_gpu_stack(tmp_path, monkeypatch):
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "eth0")
    assert main(["--device", "cpu", "--steps", "2", "--warmup-steps", "1", "--out", str(tmp_path)]) == 0
    (row,) = read_rows(tmp_path)
    assert (row["nccl_version"], row["driver_version"], row["comm_env"]) == ("", "", "NCCL_SOCKET_IFNAME=eth0")
    assert not list(tmp_path.glob("*/topology-*.txt"))


def test_the_report_names_what_differs_between_compared_runs(tmp_path):
    a100 = dict(platform="slurm", cluster="narval", device_name="NVIDIA A100-SXM4-40GB", epochs=0)
    fixture_run(tmp_path, "w1", [dict(samples=6400, train_time_s=1.0)], nccl_version="2.21.5", **a100)
    fixture_run(tmp_path, "w2", [dict(samples=6400, train_time_s=1.0)] * 2, nccl_version="2.21.5", **a100)
    fixture_run(tmp_path, "w4", [dict(samples=6400, train_time_s=1.0)] * 4, nccl_version="2.18.3",
                comm_env="NCCL_IB_DISABLE=1", **a100)  # fmt: skip
    report = build_report([str(tmp_path)], str(tmp_path / "report"))
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "**nccl_version** `2.21.5`: 2; `2.18.3`: 1" in text  # values in the order of the runs (by run id)
    assert "**comm_env**" in text and "`NCCL_IB_DISABLE=1`: 1" in text
    assert "**torch_version**" not in text  # the same everywhere: not listed
    assert len(report.tables.runs) == 3
