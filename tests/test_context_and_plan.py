"""Tier 1: platform detection, provenance, hardware planning (CUDA faked where no GPU exists), download verb."""

import re
import subprocess
import sys

import pytest
import torch

from ddp_bench import cli, data
from ddp_bench.config import BenchConfig
from ddp_bench.errors import UsageError
from ddp_bench.launch.context import collect_context, cpu_name, detect_cluster, detect_platform, git_commit
from ddp_bench.launch.hardware import plan_hardware, steady_cpu_allocator
from ddp_bench.results.results_dir import check_output_dir
from tests.helpers.launch_info import info
from tests.helpers.rank_rows import read_rows
from tests.helpers.runs import clean_env, run_group


@pytest.mark.parametrize(
    "env, platform",
    [
        ({"COLAB_RELEASE_TAG": "release-colab_20261101"}, "colab"),
        ({"SLURM_JOB_ID": "1", "SLURM_CLUSTER_NAME": "narval"}, "slurm"),
        ({"PBS_JOBID": "42.polaris-pbs-01"}, "pbs"),
        ({}, "local"),
    ],
)
def test_platform_detection(env, platform):
    assert detect_platform(env) == platform


def test_cluster_name_comes_from_slurm():
    assert detect_cluster({"SLURM_CLUSTER_NAME": "narval"}) == "narval"
    assert detect_cluster({}) == ""


def test_provenance_names_the_cpu_and_the_commit():
    assert cpu_name()
    context = collect_context({}, "cpu", 0, "gloo")
    assert context.torch_version == torch.__version__
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if head:  # a checkout: the commit is recorded, marked dirty when the tree has changes
        assert re.fullmatch(head + "(-dirty)?", git_commit())


def test_cpu_ranks_on_one_node_share_its_cores(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    plan = plan_hardware(BenchConfig(device="cpu"), info(local_world_size=4), {})
    assert (plan.device.type, plan.backend, plan.threads) == ("cpu", "gloo", 4)


def test_each_rank_takes_the_gpu_of_its_local_rank(two_fake_gpus):
    plan = plan_hardware(BenchConfig(), info(local_world_size=2, local_rank=1), {})
    assert (str(plan.device), plan.backend) == ("cuda:1", "nccl")


def test_more_ranks_on_a_node_than_gpus_is_refused(two_fake_gpus):
    with pytest.raises(UsageError, match="3 ranks on this node but only 2 GPU"):
        plan_hardware(BenchConfig(), info(local_world_size=3, local_rank=2), {})


def test_one_gpu_bound_to_each_task_is_accepted(monkeypatch, two_fake_gpus):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    plan = plan_hardware(BenchConfig(), info(local_world_size=4, local_rank=3), {"CUDA_VISIBLE_DEVICES": "3"})
    assert str(plan.device) == "cuda:0"


def test_bf16_on_a_t4_is_refused_with_the_alternative(two_fake_gpus):
    with pytest.raises(UsageError, match="Tesla T4 has no bf16 units, use --amp fp16"):
        plan_hardware(BenchConfig(amp="bf16"), info(), {})


def test_output_directory_checks(tmp_path):
    check_output_dir(str(tmp_path / "new" / "deeper"))  # creatable: fine, and nothing is created
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        check_output_dir(str(tmp_path / "file"))


def test_download_fetches_both_splits_with_download_enabled(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("ddp_bench.launch.preflight.has_internet", lambda host: True)
    calls = []
    monkeypatch.setattr(
        data,
        "_open_torchvision",
        lambda name, root, train, transform=None, download=False: calls.append((name, root, train, download)),
    )
    assert cli.main(["download", "--data", "mnist", "--data-dir", str(tmp_path / "d")]) == 0
    assert calls == [("mnist", str(tmp_path / "d"), True, True), ("mnist", str(tmp_path / "d"), False, True)]
    assert "mnist is ready" in capsys.readouterr().out


def test_download_that_breaks_off_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("ddp_bench.launch.preflight.has_internet", lambda host: True)

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(data, "_open_torchvision", offline)
    assert cli.main(["download", "--data", "cifar10", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run this on a machine with internet" in err[0]


def test_download_on_a_node_without_internet_is_refused_before_trying(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("ddp_bench.launch.preflight.has_internet", lambda host: False)
    monkeypatch.setattr(data, "_open_torchvision", lambda *a, **k: pytest.fail("must not try to download"))
    assert cli.main(["download", "--data", "mnist", "--data-dir", str(tmp_path / "d")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "cannot reach ossci-datasets.s3.amazonaws.com" in line and "login node" in line
    assert not (tmp_path / "d").exists()


def test_the_cpu_allocator_is_fixed_unless_the_user_chose_one():
    chosen = steady_cpu_allocator({"LD_PRELOAD": "/usr/lib/libtcmalloc.so.4", "PATH": "/bin"})
    assert chosen == "as set: LD_PRELOAD=/usr/lib/libtcmalloc.so.4"  # Colab preloads tcmalloc: left alone
    assert steady_cpu_allocator({"MALLOC_ARENA_MAX": "2"}) == "as set: MALLOC_ARENA_MAX=2"
    fixed = steady_cpu_allocator({})
    assert fixed == "glibc mmap_threshold=32MiB trim_threshold=512MiB" or "not glibc" in fixed


@pytest.mark.long
def test_a_cpu_run_records_its_allocator_and_trains_without_per_step_page_faults(tmp_path):
    """The allocator fix, checked where it matters: a whole CPU run's steps fault in fresh pages rarely (before the
    fix, the course CNN's 5-10 MB activations were mapped and unmapped on every step: about 5,000 faults a step)."""
    # Faults counted around each training step after warm-up's first ones (which grow the heap once): the median.
    code = (
        "import resource, statistics, sys\n"
        "import ddp_bench.training.loop as train\n"
        "step, faults = train.train_step, []\n"
        "def counted(*args):\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    loss = step(*args)\n"
        "    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
        "    return loss\n"
        "train.train_step = counted\n"
        "from ddp_bench.cli import main\n"
        f"code = main(['--device', 'cpu', '--steps', '20', '--warmup-steps', '5', '--out', {str(tmp_path)!r}])\n"
        "print('faults per step', statistics.median(faults[5:25]))\n"
        "sys.exit(code)\n"
    )
    done = run_group([sys.executable, "-c", code], timeout=120, env=clean_env())
    assert done.returncode == 0, done.stderr
    faults = float(re.search(r"faults per step (\S+)", done.stdout).group(1))
    (row,) = read_rows(tmp_path)
    if not row["cpu_allocator"].startswith("glibc mmap_threshold"):
        pytest.skip(f"the allocator was not fixed here: {row['cpu_allocator']}")
    assert faults < 500, faults
