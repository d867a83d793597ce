"""Tier 1 (pure): each launch environment, fed plain dicts, describes the job correctly."""

import pytest

from ddp_bench.errors import UsageError
from ddp_bench.launch.discovery import complete_with_mpi
from ddp_bench.launch.launchers import (
    PORT_BASE,
    PORT_SPAN,
    LaunchInfo,
    MpiEnvironment,
    SlurmEnvironment,
    detect_launch,
    expand_nodelist,
    expand_tasks_per_node,
    slurm_port,
)

TORCHRUN = {
    "RANK": "5",
    "LOCAL_RANK": "1",
    "WORLD_SIZE": "8",
    "LOCAL_WORLD_SIZE": "4",
    "GROUP_RANK": "1",
    "MASTER_ADDR": "node01",
    "MASTER_PORT": "29400",
    "TORCHELASTIC_RUN_ID": "abc",
}
SLURM = {
    "SLURM_PROCID": "6",
    "SLURM_LOCALID": "2",
    "SLURM_NTASKS": "8",
    "SLURM_NODEID": "1",
    "SLURM_JOB_ID": "123456",
    "SLURM_STEP_ID": "0",
    "SLURM_JOB_NODELIST": "gpu[001-003,007]",
    "SLURM_STEP_NODELIST": "gpu[003,007]",
    "SLURM_STEP_NUM_NODES": "2",
    "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
}


def test_torchrun_reads_its_own_variables():
    info = detect_launch(TORCHRUN)
    assert info == LaunchInfo("torchrun", 5, 1, 8, 4, 1, 2, "node01", 29400, "abc")


def test_torchrun_wins_inside_a_slurm_job():
    # torchrun started by an sbatch script: Slurm's variables describe the allocation, not the workers.
    assert detect_launch({**SLURM, **TORCHRUN}).launcher == "torchrun"


def test_slurm_task_reads_rank_node_and_first_host_of_the_step():
    info = detect_launch(SLURM)
    assert (info.launcher, info.rank, info.local_rank, info.world_size) == ("slurm", 6, 2, 8)
    assert (info.node_rank, info.num_nodes, info.local_world_size) == (1, 2, 4)
    assert info.master_addr == "gpu003"
    assert info.master_port == slurm_port("123456", "0")
    assert info.job_id == "123456"


def test_slurm_job_nodelist_is_used_when_the_step_list_is_absent():
    env = {key: value for key, value in SLURM.items() if key not in ("SLURM_STEP_NODELIST", "SLURM_STEP_NUM_NODES")}
    env["SLURM_JOB_NODELIST"] = "cdr[1-2],gpu5"
    env["SLURM_STEP_TASKS_PER_NODE"] = "3(x2),2"
    info = SlurmEnvironment.read(env)
    assert info.master_addr == "cdr1"
    assert info.num_nodes == 3
    assert info.local_world_size == 3


def test_master_addr_and_port_override_what_slurm_derives():
    info = detect_launch({**SLURM, "MASTER_ADDR": "10.0.0.9", "MASTER_PORT": "31000"})
    assert (info.master_addr, info.master_port) == ("10.0.0.9", 31000)


def test_a_batch_script_shell_is_not_a_slurm_task():
    # sbatch's own shell has job variables but no step: running python there directly is one process.
    env = {key: value for key, value in SLURM.items() if key != "SLURM_STEP_ID"}
    assert not SlurmEnvironment.detect(env)
    assert detect_launch(env).launcher == "single"


@pytest.mark.parametrize(
    "nodelist, hosts",
    [
        ("gpu[001-003,007]", ["gpu001", "gpu002", "gpu003", "gpu007"]),
        ("cdr[1-2],gpu5", ["cdr1", "cdr2", "gpu5"]),
        ("nc10401", ["nc10401"]),
        ("ng[10101-10102],ng20304", ["ng10101", "ng10102", "ng20304"]),
        ("a[08-10]b", ["a08b", "a09b", "a10b"]),
    ],
)
def test_slurm_nodelists_expand(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


def test_a_broken_nodelist_is_a_clear_error():
    with pytest.raises(UsageError, match="cannot parse SLURM_JOB_NODELIST"):
        expand_nodelist("gpu[001-")


@pytest.mark.parametrize("spec, counts", [("4", [4]), ("4(x2)", [4, 4]), ("2(x3),1", [2, 2, 2, 1]), ("1,3", [1, 3])])
def test_tasks_per_node_expand(spec, counts):
    assert expand_tasks_per_node(spec) == counts


def test_slurm_ports_differ_between_jobs_and_steps_and_stay_in_range():
    ports = {slurm_port(str(job), str(step)) for job in range(1000, 1100) for step in range(4)}
    assert len(ports) == 400
    assert all(PORT_BASE <= port < PORT_BASE + PORT_SPAN for port in ports)


@pytest.mark.parametrize(
    "env, rank, size, local_rank",
    [
        (
            {
                "OMPI_COMM_WORLD_RANK": "3",
                "OMPI_COMM_WORLD_SIZE": "4",
                "OMPI_COMM_WORLD_LOCAL_RANK": "1",
                "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
            },
            3,
            4,
            1,
        ),
        ({"PMI_RANK": "2", "PMI_SIZE": "4", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "2"}, 2, 4, 0),
        (
            {
                "PALS_RANKID": "7",
                "PMI_SIZE": "8",
                "PALS_LOCAL_RANKID": "3",
                "PALS_LOCAL_SIZE": "4",
                "PBS_JOBID": "42.polaris",
            },
            7,
            8,
            3,
        ),
    ],
)
def test_mpi_flavours(env, rank, size, local_rank):
    info = detect_launch(env)
    assert (info.launcher, info.rank, info.world_size, info.local_rank) == ("mpi", rank, size, local_rank)
    assert info.env_world_size == size
    assert not info.complete


def test_pmix_rank_alone_leaves_the_size_to_mpi():
    info = MpiEnvironment.read({"PMIX_RANK": "1"})
    assert info.rank == 1 and info.env_world_size == 0


def test_single_process_when_nothing_is_set():
    info = detect_launch({})
    assert (info.launcher, info.rank, info.world_size, info.num_nodes) == ("single", 0, 1, 1)


@pytest.mark.parametrize(
    "launcher, fragment", [("torchrun", "start with torchrun"), ("slurm", "srun"), ("mpi", "mpiexec")]
)
def test_forcing_a_launcher_that_did_not_start_us_is_a_clear_error(launcher, fragment):
    with pytest.raises(UsageError, match=fragment):
        detect_launch({}, launcher)


def test_forcing_single_ignores_launcher_variables():
    assert detect_launch(TORCHRUN, "single").world_size == 1


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({**TORCHRUN, "RANK": "x"}, "RANK='x' is not an integer"),
        ({**TORCHRUN, "RANK": "8"}, "rank 8 is outside a world of 8"),
        ({**TORCHRUN, "MASTER_PORT": "70000"}, "not a TCP port"),
    ],
)
def test_inconsistent_launcher_variables_are_clear_errors(env, fragment):
    with pytest.raises(UsageError, match=fragment):
        detect_launch(env)


def test_mpi_discovery_leaves_other_launchers_alone():
    info = detect_launch(TORCHRUN)
    assert complete_with_mpi(info, timeout_s=5) is info
