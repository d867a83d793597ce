"""benchmarks/gpu_first_contact.py on the CPU: every step of the first GPU contact runs with --dry-run, so that on
the day a GPU is lent the command does not die on a typo; a step that hangs is ended at its own deadline."""

from __future__ import annotations

import csv
import importlib.util
import os
import sys
import tarfile
import time

import pytest

from tests.helpers.paths import MNIST_ENV, ROOT
from tests.helpers.runs import clean_env, run_group

SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_first_contact.py")


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_first_contact", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_step_that_hangs_is_ended_at_its_deadline_and_recorded(tmp_path):
    script = load_script()
    os.makedirs(tmp_path / "logs")
    lease = script.Lease(str(tmp_path), True, "", time.monotonic() + 60)
    lease.step_deadline = time.monotonic() + 2
    started = time.monotonic()
    with pytest.raises(script.StepFailed, match="timeout"):
        lease.run([sys.executable, "-c", "import time; time.sleep(60)"], "hang")
    assert time.monotonic() - started < 10
    with pytest.raises(script.StepFailed, match="exit 3: boom"):
        lease.step_deadline = time.monotonic() + 30
        lease.run([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"], "fails")


@pytest.mark.slow
@pytest.mark.distributed
def test_every_step_runs_on_the_cpu_and_comes_back_packed(tmp_path):
    mnist = os.environ.get(MNIST_ENV, "")
    archive = tmp_path / "first-contact.tgz"
    command = [sys.executable, SCRIPT, "--dry-run", "--results", str(tmp_path), "--archive", str(archive),
               "--mnist-dir", mnist]  # fmt: skip
    done = run_group(command, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = tmp_path / "cpu-dry-run-first-contact"
    with open(folder / "steps.csv", encoding="utf-8", newline="") as handle:
        steps = {row["step"]: row for row in csv.DictReader(handle)}
    names = [name for name, _, _ in load_script().STEPS]
    assert list(steps) == names
    needs_mnist = {"mnist-device-loader", "course-loop"}
    for name, row in steps.items():
        expected = "skipped" if name in needs_mnist and not mnist else "ok"
        assert row["status"] == expected, (name, row["note"])
    # default, MNIST, six resnet50, compile, energy
    assert len(list((folder / "runs").glob("*/rank0.csv"))) == 10 - (0 if mnist else 1)
    assert len(list((folder / "allreduce").glob("*/*/allreduce.csv"))) == 2
    assert (folder / "report" / "summary.md").is_file() and (folder / "gpu-tier.csv").is_file()
    with tarfile.open(archive) as packed:  # the last step's state is what came back
        assert "cpu-dry-run-first-contact/report/summary.md" in packed.getnames()
