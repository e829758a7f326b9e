#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Exports the whole Enoki kernel change as a `git format-patch` series
# against the pinned linux-source-6.12, for people who build their own
# kernels: target/kernel-patches/*.patch (+ the config fragments: enoki.config,
# and profile-NAME.config for each profile, see kernel/config/profiles/).
#
#   cd linux-6.12 && git am /path/to/target/kernel-patches/*.patch
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
out="$top/target/kernel-patches"
pristine=$(bash "$here/build.sh" --pristine)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

git_() { git -C "$work" -c user.name="Enoki developers" -c user.email="enoki@localhost" "$@"; }

# Only the files the series touches: patches against them apply to the full tree.
git_ init -q
files=$(grep -h '^+++ b/' "$here"/patches/*.patch | sed 's|^+++ b/||; s|\t.*||' | sort -u)
for f in $files; do
	mkdir -p "$work/$(dirname "$f")"
	cp "$pristine/$f" "$work/$f"
done
git_ add -A
git_ commit -qm "Linux $(make -s -C "$pristine" kernelversion 2>/dev/null) (Debian linux-source-6.12)"
base=$(git_ rev-parse HEAD)

# New files first (not built until the last patch), then the patches.
(cd "$here/src" && find . -type f) | while read -r f; do
	mkdir -p "$work/$(dirname "$f")"
	cp "$here/src/$f" "$work/$f"
done
git_ add -A
git_ commit -s -qm "sched: add Enoki-C, an in-kernel sched_ext client for Rust scheduler modules" \
	-m "Every sched_ext operation becomes one synchronous message handed to a
scheduler module built with libEnoki; status in /sys/kernel/enoki/.
Built by a later patch."
for p in "$here"/patches/*.patch; do
	git_ am -q "$p" || { echo "kernel-patch: $(basename "$p") does not apply" >&2; exit 1; }
done

rm -rf "$out"
mkdir -p "$out"
git_ format-patch -q -o "$out" "$base"..HEAD
cp "$here/config/enoki.config" "$out/"
for p in "$here"/config/profiles/*.config; do
	cp "$p" "$out/profile-$(basename "$p")"
done
echo "kernel-patch: $(ls "$out"/*.patch | wc -l) patches and $(ls "$out"/*.config | xargs -n1 basename | xargs) in $out"
echo "kernel-patch: apply with 'git am $out/*.patch' in a linux 6.12 tree; merge enoki.config and one profile's fragment"
