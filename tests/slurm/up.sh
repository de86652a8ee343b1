#!/usr/bin/env bash
# Bring up a single-node SLURM 22.05 cluster (munge + slurmctld + slurmd) under $P, for tests/test_slurm.py.
# Idempotent: stops anything a previous up.sh started (by recorded PID) first.
# Requires (once): apt-get install -y --no-install-recommends slurm-wlm munge
set -euo pipefail
P=${LOCAL_SLURM_DIR:-/tmp/local-slurm}
AUTH=${LOCAL_SLURM_AUTH:-munge}          # munge | none
"$(dirname "$0")/down.sh" >/dev/null 2>&1 || true   # stop a previous instance (by recorded PID)
T0=$(date +%s.%N)

HOST=$(hostname -s)
mkdir -p "$P"/{etc,state,spool,log,run,munge}
rm -rf "$P"/state/* "$P"/spool/* "$P"/log/*   # clean state + fresh logs every time (CI)
chmod 755 "$P/munge"                        # munged: socket dir must be o+x

if [ "$AUTH" = munge ]; then
  [ -s "$P/munge/munge.key" ] || { dd if=/dev/urandom of="$P/munge/munge.key" bs=1024 count=1 status=none; chmod 400 "$P/munge/munge.key"; }
  AUTHCONF="AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$P/munge/munge.socket.2"
else
  AUTHCONF="AuthType=auth/none
CredType=cred/none"
fi

cat > "$P/etc/slurm.conf" <<CONF
ClusterName=local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
$AUTHCONF
StateSaveLocation=$P/state
SlurmdSpoolDir=$P/spool
SlurmctldPidFile=$P/run/slurmctld.pid
SlurmdPidFile=$P/run/slurmd.pid
SlurmctldLogFile=$P/log/slurmctld.log
SlurmdLogFile=$P/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$P/etc/slurm.conf"

start() {  # start <name> <cmd...>: run in foreground mode, detached, record PID
  local name=$1; shift
  setsid nohup "$@" >"$P/log/$name.out" 2>&1 </dev/null &
  echo $! >"$P/run/$name.started.pid"
}

if [ "$AUTH" = munge ]; then
  rm -f "$P"/munge/munge.socket.2*          # stale socket/lock from a killed run
  start munged munged -F --socket="$P/munge/munge.socket.2" --key-file="$P/munge/munge.key" \
        --log-file="$P/munge/munged.log" --pid-file="$P/munge/munged.pid" --seed-file="$P/munge/munged.seed"
  for i in $(seq 100); do   # wait until munged answers a credential round-trip
    munge -n -S "$P/munge/munge.socket.2" 2>/dev/null | unmunge -S "$P/munge/munge.socket.2" >/dev/null 2>&1 && break
    sleep 0.1
  done
  munge -n -S "$P/munge/munge.socket.2" | unmunge -S "$P/munge/munge.socket.2" >/dev/null   # fail loudly if not
fi
start slurmctld slurmctld -D -c -f "$SLURM_CONF"
start slurmd    slurmd    -D -f "$SLURM_CONF"

for i in $(seq 120); do
  st=$(sinfo -h -n "$HOST" -o %t 2>/dev/null || true)
  [ "$st" = idle ] && break
  sleep 0.5
done
if [ "$st" != idle ]; then
  echo "node not idle (state='$st')" >&2; tail -n 20 "$P"/log/*.log "$P"/log/*.out >&2 || true; exit 1
fi
sinfo
awk -v t0="$T0" -v t1="$(date +%s.%N)" -v c="$SLURM_CONF" 'BEGIN{printf "bring-up: %.1fs   (export SLURM_CONF=%s)\n", t1-t0, c}'
