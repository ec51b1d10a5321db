#!/bin/bash
# PID 1 of one lab cluster node (lab/cluster.py starts it through the lab PDU):
#   ip netns exec NODE unshare --mount --uts --ipc --pid --fork --mount-proc --propagation private \
#       lab/cluster/node-run.sh NODE LAB_DIR
# Gives the node a private /run and /dev/shm (libqb IPC lives there, so the Pacemaker CLI must
# enter this mount namespace), per-node state/config/log directories bind-mounted over the
# system paths, then runs corosync and pacemakerd. SIGTERM stops pacemakerd (which stops the
# resources it runs here), then corosync. Killing this process kills the whole node.
set -eu
node=$1
lab=$2
d=$lab/nodes/$node
logs=$lab/logs/$node
cpid=""
ppid=""
# bash as PID 1 of a pid namespace only gets the signals it has a handler for: set it first
stop() {
  [ -n "$ppid" ] && kill -TERM "$ppid" 2>/dev/null && wait "$ppid" || true
  [ -n "$cpid" ] && kill -TERM "$cpid" 2>/dev/null && wait "$cpid" || true
  exit 0
}
trap stop TERM INT

hostname "$node"
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mkdir -p /run/lock /run/crm /run/resource-agents /run/pacemaker
chown hacluster:haclient /run/crm /run/pacemaker
mount --bind "$d/lib-pacemaker" /var/lib/pacemaker
mount --bind "$d/lib-corosync" /var/lib/corosync
mount --bind "$d/etc-corosync" /etc/corosync
mount --bind "$logs/pacemaker" /var/log/pacemaker
mount --bind "$logs/corosync" /var/log/corosync
# ocf:heartbeat:postfix wants the shared config dir in the DEFAULT main.cf's alternate_config_directories
mount --bind "$d/etc-postfix" /etc/postfix
# one log path in the service configs on the shared disk, a different directory per node
mount --bind "$logs/services" "$lab/nodelog"
echo "$(date +%T.%N | cut -c1-12) $node: namespaces ready"

corosync -f >> "$logs/corosync.out" 2>&1 &
cpid=$!
for _ in $(seq 100); do corosync-cfgtool -s > /dev/null 2>&1 && break; sleep 0.1; done
export PCMK_logfile=/var/log/pacemaker/pacemaker.log PCMK_logfacility=none
# no -f: ignored by Pacemaker 2.1 ("always runs in the foreground"), not needed by 3.0
pacemakerd >> "$logs/pacemakerd.out" 2>&1 &
ppid=$!
echo "$(date +%T.%N | cut -c1-12) $node: corosync $cpid, pacemakerd $ppid (pids in the node)"
# wait -n also returns for reaped orphans (daemonized services re-parent to PID 1)
while kill -0 "$cpid" 2>/dev/null; do wait -n || true; done
echo "$(date +%T.%N | cut -c1-12) $node: corosync exited"
kill -TERM "$ppid" 2>/dev/null || true
wait
