"""ddp_bench: honest DistributedDataParallel scaling benchmarks for CNN training."""

__version__ = "0.1.0"
