"""One predicted row, with its band: the code path `report --predict-to` and `predict --spec` share. Pure arithmetic.

The point is the step DDP's schedule gives (scaling_model.predict_step) with the all-reduce model that serves the
count (comm_choice.CommAt). The band comes from what is not known about each term:
- bucket readiness: DDP's real schedule lies between no overlap (every all-reduce after backward) and perfect
  overlap (all of them back to back from the first bucket's ready time);
- the all-reduce past the measured counts: the slowest and the fastest of the models that fit the same curves
  (CommAt.slow_ms, fast_ms); at a measured count, the curve itself;
- compute measured with fewer GPUs busy than a node holds (`partial_node_ms`, from `partial_node`): the full
  node's host contention is not in it, so the slow end gets that much longer;
- the slowest of N ranks past the steps recorded (`drift_tail_ms`, compute_drift.tail_ms): the slow end longer.
low = images ÷ (no overlap, slowest all-reduce, + partial_node_ms + drift_tail_ms); high = images ÷ (perfect overlap,
fastest).
"""

from __future__ import annotations

from collections.abc import Sequence

from ddp_bench.measurement.comm_choice import CommAt
from ddp_bench.measurement.scaling_model import Bucket, predict_step

# The model against published multi-GPU measurements it did not see: the lowest and highest predicted ÷ published in
# results/published-validation.txt (benchmarks/published_validation.py; tests/test_published_validation.py keeps
# these in step with it), how many setups (spec files) and rows (GPU counts) that covers, the most nodes of any
# row, and how many rows hold the published value inside their band.
PUBLISHED_RATIOS = (1.006, 1.351)
PUBLISHED_SETUPS = 13
PUBLISHED_ROWS = 31
PUBLISHED_MAX_NODES = 8
PUBLISHED_IN_BAND = 29

# How much longer a step may get once every GPU of a node trains, beyond what the model's communication explains:
# the largest one-node loss in NVIDIA's published ResNet-50 v1.5 tables (DeepLearningExamples,
# PyTorch/Classification/ConvNets/resnet50v1.5/README.md, commit 291f0d02, DGX A100, AMP): 8 GPUs 16,621 img/s
# against 2,470 on one, a step 8 x 2,470 / 16,621 - 1 = 18.9 % longer. Every setup gets the same value; a
# prediction checked against that same table is not an independent check of this term (the DLPerf and Lambda setups
# under benchmarks/published/ are: other groups' measurements, on other machines).
PUBLISHED_ONE_GPU, PUBLISHED_FULL_NODE, PUBLISHED_NODE_GPUS = 2470.0, 16621.0, 8
PARTIAL_NODE_SHARE = PUBLISHED_NODE_GPUS * PUBLISHED_ONE_GPU / PUBLISHED_FULL_NODE - 1


def partial_node(busy: int, node_devices: int, count: int) -> bool:
    """Compute measured with `busy` GPUs training on a node of `node_devices` stands for a job of `count` GPUs on
    part of a node: fewer were busy than the job will keep busy on one node."""
    return busy < min(count, node_devices)


def partial_node_ms(compute_ms: float, partial: bool) -> float:
    """How much longer the band's slow end gets for compute measured on part of a node (predict --spec and
    report --predict-to alike)."""
    return PARTIAL_NODE_SHARE * compute_ms if partial else 0.0


def published_error_text() -> str:
    """The sentence the Proposal quotes: how far the model has missed published measurements."""
    low, high = PUBLISHED_RATIOS
    return (
        f"Against published multi-GPU measurements it did not see ({PUBLISHED_SETUPS} setups, {PUBLISHED_ROWS} GPU "
        f"counts on up to {PUBLISHED_MAX_NODES} nodes, compute from one GPU; ddp_bench's "
        f"results/published-validation.txt) the model predicted {low:.3f} to {high:.3f} times the published "
        f"throughput, {PUBLISHED_IN_BAND} of the {PUBLISHED_ROWS} inside the band: on GPUs it is optimistic, mostly "
        "because a full node's compute is slower than one GPU's."
    )


PREDICTED_COLUMNS = (
    "predicted_images_per_s",
    "predicted_images_per_s_low",
    "predicted_images_per_s_high",
    "compute_ms",
    "comm_ms",
    "comm_cpu_ms",
    "step_ms",
    "comm_from",
    "allreduce_algorithm",
)


def algorithms_text(buckets: Sequence[Bucket], comm: CommAt) -> str:
    """`ring`, `tree`, `measured`, or `ring (25 MiB buckets), tree (1 MiB)`-style when they differ by bucket."""
    chosen: dict[str, list[int]] = {}
    for bucket in buckets:
        chosen.setdefault(comm.algorithm(bucket.bytes), []).append(bucket.bytes)
    if len(chosen) <= 1:
        return next(iter(chosen), comm.algorithm(0))
    return ", ".join(f"{name} ({len(sizes)} bucket(s))" for name, sizes in chosen.items())


def predict_at(
    count: int,
    batch_per_rank: int,
    compute_ms: float,
    buckets: Sequence[Bucket],
    comm: CommAt,
    partial_node_ms: float = 0.0,
    drift_tail_ms: float = 0.0,
    fast_compute_ms: float | None = None,
) -> dict[str, float | str]:
    """The predicted images/s at `count` ranks, its band and the parts of its step. `fast_compute_ms`: the band's
    fast end's compute where the point's carries a term that may be too large (the compute drift: its fast end
    takes the measured compute step undrifted)."""
    step = predict_step(count, compute_ms, buckets, comm.allreduce_ms, comm.cpu_ms)
    slow = predict_step(count, compute_ms, buckets, comm.slow_ms, comm.cpu_ms)
    fast_compute = compute_ms if fast_compute_ms is None else min(fast_compute_ms, compute_ms)
    fast = predict_step(count, fast_compute, buckets, comm.fast_ms, comm.cpu_ms)
    images_per_step_ms = count * batch_per_rank * 1e3  # images/s = this ÷ step ms
    slowest = max(slow.slowest_step_ms, step.step_ms) + partial_node_ms + drift_tail_ms
    fastest = min(fast.fastest_step_ms, step.step_ms)
    return {
        "predicted_images_per_s": images_per_step_ms / step.step_ms,
        "predicted_images_per_s_low": images_per_step_ms / slowest,
        "predicted_images_per_s_high": images_per_step_ms / fastest,
        "compute_ms": step.compute_ms,
        "comm_ms": step.comm_ms,
        "comm_cpu_ms": step.comm_cpu_ms,
        "step_ms": step.step_ms,
        "comm_from": comm.source,
        "allreduce_algorithm": algorithms_text(buckets, comm),
    }
