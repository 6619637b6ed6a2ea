#!/usr/bin/env bash
# A real single-node Slurm on localhost (Debian's slurm-wlm 22.05 and munge), for tests of the
# SLURM profile: four fake GPUs, every daemon's state, logs and pid files in one directory.
#
#   .ci/slurm-local.sh install      apt-get install slurmctld slurmd slurm-client munge (root)
#   .ci/slurm-local.sh up DIR       start munged, slurmctld and slurmd; files in DIR (root;
#                                   exit status 75: another local cluster is up on this machine)
#   .ci/slurm-local.sh down DIR     stop the daemons started by `up DIR`, by their PIDs
#
# Needs root: the daemons run as root, /etc/slurm/slurm.conf and gres.conf become symlinks to
# DIR's files (the executor plugin clears SLURM_CONF before its inner srun) and the fake GPUs are
# character devices made with mknod. It refuses to replace an existing, real /etc/slurm/slurm.conf.
# After `up`, use the cluster with SLURM_CONF=DIR/slurm.conf or through the /etc/slurm symlinks.
# Without slurmdbd there is no sacct: tell Snakemake `--slurm-status-command squeue`.
set -euo pipefail

usage() {
	sed -n '5,8p' "$0" | sed 's/^# //' >&2
	exit 2
}

need_root() {
	if [ "$(id -u)" != 0 ]; then
		echo "slurm-local: $1 needs root" >&2
		exit 1
	fi
}

install_packages() {
	need_root install
	if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
		&& command -v munged >/dev/null && command -v mungekey >/dev/null; then
		echo "slurm-local: slurmctld, slurmd, slurm-client and munge already installed"
		return
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge
}

# Our own daemons only: a PID recorded by `up` is still that daemon if its command matches.
ours() { # pidfile name
	local pid
	pid=$(cat "$1" 2>/dev/null) || return 1
	[ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$2"
}

stop_daemon() { # dir name
	local pidfile="$1/pids/$2.pid" pid
	if ! ours "$pidfile" "$2"; then
		rm -f "$pidfile"
		return
	fi
	pid=$(cat "$pidfile")
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 50); do
		[ -e "/proc/$pid" ] || break
		sleep 0.1
	done
	if [ -e "/proc/$pid" ]; then
		echo "slurm-local: $2 (pid $pid) ignored SIGTERM; killing it" >&2
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$pidfile"
}

unlink_etc() { # dir
	local name
	for name in slurm.conf gres.conf; do
		if [ -L "/etc/slurm/$name" ] && [ "$(readlink "/etc/slurm/$name")" = "$1/$name" ]; then
			rm -f "/etc/slurm/$name"
		fi
	done
}

down() { # dir
	local dir
	dir=$(cd "$1" && pwd)
	# Jobs outlive slurmd (their slurmstepd keeps running): cancel this cluster's jobs first.
	if ours "$dir/pids/slurmctld.pid" slurmctld && [ -f "$dir/slurm.conf" ]; then
		export SLURM_CONF="$dir/slurm.conf"
		if [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
			scancel --full --quiet $(squeue -h -o %i) 2>/dev/null || true
			for _ in $(seq 100); do
				[ -z "$(squeue -h -t running,completing -o %i 2>/dev/null)" ] && break
				sleep 0.2
			done
		fi
	fi
	stop_daemon "$dir" slurmd
	stop_daemon "$dir" slurmctld
	stop_daemon "$dir" munged
	unlink_etc "$dir"
	echo "slurm-local: stopped (files kept in $dir)"
}

up() { # dir
	need_root up
	for tool in slurmctld slurmd sbatch squeue sinfo munged mungekey; do
		command -v "$tool" >/dev/null || {
			echo "slurm-local: $tool not found: run '$0 install' first" >&2
			exit 1
		}
	done
	mkdir -p "$1"
	local dir
	dir=$(cd "$1" && pwd)
	chmod 700 "$dir"
	mkdir -p "$dir"/{state,spool,log,pids,run,dev}
	for name in slurm.conf gres.conf; do
		local target="/etc/slurm/$name"
		if [ -e "$target" ] && ! [ -L "$target" ]; then
			echo "slurm-local: $target exists and is not ours: refusing to replace a real Slurm set-up" >&2
			exit 1
		fi
	done
	# One local cluster per machine (fixed ports, /etc/slurm symlinks): another one still up?
	local other
	other=$(dirname "$(readlink /etc/slurm/slurm.conf 2>/dev/null || echo /nonexistent/x)")
	if [ "$other" != "$dir" ] && ours "$other/pids/slurmctld.pid" slurmctld; then
		echo "slurm-local: another local Slurm is up ($other): stop it first ('$0 down $other')" >&2
		exit 75
	fi

	# munge: a key of our own, the default socket (a non-default one breaks some clients). A munged
	# already answering there (the system's) is used as it is: one node needs no shared key.
	if ! ours "$dir/pids/munged.pid" munged && munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
		echo "slurm-local: using the munged already running on the default socket"
	elif ! ours "$dir/pids/munged.pid" munged; then
		mkdir -p /run/munge
		[ -f "$dir/munge.key" ] || mungekey --create --keyfile "$dir/munge.key"
		chmod 600 "$dir/munge.key"
		munged --foreground --key-file "$dir/munge.key" --pid-file "$dir/run/munged.pid" \
			--seed-file "$dir/state/munged.seed" --log-file "$dir/log/munged.log" \
			>"$dir/log/munged.out" 2>&1 &
		echo $! >"$dir/pids/munged.pid"
		for _ in $(seq 50); do
			munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
			sleep 0.1
		done
		munge -n </dev/null | unmunge >/dev/null || {
			echo "slurm-local: munged did not come up (see $dir/log/munged.out)" >&2
			exit 1
		}
	fi

	# Four fake GPUs: gres.conf needs File=, or the node drains.
	for n in 0 1 2 3; do
		[ -c "$dir/dev/nvidia$n" ] || mknod "$dir/dev/nvidia$n" c 195 "$n"
	done
	echo "Name=gpu File=$dir/dev/nvidia[0-3]" >"$dir/gres.conf"

	# The node's CPUs and memory as slurmd sees them.
	local hw
	hw=$(slurmd -C | head -1 | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | tr '\n' ' ')
	cat >"$dir/slurm.conf" <<EOF
# Written by .ci/slurm-local.sh: one node (localhost), four fake GPUs, no accounting.
ClusterName=esol-local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SelectType=select/cons_tres
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
DefMemPerCPU=1024
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=300
ReturnToService=2
SlurmctldPort=${SLURM_LOCAL_CTLD_PORT:-6817}
SlurmdPort=${SLURM_LOCAL_SLURMD_PORT:-6818}
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 ${hw}Gres=gpu:4 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
	mkdir -p /etc/slurm
	ln -sfn "$dir/slurm.conf" /etc/slurm/slurm.conf
	ln -sfn "$dir/gres.conf" /etc/slurm/gres.conf
	export SLURM_CONF="$dir/slurm.conf"

	if ! ours "$dir/pids/slurmctld.pid" slurmctld; then
		slurmctld -D -f "$dir/slurm.conf" >"$dir/log/slurmctld.out" 2>&1 &
		echo $! >"$dir/pids/slurmctld.pid"
	fi
	if ! ours "$dir/pids/slurmd.pid" slurmd; then
		slurmd -D -N localhost -f "$dir/slurm.conf" >"$dir/log/slurmd.out" 2>&1 &
		echo $! >"$dir/pids/slurmd.pid"
	fi
	local state=""
	for _ in $(seq 150); do
		state=$(sinfo -h -n localhost -o '%T' 2>/dev/null || true)
		case "$state" in idle* | mixed* | allocated*) break ;; esac
		sleep 0.2
	done
	case "$state" in
	idle* | mixed* | allocated*) ;;
	*)
		echo "slurm-local: node localhost is '${state:-unreachable}' (see $dir/log/)" >&2
		tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 2>/dev/null || true
		down "$dir" >&2
		exit 1
		;;
	esac
	echo "slurm-local: up in $dir (node localhost: $state; ${hw}Gres=gpu:4)"
}

case "${1:-}" in
install) install_packages ;;
up) [ $# = 2 ] || usage; up "$2" ;;
down) [ $# = 2 ] || usage; down "$2" ;;
*) usage ;;
esac
