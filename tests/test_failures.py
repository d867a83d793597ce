"""Tier 2: distributed waits are bounded and end in one clear line."""

import time

from conftest import clean_env, run_cli
from ddp_bench.distributed import free_port


def slurm_rank(rank: int, port: int) -> dict[str, str]:
    return clean_env(
        SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_NTASKS="2", SLURM_STEP_ID="0", SLURM_JOB_ID="7",
        SLURM_JOB_NODELIST="localhost", MASTER_PORT=str(port),
    )


def test_rank_zero_alone_stops_after_init_timeout_naming_the_missing_ranks(tmp_path):
    started = time.monotonic()
    done = run_cli(["--init-timeout", "4", "--steps", "1", "--out", str(tmp_path)], env=slurm_rank(0, free_port()))
    assert time.monotonic() - started < 60
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ddp_bench: failed: rank 0: only 1 of 2 ranks reached the rendezvous")
    assert "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())


def test_a_rank_whose_rank_zero_never_came_stops_after_init_timeout(tmp_path):
    started = time.monotonic()
    done = run_cli(["--init-timeout", "3", "--steps", "1", "--out", str(tmp_path)], env=slurm_rank(1, free_port()))
    assert time.monotonic() - started < 60
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ddp_bench: failed: rank 1 of 2: could not join the rendezvous")
    assert "Traceback" not in done.stderr
