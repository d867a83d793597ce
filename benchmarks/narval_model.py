"""What the two-stage all-reduce model says for a Narval-shaped job, from published link figures (not a measurement).

    python benchmarks/narval_model.py

Narval's GPU nodes: 4 x A100-SXM4-40GB "connected via NVLink", nodes at InfiniBand HDR100 (100 Gb/s) (Alliance,
docs.alliancecan.ca/wiki/Narval). The figures the model takes, each from its source:
- inside a node, β: each pair of GPUs on a 4-GPU A100 board is joined by 4 NVLinks (ALCF's Polaris guide shows
  `nvidia-smi topo -m` with NV4 between every pair of its 4 A100-SXM4-40GB; servethehome.com on the HGX A100 4-GPU
  "Redstone" board: 12 NVLinks per GPU "split into three groups"), each 25 GB/s per direction (NVLink 3: "the total
  data rate for a sub-link is 25 GB/s"), so 100 GB/s per direction between ring neighbours;
- between nodes, β: HDR100's 100 Gb/s, 12.5 GB/s per node;
- α: NCCL's own latency model, src/graph/tuning.cc at NCCL 2.20.3 (commit b6475625): hardware latency of a ring
  step on the Simple protocol, 3.4 µs over NVLink and 14.0 µs over the network.
The course CNN's gradients are two DDP buckets, 4,724,264 and 75,264 bytes (its rebuilt buckets in a real run).
The table is the all-reduce time of one step's buckets and its bus bandwidth; the flat ring column is the same job
as one ring of N GPUs at the network's β, to show what modelling the node as one stage changes.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ddp_bench.measurement.scaling_model import AlphaBeta, TwoStage  # noqa: E402

NVLINK = AlphaBeta(alpha_s=3.4e-6, beta_bytes_per_s=100e9, fitted_at=4)
HDR100 = AlphaBeta(alpha_s=14.0e-6, beta_bytes_per_s=12.5e9, fitted_at=2)
BUCKETS = (4_724_264, 75_264)
GPUS_PER_NODE = 4


def main() -> int:
    stages = TwoStage(NVLINK, HDR100)
    total = sum(BUCKETS)
    print("GPUs  nodes  all-reduce per step, two stages  busbw (GB/s)  flat ring at HDR100")
    for gpus in (1, 2, 4, 8, 16, 32, 64):
        nodes, per_node = max(1, gpus // GPUS_PER_NODE), min(gpus, GPUS_PER_NODE)
        two = sum(stages.time_s(nodes, per_node, size) for size in BUCKETS)
        flat = sum(HDR100.time_s(gpus, size) for size in BUCKETS) if nodes > 1 else two
        busbw = total / two * 2 * (gpus - 1) / gpus / 1e9 if gpus > 1 else float("nan")
        print(f"{gpus:>4}  {nodes:>5}  {two * 1e6:>24.0f} µs  {busbw:>12.1f}  {flat * 1e6:>14.0f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
