#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Builds the "bare-metal host" stand-in for deployment tests: a Debian bookworm
# disk image that run.sh boots under QEMU and the deploy (ssh + Ansible)
# installs kernel packages and modules into, as it would on a real machine.
#
# The image is a whole-disk ext4 filesystem (no partition table, so
# root=/dev/vda) holding systemd, openssh-server, sudo, python3 (+python3-apt,
# for Ansible), kexec-tools (preseeded: LOAD_KEXEC=false, so it does not take
# over reboots), stress-ng, kmod, initramfs-tools, iproute2 and Debian's
# linux-image-amd64 (the host's "previous kernel"); systemd-networkd does DHCP
# on the virtio NIC (en*). Users: deploy (passwordless sudo) and nosudo (no
# sudo), both logging in with one generated ed25519 key; no password logins.
#
# Output, in ${ENOKI_CACHE:-$XDG_CACHE_HOME/enoki}/testhost-<key>/ where <key>
# hashes this script (editing it rebuilds): disk.img (raw, sparse), vmlinuz
# and initrd.img (Debian's kernel, for QEMU -kernel/-initrd), id_ed25519{,.pub}.
# A complete cache directory is reused; a build goes to a temp directory that
# is renamed at the end, so an interrupted build never looks complete.
# Steps go to stderr; the last stdout line is the cache directory.
set -euo pipefail

self=$(readlink -f "${BASH_SOURCE[0]}")
key=$(sha256sum "$self" | cut -c1-16)
cache=${ENOKI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/enoki}
out="$cache/testhost-$key"
outputs=(disk.img vmlinuz initrd.img id_ed25519 id_ed25519.pub)
size=${ENOKI_TESTHOST_SIZE:-3G}

say() { echo "testhost: $*" >&2; }
die() { echo "testhost: error: $*" >&2; exit 1; }

complete() {
	local f
	for f in "${outputs[@]}"; do [ -s "$1/$f" ] || return 1; done
}

if complete "$out"; then
	say "image up to date ($out)"
	echo "$out"
	exit 0
fi

for tool in mmdebstrap mkfs.ext4 ssh-keygen; do
	command -v "$tool" >/dev/null || die "$tool not found (apt install mmdebstrap e2fsprogs openssh-client)"
done
[ "$(id -u)" = 0 ] || die "mmdebstrap needs root here (root mode, real device nodes); run as root"

mkdir -p "$cache"
# One build at a time (run.sh start a & run.sh start b on a cold cache).
exec 9>"$cache/testhost-$key.lock"
flock 9
if complete "$out"; then
	say "image up to date ($out), built meanwhile by another build-image.sh"
	echo "$out"
	exit 0
fi
log="$cache/testhost-$key.log"
: >"$log"
tmp=$(mktemp -d "$cache/.testhost-$key.XXXXXX")
step=""
cleanup() {
	local rc=$?
	if [ "$rc" != 0 ]; then
		echo "testhost: FAILED while ${step:-starting} (exit $rc); last log lines:" >&2
		tail -n 25 "$log" | sed 's/^/  | /' >&2
		echo "testhost: full log: $log" >&2
	fi
	[ -z "$tmp" ] || rm -rf "$tmp"
}
trap cleanup EXIT
run() { # run STEP CMD...: logs CMD's output; the EXIT trap reports a failure
	step=$1
	shift
	say "$step (log: $log)"
	echo "=== $step: $*" >>"$log"
	"$@" >>"$log" 2>&1
}

# --- apt mirrors: whatever the host's deb822 sources use ---------------------
uri_for() { # uri_for SUFFIX: the first URIs: entry ending in SUFFIX, or nothing
	cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
		awk -v s="$1" '$1 == "URIs:" { for (i = 2; i <= NF; i++) if ($i ~ s "/?$") { print $i; exit } }'
}
mirror=${ENOKI_DEBIAN_MIRROR:-$(uri_for /debian)}
mirror=${mirror:-http://deb.debian.org/debian}
security=${ENOKI_DEBIAN_SECURITY:-$(uri_for /debian-security)}
security=${security:-http://deb.debian.org/debian-security}

# --- the ssh key pair ---------------------------------------------------------
run "generating the ssh key pair" \
	ssh-keygen -q -t ed25519 -N '' -C enoki-testhost -f "$tmp/id_ed25519"

# --- the customize hook: runs on the finished root ($1), in root mode ---------
cat >"$tmp/customize.sh" <<'EOF'
set -eu
root=$1 tmp=$2
echo enoki-host >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tenoki-host\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
printf '/dev/vda\t/\text4\terrors=remount-ro\t0\t1\n' >"$root/etc/fstab"
# QEMU user networking's DNS; no systemd-resolved in the image
echo 'nameserver 10.0.2.3' >"$root/etc/resolv.conf"

cat >"$root/etc/systemd/network/20-wired.network" <<'NET'
[Match]
Name=en*

[Network]
DHCP=ipv4
NET
chroot "$root" systemctl enable systemd-networkd.service
# No timers that run apt, man-db or fstrim in the middle of a deploy test.
for t in apt-daily.timer apt-daily-upgrade.timer man-db.timer fstrim.timer e2scrub_all.timer; do
	chroot "$root" systemctl mask "$t"
done

cat >"$root/etc/ssh/sshd_config.d/enoki.conf" <<'SSHD'
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
SSHD
chroot "$root" passwd -l root

for u in deploy nosudo; do
	chroot "$root" useradd -m -s /bin/bash "$u"
	install -d -m 700 -o "$(chroot "$root" id -u "$u")" -g "$(chroot "$root" id -g "$u")" "$root/home/$u/.ssh"
	install -m 600 -o "$(chroot "$root" id -u "$u")" -g "$(chroot "$root" id -g "$u")" \
		"$tmp/id_ed25519.pub" "$root/home/$u/.ssh/authorized_keys"
done
echo 'deploy ALL=(ALL) NOPASSWD:ALL' >"$root/etc/sudoers.d/deploy"
chmod 440 "$root/etc/sudoers.d/deploy"
chroot "$root" visudo -c

# kexec-tools must not take over reboots (preseeded; checked here)
grep -qx 'LOAD_KEXEC=false' "$root/etc/default/kexec" ||
	{ echo "kexec-tools: LOAD_KEXEC is not false:"; cat "$root/etc/default/kexec"; exit 1; }

# Debian's kernel and initramfs, for QEMU's -kernel/-initrd
cp -L "$root/vmlinuz" "$tmp/vmlinuz"
cp -L "$root/initrd.img" "$tmp/initrd.img"
EOF

# Recommends are off: everything needed is listed. udev names the NIC en*;
# dbus and libpam-systemd make systemctl/logind work over ssh; python3-apt is
# what Ansible's apt module needs (the guest has no internet to fetch it).
packages=(
	systemd-sysv udev dbus libpam-systemd openssh-server sudo
	python3 python3-apt kexec-tools stress-ng kmod initramfs-tools busybox zstd
	linux-image-amd64 iproute2 procps less ca-certificates
)
include=$(IFS=,; echo "${packages[*]}")
hook="sh $(printf '%q' "$tmp/customize.sh") \"\$1\" $(printf '%q' "$tmp")"
# shellcheck disable=SC2016 # the hooks' $1 is for mmdebstrap's sh -c
run "mmdebstrap bookworm ($mirror; a few minutes)" \
	mmdebstrap --mode=root --variant=minbase --format=directory \
	--aptopt='APT::Install-Recommends "false"' \
	--include="$include" \
	--essential-hook='printf "%s\n" "kexec-tools kexec-tools/load_kexec boolean false" "kexec-tools kexec-tools/use_grub_config boolean false" | chroot "$1" debconf-set-selections' \
	--customize-hook="$hook" \
	bookworm "$tmp/root" \
	"deb $mirror bookworm main" \
	"deb $mirror bookworm-updates main" \
	"deb $security bookworm-security main"

run "making the $size ext4 disk image" \
	mkfs.ext4 -q -F -L enoki-root -d "$tmp/root" "$tmp/disk.img" "$size"
run "removing the staging root" rm -rf "$tmp/root"
rm -f "$tmp/customize.sh"
complete "$tmp" || die "build finished without all of ${outputs[*]}"

step="installing the result"
rm -rf "$out"
mv "$tmp" "$out"
tmp=""
say "built $out ($(du -sh "$out/disk.img" | cut -f1) used of $size)"
echo "$out"
