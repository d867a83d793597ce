"""Tier 3: the real launchers — a local single-node Slurm (srun, sbatch; the sweep is tests/test_sweeps.py), mpiexec,
two torchrun agents.

The Slurm fixture brings a cluster up with tests/local_slurm.sh (root and apt needed; otherwise these tests
skip and say why) and stops exactly the daemons it started.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime

import pytest

from ddp_bench.launch.discovery import free_port
from tests.helpers.paths import BIN, ROOT
from tests.helpers.rank_rows import read_rows
from tests.helpers.runs import clean_env, launched, run_group

pytestmark = pytest.mark.distributed

RUN = [sys.executable, "-m", "ddp_bench"]


def test_srun_two_tasks_on_one_node(slurm, tmp_path):
    done = run_group(
        ["srun", "-n", "2", *RUN, "--device", "cpu", "--steps", "3", "--warmup-steps", "1", "--out", str(tmp_path)],
        timeout=180,
        env=slurm,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_rows(tmp_path)
    assert [(row["rank"], row["local_rank"]) for row in rows] == [("0", "0"), ("1", "1")]
    for row in rows:
        assert (row["launcher"], row["platform"], row["world_size"], row["local_world_size"]) == (
            "slurm",
            "slurm",
            "2",
            "2",
        )
        assert row["job_id"].isdigit() and row["cluster"] == "ddpbench"
    assert rows[0]["job_id"] == rows[1]["job_id"]


def test_sbatch_runs_the_projects_cpu_script(slurm, tmp_path):
    env = {**slurm, "DDP_BENCH_VENV": sys.prefix, "DDP_BENCH_RESULTS": str(tmp_path / "results")}
    done = run_group(
        [
            "sbatch",
            "--wait",
            f"--chdir={tmp_path}",
            "--cpus-per-task=1",
            os.path.join(ROOT, "slurm", "cpu.sbatch"),
            "--device",
            "cpu",
            "--steps",
            "3",
            "--warmup-steps",
            "1",
            "--tag",
            "sbatch test",
        ],
        timeout=300,
        env=env,
    )
    log = "".join(path.read_text() for path in tmp_path.glob("*.out"))
    assert done.returncode == 0, done.stderr + log[-2000:]
    job_id = re.search(r"Submitted batch job (\d+)", done.stdout).group(1)
    rows = read_rows(tmp_path / "results")
    assert [row["rank"] for row in rows] == ["0", "1"]
    assert {(row["launcher"], row["world_size"], row["job_id"], row["tag"]) for row in rows} == {
        ("slurm", "2", job_id, "sbatch test")
    }


# The newest torch in the Alliance's wheelhouse (`avail_wheels torch`, August 2026; ../shared/notes/clusters-2026.md),
# with the torchvision built for it: what `pip install --no-index torch torchvision` gives a job there.
ALLIANCE_TORCH = ("2.13.0", "0.28.0")
WHEELHOUSE = os.environ.get(
    "DDP_BENCH_WHEELHOUSE", os.path.expanduser(f"~/.cache/ddp_bench/wheelhouse-torch{ALLIANCE_TORCH[0]}")
)


@pytest.fixture(scope="session")
def wheelhouse():
    """A local directory of wheels, as a cluster's wheelhouse is: the Alliance's newest torch (its CUDA build, as
    the clusters have: `--isolated`, so that pip ignores this machine's local CPU-only wheel of the same version)
    and what else the job scripts install (pip download, once; later sessions find it cached outside the checkout)."""
    torch_pin, vision_pin = ALLIANCE_TORCH
    os.makedirs(WHEELHOUSE, exist_ok=True)
    fetched = run_group(
        [sys.executable, "-m", "pip", "download", "--isolated", "-q", "--dest", WHEELHOUSE, f"torch=={torch_pin}",
         f"torchvision=={vision_pin}", "numpy", "pandas", "matplotlib", "rich", "nvidia-ml-py"],
        timeout=1500,
    )  # fmt: skip
    if fetched.returncode != 0:
        lines = fetched.stderr.strip().splitlines()
        pytest.skip(f"cannot make the wheelhouse ({lines[-1] if lines else 'pip download failed'})")
    return WHEELHOUSE


@pytest.mark.slow
def test_sbatch_builds_its_venv_offline_from_a_wheelhouse_and_gives_each_rank_its_cores(slurm, wheelhouse, tmp_path):
    # No DDP_BENCH_VENV: the job builds a venv on node-local disk with pip --no-index and the wheelhouse as
    # find-links, as on an Alliance cluster, and runs ddp_bench from the checkout (nothing is built, so no
    # setuptools or wheel is needed). One rank with two cores: both cores must reach the training step.
    node_local = tmp_path / "node-local"
    node_local.mkdir()
    env = {
        **slurm,
        "PIP_FIND_LINKS": wheelhouse,
        "SLURM_TMPDIR": str(node_local),
        "DDP_BENCH_SRC": ROOT,
        "DDP_BENCH_RESULTS": str(tmp_path / "results"),
    }
    try:
        done = run_group(
            [
                "sbatch",
                "--wait",
                f"--chdir={tmp_path}",
                "--ntasks-per-node=1",
                "--cpus-per-task=2",
                os.path.join(ROOT, "slurm", "cpu.sbatch"),
                "--device",
                "cpu",
                "--steps",
                "3",
                "--warmup-steps",
                "1",
            ],
            timeout=900,
            env=env,
        )
        log = "".join(path.read_text() for path in tmp_path.glob("*.out"))
        assert done.returncode == 0, done.stderr + log[-3000:]
        job_id = re.search(r"Submitted batch job (\d+)", done.stdout).group(1)
        job = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True).stdout
        assert "JobState=COMPLETED" in job and "ExitCode=0:0" in job, job
        (row,) = read_rows(tmp_path / "results")
        assert (row["status"], row["launcher"], row["job_id"], row["world_size"]) == ("complete", "slurm", job_id, "1")
        assert row["torch_version"].split("+")[0] == ALLIANCE_TORCH[0]  # it ran on the cluster's torch
        assert (row["cpu_affinity"], row["threads"]) == ("0-1", "2")  # srun got --cpus-per-task
        assert float(row["setup_s"]) > 5  # the script timed its venv build (a CUDA torch from local wheels)
        assert float(row["queue_wait_s"]) >= 0
        venv_python = node_local / "env" / "bin" / "python"
        installed = run_group(
            [str(venv_python), "-c", "import importlib.util; print(importlib.util.find_spec('ddp_bench'))"],
            timeout=60,
            env={"PATH": os.environ["PATH"]},
            cwd=str(node_local),
        )
        assert installed.stdout.strip() == "None"  # the venv holds the dependencies only; ddp_bench ran from src
    finally:
        shutil.rmtree(node_local, ignore_errors=True)  # a CUDA torch venv: gigabytes


@pytest.mark.slow
def test_queue_wait_is_the_time_a_job_spent_behind_another(slurm, tmp_path):
    # A job holds both cores of the node for about 20 s; a ddp_bench job submitted right after it waits in the
    # queue for as long, and its row must say so.
    holder = run_group(
        ["sbatch", "--parsable", "--ntasks=1", "--cpus-per-task=2", "--output=/dev/null", "--wrap", "sleep 20"],
        timeout=60,
        env=slurm,
    )
    assert holder.returncode == 0, holder.stderr
    holder_id = holder.stdout.strip()
    deadline = time.monotonic() + 60
    while (
        "RUNNING"
        not in subprocess.run(
            ["squeue", "-h", "-j", holder_id, "-o", "%T"], env=slurm, capture_output=True, text=True, timeout=30
        ).stdout
    ):
        assert time.monotonic() < deadline, "the holding job never started"
        time.sleep(0.2)
    command = f"srun {sys.executable} -m ddp_bench --device cpu --steps 3 --warmup-steps 1 --out {tmp_path / 'r'}"
    waiting = run_group(
        ["sbatch", "--wait", "--ntasks=1", "--cpus-per-task=1", f"--output={tmp_path / 'job.out'}", "--wrap", command],
        timeout=240,
        env=slurm,
    )
    assert waiting.returncode == 0, waiting.stderr + (tmp_path / "job.out").read_text()[-2000:]
    shown = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", holder_id], env=slurm, capture_output=True, text=True, timeout=30
    ).stdout
    times = dict(re.findall(r"\b(StartTime|EndTime)=(\S+)", shown))
    held_s = (datetime.fromisoformat(times["EndTime"]) - datetime.fromisoformat(times["StartTime"])).total_seconds()
    (row,) = read_rows(tmp_path / "r")
    assert 15 <= held_s <= 30
    assert abs(float(row["queue_wait_s"]) - held_s) <= 4, (row["queue_wait_s"], held_s)


def test_srun_kill_on_bad_exit_ends_the_step_when_a_rank_dies(slurm, tmp_path):
    env = {**slurm, "DDP_BENCH_FAULT": "rank=1,step=2,kind=sigkill"}
    started = time.monotonic()
    done = run_group(
        [
            "srun",
            "--kill-on-bad-exit=1",
            "-n",
            "2",
            *RUN,
            "--device",
            "cpu",
            "--steps",
            "100000",
            "--warmup-steps",
            "1",
            "--out",
            str(tmp_path),
        ],
        timeout=120,
        env=env,
    )
    assert time.monotonic() - started < 60
    assert done.returncode != 0
    assert read_rows(tmp_path) == []


def test_mpiexec_two_ranks(tmp_path):
    mpiexec = os.path.join(BIN, "mpiexec")
    if not os.path.exists(mpiexec):
        pytest.skip("no mpiexec beside this Python (pip install mpich)")
    done = run_group(
        [mpiexec, "-n", "2", *RUN, "--device", "cpu", "--steps", "3", "--warmup-steps", "1", "--out", str(tmp_path)],
        timeout=180,
        env=clean_env(OMP_NUM_THREADS="1"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_rows(tmp_path)
    assert [row["rank"] for row in rows] == ["0", "1"]
    assert {(row["launcher"], row["world_size"], row["local_world_size"]) for row in rows} == {("mpi", "2", "2")}


def test_srun_with_the_pmi2_plugin_gives_mpi_one_world(slurm, tmp_path):
    done = run_group(
        [
            "srun",
            "--mpi=pmi2",
            "-n",
            "2",
            *RUN,
            "--launcher",
            "mpi",
            "--device",
            "cpu",
            "--steps",
            "2",
            "--warmup-steps",
            "1",
            "--out",
            str(tmp_path),
        ],
        timeout=180,
        env=slurm,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert {(row["launcher"], row["world_size"]) for row in read_rows(tmp_path)} == {("mpi", "2")}


def test_ranks_that_each_started_alone_are_refused(tmp_path):
    # The launcher's variables promise a world of 2, but MPI itself sees 1: mpi4py from another MPI than the
    # mpiexec that started us. Running would report two single-rank benchmarks as one job.
    env = clean_env(
        OMPI_COMM_WORLD_RANK="0",
        OMPI_COMM_WORLD_SIZE="2",
        OMPI_COMM_WORLD_LOCAL_RANK="0",
        OMPI_COMM_WORLD_LOCAL_SIZE="2",
    )
    done = run_group([*RUN, "--device", "cpu", "--steps", "2", "--out", str(tmp_path)], timeout=120, env=env)
    assert done.returncode == 2
    # (mpi4py may warn first about the foreign OMPI_ variables; our verdict is the last line)
    assert done.stderr.strip().splitlines()[-1] == (
        "ddp_bench: error: MPI sees a world of 1 but the launcher promised 2: the ranks started as separate jobs "
        "(check srun --mpi= or the MPI that mpi4py was built with)"
    )
    assert "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())


def test_two_torchrun_agents_make_a_two_node_job(tmp_path):
    port = free_port()

    def agent(node: int) -> list[str]:
        return [
            sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={node}", "--nproc-per-node=1",
            "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=twonode",
            "-m", "ddp_bench", "--device", "cpu", "--steps", "3", "--warmup-steps", "1", "--out", str(tmp_path),
        ]  # fmt: skip

    popen = {"env": clean_env(OMP_NUM_THREADS="1"), "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    with launched(agent(0), text=True, **popen) as first, launched(agent(1), text=True, **popen) as second:
        for process in (first, second):
            assert process.wait(timeout=180) == 0, process.stderr.read()[-2000:]
    rows = read_rows(tmp_path)
    assert [row["rank"] for row in rows] == ["0", "1"]
    assert {row["num_nodes"] for row in rows} == {"2"}
    assert sorted(row["node_rank"] for row in rows) == ["0", "1"]
    assert {row["local_rank"] for row in rows} == {"0"}


@pytest.mark.long
def test_an_mpi_rank_that_fails_before_mpi_starts_does_not_hang_the_others(tmp_path):
    # MPI_Init waits for every rank and has no timeout; ddp_bench's watchdog ends the wait after --init-timeout.
    mpiexec = os.path.join(BIN, "mpiexec")
    if not os.path.exists(mpiexec):
        pytest.skip("no mpiexec beside this Python (pip install mpich)")
    flags = ["--device", "cpu", "--init-timeout", "5", "--steps", "2", "--out", str(tmp_path)]
    started = time.monotonic()
    done = run_group(
        [mpiexec, "-n", "1", *RUN, *flags, ":", "-n", "1", "-env", "DDP_BENCH_FAULT", "malformed", *RUN, *flags],
        timeout=120,
        env=clean_env(OMP_NUM_THREADS="1"),
    )
    assert time.monotonic() - started < 60
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "ddp_bench: error: DDP_BENCH_FAULT='malformed'" in output
    assert "ddp_bench: failed: MPI rank 0: not every rank started MPI within 5 s (--init-timeout)" in output
