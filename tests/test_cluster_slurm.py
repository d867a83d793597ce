"""Tier 3: every Slurm cluster profile judged by a real Slurm shaped as that cluster's GPU node.

For each cluster (and each kind of GPU node), tests/local_slurm.sh reconfigures the local Slurm so that this VM is
two of that cluster's GPU nodes: their cores, memory and `gpu:<type>:<n>` GRES, taken on trust
(../shared/notes/local-slurm.md; the second node has no slurmd, which is enough for `sbatch --test-only`). The
sweep's script at 1, 4 and 8 GPUs then goes to `sbatch --test-only`: what the site allows must be accepted, what it
forbids refused by ddp_bench first (or else by Slurm). A request one core or one megabyte past the node is refused
by Slurm, so the shaped node is really judging. One script also runs for real to COMPLETED, `--device cpu` passed
through as a ddp_bench flag. The plain configuration is put back afterwards, also when a test fails.
"""

import os
import re
import subprocess
import sys

import pytest

from ddp_bench.cluster.profiles import PROFILES
from ddp_bench.cluster.sweep import sweep_main
from ddp_bench.errors import UsageError
from tests.helpers.paths import ROOT
from tests.helpers.rank_rows import read_rows
from tests.helpers.runs import run_group
from tests.helpers.slurm import local_slurm

pytestmark = pytest.mark.distributed

SHAPES = [
    (profile, node)
    for profile in PROFILES.values()
    if profile.scheduler == "slurm" and profile.cc_cluster
    for node in profile.nodes
]


def site_allows(name: str, per_node: int, gpus: int) -> bool:
    """The GPU counts each site accepts, as ../shared/notes/clusters-2026.md states them (written out here, apart
    from the profiles, so that a wrong profile cannot pass): Trillium takes 1 GPU or multiples of 4; tamIA
    allocates whole nodes; the others take any count."""
    if name == "trillium":
        return gpus == 1 or gpus % 4 == 0
    if name == "tamia":
        return gpus % per_node == 0
    return True


@pytest.fixture(scope="module")
def shaped(slurm, tmp_path_factory):
    """A function that shapes the local Slurm as a node kind; the plain configuration comes back at the end."""
    scratch = tmp_path_factory.mktemp("scratch")

    def shape(node) -> None:
        up = local_slurm("up", f"CPUs={node.cpus} RealMemory={node.memory_mb}", f"{node.gpu_type}:{node.gpus}", "2")
        assert up.returncode == 0, up.stderr

    try:
        yield shape, slurm, scratch
    finally:
        plain = local_slurm("up")
        assert plain.returncode == 0, plain.stderr


def sweep_script(profile, node, gpus: int, scratch, monkeypatch, capsys) -> str:
    """The script `sweep --dry-run` renders for one count (in this process: seconds for every profile)."""
    monkeypatch.setenv("SCRATCH", str(scratch))  # Trillium: results under $SCRATCH,
    monkeypatch.setenv("DDP_BENCH_VENV", sys.prefix)  # and a venv built beforehand
    kind = ["--gpu-type", node.gpu_type] if len(profile.nodes) > 1 else []
    argv = ["--cluster", profile.name, *kind, "--gpus", str(gpus), "--dry-run", "--results", str(scratch / "r")]
    assert sweep_main([*argv, "--", "--device", "cpu"]) == 0
    return capsys.readouterr().out.split(" ---\n", 1)[1]


def test_every_profile_is_judged_by_a_slurm_shaped_as_its_gpu_node(shaped, tmp_path, monkeypatch, capsys):
    shape, env, scratch = shaped
    verdicts = []
    for profile, node in SHAPES:
        shape(node)
        accepted_scripts = []
        for gpus in (1, 4, 8):
            allowed = site_allows(profile.name, node.gpus, gpus)
            try:
                script = sweep_script(profile, node, gpus, scratch, monkeypatch, capsys)
            except UsageError as refusal:
                capsys.readouterr()
                assert not allowed, f"{profile.name} {node.gpu_type} x{gpus}: ddp_bench refused: {refusal}"
                verdicts.append((profile.name, node.gpu_type, gpus, "ddp_bench"))
                continue
            path = tmp_path / f"{profile.name}-{node.gpu_type}-{gpus}.sbatch"
            path.write_text(script)
            judged = subprocess.run(["sbatch", "--test-only", str(path)], env=env, cwd=tmp_path,
                                    capture_output=True, text=True, timeout=60)  # fmt: skip
            accepted = judged.returncode == 0 and "to start at" in judged.stderr
            assert accepted or not allowed, f"{profile.name} {node.gpu_type} x{gpus}: Slurm said {judged.stderr}"
            verdicts.append((profile.name, node.gpu_type, gpus, "accepted" if accepted else "slurm"))
            if accepted:
                accepted_scripts.append(path)
        # the node is really judging: the smallest accepted script with one core, or one megabyte, past the node
        smallest = accepted_scripts[0].read_text()
        memory = f"--mem={node.memory_mb + 1}M"
        if "--mem-per-cpu=" in smallest:  # the three memory options exclude each other: override the script's own
            cores = int(re.search(r"--cpus-per-task=(\d+)", smallest).group(1))
            memory = f"--mem-per-cpu={node.memory_mb // cores + 1}M"
        for option in (f"--cpus-per-task={node.cpus + 1}", memory):
            judged = subprocess.run(["sbatch", "--test-only", option, str(accepted_scripts[0])], env=env,
                                    cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
            assert judged.returncode != 0 and "not available" in judged.stderr, (profile.name, option, judged.stderr)
    refused_first = {(name, kind, gpus) for name, kind, gpus, verdict in verdicts if verdict == "ddp_bench"}
    assert refused_first == {("tamia", "h100", 1), ("tamia", "h200", 1), ("tamia", "h200", 4)}
    assert all(verdict != "slurm" for *_, verdict in verdicts)  # ddp_bench refused everything the sites forbid
    assert len(verdicts) == 3 * len(SHAPES) == 30


def test_one_profiles_script_runs_to_completed_there(shaped, tmp_path, monkeypatch, capsys):
    shape, env, scratch = shaped
    profile = PROFILES["narval"]
    (node,) = profile.nodes
    shape(node)
    path = tmp_path / "narval-1.sbatch"
    path.write_text(sweep_script(profile, node, 1, scratch, monkeypatch, capsys))
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    job_env = {**env, "DDP_BENCH_VENV": sys.prefix, "DDP_BENCH_SRC": ROOT, "DDP_BENCH_RESULTS": str(tmp_path / "r")}
    done = run_group(
        ["sbatch", "--wait", f"--nodelist={host}", f"--chdir={tmp_path}", str(path),
         "--device", "cpu", "--steps", "3", "--warmup-steps", "1"],
        timeout=240, env=job_env,
    )  # fmt: skip
    log = "".join(out.read_text() for out in tmp_path.glob("*.out"))
    assert done.returncode == 0, done.stderr + log[-3000:]
    job_id = re.search(r"Submitted batch job (\d+)", done.stdout).group(1)
    shown = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True).stdout
    assert "JobState=COMPLETED" in shown and "ExitCode=0:0" in shown, shown
    for granted in ("TRES=cpu=12,", "MinMemoryCPU=10581M", "TresPerNode=gres:gpu:a100:1"):  # Narval's per GPU
        assert granted in shown, shown
    (row,) = read_rows(tmp_path / "r")
    assert (row["status"], row["device"], row["job_id"], row["amp"]) == ("complete", "cpu", job_id, "bf16")
    assert row["sweep_key"].startswith("g1-") and (row["launcher"], row["world_size"]) == ("slurm", "1")
    assert not os.path.exists(os.path.join(ROOT, "results", row["run_id"]))  # rows went where they were sent
