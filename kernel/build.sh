#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Builds the Enoki kernel: Debian's linux-source-6.12 (pinned, checksummed) +
# kernel/patches + kernel/src, configured from kernel/config, out of tree in a
# cache keyed by everything that forces a full rebuild. Edits to kernel/src or
# the patches rebuild incrementally; an unchanged tree does no work at all.
#
# A profile (kernel/config/profiles/NAME.config, merged over enoki.config) says
# what the kernel is for: "vm" (default) is the one the VM tests boot, linked as
# target/kernel; any other profile is cached on its own and linked as
# target/kernel-NAME.
#
#   kernel/build.sh [--profile NAME]              build bzImage and modules
#   kernel/build.sh [--profile NAME] --source     only prepare the patched source, print its path
#   kernel/build.sh --pristine                    only fetch the pinned source, print its path
#   kernel/build.sh [--profile NAME] --key        only print the profile's cache key
set -euo pipefail

profile=vm
action=""
while [ $# -gt 0 ]; do
	case "$1" in
	--profile) profile="${2:?--profile needs a name}"; shift 2 ;;
	--profile=*) profile="${1#--profile=}"; shift ;;
	--source | --pristine | --key) action="$1"; shift ;;
	*) echo "kernel: error: unknown argument '$1' (--profile NAME, --source, --pristine, --key)" >&2; exit 2 ;;
	esac
done

KVER_DEB="6.12.117-1~deb12u1"
DEB_SHA256="e849faf31ca3555757f3a8877cb01af92122f744f75d1f3102734651c4e14703"
TAR_SHA256="585a4a074597aefa2b1a68ada83a3184ba351c127544dea80618bbcceaa3961f"

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cache="${ENOKI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/enoki}"
mkdir -p "$cache/dl" "$top/target"
say() { echo "kernel: $*"; }
die() { echo "kernel: error: $*" >&2; exit 1; }

# --- profile: its fragment and the upstream fragments it names ---------------
# A profile can start from another ('# extends: NAME'); its fragments come first.
profile_chain() { # NAME: the fragment files, base first
	local f="$here/config/profiles/$1.config" base
	[ -f "$f" ] || die "unknown profile '$1' (have: $(cd "$here/config/profiles" && ls *.config | sed 's/\.config$//' | xargs))"
	base=$(sed -n 's/^# extends: *//p' "$f")
	[ -z "$base" ] || profile_chain "$base"
	echo "$f"
}
profile_cfgs=$(profile_chain "$profile")
# '# merge: PATH' lines name upstream fragments (relative to the kernel tree).
# shellcheck disable=SC2086 # the chain is words
upstream_fragments=$(sed -n 's/^# merge: *//p' $profile_cfgs)
if [ "$profile" = vm ]; then link="$top/target/kernel"; else link="$top/target/kernel-$profile"; fi

# --- cache key: what forces a full rebuild ---------------------------------
# The fragments' settings and directives, not their comments: rewording a
# comment must not cost two kernels built from scratch.
config_lines() { # FRAGMENT...
	grep -hE '^(CONFIG_|# CONFIG_.* is not set|# (merge|extends):)' "$@"
}
bindgen="${BINDGEN:-$(command -v bindgen || echo "$HOME/.cargo/bin/bindgen")}"
[ -x "$bindgen" ] || die "bindgen not found: run 'cargo make deps'"
[ -x /usr/bin/rustc ] || die "/usr/bin/rustc (Debian rustc-web) not found: run 'cargo make deps'"
# shellcheck disable=SC2086 # the chain is words
key=$( (echo "$KVER_DEB $profile"; config_lines "$here/config/enoki.config" $profile_cfgs; /usr/bin/rustc --version;
	clang --version | head -1; "$bindgen" --version) | sha256sum | cut -c1-16)
if [ "$action" = "--key" ]; then
	echo "$key"
	exit 0
fi

# --- pinned upstream source ----------------------------------------------
deb="$cache/dl/linux-source-6.12_${KVER_DEB}_all.deb"
pristine="$cache/linux-${KVER_DEB}/pristine"
if [ ! -f "$pristine/.enoki-extracted" ]; then
	if [ ! -f "$deb" ]; then
		say "downloading linux-source-6.12=$KVER_DEB"
		sudo=""
		[ "$(id -u)" -eq 0 ] || sudo=sudo
		(cd "$cache/dl" && { apt-get download "linux-source-6.12=$KVER_DEB" >/dev/null 2>&1 ||
			{ $sudo apt-get update -qq && apt-get download "linux-source-6.12=$KVER_DEB" >/dev/null; }; }) ||
			die "apt-get download linux-source-6.12=$KVER_DEB failed: is Debian bookworm(-security) in the apt sources?"
	fi
	echo "$DEB_SHA256  $deb" | sha256sum -c --quiet - ||
		die "checksum mismatch for $deb: delete it and retry"
	say "extracting $(basename "$deb")"
	rm -rf "$pristine" "$cache/dl/x"
	dpkg-deb -x "$deb" "$cache/dl/x"
	tarball="$cache/dl/x/usr/src/linux-source-6.12.tar.xz"
	echo "$TAR_SHA256  $tarball" | sha256sum -c --quiet - || die "checksum mismatch for $tarball"
	mkdir -p "$pristine"
	tar -xf "$tarball" -C "$pristine" --strip-components=1
	rm -rf "$cache/dl/x"
	touch "$pristine/.enoki-extracted"
fi

if [ "$action" = "--pristine" ]; then
	echo "$pristine"
	exit 0
fi

kdir="$cache/kernel-$key"
src="$kdir/src"
out="$kdir/build"
mkdir -p "$kdir"

# --- nothing changed: no work at all -----------------------------------------
stamp=$( (echo "$key"; cat "$here"/patches/*.patch; cd "$here/src" && find . -type f | sort | xargs cat) |
	sha256sum | cut -c1-32)
if [ -z "$action" ] && [ -f "$out/arch/x86/boot/bzImage" ] && [ "$(cat "$kdir/stamp" 2>/dev/null)" = "$stamp" ]; then
	ln -sfn "$out" "$link"
	say "profile $profile up to date ($out)"
	exit 0
fi

# --- patched source, synced so that only changed files get new mtimes -------
prepare_source() {
	local stage manifest old new f
	stage=$(mktemp -d "$kdir/stage.XXXX")
	trap 'rm -rf "$stage"' RETURN
	cp -al "$pristine/." "$stage/"
	for p in "$here"/patches/*.patch; do
		patch -p1 -s -d "$stage" --no-backup-if-mismatch <"$p" >/dev/null ||
			die "patch $(basename "$p") does not apply to linux-source $KVER_DEB"
	done
	(cd "$here/src" && find . -type f) | while read -r f; do
		mkdir -p "$stage/$(dirname "$f")"
		cp --remove-destination "$here/src/$f" "$stage/$f"
	done
	new=$( (grep -h '^+++ b/' "$here"/patches/*.patch | sed 's|^+++ b/||; s|\t.*||';
		cd "$here/src" && find . -type f | sed 's|^\./||') | sort -u)
	if [ ! -d "$src" ]; then
		cp -al "$pristine/." "$src/"
	fi
	old=$(cat "$src/.enoki-manifest" 2>/dev/null || true)
	manifest=$(printf '%s\n%s\n' "$old" "$new" | sed '/^$/d' | sort -u)
	for f in $manifest; do
		if [ -f "$stage/$f" ]; then
			if ! cmp -s "$stage/$f" "$src/$f"; then
				mkdir -p "$(dirname "$src/$f")"
				cp --remove-destination "$stage/$f" "$src/$f"
			fi
		else
			rm -f "$src/$f"
		fi
	done
	echo "$new" >"$src/.enoki-manifest"
}
prepare_source
if [ "$action" = "--source" ]; then
	echo "$src"
	exit 0
fi

ln -sfn "$out" "$link"
MAKE=(make -s -C "$src" O="$out" LLVM=1 RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
	BINDGEN="$bindgen" -j"$(nproc)")

# --- config ---------------------------------------------------------------
if [ ! -f "$out/.config" ]; then
	say "configuring profile $profile (x86_64_defconfig + ${upstream_fragments:+$(echo $upstream_fragments | xargs -n1 basename | xargs) + }enoki.config + $(for f in $profile_cfgs; do echo "profiles/$(basename "$f")"; done | xargs | sed 's/ / + /g'))"
	mkdir -p "$out"
	"${MAKE[@]}" x86_64_defconfig >/dev/null
	# shellcheck disable=SC2086 # the fragment list is words
	(cd "$src" && KCONFIG_CONFIG="$out/.config" scripts/kconfig/merge_config.sh -m -O "$out" \
		"$out/.config" $upstream_fragments "$here/config/enoki.config" $profile_cfgs >/dev/null)
	"${MAKE[@]}" olddefconfig >/dev/null
	# Every =y/=n the fragments ask for must survive (a dependency can drop it silently).
	# shellcheck disable=SC2086 # the chain is words
	for want in $(grep -hE '^CONFIG_[A-Z0-9_]+=[yn]$' "$here/config/enoki.config" $profile_cfgs | tac | awk -F= '!seen[$1]++' | tac); do
		case "$want" in
		*=n) grep -q "^${want%=n}=[ym]" "$out/.config" && bad="${want%=n} is still set" || bad="" ;;
		*) grep -qx "$want" "$out/.config" && bad="" || bad="$want" ;;
		esac
		[ -z "$bad" ] || { rm -f "$out/.config"; die "$bad did not survive olddefconfig (profile $profile)"; }
	done
fi

# --- build -------------------------------------------------------------------
log="$kdir/build.log"
say "building profile $profile in $out (log: $log); a first build takes 10-20 min on 2 cores"
start=$(date +%s)
"${MAKE[@]}" V=1 bzImage modules >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null' INT TERM EXIT
while kill -0 $pid 2>/dev/null; do
	sleep 20
	kill -0 $pid 2>/dev/null || break
	# make deletes files while find walks the tree: a count, never a failure
	objs=$( (find "$out" -name '*.o' -newer "$kdir" 2>/dev/null || true) | wc -l)
	say "  $(( $(date +%s) - start ))s: $objs objects built"
done
trap - INT TERM EXIT
if ! wait $pid; then
	echo "kernel: build FAILED after $(( $(date +%s) - start ))s; last lines of $log:" >&2
	grep -E 'error|Error' "$log" | tail -20 >&2 || tail -30 "$log" >&2
	exit 1
fi
echo "$stamp" >"$kdir/stamp"
touch "$kdir"
say "built $(make -s -C "$src" O="$out" kernelrelease 2>/dev/null) in $(( $(date +%s) - start ))s: $out/arch/x86/boot/bzImage"
