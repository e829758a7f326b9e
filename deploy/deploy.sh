#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# `cargo make deploy HOST=user@host[:port] [SCHED=wfq] [MODE=all]`: the
# packages from `cargo make package` onto one host, through the same Ansible
# playbook a fleet uses (deploy/ansible/deploy.yml) with a one-host
# inventory: preflight (nothing changes unless the host passes), kernel
# install and boot when it changed, modules, load, smoke check, rollback on
# failure. Ansible prints every step; at the end this names the failed step,
# the host, the cause and the log.
#
# Optional: ARGS="..." (more `enoki load` arguments), KEY=path (ssh
# identity), KNOWN_HOSTS=path, PACKAGES=dir
# (default target/package), BOOT=kexec|reboot, BOOT_TIMEOUT=seconds,
# SMOKE_SECONDS=N, and
# EXTRA="-e var=value ..." passed to ansible-playbook.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
say() { echo "deploy: $*"; }
die() { echo "deploy: error: $*" >&2; exit 2; }

target=${HOST:-${1:-}}
[ -n "$target" ] || die "no host: cargo make deploy HOST=user@host[:port] [SCHED=wfq] [MODE=all]"
user=""
hostport=$target
if [[ "$target" == *@* ]]; then
	user=${target%%@*}
	hostport=${target#*@}
fi
host=${hostport%:*}
port=22
[[ "$hostport" == *:* ]] && port=${hostport##*:}
[[ "$port" =~ ^[0-9]+$ ]] || die "bad port '$port' in HOST=$target"
packages=${PACKAGES:-$top/target/package}
[ -f "$packages/manifest.json" ] || die "no packages in $packages: run 'cargo make package' first"
command -v ansible-playbook >/dev/null || die "ansible-playbook not found: run 'cargo make deps'"

mkdir -p "$top/target/deploy"
log="$top/target/deploy/$host-$port-$(date -u +%Y%m%dT%H%M%SZ).log"
args=(-i "$host," -e "enoki_hosts=all" -e "ansible_port=$port" -e "enoki_package_dir=$packages"
	-e "enoki_scheduler=${SCHED:-wfq}" -e "enoki_mode=${MODE:-all}")
[ -z "$user" ] || args+=(-e "ansible_user=$user")
[ -z "${KEY:-}" ] || args+=(--private-key "$KEY")
[ -z "${BOOT:-}" ] || args+=(-e "enoki_boot_method=$BOOT")
[ -z "${BOOT_TIMEOUT:-}" ] || args+=(-e "enoki_boot_timeout=$BOOT_TIMEOUT")
[ -z "${SMOKE_SECONDS:-}" ] || args+=(-e "enoki_smoke_seconds=$SMOKE_SECONDS")
ssh_args="-o BatchMode=yes -o ConnectTimeout=10"
[ -z "${KNOWN_HOSTS:-}" ] || ssh_args+=" -o UserKnownHostsFile=$KNOWN_HOSTS -o StrictHostKeyChecking=accept-new"
if [ -n "${ARGS:-}" ]; then # more `enoki load` arguments, e.g. ARGS="--slice-us 2000"
	args+=(-e "$(python3 -c 'import json, shlex, sys; print(json.dumps({"enoki_load_args": shlex.split(sys.argv[1])}))' "$ARGS")")
fi
# shellcheck disable=SC2206 # EXTRA is words on purpose
extra=(${EXTRA:-})

say "$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print("version", m["version"], "kernel", m["kernel"]["release"], "build", m["kernel"]["build_id"][:12])' "$packages/manifest.json") to $target, scheduler ${SCHED:-wfq} (mode ${MODE:-all}); log $log"
start=$(date +%s)
set +e
ANSIBLE_CONFIG="$top/deploy/ansible/ansible.cfg" ANSIBLE_LOG_PATH="$log" ANSIBLE_SSH_ARGS="$ssh_args" \
	ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 \
	ansible-playbook "${args[@]}" "${extra[@]}" "$top/deploy/ansible/deploy.yml"
rc=$?
set -e
if [ "$rc" -eq 0 ]; then
	say "done in $(($(date +%s) - start))s: $target runs scheduler ${SCHED:-wfq}; log $log"
	exit 0
fi

# The failed step and what Ansible said, turned into the cause.
step=$(grep -E 'TASK \[|fatal: |UNREACHABLE' "$log" | grep -B1 -E 'fatal: |UNREACHABLE' | sed -n 's/.*TASK \[\(.*\)\] \**$/\1/p' | sed 's/^[a-z_]* : //' | tail -1)
what=$(grep -E 'fatal: |UNREACHABLE' "$log" | tail -1)
case "$what" in
*"Could not resolve hostname"*) cause="unknown host '$host' (name does not resolve)" ;;
*"Connection refused"*) cause="ssh refused by $host port $port (no sshd listening?)" ;;
*"Connection timed out"* | *"timed out"*"ssh"*) cause="no answer from $host port $port" ;;
*"Permission denied"*) cause="ssh login refused for ${user:-the current user} on $host (key not authorised)" ;;
*"Missing sudo password"* | *"password is required"* | *"not in the sudoers"*) cause="${user:-the current user} cannot sudo without a password on $host" ;;
*"wrong architecture"*) cause=$(sed -n 's/.*"msg": "\(wrong architecture[^"]*\)".*/\1/p' <<<"$what") ;;
*"disk full"*) cause=$(sed -n 's/.*"msg": "\(disk full[^"]*\)".*/\1/p' <<<"$what") ;;
*"Timed out waiting"* | *"timed out waiting"*) cause="the new kernel did not come back within ${BOOT_TIMEOUT:-600}s" ;;
*) cause=$(sed -n 's/.*"msg": "\([^"]*\)".*/\1/p' <<<"$what" | head -c 600) ;;
esac
echo "deploy: FAILED at step '${step:-?}' on $target: ${cause:-see the log}" >&2
echo "deploy: log: $log" >&2
exit 1
