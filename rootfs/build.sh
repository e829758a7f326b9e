#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Builds the guest initramfs target/rootfs/initrd.cpio: static busybox, /init,
# the project's guest binaries (guest-binaries.txt), target/modules/*.ko in
# /lib/modules/enoki, and host tools with their shared libraries
# (host-tools.txt). Does nothing when no input changed. The archive is not
# compressed: an emulated guest took 1.3 s of every boot to inflate it,
# and QEMU loads the host file in a moment.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
# ENOKI_PROFILE=NAME: the modules of kernel profile NAME, into target/rootfs-NAME
profile=${ENOKI_PROFILE:-vm}
sfx=""
[ "$profile" = vm ] || sfx="-$profile"
out="$top/target/rootfs$sfx"
stage="$out/stage"
say() { echo "rootfs: $*"; }
warn() { echo "rootfs: warning: $*" >&2; }
die() { echo "rootfs: error: $*" >&2; exit 1; }
mkdir -p "$out"
start=$(date +%s)

busybox=/bin/busybox # Debian's busybox-static
{ [ -x "$busybox" ] && ! ldd "$busybox" >/dev/null 2>&1; } ||
	die "static $busybox not found: run 'cargo make deps' (busybox-static)"

# --- guest binaries: cargo is incremental, so always ask it ------------------
guest_bins=()
while read -r pkg bin; do
	[ -z "$pkg" ] || [[ "$pkg" == \#* ]] && continue
	if ! (cd "$top" && cargo pkgid -q -p "$pkg" >/dev/null 2>&1); then
		warn "package $pkg is not in the workspace (yet): skipping guest binary $bin"
		continue
	fi
	say "cargo build $pkg ($bin), static, for the guest"
	(cd "$top" && CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
		cargo build -q --release -p "$pkg" --bin "$bin" --target x86_64-unknown-linux-gnu --target-dir target/guest) ||
		die "building $pkg for the guest failed"
	guest_bins+=("$top/target/guest/x86_64-unknown-linux-gnu/release/$bin")
done <"$here/guest-binaries.txt"

# --- host tools and the libraries they load ---------------------------------
resolve_tool() { # prints the real ELF for a tool name, or nothing
	local p
	p=$(command -v "$1" 2>/dev/null) || return 0
	p=$(readlink -f "$p")
	if [ "$(head -c2 "$p")" = "#!" ]; then
		# Debian's perf wrapper execs perf_<version>: take the newest.
		p=$(ls -1 "$(dirname "$p")/$1"_* 2>/dev/null | sort -V | tail -1)
	fi
	[ -n "$p" ] && echo "$p"
}
tools=()  # "name:path"
while read -r line; do
	line=${line%%#*}; line=${line// /}
	[ -z "$line" ] && continue
	name=${line%\?}
	path=$(resolve_tool "$name")
	if [ -z "$path" ]; then
		[ "$name" != "$line" ] && { warn "optional tool $name not found: skipped"; continue; }
		die "tool $name not found on the host: run 'cargo make deps'"
	fi
	tools+=("$name:$path")
done <"$here/host-tools.txt"
libs() { ldd "$1" 2>/dev/null | awk '/=> \//{print $3} /^\t\/.*ld-linux/{print $1}'; }
all_libs=$(for t in "${tools[@]}"; do libs "${t#*:}"; done | sort -u)

modules=()
if compgen -G "$top/target/modules$sfx/*.ko" >/dev/null; then
	modules=("$top"/target/modules"$sfx"/*.ko)
fi

# --- up-to-date check over every input --------------------------------------
stamp=$( {
	cat "$here/build.sh" "$here/init" "$here/host-tools.txt" "$here/guest-binaries.txt"
	(cd "$here/overlay" && find . -type f | sort | xargs cat)
	for f in "$busybox" "${tools[@]#*:}" $all_libs; do stat -L -c '%n %s %Y' "$f"; done
	for f in "${guest_bins[@]}" "${modules[@]}"; do echo "$f"; cat "$f"; done
} | sha256sum | cut -c1-32)
size() { du -h "$out/initrd.cpio" | cut -f1; }
if [ -f "$out/initrd.cpio" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
	say "up to date: $out/initrd.cpio ($(size))"
	exit 0
fi

# --- stage: merged /usr like Debian, so ldd's paths work unchanged ----------
rm -rf "$stage"
mkdir -p "$stage"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc,proc,sys,dev,tmp,run,root,mnt,lib/modules/enoki}
for d in bin sbin lib64; do ln -s "usr/$d" "$stage/$d"; done
mv "$stage/lib/modules" "$stage/usr/lib/" && rmdir "$stage/lib" && ln -s usr/lib "$stage/lib"

cp "$busybox" "$stage/usr/bin/busybox"
"$busybox" --list-full | while read -r applet; do
	[ -e "$stage/$applet" ] || [ -L "$stage/$applet" ] || ln -s /bin/busybox "$stage/$applet"
done

for t in "${tools[@]}"; do
	rm -f "$stage/usr/bin/${t%%:*}"
	cp "${t#*:}" "$stage/usr/bin/${t%%:*}"
done
# busybox's sh prefers its own applets over PATH (taskset, xz, ...): use bash.
[ -x "$stage/usr/bin/bash" ] && ln -sfn bash "$stage/usr/bin/sh" ||
	warn "bash not in host-tools.txt: /bin/sh stays busybox ash, which shadows tools with applets"
for l in $all_libs; do
	mkdir -p "$stage$(dirname "$l")"
	cp -L "$l" "$stage$l"
done
for b in "${guest_bins[@]}"; do
	rm -f "$stage/usr/bin/$(basename "$b")"
	# DWARF (profile.release has debug = 1) only slows the boot; symbols stay.
	objcopy --strip-debug "$b" "$stage/usr/bin/$(basename "$b")" 2>/dev/null ||
		cp "$b" "$stage/usr/bin/"
done
for m in "${modules[@]}"; do
	cp "$m" "$stage/lib/modules/enoki/"
done
cp -r "$here/overlay/." "$stage/"
cp "$here/init" "$stage/init"
chmod 755 "$stage/init"

(cd "$stage" && find . -print0 | LC_ALL=C sort -z |
	cpio --null -o -H newc --owner=0:0 --reproducible --quiet) >"$out/initrd.cpio.tmp"
mv "$out/initrd.cpio.tmp" "$out/initrd.cpio"
rm -f "$out/initrd.gz"
echo "$stamp" >"$out/stamp"

names() { local x; for x in "$@"; do printf '%s ' "$(basename "${x%%:*}")"; done; }
say "built $out/initrd.cpio ($(size), $(find "$stage" | wc -l) files) in $(( $(date +%s) - start ))s"
say "  tools: $(names "${tools[@]}")"
say "  guest binaries: $( [ ${#guest_bins[@]} -gt 0 ] && names "${guest_bins[@]}" || echo none)"
say "  modules (/lib/modules/enoki): $( [ ${#modules[@]} -gt 0 ] && names "${modules[@]}" || echo none)"
