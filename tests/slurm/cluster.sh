#!/usr/bin/env bash
# A real single-node Slurm cluster for the tests (Slurm 22.05 from Debian's slurm-wlm, munge
# authentication), run as root without systemd or cgroups.
#
#   tests/slurm/cluster.sh start DIR   # prints the slurm.conf path to use as SLURM_CONF
#   tests/slurm/cluster.sh stop DIR
#
# Everything the daemons write (state, spool, logs, pid files) is under DIR; /etc is not
# touched, and the ports (16817, 16818) are not Slurm's defaults, so a real cluster on the same
# machine is left alone. Starting again in the same DIR first stops what it started before.
# munged is shared with anything else on the machine and left running.
set -euo pipefail
action="$1"
dir="$(mkdir -p "$2" && cd "$2" && pwd)"
conf="$dir/slurm.conf"
export SLURM_CONF="$conf"
host="$(hostname -s)"

stop() {
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    rm -f "$dir"/*.pid
}

if [ "$action" = stop ]; then
    stop
    exit 0
fi

for tool in sbatch slurmctld slurmd munged; do
    command -v "$tool" >/dev/null || { echo "Slurm is not installed: apt-get install slurm-wlm (as root)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "the test cluster runs its daemons as root" >&2; exit 1; }

# munge: it refuses root-owned log files and a missing /run/munge.
if ! pgrep -x munged >/dev/null; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
    touch /var/log/munge/munged.log
    [ -f /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; chmod 400 /etc/munge/munge.key; }
    chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
    runuser -u munge -- munged
fi

stop
mkdir -p "$dir/state" "$dir/spool"
cat > "$conf" <<CONF
ClusterName=deepembed-test
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ReturnToService=2
NodeName=$host CPUs=$(nproc) RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
slurmctld
slurmd
for _ in $(seq 60); do
    if sinfo -h -o %t 2>/dev/null | grep -q idle; then
        echo "$conf"
        exit 0
    fi
    sleep 1
done
echo "the test cluster did not come up; see $dir/slurmctld.log and $dir/slurmd.log" >&2
exit 1
