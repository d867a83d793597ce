"""Fixtures only (the helpers tests share are in tests/helpers/): a clean environment per test, the real-MNIST path,
the machine's local Slurm, and two faked CUDA GPUs."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from tests.helpers.paths import BIN, MNIST_ENV
from tests.helpers.runs import clean_env
from tests.helpers.slurm import SLURM_LOCK, SLURM_LOCK_WAIT_S, local_slurm, machine_lock


@pytest.fixture(autouse=True)
def restore_environment():
    """Undo any environment change a test (or the code under test) makes, so nothing leaks into the next."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def mnist_dir() -> str:
    path = os.environ.get(MNIST_ENV, "")
    if not path or not os.path.isfile(os.path.join(path, "MNIST", "raw", "train-images-idx3-ubyte")):
        pytest.skip(f"real MNIST not available: set {MNIST_ENV} to a directory holding MNIST/raw/")
    return path


@pytest.fixture(scope="session")
def slurm_machine() -> Iterator[None]:
    """This machine's Slurm, to this session alone for as long as it lasts."""
    with machine_lock(SLURM_LOCK, SLURM_LOCK_WAIT_S):
        yield


@pytest.fixture(scope="session")
def slurm(slurm_machine) -> Iterator[dict[str, str]]:
    """Environment for Slurm clients talking to a local one-node cluster that lives for the session."""
    up = local_slurm("up")
    if up.returncode != 0:
        pytest.skip(up.stderr.strip().splitlines()[-1] if up.stderr.strip() else "local Slurm did not start")
    conf = re.search(r"SLURM_CONF=(\S+)", up.stdout).group(1)
    yield clean_env(SLURM_CONF=conf, PATH=f"{BIN}:{os.environ['PATH']}", OMP_NUM_THREADS="1")
    local_slurm("down", timeout=120)  # cancels what is still queued or running, then stops the daemons


@pytest.fixture
def two_fake_gpus(monkeypatch):
    """Pretend two CUDA GPUs exist (only the planning is exercised, nothing runs on them)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_75", "sm_80", "sm_86", "sm_90"])


# Tests that start the machine's daemons (Slurm, munge) or make network namespaces need root; the quick command
# leaves them out with -m "not root" (README, "Run the tests").
ROOT_FIXTURES = frozenset({"slurm", "slurm_machine"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if ROOT_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.root)
