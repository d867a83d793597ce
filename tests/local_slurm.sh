#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for the launcher tests.
#
#   tests/local_slurm.sh up   BASE   install (Debian packages) if needed, configure under BASE, start munged,
#                                    slurmctld and slurmd, wait until the node is idle; prints SLURM_CONF=...
#   tests/local_slurm.sh up BASE NODE TYPE:COUNT [NODES]   the same, with the node shaped as a cluster's GPU node
#                                    (../shared/notes/local-slurm.md): NODE is its hardware as slurm.conf writes it
#                                    ("CPUs=48 RealMemory=510000"), TYPE:COUNT its GPUs (h100:4; plain files stand
#                                    in for the devices); NODES > 1 adds nodes of the same shape without a slurmd,
#                                    configured idle, so that sbatch --test-only judges multi-node jobs
#   tests/local_slurm.sh down BASE   cancel the jobs still queued or running, then stop exactly the daemons that
#                                    `up` started (by their PID files)
#   tests/local_slurm.sh stop-daemons BASE   stop slurmd and slurmctld only: munged stays, for the emulated
#                                    multi-node Slurm of tests/helpers/emulated_slurm.py
#
# Needs root and apt-get; exits 3 with a one-line reason when the machine cannot do it (tests then skip).
# Everything Slurm writes lives under BASE, so `down` then `up` again starts from a clean state.
set -euo pipefail

command=${1:-}
base=${2:-/tmp/ddp_bench_slurm}
shape=${3:-}
gpus=${4:-}
nodes=${5:-1}
conf="$base/slurm.conf"

cannot() { echo "cannot start a local Slurm: $*" >&2; exit 3; }

stop_pidfile() {
    local pidfile=$1 pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && [ -d "/proc/$pid" ]; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            # PID 1 here reaps late: a zombie counts as stopped
            if [ ! -d "/proc/$pid" ] || [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
                break
            fi
            sleep 0.1
        done
        [ -d "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] && kill -9 "$pid" 2>/dev/null
    fi
    rm -f "$pidfile"
}

stop_daemons() {  # slurmd and slurmctld; munged stays (an emulated multi-node Slurm uses it)
    stop_pidfile "$base/slurmd.pid"
    stop_pidfile "$base/slurmctld.pid"
}

down() {
    # Jobs first (a test that timed out may have left one running), while the daemons can still end them.
    if [ -f "$base/slurmctld.pid" ] && [ -f "$conf" ]; then
        local jobs
        jobs=$(SLURM_CONF="$conf" squeue -h -o %i 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086  # one job id per word
            SLURM_CONF="$conf" scancel $jobs 2>/dev/null || true
            for _ in $(seq 100); do
                [ -z "$(SLURM_CONF="$conf" squeue -h -o %i 2>/dev/null || true)" ] && break
                sleep 0.2
            done
        fi
    fi
    stop_daemons
    stop_pidfile "$base/munged.pid"
}

# A cluster's GPU node on this VM: Slurm takes the node line's CPUs, memory and GPUs on trust (config_overrides),
# and judges jobs by them, memory included (CR_Core_Memory); tasks are not bound (task/none: the CPUs are not
# there). The nodes past the first have no slurmd: they are configured idle, which is enough for --test-only, and
# weighted so that a real job lands on the first.
shape_nodes() {
    local type=${gpus%%:*} count=${gpus##*:} files names=$host i
    mkdir -p "$base/gpu-files"
    for i in $(seq 0 $((count - 1))); do : > "$base/gpu-files/gpu$i"; done
    files="$base/gpu-files/gpu0"
    if [ "$count" -gt 1 ]; then files="$base/gpu-files/gpu[0-$((count - 1))]"; fi
    node_lines="NodeName=$host NodeAddr=127.0.0.1 $shape Gres=gpu:$gpus Weight=1 State=UNKNOWN"
    for i in $(seq 2 "$nodes"); do
        node_lines+=$'\n'"NodeName=$host-$i NodeAddr=127.0.0.1 $shape Gres=gpu:$gpus Weight=100 State=IDLE"
        names+=",$host-$i"
    done
    partition_nodes=$names
    echo "NodeName=$names Name=gpu Type=$type File=$files" > "$base/gres.conf"
    extra=$'GresTypes=gpu\nSlurmdParameters=config_overrides'
    task_plugin=task/none
    select_parameters=CR_Core_Memory
}

up() {
    [ "$(id -u)" = 0 ] || cannot "needs root"
    if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
        || ! command -v srun >/dev/null; then
        command -v apt-get >/dev/null || cannot "Slurm is not installed and apt-get is not available"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null 2>&1 || cannot "apt-get update failed"
        apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null 2>&1 \
            || cannot "apt-get install slurmctld slurmd slurm-client munge failed"
    fi
    down  # a previous run's daemons, if any
    rm -rf "$base/state" "$base/spool"
    mkdir -p "$base/state" "$base/spool" "$base/log"

    # munge: the key and socket locations Slurm's auth/munge plugin expects
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile /etc/munge/munge.key >/dev/null 2>&1 || cannot "mungekey failed"
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- munged --force || cannot "munged did not start"
    for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
    cp /run/munge/munged.pid "$base/munged.pid" || cannot "munged wrote no PID file"

    local host hardware node_lines partition_nodes extra="" task_plugin=task/affinity select_parameters=CR_Core
    host=$(hostname -s)
    hardware=$(slurmd -C | head -n 1 | sed 's/^NodeName=[^ ]* //')
    node_lines="NodeName=$host NodeAddr=127.0.0.1 $hardware State=UNKNOWN"
    partition_nodes=$host
    rm -rf "${base:?}/gres.conf" "${base:?}/gpu-files"
    if [ -n "$shape" ]; then
        shape_nodes
    fi
    cat > "$conf" <<EOF
ClusterName=ddpbench
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$base/state
SlurmdSpoolDir=$base/spool
SlurmctldPidFile=$base/slurmctld.pid
SlurmdPidFile=$base/slurmd.pid
SlurmctldLogFile=$base/log/slurmctld.log
SlurmdLogFile=$base/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=$task_plugin
SelectType=select/cons_tres
SelectTypeParameters=$select_parameters
MpiDefault=none
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
KillWait=5
$extra
$node_lines
PartitionName=cpu Nodes=$partition_nodes Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$conf"
    slurmctld -f "$conf" || cannot "slurmctld did not start (see $base/log/slurmctld.log)"
    slurmd -f "$conf" || cannot "slurmd did not start (see $base/log/slurmd.log)"
    for _ in $(seq 100); do
        state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -n 1 || true)
        case "$state" in
            idle*) echo "SLURM_CONF=$conf"; return 0 ;;
            down*|drain*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.2
    done
    cannot "the node never became idle (state: ${state:-none}; see $base/log/)"
}

case "$command" in
    up) up ;;
    down) down ;;
    stop-daemons) stop_daemons ;;
    *) echo "usage: $0 up|down|stop-daemons [BASE [NODE TYPE:COUNT [NODES]]]" >&2; exit 2 ;;
esac
