"""Measurement: timers, FLOPs and peaks, energy and memory, job timing, the communication control, the scaling
model and the all-reduce benchmark."""
