"""DDP's gradient buckets for a model nobody here ran: its parameters from the meta device (no memory, no
weights), or only its gradient size. When each bucket is ready during backward is not measured here, so it is
assumed: gradients become ready in reverse registration order (as DDP's first buckets are built), at a rate
proportional to their bytes, over a backward pass that takes BACKWARD_SHARE of the compute step. The band does not
rely on it: it runs from no overlap at all to perfect overlap (measurement/prediction.py).
"""

from __future__ import annotations

from ddp_bench.errors import UsageError
from ddp_bench.measurement.scaling_model import FIRST_BUCKET_BYTES, Bucket, ddp_buckets

# Backward ≈ twice forward's arithmetic (Kaplan et al., "Scaling Laws for Neural Language Models",
# arXiv:2001.08361, §2.1: "the backwards pass is approximately twice the compute as the forwards-pass"), so about
# two thirds of a compute step. An assumption for the point only.
BACKWARD_SHARE = 2 / 3
GRADIENT_BYTES_PER_VALUE = 4  # DDP all-reduces fp32 gradients (AMP keeps fp32 master gradients)
SPREAD_CHUNK = 2**20  # a model known only by its gradient size: 1 MiB pieces, spread evenly over backward


def torchvision_gradient_sizes(name: str) -> list[int]:
    """Bytes of each trainable parameter's gradient, in registration order."""
    import torch
    import torchvision

    try:
        build = torchvision.models.get_model_builder(name)
    except ValueError:
        raise UsageError(f'[model] torchvision = {name!r}: not a torchvision model name (e.g. "resnet50")') from None
    with torch.device("meta"):
        model = build()
    return [param.numel() * GRADIENT_BYTES_PER_VALUE for param in model.parameters() if param.requires_grad]


def spread_sizes(gradient_bytes: float) -> list[int]:
    whole = int(gradient_bytes)
    return [SPREAD_CHUNK] * (whole // SPREAD_CHUNK) + ([whole % SPREAD_CHUNK] if whole % SPREAD_CHUNK else [])


def assumed_buckets(sizes: list[int], compute_ms: float, bucket_cap_mb: float) -> list[Bucket]:
    """DDP's buckets over the gradients in reverse order, each gradient ready when backward has covered its share
    of the bytes (time from the start of backward), backward BACKWARD_SHARE of the compute step."""
    backward_ms = BACKWARD_SHARE * compute_ms
    total = float(sum(sizes))
    ready, done = [], 0
    for size in reversed(sizes):
        done += size
        ready.append((size, backward_ms * done / total))
    return ddp_buckets(ready, FIRST_BUCKET_BYTES, int(bucket_cap_mb * 2**20))
