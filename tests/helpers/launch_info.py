"""LaunchInfo values for the hardware planning tests."""

from __future__ import annotations

from ddp_bench.launch.launchers import LaunchInfo


def info(local_world_size: int = 1, local_rank: int = 0) -> LaunchInfo:
    return LaunchInfo("torchrun", local_rank, local_rank, local_world_size, local_world_size, 0, 1, "h", 1)
