"""Pre-flight checks: each finding from plain inputs, and the `check` verb end to end."""

import pytest

from ddp_bench.config import BenchConfig
from ddp_bench.errors import UsageError
from ddp_bench.launch.launchers import detect_launch
from ddp_bench.launch.preflight import (
    data_location_note,
    filesystem_type,
    gpu_note,
    require_launcher_for_allocation,
)
from tests.helpers.runs import clean_env, run_cli


def test_a_multi_task_slurm_job_without_srun_is_refused():
    env = {"SLURM_JOB_ID": "9", "SLURM_NTASKS": "4", "SLURM_PROCID": "0"}  # the batch script's own shell
    with pytest.raises(UsageError, match="asked for 4 tasks but ddp_bench was not started by srun"):
        require_launcher_for_allocation(BenchConfig(), env, detect_launch(env))
    require_launcher_for_allocation(BenchConfig(launcher="single"), env, detect_launch(env, "single"))  # on purpose
    require_launcher_for_allocation(BenchConfig(), {"SLURM_NTASKS": "1"}, detect_launch({}))


def test_idle_gpus_are_noted():
    assert "2 GPU(s) will sit idle" in gpu_note(2, 4).message
    assert gpu_note(4, 4) is None


def test_data_location(tmp_path):
    real = BenchConfig(data="mnist", data_dir=str(tmp_path))
    assert data_location_note(BenchConfig(), {}).level == "ok"
    staged = data_location_note(real, {"SLURM_TMPDIR": str(tmp_path.parent)})
    assert staged.level == "ok" and "node-local" in staged.message
    assert data_location_note(real, {}).level == "ok"  # /tmp is a local filesystem here
    assert filesystem_type("/") != ""


def test_network_filesystems_get_a_note(monkeypatch, tmp_path):
    monkeypatch.setattr("ddp_bench.launch.preflight.filesystem_type", lambda path: "lustre")
    note = data_location_note(BenchConfig(data="mnist", data_dir=str(tmp_path)), {})
    assert note.level == "note" and "network filesystem (lustre)" in note.message and "SLURM_TMPDIR" in note.message


def test_check_verb_reports_a_healthy_setup(tmp_path):
    done = run_cli(["check", "--device", "cpu", "--out", str(tmp_path / "r")], timeout=120)
    assert done.returncode == 0, done.stderr
    for check in ("launcher", "device", "dataset", "data location", "results"):
        assert check in done.stdout
    assert "error" not in done.stdout
    assert not (tmp_path / "r").exists()  # checking writes nothing


def test_check_verb_lists_every_problem_and_exits_2(tmp_path):
    done = run_cli(
        [
            "check",
            "--device",
            "cpu",
            "--data",
            "mnist",
            "--data-dir",
            str(tmp_path / "none"),
            "--batch-size",
            "70000",
            "--amp",
            "fp16",
            "--out",
            str(tmp_path / "r"),
        ],
        env=clean_env(COLUMNS="400"),
        timeout=120,
    )
    assert done.returncode == 2
    assert f"--data-dir {tmp_path / 'none'} does not exist" in done.stdout
    assert "python -m ddp_bench download --data mnist" in done.stdout
    assert "this node has no internet" in done.stdout or "this node has internet" in done.stdout
    assert "global batch 70000 is larger than the 60000 training images" in done.stdout
    assert "--amp fp16 needs a CUDA GPU" in done.stdout


def test_check_verb_finds_the_missing_srun(tmp_path):
    env = clean_env(SLURM_JOB_ID="9", SLURM_NTASKS="2", COLUMNS="400")
    done = run_cli(["check", "--device", "cpu", "--out", str(tmp_path)], env=env, timeout=120)
    assert done.returncode == 2
    assert "this Slurm job asked for 2 tasks but ddp_bench was not started by srun" in done.stdout
