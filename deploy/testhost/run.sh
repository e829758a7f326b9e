#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Runs "bare-metal host" stand-ins for deployment tests: QEMU VMs booted from
# build-image.sh's Debian bookworm image, reached over ssh through QEMU user
# networking on a loopback port forward.
#
#   run.sh start NAME [--port P] [--mem MB] [--cpus N] [--timeout S] [--keep]
#       boots a fresh copy-on-write overlay of the image in target/testhost/NAME/
#       (--keep: reuse the overlay left by an earlier start), waits until ssh as
#       deploy works, writes target/testhost/NAME/env (HOST PORT KEY KNOWN_HOSTS)
#       and prints the ssh command line
#   run.sh wait NAME [--timeout S]   waits until ssh works again (e.g. after a reboot)
#   run.sh ssh NAME [--user U] [CMD...]   runs CMD (or a shell) as deploy (or U)
#   run.sh status NAME               says whether it runs, and on which port
#   run.sh stop NAME                 kills the VM and waits for it to exit
#
# QEMU boots Debian's kernel with -kernel/-initrd, so a reboot (or a failed
# kexec) comes back to it; there is no -no-reboot, so the guest survives
# `systemctl kexec` and reboots. KVM is used only if a probe boot under KVM
# works (/dev/kvm can exist and fail every normal guest, as PVM does), as
# vm/src/probe.rs decides; otherwise single-threaded TCG, because Debian's
# kernel patches its text at run time (jump labels), which MTTCG breaks
# (vm/src/accel.rs). ENOKI_ACCEL=kvm|tcg forces one.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
base="$top/target/testhost"

say() { echo "testhost: $*" >&2; }
die() { echo "testhost: error: $*" >&2; exit 1; }
usage() { sed -n '/^#   run.sh/,/^#$/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 2 ] || usage
cmd=$1 name=$2
shift 2
[[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || die "bad VM name '$name'"
dir="$base/$name"

# The pid of NAME's QEMU if it runs (checked against its command line, so a
# recycled pid is not taken for it), else nothing.
vm_pid() {
	local pid
	pid=$(cat "$dir/qemu.pid" 2>/dev/null) || return 0
	[ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$dir/overlay.qcow2" &&
		echo "$pid"
	return 0
}

# Reads PORT and KEY from the env file.
PORT="" KEY=""
load_env() {
	[ -s "$dir/env" ] || die "no $dir/env: is VM $name started?"
	local k v
	while IFS='=' read -r k v; do
		case $k in PORT | KEY) printf -v "$k" '%s' "$v" ;; esac
	done <"$dir/env"
	{ [ -n "$PORT" ] && [ -n "$KEY" ]; } || die "$dir/env lacks PORT or KEY"
}

ssh_opts() { # ssh_opts PORT KEY
	printf '%s\n' -p "$1" -i "$2" -o IdentitiesOnly=yes -o BatchMode=yes \
		-o StrictHostKeyChecking=accept-new -o "UserKnownHostsFile=$dir/known_hosts" \
		-o LogLevel=ERROR
}

console_tail() {
	echo "testhost: last console lines ($dir/console.log):" >&2
	tail -n 30 "$dir/console.log" 2>/dev/null | sed 's/^/  | /' >&2 || true
	echo "testhost: console log: $dir/console.log" >&2
}

# wait_ssh PORT KEY TIMEOUT: polls until `ssh deploy@ true` works; 1 on timeout
# or when QEMU is gone.
wait_ssh() {
	local port=$1 key=$2 timeout=$3 t0 opts
	mapfile -t opts < <(ssh_opts "$port" "$key")
	t0=$(date +%s)
	while :; do
		if ssh "${opts[@]}" -o ConnectTimeout=5 deploy@127.0.0.1 true </dev/null 2>/dev/null; then
			say "ssh works after $(($(date +%s) - t0)) s"
			return 0
		fi
		[ -n "$(vm_pid)" ] || { say "QEMU exited"; return 1; }
		if [ $(($(date +%s) - t0)) -ge "$timeout" ]; then
			say "ssh did not work within $timeout s"
			return 1
		fi
		sleep 2
	done
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# kvm or tcg, per the comment at the top; the verdict is cached per QEMU,
# host kernel and guest kernel in target/testhost/kvm-probe.
choose_accel() {
	local vmlinuz=$1 probe_key cache="$base/kvm-probe" log
	case ${ENOKI_ACCEL:-auto} in
	kvm | tcg) echo "$ENOKI_ACCEL"; say "accelerator $ENOKI_ACCEL: forced by ENOKI_ACCEL" ; return ;;
	auto) ;;
	*) die "ENOKI_ACCEL must be kvm, tcg or auto" ;;
	esac
	if ! { : <>/dev/kvm; } 2>/dev/null; then
		say "accelerator tcg: /dev/kvm not available"
		echo tcg
		return
	fi
	probe_key="$(qemu-system-x86_64 --version | head -n1) | $(uname -r) | $vmlinuz"
	if [ "$(head -n1 "$cache" 2>/dev/null)" = "$probe_key" ]; then
		say "accelerator $(sed -n 2p "$cache"): cached verdict: $(sed -n 3p "$cache")"
		sed -n 2p "$cache"
		return
	fi
	# A normal guest under KVM: the kernel (no root fs) panics and, with
	# panic=-1 and -no-reboot, QEMU exits within seconds. Under an unusable
	# KVM it errors out or hangs.
	say "probing KVM with a test boot (once per kernel)..."
	log=$(mktemp)
	local verdict=tcg why
	if timeout 30 qemu-system-x86_64 -accel kvm -machine q35 -m 256 -nodefaults -display none \
		-serial "file:$log" -no-reboot -kernel "$vmlinuz" \
		-append "console=ttyS0 panic=-1 root=/dev/nonexistent" >/dev/null 2>&1 &&
		grep -q 'Kernel panic' "$log"; then
		verdict=kvm why="probe boot worked"
	else
		why="probe boot under KVM failed or timed out"
	fi
	rm -f "$log"
	mkdir -p "$base"
	printf '%s\n%s\n%s\n' "$probe_key" "$verdict" "$why" >"$cache"
	say "accelerator $verdict: $why"
	echo "$verdict"
}

cmd_start() {
	local port="" mem=2048 cpus=2 timeout=300 keep=0
	while [ $# -gt 0 ]; do
		case $1 in
		--port) port=$2; shift 2 ;;
		--mem) mem=$2; shift 2 ;;
		--cpus) cpus=$2; shift 2 ;;
		--timeout) timeout=$2; shift 2 ;;
		--keep) keep=1; shift ;;
		*) usage ;;
		esac
	done
	[ -z "$(vm_pid)" ] || die "VM $name already runs (pid $(vm_pid)); run.sh stop $name first"
	local img accel pid opts
	img=$("$here/build-image.sh" | tail -n1)
	[ -s "$img/disk.img" ] || die "build-image.sh did not give an image"
	accel=$(choose_accel "$img/vmlinuz")
	local accel_opt=(-accel "tcg,thread=single")
	[ "$accel" = kvm ] && accel_opt=(-accel kvm -cpu host)

	mkdir -p "$dir"
	rm -f "$dir/env" "$dir/known_hosts" "$dir/qemu.pid"
	if [ "$keep" = 0 ] || [ ! -s "$dir/overlay.qcow2" ]; then
		rm -f "$dir/overlay.qcow2"
		qemu-img create -q -f qcow2 -b "$img/disk.img" -F raw "$dir/overlay.qcow2"
	fi
	local tries=1 fixed=1
	[ -n "$port" ] || { fixed=0 tries=3; }
	while :; do
		[ "$fixed" = 1 ] || port=$(free_port)
		say "starting $name: ${accel_opt[*]}, $mem MiB, $cpus CPUs, ssh on 127.0.0.1:$port"
		if qemu-system-x86_64 -machine q35 "${accel_opt[@]}" -m "$mem" -smp "$cpus" \
			-nodefaults -display none -monitor none -serial "file:$dir/console.log" \
			-kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
			-append "root=/dev/vda rw console=ttyS0" \
			-drive "file=$dir/overlay.qcow2,if=virtio,format=qcow2" \
			-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:22" \
			-device virtio-net-pci,netdev=n0 -device virtio-rng-pci \
			-name "enoki-testhost-$name" -daemonize -pidfile "$dir/qemu.pid" \
			2>"$dir/qemu.err"; then
			break
		fi
		tries=$((tries - 1))
		if [ "$tries" -gt 0 ] && grep -q 'host forwarding' "$dir/qemu.err"; then
			continue # the free port was taken meanwhile
		fi
		die "QEMU failed: $(cat "$dir/qemu.err")"
	done
	pid=$(vm_pid)
	[ -n "$pid" ] || die "QEMU did not stay up: $(cat "$dir/qemu.err")"
	say "QEMU pid $pid; waiting up to $timeout s for ssh"
	if ! wait_ssh "$port" "$img/id_ed25519" "$timeout"; then
		console_tail
		kill_vm
		exit 1
	fi
	printf 'HOST=deploy@127.0.0.1\nPORT=%s\nKEY=%s\nKNOWN_HOSTS=%s\n' \
		"$port" "$img/id_ed25519" "$dir/known_hosts" >"$dir/env"
	mapfile -t opts < <(ssh_opts "$port" "$img/id_ed25519")
	echo "ssh ${opts[*]} deploy@127.0.0.1"
}

kill_vm() {
	local pid i
	pid=$(vm_pid)
	[ -n "$pid" ] || return 0
	kill "$pid" 2>/dev/null || true
	for ((i = 0; i < 150; i++)); do
		[ -d "/proc/$pid" ] || return 0
		sleep 0.2
	done
	say "QEMU $pid ignored SIGTERM for 30 s: SIGKILL"
	kill -9 "$pid" 2>/dev/null || true
	while [ -d "/proc/$pid" ]; do sleep 0.2; done
}

case $cmd in
start) cmd_start "$@" ;;
wait)
	timeout=300
	[ "${1:-}" = --timeout ] && timeout=$2
	load_env
	[ -n "$(vm_pid)" ] || die "VM $name is not running"
	wait_ssh "$PORT" "$KEY" "$timeout" || { console_tail; exit 1; }
	;;
ssh)
	user=deploy
	if [ "${1:-}" = --user ]; then user=$2; shift 2; fi
	load_env
	mapfile -t opts < <(ssh_opts "$PORT" "$KEY")
	tty=()
	[ $# -eq 0 ] && [ -t 0 ] && tty=(-t)
	exec ssh "${opts[@]}" "${tty[@]}" "$user@127.0.0.1" "$@"
	;;
status)
	pid=$(vm_pid)
	if [ -z "$pid" ]; then
		echo "$name: stopped"
		exit 3
	fi
	port=$(sed -n 's/^PORT=//p' "$dir/env" 2>/dev/null)
	if [ -n "$port" ]; then
		echo "$name: running (pid $pid, ssh on 127.0.0.1:$port)"
	else
		echo "$name: running (pid $pid, ssh not up yet)"
	fi
	;;
stop)
	pid=$(vm_pid)
	kill_vm
	rm -f "$dir/qemu.pid" "$dir/env"
	echo "$name: stopped${pid:+ (was pid $pid)}"
	;;
*) usage ;;
esac
