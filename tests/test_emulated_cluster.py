"""Tier 3: `srun python -m ddp_bench` across nodes for real, on an emulated multi-node Slurm cluster: network
namespaces on a shaped bridge, each one a Slurm node with its own slurmd and hostname (tests/helpers/emulated_link.py,
tests/helpers/emulated_slurm.py). A shipped job script with `--nodes 2`, the one-job sweep over 1-4 ranks on 2 nodes
(with its all-reduce steps), and --kill-on-bad-exit when one node's rank dies. Until these, every Slurm test had one
node. Then the scaling model where it was not fitted: 4 nodes predicted from 1 and 2, and nodes of 2 ranks in two
stages.
"""

import csv
import glob
import os
import re
import sys
import time

import pytest

from tests.helpers.emulated_extrapolation import check_extrapolation, check_two_stage
from tests.helpers.emulated_link import cannot_emulate, emulated_cluster
from tests.helpers.emulated_slurm import emulated_slurm
from tests.helpers.paths import BIN, ROOT
from tests.helpers.rank_rows import read_rows
from tests.helpers.runs import clean_env, run_group
from tests.helpers.slurm import SLURM_BASE, local_slurm

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.slow,
    pytest.mark.emulated_cluster,
    pytest.mark.root,
    pytest.mark.skipif(bool(cannot_emulate()), reason=cannot_emulate() or "can emulate"),
]
RUN = [sys.executable, "-m", "ddp_bench"]
TOLERANCE = 0.15  # issue #20's target for the predicted 4-node throughput


@pytest.fixture(scope="module")
def two_nodes(slurm_machine):
    """Two emulated Slurm nodes at 1 Gbit/s, each with one core (Slurm is told 2 CPUs each, for 2 ranks a node)."""
    plain_was_up = os.path.exists(os.path.join(SLURM_BASE, "slurmctld.pid"))
    up = local_slurm("up")  # installs Slurm and munge if needed, and starts munged
    if up.returncode != 0:
        pytest.skip(up.stderr.strip().splitlines()[-1] if up.stderr.strip() else "local Slurm did not start")
    local_slurm("stop-daemons")  # the emulated cluster's daemons take the ports
    try:
        with emulated_cluster(2, "1gbit") as cluster:
            with emulated_slurm(cluster, SLURM_BASE + "-emulated", BIN) as env:
                yield cluster, {**env, "OMP_NUM_THREADS": "1", "DDP_BENCH_VENV": sys.prefix}
    finally:
        local_slurm("up" if plain_was_up else "down")  # as it was before


def hostnames(cluster) -> set[str]:
    return {node.hostname for node in cluster.nodes}


def test_a_shipped_job_script_runs_on_two_nodes(two_nodes, tmp_path):
    cluster, env = two_nodes
    done = run_group(
        ["sbatch", "--wait", "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1", f"--chdir={tmp_path}",
         os.path.join(ROOT, "slurm", "cpu.sbatch"), "--device", "cpu", "--steps", "3", "--warmup-steps", "1"],
        timeout=300, env={**env, "DDP_BENCH_RESULTS": str(tmp_path / "results")},
    )  # fmt: skip
    log = "".join(path.read_text() for path in tmp_path.glob("*.out"))
    assert done.returncode == 0, done.stderr + log[-3000:]
    rows = read_rows(tmp_path / "results")
    assert [(row["rank"], row["num_nodes"], row["world_size"]) for row in rows] == [("0", "2", "2"), ("1", "2", "2")]
    assert {row["hostname"] for row in rows} == hostnames(cluster)  # one rank on each node
    assert rows[0]["hostname"] == min(hostnames(cluster))  # rank 0 on the nodelist's first host: MASTER_ADDR
    assert {row["launcher"] for row in rows} == {"slurm"} and len({row["job_id"] for row in rows}) == 1


def test_the_one_job_sweep_runs_1_to_4_ranks_on_two_nodes_with_its_allreduce(two_nodes, tmp_path):
    cluster, env = two_nodes
    results = tmp_path / "results"
    sweep = [
        *RUN, "sweep", "--one-job", "--cluster", "cpu", "--gpus", "1,2,4", "--gpus-per-node", "2",
        "--cpus-per-task", "1", "--results", str(results), "--scripts-dir", str(tmp_path / "jobs"),
        "--", "--device", "cpu", "--steps", "3", "--warmup-steps", "1", "--batch-size", "16",
    ]  # fmt: skip
    first = run_group(sweep, timeout=120, env=env, cwd=str(tmp_path))
    assert first.returncode == 0, first.stderr
    (job_id,) = re.findall(r"Submitted batch job (\d+)", first.stdout)
    deadline = time.monotonic() + 400
    while run_group(["squeue", "-h", "-j", job_id], timeout=30, env=env).stdout.strip():
        assert time.monotonic() < deadline, "the one-job sweep did not finish"
        time.sleep(1)
    rows = read_rows(results)
    assert sorted(int(row["world_size"]) for row in rows) == [1, 2, 2, 4, 4, 4, 4]
    four = [row for row in rows if row["world_size"] == "4"]
    assert {row["hostname"] for row in four} == hostnames(cluster) and {row["num_nodes"] for row in four} == {"2"}
    assert {row["local_world_size"] for row in four} == {"2"} and {row["job_id"] for row in rows} == {job_id}
    measured = set()
    for table in glob.glob(str(results / "*" / "allreduce.csv")):
        with open(table, newline="") as handle:
            measured |= {(row["world_size"], row["num_nodes"]) for row in csv.DictReader(handle)}
    assert measured == {("2", "1"), ("4", "2")}  # beside each count, on the same ranks


def test_kill_on_bad_exit_ends_both_nodes_when_one_nodes_rank_dies(two_nodes, tmp_path):
    _cluster, env = two_nodes
    started = time.monotonic()
    done = run_group(
        ["srun", "--kill-on-bad-exit=1", "-N2", "-n2", *RUN, "--device", "cpu", "--steps", "100000",
         "--warmup-steps", "1", "--out", str(tmp_path)],
        timeout=120, env={**env, "DDP_BENCH_FAULT": "rank=1,step=2,kind=sigkill"},
    )  # fmt: skip
    assert time.monotonic() - started < 60
    assert done.returncode != 0 and read_rows(tmp_path) == []
    assert re.search(r"srun: error: \S+: task 1: Killed", done.stderr), done.stderr[-2000:]


@pytest.mark.parametrize("rate", ["200mbit", "1gbit"])
def test_four_nodes_are_predicted_from_one_and_two_within_15_percent(tmp_path, rate):
    # Fitted on 1 and 2 nodes (their rows and the 2-node all-reduce), checked where it was not fitted: 4 nodes on
    # the same network, every rank with half a core in both (tests/helpers/emulated_extrapolation.py); two runs of each.
    result = check_extrapolation(rate, str(tmp_path), repeats=2, env=clean_env())
    assert result.bytes_crossed > 10 * 4_700_000  # the gradients went over the shaped links
    assert abs(result.ratio - 1) <= TOLERANCE, result


def test_nodes_of_two_ranks_are_predicted_in_two_stages(tmp_path):
    # Loopback inside a node, the shaped links between: fitted on 1 node x 2 and 2 nodes x 2, checked at 4 x 2.
    # Four ranks share each core here, and one run of each is noisy (its ratio has landed between 0.92 and 1.16);
    # this checks the two-stage path end to end within twice the 4-node target, and the benchmark
    # (benchmarks/emulated_cluster.py, medians of 3 runs: 1.057, docs/scaling-model.md) gives the number.
    result = check_two_stage("1gbit", str(tmp_path), repeats=1, env=clean_env())
    assert result.comm_from_8 == "two-stage fit (4 node(s) × 2)"
    assert abs(result.ratio - 1) <= 2 * TOLERANCE, result
