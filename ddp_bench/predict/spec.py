"""The spec file of `python -m ddp_bench predict --spec FILE.toml`: a cluster nobody here can measure, from its
published figures or the user's own one-node measurement. Every problem is a UsageError (one line, exit 2).

    [model]                      # torchvision = "resnet50" or gradient_bytes = 102.2e6; batch_per_gpu; bucket_cap_mb
    [compute]                    # images_per_s_per_gpu or step_ms (compute only); busy_gpus; optional, for the
                                 # slowest of N: step_quantiles_ms, steps_pooled, measured_gpus
    [node]                       # gpus
    [allreduce.intra]            # sizes_bytes, busbw_gbs (nccl-tests' table on one node); alpha_us (optional)
    [allreduce.inter]            # alpha_us, busbw_gbs (line figures, per node), or sizes_bytes, busbw_gbs, nodes
    [predict]                    # gpus
    [published]                  # optional: gpus, images_per_s (what a source measured, for validation)
    [sources]                    # optional: free text, where each figure came from
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

from ddp_bench.errors import UsageError
from ddp_bench.measurement.compute_drift import MIN_POOLED, QUANTILE_LEVELS, StepQuantiles

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a package (pyproject's tomli dependency)
    import tomli as tomllib

KEYS: dict[str, set[str]] = {
    "model": {"torchvision", "gradient_bytes", "batch_per_gpu", "bucket_cap_mb"},
    "compute": {"images_per_s_per_gpu", "step_ms", "busy_gpus", "step_quantiles_ms", "steps_pooled", "measured_gpus"},
    "node": {"gpus"},
    "allreduce": {"intra", "inter"},
    "allreduce.intra": {"sizes_bytes", "busbw_gbs", "alpha_us"},
    "allreduce.inter": {"sizes_bytes", "busbw_gbs", "alpha_us", "nodes"},
    "predict": {"gpus"},
    "published": {"gpus", "images_per_s"},
}
REQUIRED = {"model", "compute", "node", "predict"}


@dataclass(frozen=True)
class Table:
    sizes: tuple[int, ...]  # bytes; one size of 1 for line figures
    busbw: tuple[float, ...]  # bytes/s
    alpha_s: float
    nodes: int  # the measurement's nodes (inter tables); 0 for line figures and intra tables


@dataclass(frozen=True)
class Spec:
    path: str
    torchvision: str  # "" when the model is given by its gradient bytes
    gradient_bytes: float
    batch_per_gpu: int
    bucket_cap_mb: float
    compute_ms: float
    busy_gpus: int
    step_quantiles: StepQuantiles | None  # the compute-only steps' spread, for the slowest of N; None: no drift
    measured_gpus: int  # the ranks the compute step was measured on (the drift's anchor)
    node_gpus: int
    intra: Table | None
    inter: Table | None
    gpus: tuple[int, ...]
    published: dict[int, float]
    sources: dict[str, str]


def _number(where: str, value: Any, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UsageError(f"{where} = {value!r}: give a positive number")
    if integer and value != int(value):
        raise UsageError(f"{where} = {value!r}: give a whole number")
    return int(value) if integer else float(value)


def _numbers(where: str, value: Any, integer: bool = False) -> tuple:
    if not isinstance(value, list) or not value:
        raise UsageError(f"{where}: give a list of one or more positive numbers")
    return tuple(_number(f"{where}[{index}]", item, integer) for index, item in enumerate(value))


def _table(path: str, raw: dict, section: str, name: str) -> dict:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise UsageError(f"{path}: [{section}] must be a table")
    unknown = sorted(set(value) - KEYS[section])
    if unknown:
        raise UsageError(
            f"{path}: unknown key {unknown[0]!r} in [{section}] (known: {', '.join(sorted(KEYS[section]))})"
        )
    return value


def _one_of(path: str, section: str, table: dict, first: str, second: str) -> str:
    given = [key for key in (first, second) if key in table]
    if len(given) != 1:
        raise UsageError(f"{path}: [{section}] needs exactly one of {first} and {second}")
    return given[0]


def _link(path: str, section: str, table: dict, line_ok: bool) -> Table:
    if "busbw_gbs" not in table:
        raise UsageError(f"{path}: [{section}] needs busbw_gbs")
    alpha = _number(f"[{section}] alpha_us", table["alpha_us"]) * 1e-6 if "alpha_us" in table else 0.0
    if "sizes_bytes" not in table:
        if not line_ok or isinstance(table["busbw_gbs"], list):
            raise UsageError(f"{path}: [{section}] needs sizes_bytes beside its busbw_gbs list")
        if "nodes" in table:
            raise UsageError(f"{path}: [{section}] nodes goes with a table (sizes_bytes), not with line figures")
        return Table((1,), (_number(f"[{section}] busbw_gbs", table["busbw_gbs"]) * 1e9,), alpha, 0)
    sizes = _numbers(f"[{section}] sizes_bytes", table["sizes_bytes"], integer=True)
    busbw = _numbers(f"[{section}] busbw_gbs", table["busbw_gbs"])
    if len(sizes) != len(busbw) or list(sizes) != sorted(set(sizes)):
        raise UsageError(f"{path}: [{section}] sizes_bytes must be ascending, one per busbw_gbs value")
    nodes = 0
    if section == "allreduce.inter":
        if "nodes" not in table:
            raise UsageError(f"{path}: [{section}] with a table needs nodes (how many it was measured across)")
        nodes = _number(f"[{section}] nodes", table["nodes"], integer=True)
        if nodes < 2:
            raise UsageError(f"{path}: [{section}] nodes = {nodes}: a table across nodes needs 2 or more")
    return Table(sizes, tuple(value * 1e9 for value in busbw), alpha, nodes)


def _step_spread(path: str, compute: dict, busy: int) -> tuple[StepQuantiles | None, int]:
    """[compute] step_quantiles_ms (the compute-only step at 0, 25, 50, 75, 90, 95, 99 and 100 %, as a ddp_bench
    row's compute_step_*_ms) and steps_pooled (how many steps they came from), both or neither; measured_gpus, the
    ranks they were measured on, defaults to busy_gpus."""
    given = [key for key in ("step_quantiles_ms", "steps_pooled") if key in compute]
    if not given:
        if "measured_gpus" in compute:
            raise UsageError(f"{path}: [compute] measured_gpus goes with step_quantiles_ms and steps_pooled")
        return None, busy
    if len(given) == 1:
        raise UsageError(f"{path}: [compute] step_quantiles_ms and steps_pooled go together")
    values = _numbers("[compute] step_quantiles_ms", compute["step_quantiles_ms"])
    if len(values) != len(QUANTILE_LEVELS) or list(values) != sorted(values):
        raise UsageError(
            f"{path}: [compute] step_quantiles_ms needs {len(QUANTILE_LEVELS)} rising values, at "
            f"{', '.join(f'{level:.0%}' for level in QUANTILE_LEVELS)}"
        )
    pooled = _number("[compute] steps_pooled", compute["steps_pooled"], integer=True)
    if pooled < MIN_POOLED:
        raise UsageError(f"{path}: [compute] steps_pooled = {pooled}: {MIN_POOLED} or more describe a spread")
    measured = _number("[compute] measured_gpus", compute.get("measured_gpus", busy), integer=True)
    return StepQuantiles(tuple(values), pooled), measured


def load_spec(path: str) -> Spec:
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except OSError as exc:
        raise UsageError(f"cannot read --spec {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not TOML: {exc}") from None
    unknown = sorted(set(raw) - set(KEYS) - {"sources"})
    if unknown:
        raise UsageError(f"{path}: unknown table [{unknown[0]}]")
    missing = sorted(REQUIRED - set(raw))
    if missing:
        raise UsageError(f"{path}: missing table [{missing[0]}]")
    return _spec(path, raw)


def _spec(path: str, raw: dict) -> Spec:
    model, compute = _table(path, raw, "model", "model"), _table(path, raw, "compute", "compute")
    node, predict = _table(path, raw, "node", "node"), _table(path, raw, "predict", "predict")
    allreduce = _table(path, raw, "allreduce", "allreduce")
    which = _one_of(path, "model", model, "torchvision", "gradient_bytes")
    if "batch_per_gpu" not in model:
        raise UsageError(f"{path}: [model] needs batch_per_gpu")
    batch = _number("[model] batch_per_gpu", model["batch_per_gpu"], integer=True)
    torchvision_name = model["torchvision"] if which == "torchvision" else ""
    if which == "torchvision" and not isinstance(torchvision_name, str):
        raise UsageError(f'{path}: [model] torchvision must be a model name, e.g. "resnet50"')
    speed = _one_of(path, "compute", compute, "images_per_s_per_gpu", "step_ms")
    value = _number(f"[compute] {speed}", compute[speed])
    for section, table, key in (
        ("compute", compute, "busy_gpus"),
        ("node", node, "gpus"),
        ("predict", predict, "gpus"),
    ):
        if key not in table:
            raise UsageError(f"{path}: [{section}] needs {key}")
    node_gpus = _number("[node] gpus", node["gpus"], integer=True)
    busy = _number("[compute] busy_gpus", compute["busy_gpus"], integer=True)
    if busy > node_gpus:
        raise UsageError(f"{path}: [compute] busy_gpus = {busy} is more than [node] gpus = {node_gpus}")
    intra = _link(path, "allreduce.intra", _table(path, allreduce, "allreduce.intra", "intra"), False) if (
        "intra" in allreduce) else None  # fmt: skip
    inter = _link(path, "allreduce.inter", _table(path, allreduce, "allreduce.inter", "inter"), True) if (
        "inter" in allreduce) else None  # fmt: skip
    if intra is None and node_gpus > 1:
        raise UsageError(f"{path}: a node of {node_gpus} GPUs needs [allreduce.intra] (nccl-tests' table on one node)")
    gpus = _numbers("[predict] gpus", predict["gpus"], integer=True)
    if inter is None and max(gpus) > node_gpus:
        raise UsageError(f"{path}: predicting {max(gpus)} GPUs on nodes of {node_gpus} needs [allreduce.inter]")
    published = _table(path, raw, "published", "published")
    pairs = {}
    if published:
        counts = _numbers("[published] gpus", published.get("gpus"), integer=True)
        values = _numbers("[published] images_per_s", published.get("images_per_s"))
        if len(counts) != len(values):
            raise UsageError(f"{path}: [published] gpus and images_per_s must pair up")
        pairs = dict(zip(counts, values, strict=True))
    sources = raw.get("sources", {})
    if not isinstance(sources, dict) or not all(isinstance(text, str) for text in sources.values()):
        raise UsageError(f'{path}: [sources] holds text only (key = "where the figure came from")')
    return Spec(
        path, torchvision_name,
        _number("[model] gradient_bytes", model["gradient_bytes"]) if which == "gradient_bytes" else 0.0,
        batch, _number("[model] bucket_cap_mb", model.get("bucket_cap_mb", 25)),
        batch * 1e3 / value if speed == "images_per_s_per_gpu" else value,
        busy, *_step_spread(path, compute, busy), node_gpus, intra, inter, tuple(sorted(set(gpus))), pairs,
        dict(sources),
    )  # fmt: skip
