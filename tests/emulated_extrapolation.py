"""The scaling model's extrapolation, checked where it was not fitted: fit on 1 and 2 emulated nodes, predict 4,
then measure 4 on the same network (tests/emulated_link.py). Used by tests/test_emulated_cluster.py's validation and
benchmarks/emulated_cluster.py.

Like with like: this machine has 2 cores, so 4 ranks share them. Every rank of the fitted and of the predicted runs
gets the same share, half a core: both 2-node ranks on core 0; at 4 nodes, two on core 0 and two on core 1. (The
model takes compute past the largest measured count from the largest run, so the 2-node run's half-core compute
step is what it predicts 4 nodes with.) One rank per node, one thread per rank, the course CNN on synthetic data.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass

from emulated_link import emulated_cluster, run_on_nodes

from ddp_bench.launch.discovery import free_port

RUN = ["--device", "cpu", "--batch-size", "32", "--warmup-steps", "5", "--steps", "30"]
# up to 16 MiB, so the CNN's 4.7 MB bucket lies between measured sizes
ALLREDUCE = ["allreduce", "--device", "cpu", "--max-bytes", str(16 * 2**20), "--iters", "3", "--warmup", "1"]
FIT_CPUS, CHECK_CPUS = [0, 0], [0, 0, 1, 1]  # half a core for every rank, fitted and predicted alike


@dataclass(frozen=True)
class Extrapolation:
    rate: str
    predicted_2: float  # images/s at the fitted count (the model checked in sample)
    measured_2: float
    predicted_4: float  # from the 1- and 2-node rows and the 2-node all-reduce only
    predicted_4_low: float
    predicted_4_high: float
    measured_4: float  # median of the 4-node runs
    bytes_crossed: int  # through the nodes' shaped links

    @property
    def ratio(self) -> float:
        return self.predicted_4 / self.measured_4


def _checked(results: list[subprocess.CompletedProcess]) -> None:
    for result in results:
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-3000:])


def _report(runs: str, out: str, env: dict[str, str], predict_to: int) -> None:
    command = [sys.executable, "-m", "ddp_bench", "report", runs, "--out", out, "--predict-to", str(predict_to)]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)


def check_extrapolation(rate: str, out: str, repeats: int, env: dict[str, str], timeout: float = 300) -> Extrapolation:
    """Measure and predict; rows, all-reduce tables and both reports land under `out`/{fit,check,fit-report,...}."""
    fit, check = os.path.join(out, "fit"), os.path.join(out, "check")
    alone = ["taskset", "-c", "0", sys.executable, "-m", "ddp_bench", *RUN, "--out", fit, "--launcher", "single"]
    subprocess.run(alone, env={**env, "OMP_NUM_THREADS": "1"}, check=True, capture_output=True, timeout=timeout)
    with emulated_cluster(4, rate) as cluster:
        two = dataclasses.replace(cluster, nodes=cluster.nodes[:2])
        for _ in range(repeats):
            _checked(run_on_nodes(two, [*RUN, "--out", fit], env, free_port(), timeout, cpus=FIT_CPUS))
        _checked(run_on_nodes(two, [*ALLREDUCE, "--out", fit], env, free_port(), timeout, cpus=FIT_CPUS))
        for _ in range(repeats):
            _checked(run_on_nodes(cluster, [*RUN, "--out", check], env, free_port(), timeout, cpus=CHECK_CPUS))
        crossed = cluster.sent_bytes()
    _report(fit, os.path.join(out, "fit-report"), env, predict_to=4)
    _report(check, os.path.join(out, "check-report"), env, predict_to=4)
    with open(os.path.join(out, "fit-report", "predictions.csv"), newline="") as handle:
        predicted = {int(row["world_size"]): row for row in csv.DictReader(handle)}
    measured_4 = []
    for name in sorted(os.listdir(check)):
        path = os.path.join(check, name, "rank0.csv")
        if os.path.exists(path):
            with open(path, newline="") as handle:
                measured_4 += [float(row["global_images_per_s"]) for row in csv.DictReader(handle)]
    four = predicted[4]
    return Extrapolation(
        rate,
        float(predicted[2]["predicted_images_per_s"]),
        float(predicted[2]["measured_images_per_s"]),
        float(four["predicted_images_per_s"]),
        float(four["predicted_images_per_s_low"]),
        float(four["predicted_images_per_s_high"]),
        statistics.median(measured_4),
        crossed,
    )


@dataclass(frozen=True)
class TwoStageCheck:
    rate: str
    predicted_4: float  # 2 nodes x 2 ranks: the model at a measured layout (in sample)
    measured_4: float
    predicted_8: float  # 4 nodes x 2 ranks, from the two-stage fit
    measured_8: float
    comm_from_8: str

    @property
    def ratio(self) -> float:
        return self.predicted_8 / self.measured_8


def check_two_stage(rate: str, out: str, repeats: int, env: dict[str, str], timeout: float = 600) -> TwoStageCheck:
    """Nodes of two ranks each (loopback inside a node, the shaped links between): the all-reduce measured on one
    node and on two, the training on one and two nodes; predict four nodes x 2 and measure them. Every rank has a
    quarter of a core: the 4 ranks of 2 nodes on core 0; at 4 nodes, 4 on each core."""
    fit, check = os.path.join(out, "fit"), os.path.join(out, "check")
    with emulated_cluster(4, rate) as cluster:
        one, two = (dataclasses.replace(cluster, nodes=cluster.nodes[:count]) for count in (1, 2))
        pairs = {"ranks_per_node": 2}
        _checked(run_on_nodes(one, [*RUN, "--out", fit], env, free_port(), timeout, cpus=[0], **pairs))
        _checked(run_on_nodes(one, [*ALLREDUCE, "--out", fit], env, free_port(), timeout, cpus=[0], **pairs))
        for _ in range(repeats):
            _checked(run_on_nodes(two, [*RUN, "--out", fit], env, free_port(), timeout, cpus=[0, 0], **pairs))
        _checked(run_on_nodes(two, [*ALLREDUCE, "--out", fit], env, free_port(), timeout, cpus=[0, 0], **pairs))
        for _ in range(repeats):
            _checked(run_on_nodes(cluster, [*RUN, "--out", check], env, free_port(), timeout, cpus=CHECK_CPUS, **pairs))
    _report(fit, os.path.join(out, "fit-report"), env, predict_to=8)
    _report(check, os.path.join(out, "check-report"), env, predict_to=8)
    with open(os.path.join(out, "fit-report", "predictions.csv"), newline="") as handle:
        predicted = {int(row["world_size"]): row for row in csv.DictReader(handle)}
    with open(os.path.join(out, "check-report", "summary.csv"), newline="") as handle:
        (eight,) = [row for row in csv.DictReader(handle) if row["world_size"] == "8"]
    return TwoStageCheck(
        rate,
        float(predicted[4]["predicted_images_per_s"]),
        float(predicted[4]["measured_images_per_s"]),
        float(predicted[8]["predicted_images_per_s"]),
        float(eight["global_images_per_s"]),
        predicted[8]["comm_from"],
    )
