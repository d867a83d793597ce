"""All-reduce bandwidth as nccl-tests defines it: algbw = bytes / time, busbw = algbw x 2(n-1)/n (the bytes each
link really carries in a ring), over message sizes from KBs to hundreds of MB."""

from __future__ import annotations


def bus_bandwidth(algbw: float, world_size: int) -> float:
    """nccl-tests' bus bandwidth for all-reduce: what each link carries, comparable across world sizes."""
    return algbw * 2 * (world_size - 1) / world_size if world_size > 1 else algbw


def default_sizes(max_bytes: int) -> list[int]:
    """4 KiB, 16 KiB, ... up to max_bytes, by factors of 4."""
    sizes, size = [], 4096
    while size <= max_bytes:
        sizes.append(size)
        size *= 4
    return sizes


def size_label(size: int) -> str:
    """A message size as the table and the plot show it: 4 KiB, 256 MiB, 1 GiB, or bytes below 1 KiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} B"
