"""Measurement: the leaf instruments. Timers, FLOPs and peaks, energy and memory, job timing, the scaling model,
the communication choice and the all-reduce arithmetic."""
