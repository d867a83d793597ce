"""What tests share, grouped by what it is; test modules import from here, never from each other or conftest.py.

- paths: the checkout's root, the venv's bin directory, the real-MNIST variable
- runs: child processes for launches (clean environments, process groups ended on a timeout, the CLI, torchrun)
- rank_rows: rank rows read back from a results directory, and hand-made ones (TEST FIXTURES)
- report_runs: hand-made runs and all-reduce tables for the report's arithmetic (TEST FIXTURES)
- platforms: hand-made GPU runs for the report's Platforms section (TEST FIXTURES)
- failures: marked child processes, the one-line error, signal handlers seen in /proc
- launch_info: LaunchInfo values for hardware planning
- slurm: the machine's Slurm lock and tests/local_slurm.sh
- emulated_link, emulated_slurm, emulated_extrapolation: emulated nodes on one machine (also used by benchmarks/)
"""
