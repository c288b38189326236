#!/usr/bin/env bash
# A real single-node SLURM on this machine, for testing the slurm/ batch scripts:
# munged + slurmctld + slurmd, all on 127.0.0.1, all state in one directory.
#
#     scripts/slurm-local.sh install   # apt-get install slurm-wlm munge libpmix-dev (root; exit 77 when impossible)
#     scripts/slurm-local.sh start     # generate the config, start the daemons, wait for the node (idempotent)
#     scripts/slurm-local.sh status    # what runs; exit 0 when the cluster is up, 3 when it is not
#     scripts/slurm-local.sh env       # prints `export SLURM_CONF=...`: eval "$(scripts/slurm-local.sh env)"
#     scripts/slurm-local.sh stop      # stop the daemons (idempotent); the state directory stays
#     scripts/slurm-local.sh clean     # stop, then remove the state directory
#
# Then, for example:
#     eval "$(scripts/slurm-local.sh env)"
#     sbatch --wait --ntasks=2 slurm/train.sbatch data/demo.h5 runs/slurm
#
# The state directory (MPIDML_SLURM_DIR, default /tmp/mpidml-slurm-<uid>-<hash of this checkout>)
# holds the munge key and socket, slurm.conf (written for this machine's CPUs and memory, as
# `slurmd -C` reports them), spool directories, pid files and logs. Ports are chosen free when the
# configuration is first written, so two checkouts can each run a cluster. Nothing outside the
# directory is touched (the system's /etc/slurm and munge service are left alone).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${MPIDML_SLURM_DIR:-/tmp/mpidml-slurm-$(id -u)-$(printf '%s' "$ROOT" | sha256sum | cut -c1-8)}"
CONF="$DIR/slurm.conf"
SOCKET="$DIR/munge/munge.socket"
SBIN=/usr/sbin
# libpmix-dev: SLURM's mpi/pmix plugin dlopen()s the unversioned libpmix.so, which only the -dev
# package ships; without it `srun --mpi=pmix` fails with "can not load PMIx library".
APT_PACKAGES=(slurm-wlm munge libpmix-dev)

die() { echo "slurm-local: $*" >&2; exit 1; }
say() { echo "slurm-local: $*" >&2; }

have_binaries() {
    for b in "$SBIN/munged" "$SBIN/slurmctld" "$SBIN/slurmd"; do [ -x "$b" ] || return 1; done
    command -v sbatch >/dev/null && command -v srun >/dev/null || return 1
    compgen -G "/usr/lib/*/libpmix.so" >/dev/null || compgen -G "/usr/lib/libpmix.so" >/dev/null
}

cmd_install() {
    if have_binaries; then
        return 0
    fi
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "slurm-local: cannot install ${APT_PACKAGES[*]}: needs root and apt-get (Debian/Ubuntu)" >&2
        exit 77
    fi
    say "apt-get install ${APT_PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || { echo "slurm-local: apt-get update failed" >&2; exit 77; }
    apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >&2 ||
        { echo "slurm-local: apt-get install ${APT_PACKAGES[*]} failed" >&2; exit 77; }
    have_binaries || die "slurmctld/slurmd/munged/libpmix.so not found after installing ${APT_PACKAGES[*]}"
}

# pid from a pid file if that process is alive and is the named program, else nothing.
live_pid() {
    local file="$1" name="$2" pid
    [ -f "$file" ] || return 1
    pid="$(cat "$file" 2>/dev/null)" || return 1
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    grep -q "$name" "/proc/$pid/comm" 2>/dev/null || return 1
    echo "$pid"
}

free_port() {
    python3 - "$@" <<'PY'
import socket, sys
taken = {int(p) for p in sys.argv[1:]}
for _ in range(100):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    if port not in taken and port + 1 not in taken:
        print(port); break
PY
}

CONF_VERSION=2  # bump when the generated slurm.conf changes

write_config() {
    if [ -f "$CONF" ]; then
        grep -q "^# slurm-local config v$CONF_VERSION\$" "$CONF" && return 0
        live_pid "$DIR/slurmctld.pid" slurmctld >/dev/null && return 0  # rewritten after a stop
    fi
    local node cpus mem hw ctld_port d_port
    node="$(hostname -s)"
    hw="$("$SBIN/slurmd" -C | head -n 1)"
    cpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")"
    mem="$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
    [ -n "$cpus" ] || cpus="$(nproc)"
    [ -n "$mem" ] || mem=1024
    # Leave some memory to the system; slurmd refuses a node configured with more than it has.
    mem=$((mem * 9 / 10))
    ctld_port="$(free_port)"
    d_port="$(free_port "$ctld_port")"
    local user
    user="$(id -un)"
    mkdir -p "$DIR/ctld" "$DIR/d" "$DIR/log"
    cat > "$CONF.tmp" <<EOF
# Written by scripts/slurm-local.sh for $(hostname) ($hw)
# slurm-local config v$CONF_VERSION
ClusterName=mpidml-local
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: containers and CI machines rarely allow them.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MailProg=/bin/true
KillWait=5
# Finished jobs are forgotten after 4 s; with that, `sbatch --wait` polls every 2 s instead of
# backing off to 10 s (it keeps its polling interval below MinJobAge/2).
MinJobAge=4
SlurmdTimeout=60
InactiveLimit=0
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit="$1" what="$2"; shift 2
    local t=0
    until "$@" >/dev/null 2>&1; do
        sleep 0.5; t=$((t + 1))
        if [ "$t" -ge $((limit * 2)) ]; then
            say "timed out after ${limit}s waiting for $what; logs in $DIR/log"
            tail -n 20 "$DIR"/log/*.log >&2 2>/dev/null || true
            return 1
        fi
    done
}

node_ready() {
    local state
    state="$(SLURM_CONF="$CONF" sinfo -h -N -o '%T' 2>/dev/null | head -n 1)"
    case "$state" in idle*|mixed*|allocated*|completing*) return 0 ;; *) return 1 ;; esac
}

cmd_start() {
    have_binaries || { echo "slurm-local: SLURM is not installed; run: $0 install" >&2; exit 77; }
    mkdir -p "$DIR/munge" "$DIR/log"
    chmod 700 "$DIR" "$DIR/munge"
    if [ ! -s "$DIR/munge/munge.key" ]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key.tmp" bs=1024 count=1 status=none
        chmod 400 "$DIR/munge/munge.key.tmp"
        mv "$DIR/munge/munge.key.tmp" "$DIR/munge/munge.key"
    fi
    if ! live_pid "$DIR/munge/munged.pid" munged >/dev/null; then
        rm -f "$SOCKET" "$SOCKET.lock"
        "$SBIN/munged" --force --key-file="$DIR/munge/munge.key" --socket="$SOCKET" \
            --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" \
            --seed-file="$DIR/munge/munged.seed" --num-threads=2
        wait_for 20 munged test -S "$SOCKET"
    fi
    write_config
    export SLURM_CONF="$CONF"
    if ! live_pid "$DIR/slurmctld.pid" slurmctld >/dev/null; then
        "$SBIN/slurmctld" -f "$CONF"
        wait_for 30 slurmctld scontrol ping
    fi
    local node
    node="$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' "$CONF")"
    if ! live_pid "$DIR/slurmd.pid" slurmd >/dev/null; then
        "$SBIN/slurmd" -f "$CONF" -N "$node"
    fi
    if ! wait_for 60 "node $node to become idle" node_ready; then
        exit 1
    fi
    say "up: node $node ($(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' "$CONF" | head -n 1) CPUs), SLURM_CONF=$CONF"
}

stop_pid() {  # stop_pid PIDFILE NAME
    local pid t=0
    pid="$(live_pid "$1" "$2")" || { rm -f "$1"; return 0; }
    kill "$pid" 2>/dev/null || true
    while [ -d "/proc/$pid" ] && [ "$t" -lt 40 ]; do sleep 0.25; t=$((t + 1)); done
    if [ -d "/proc/$pid" ]; then
        kill -9 "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$1"
}

# slurmstepd processes of this cluster (they inherit SLURM_CONF=$CONF from our slurmd).
our_stepds() {
    local p
    for p in $(pgrep -x slurmstepd 2>/dev/null); do
        tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "SLURM_CONF=$CONF" && echo "$p"
    done
    return 0
}

cmd_stop() {
    [ -d "$DIR" ] || return 0
    if [ -f "$CONF" ] && live_pid "$DIR/slurmctld.pid" slurmctld >/dev/null; then
        # Cancel what is still queued or running so no job step outlives the cluster.
        SLURM_CONF="$CONF" scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
        local t=0
        while [ -n "$(SLURM_CONF="$CONF" squeue -h -o %i 2>/dev/null)" ] && [ "$t" -lt 60 ]; do
            sleep 0.5; t=$((t + 1))
        done
    fi
    stop_pid "$DIR/slurmd.pid" slurmd
    local p
    for p in $(our_stepds); do kill -9 "$p" 2>/dev/null || true; done
    stop_pid "$DIR/slurmctld.pid" slurmctld
    stop_pid "$DIR/munge/munged.pid" munged
    say "stopped (state in $DIR)"
}

cmd_status() {
    local up=0 name file pid
    for pair in "munged:$DIR/munge/munged.pid" "slurmctld:$DIR/slurmctld.pid" "slurmd:$DIR/slurmd.pid"; do
        name="${pair%%:*}"; file="${pair#*:}"
        if pid="$(live_pid "$file" "$name")"; then
            echo "$name: running (pid $pid)"
        else
            echo "$name: stopped"; up=3
        fi
    done
    if [ "$up" = 0 ]; then
        SLURM_CONF="$CONF" sinfo -N -o '%N %T %c %m' 2>/dev/null || up=3
        node_ready || up=3
    fi
    echo "state: $DIR"
    return $up
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    clean) cmd_stop; rm -rf "$DIR"; say "removed $DIR" ;;
    *) echo "usage: $0 install|start|stop|restart|status|env|clean" >&2; exit 2 ;;
esac
