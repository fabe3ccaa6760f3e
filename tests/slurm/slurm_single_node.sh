#!/usr/bin/env bash
# slurm_single_node.sh - a throw-away single-node Slurm cluster for notebookscan's tests.
#
# Made for a fresh Debian/Ubuntu machine where the tests run as root (CI): no systemd,
# no cgroups, nothing outside its own state directory except the apt packages.
#
#   slurm_single_node.sh start    install what is missing (apt-get), configure, start
#                                 munged + slurmctld + slurmd, wait until the node is idle
#   slurm_single_node.sh stop     cancel jobs, stop the daemons (by their pid files only)
#   slurm_single_node.sh status   daemons and sinfo/squeue
#   slurm_single_node.sh env      print "export SLURM_CONF=..." (eval "$(... env)")
#   slurm_single_node.sh clean    stop, then remove the state directory
#
# "start" on a running cluster with the same settings does nothing; "stop" on a stopped
# one neither. Clients (sinfo, sbatch, ipyparallel) need SLURM_CONF=$SLURM_TEST_DIR/slurm.conf.
#
# Settings (environment):
#   SLURM_TEST_DIR         state, configuration and logs   [${TMPDIR:-/tmp}/notebookscan-slurm]
#   SLURM_TEST_CPUS        CPUs the node advertises        [8] (more than nproc is fine and
#                          lets jobs with more tasks than cores start instead of pending)
#   SLURM_TEST_AUTH        munge | none                    [munge]
#   SLURM_TEST_CTLD_PORT / SLURM_TEST_SLURMD_PORT          [6817 / 6818]
#   SLURM_TEST_NO_INSTALL=1   never call apt-get
#
# Logs: $SLURM_TEST_DIR/log/{slurmctld,slurmd,munged,apt}.log
set -euo pipefail

DIR=${SLURM_TEST_DIR:-${TMPDIR:-/tmp}/notebookscan-slurm}
CPUS=${SLURM_TEST_CPUS:-8}
AUTH=${SLURM_TEST_AUTH:-munge}
CTLD_PORT=${SLURM_TEST_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_TEST_SLURMD_PORT:-6818}
CONF=$DIR/slurm.conf
MUNGE_SOCK=$DIR/munge/run/munge.socket.2
export SLURM_CONF=$CONF

say() { echo "[notebookscan-slurm] $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# pid_alive PIDFILE NAME: print the pid and succeed when PIDFILE names a live NAME process
# (zombies count as dead: PID 1 may take a few seconds to reap a killed daemon)
pid_alive() {
    local file=$1 name=$2 pid comm
    [[ -s $file ]] || return 1
    pid=$(tr -dc '0-9' 2>/dev/null < "$file") || return 1
    [[ -n $pid ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "$name"* ]] || return 1
    grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null && return 1
    echo "$pid"
}

# port_busy PORT: something accepts connections on 127.0.0.1:PORT (no ss/netstat needed)
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

install_packages() {
    local need=() rc=0 own_policy=0
    command -v slurmctld >/dev/null || need+=(slurmctld)
    command -v slurmd >/dev/null || need+=(slurmd)
    command -v sbatch >/dev/null || need+=(slurm-client)
    if [[ $AUTH == munge ]] && ! command -v munged >/dev/null; then need+=(munge); fi
    if ((${#need[@]} == 0)); then say "packages present: $(slurmctld -V 2>/dev/null)"; return 0; fi
    [[ ${SLURM_TEST_NO_INSTALL:-0} == 1 ]] && die "missing ${need[*]} and SLURM_TEST_NO_INSTALL=1"
    command -v apt-get >/dev/null || die "missing ${need[*]} and apt-get is not available"
    ((EUID == 0)) || die "missing ${need[*]}; installing them needs root (apt-get)"
    say "apt-get install ${need[*]} (services not started by apt)"
    # keep the packages' init scripts from starting system-wide daemons
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" \
        > "$DIR/log/apt.log" 2>&1 || rc=$?
    if ((rc)) && grep -qiE 'unable to locate|has no installation candidate' "$DIR/log/apt.log"; then
        say "apt-get update (package lists missing)"
        apt-get update -q >> "$DIR/log/apt.log" 2>&1 || true
        rc=0
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" \
            >> "$DIR/log/apt.log" 2>&1 || rc=$?
    fi
    ((own_policy)) && rm -f /usr/sbin/policy-rc.d
    if ((rc)); then tail -20 "$DIR/log/apt.log" >&2; die "apt-get install failed (see $DIR/log/apt.log)"; fi
    say "installed: $(slurmctld -V)"
}

write_config() {   # -> $CONF.want
    local authinfo="" cred
    case $AUTH in
        munge) cred=cred/munge; authinfo="AuthInfo=socket=$MUNGE_SOCK" ;;
        none)  cred=cred/none ;;
        *)     die "SLURM_TEST_AUTH must be munge or none, not '$AUTH'" ;;
    esac
    cat > "$CONF.want" <<EOF
# written by notebookscan tests/slurm/slurm_single_node.sh
ClusterName=notebookscan
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/$AUTH
CredType=$cred
$authinfo
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
KillWait=5
MinJobAge=30
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=localhost NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
}

start_munge() {
    local pid
    if pid=$(pid_alive "$DIR/munge/run/munged.pid" munged); then say "munged running (pid $pid)"; return; fi
    # munged insists: key and seed dirs private, socket dir reachable by everyone
    mkdir -p "$DIR/munge/etc" "$DIR/munge/run" "$DIR/munge/lib"
    chmod 755 "$DIR" "$DIR/munge" "$DIR/munge/run"
    chmod 700 "$DIR/munge/etc" "$DIR/munge/lib"
    [[ -s $DIR/munge/etc/munge.key ]] || mungekey --create --keyfile="$DIR/munge/etc/munge.key"
    rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
    say "starting munged"
    munged --force --socket="$MUNGE_SOCK" --key-file="$DIR/munge/etc/munge.key" \
        --log-file="$DIR/log/munged.log" --pid-file="$DIR/munge/run/munged.pid" \
        --seed-file="$DIR/munge/lib/munged.seed"
    munge -n -S "$MUNGE_SOCK" | unmunge -S "$MUNGE_SOCK" > /dev/null || die "munge self-test failed"
}

wait_idle() {
    local i state=""
    for ((i = 0; i < 150; i++)); do
        state=$(sinfo -h -n localhost -o %T 2>/dev/null || true)
        case $state in
            idle*|mixed*|allocated*) say "node localhost is $state"; return 0 ;;
        esac
        sleep 0.2
    done
    say "node not idle after 30 s (state '${state:-?}'); last log lines:"
    tail -n 5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    return 1
}

do_start() {
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run"
    install_packages
    local ctld slurmd munge_ok=1 port
    if [[ $AUTH == munge ]]; then pid_alive "$DIR/munge/run/munged.pid" munged > /dev/null || munge_ok=0; fi
    write_config
    if ctld=$(pid_alive "$DIR/run/slurmctld.pid" slurmctld) \
        && slurmd=$(pid_alive "$DIR/run/slurmd.pid" slurmd) && ((munge_ok)); then
        if cmp -s "$CONF.want" "$CONF"; then
            rm -f "$CONF.want"
            say "already running (slurmctld $ctld, slurmd $slurmd)"
            wait_idle
            return
        fi
        say "running with other settings: restarting"
    fi
    do_stop quiet   # leftovers of a partial start, or other settings
    for port in "$CTLD_PORT" "$SLURMD_PORT"; do
        port_busy "$port" && die "TCP port $port is in use (another Slurm?); set SLURM_TEST_CTLD_PORT / SLURM_TEST_SLURMD_PORT"
    done
    mv "$CONF.want" "$CONF"
    say "wrote $CONF (CPUs=$CPUS, auth=$AUTH, ports $CTLD_PORT/$SLURMD_PORT)"
    [[ $AUTH == munge ]] && start_munge
    say "starting slurmctld (clean state)"
    slurmctld -c -f "$CONF"
    say "starting slurmd -N localhost"
    slurmd -N localhost -f "$CONF"
    wait_idle || die "the node did not come up"
    say "up; export SLURM_CONF=$CONF"
}

kill_pidfile() {   # kill_pidfile PIDFILE NAME
    local file=$1 name=$2 pid i
    if pid=$(pid_alive "$file" "$name"); then
        say "stopping $name (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            pid_alive "$file" "$name" > /dev/null || break
            sleep 0.2
        done
        if pid_alive "$file" "$name" > /dev/null; then
            say "$name did not exit: SIGKILL $pid"
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}

do_stop() {
    local quiet=${1:-} i
    if pid_alive "$DIR/run/slurmctld.pid" slurmctld > /dev/null && [[ -f $CONF ]]; then
        if [[ -n $(squeue -h -o %i 2>/dev/null) ]]; then
            say "cancelling jobs: $(squeue -h -o %i | tr '\n' ' ')"
            scancel -u "$(id -un)" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do
                [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break
                sleep 0.2
            done
        fi
    fi
    kill_pidfile "$DIR/run/slurmd.pid" slurmd
    kill_pidfile "$DIR/run/slurmctld.pid" slurmctld
    kill_pidfile "$DIR/munge/run/munged.pid" munged
    [[ -n $quiet ]] || say "stopped"
}

do_status() {
    local pid spec
    for spec in "run/slurmctld.pid slurmctld" "run/slurmd.pid slurmd" "munge/run/munged.pid munged"; do
        set -- $spec
        if pid=$(pid_alive "$DIR/$1" "$2"); then echo "$2: running (pid $pid)"; else echo "$2: not running"; fi
    done
    if [[ -f $CONF ]]; then sinfo 2>&1 || true; squeue 2>&1 || true; fi
}

case ${1:-} in
    start)  do_start ;;
    stop)   do_stop ;;
    status) do_status ;;
    env)    echo "export SLURM_CONF=$CONF" ;;
    clean)  do_stop; say "removing $DIR"; rm -rf "$DIR" ;;
    *)      echo "usage: $0 start|stop|status|env|clean" >&2; exit 2 ;;
esac
