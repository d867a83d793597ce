"""Cluster: cluster profiles, rendered Slurm job scripts, sweeps."""
