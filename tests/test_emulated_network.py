"""Tier 3: the scaling model checked against a real slow network between two emulated nodes.

Two network namespaces joined by a veth pair shaped with tc (tests/helpers/emulated_link.py), one torchrun agent in
each, pinned to one core with one thread; then the all-reduce benchmark over the same link. The report's model
predicts the 2-node throughput from that run's compute-only steps and gradient buckets and from allreduce.csv.
At 200 Mbit/s, where communication is most of the step, it must land within 15 % of the measured throughput. At
2 Gbit/s compute is most of the step, and the model leaves out the cost of communicating on the cores that compute
(the kernel's network work and the all-reduce slowed by backward on the same core; docs/scaling-model.md,
"Checked past its fit"): in sample it has come out 1.096 (the benchmark's median of 3) and 1.199 (one CI run on
the Colab stack), so the check there is within 25 %.
"""

import csv

import pytest

from ddp_bench.launch.discovery import free_port
from tests.helpers.emulated_link import cannot_emulate, emulated_link, run_on_both
from tests.helpers.runs import clean_env, run_cli, run_group

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.root]

TOLERANCE = {"200mbit": 0.15, "2gbit": 0.25}
RUN = ["--device", "cpu", "--batch-size", "64", "--warmup-steps", "5", "--steps", "30"]
# up to 16 MiB, so the CNN's 4.7 MB bucket lies between measured sizes
ALLREDUCE = ["allreduce", "--device", "cpu", "--max-bytes", str(16 * 2**20), "--iters", "3", "--warmup", "1"]


@pytest.mark.skipif(bool(cannot_emulate()), reason=cannot_emulate() or "can emulate")
@pytest.mark.timeout(400)
@pytest.mark.parametrize("rate", ["200mbit", "2gbit"])
def test_model_predicts_two_nodes_over_a_shaped_link(tmp_path, rate):
    out = tmp_path / "results"
    with emulated_link(rate) as link:
        # Two runs (the report takes the median of repeats: one 30-step run on a shared 2-core machine strays by
        # several per cent), then the all-reduce benchmark.
        for args in (RUN, RUN, ALLREDUCE):
            results = run_on_both(link, [*args, "--out", str(out)], clean_env(), free_port(), timeout=150)
            for result in results:
                assert result.returncode == 0, result.stderr[-3000:]
        crossed = link.sent_bytes()
    # The ranks' gradients went over the shaped veth: 2 x 40 all-reduced steps (timed and control) of 4.8 MB,
    # each sending about that much from each end, at the least.
    assert crossed > 80 * 4_700_000

    report = tmp_path / "report"
    done = run_cli(["report", str(out), "--out", str(report)])
    assert done.returncode == 0, done.stderr
    with open(report / "predictions.csv", newline="") as handle:
        (two,) = [row for row in csv.DictReader(handle) if row["world_size"] == "2"]
    measured, predicted = float(two["measured_images_per_s"]), float(two["predicted_images_per_s"])
    assert two["comm_from"] == "measured at 2 ranks on 2 node(s)" and two["compute_from"] == "this count (2)"
    assert abs(predicted / measured - 1) <= TOLERANCE[rate], (rate, measured, predicted, dict(two))
    summary = (report / "summary.md").read_text()
    assert "## Scaling model" in summary and "measured at 2 ranks on 2 node(s)" in summary
    listed = run_group(["ip", "netns", "list"], timeout=30).stdout
    assert link.nodes[0].namespace not in listed and link.nodes[1].namespace not in listed  # removed again
