#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# `cargo make package`: what a bare-metal host or a fleet installs, under
# target/package/, tied by one version string (<workspace version>+git<rev>)
# and the kernel's build id:
#   linux-image-<release>_<kver>-enoki.<kernel stamp>_amd64.deb   the patched
#   linux-headers-<release>_<kver>-enoki.<kernel stamp>_amd64.deb  kernel
#   enoki-<release>_<version>_amd64.deb                 scheduler modules in
#       /lib/modules/<release>/extra/enoki/, the enoki CLI; depends on exactly
#       that kernel package, runs depmod
#   manifest.json   kernel release and build id, module build ids, git
#                   revision, toolchain, every file's sha256
#   SHA256SUMS      for `sha256sum -c`
# The kernel is the "metal" profile (kernel/config/profiles/metal.config:
# production settings); ENOKI_PACKAGE_PROFILE=NAME packages another one.
# The modules are built after the kernel package, against the vmlinux it
# contains: `enoki load` refuses a module whose recorded kernel build id is
# not the running kernel's.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
profile=${ENOKI_PACKAGE_PROFILE:-metal}
out="$top/target/package"
log="$top/target/package.log"
say() { echo "package: $*"; }
die() { echo "package: error: $*" >&2; exit 1; }
start=$(date +%s)
mkdir -p "$top/target"
: >"$log"

# --- the version that ties everything ----------------------------------------
base=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$top/Cargo.toml")
rev=$(git -C "$top" rev-parse --short=12 HEAD 2>/dev/null) || die "not a git checkout: the version names the revision"
dirty=""
git -C "$top" diff --quiet HEAD -- 2>/dev/null || dirty=".dirty"
version="${base}+git${rev}${dirty}"
say "version $version"

# --- kernel ----------------------------------------------------------------------
say "[1/5] kernel, profile $profile (kernel/build.sh)"
bash "$top/kernel/build.sh" --profile "$profile" | sed 's/^/  /'
sfx="-$profile"
[ "$profile" = vm ] && sfx=""
kbuild=$(readlink -f "$top/target/kernel$sfx")
ksrc="$(dirname "$kbuild")/src"
kdir=$(dirname "$kbuild")
bindgen="${BINDGEN:-$(command -v bindgen || echo "$HOME/.cargo/bin/bindgen")}"
MAKE=(make -s -C "$ksrc" O="$kbuild" LLVM=1 RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
	BINDGEN="$bindgen" -j"$(nproc)")
release=$("${MAKE[@]}" kernelrelease)
kver=$("${MAKE[@]}" kernelversion)
# The kernel package's version follows the kernel's inputs, not the git
# revision: a commit that changes only schedulers must not reboot a fleet.
# (A rebuild of the same inputs has another build id; the deploy compares
# build ids, not versions, to decide on a reinstall and a reboot.)
kpkgver="${kver}-enoki.$(cut -c1-12 "$kdir/stamp")"

# --- kernel packages -----------------------------------------------------------
say "[2/5] kernel packages (make bindeb-pkg, package version $kpkgver; log $log)"
stage="$out.new"
rm -rf "$stage"
mkdir -p "$stage"
image_deb="linux-image-${release}_${kpkgver}_amd64.deb"
headers_deb="linux-headers-${release}_${kpkgver}_amd64.deb"
kstamp="$(cat "$kdir/stamp") $kpkgver"
if [ -f "$out/$image_deb" ] && [ -f "$out/$headers_deb" ] && [ "$(cat "$out/.kernel-stamp" 2>/dev/null)" = "$kstamp" ]; then
	say "  kernel packages up to date"
	cp -p "$out/$image_deb" "$out/$headers_deb" "$out/.kernel-stamp" "$stage/"
else
	rm -f "$kdir"/*.deb "$kdir"/*.buildinfo "$kdir"/*.changes
	# bindeb-pkg relinks vmlinux with the package version in `uname -v`.
	"${MAKE[@]}" KDEB_PKGVERSION="$kpkgver" KDEB_CHANGELOG_DIST=bookworm bindeb-pkg >>"$log" 2>&1 ||
		die "make bindeb-pkg failed; last lines of $log: $(tail -5 "$log")"
	for deb in "$image_deb" "$headers_deb"; do
		[ -f "$kdir/$deb" ] || die "make bindeb-pkg did not produce $deb (see $log)"
		mv "$kdir/$deb" "$stage/"
	done
	rm -f "$kdir"/*.deb "$kdir"/*.buildinfo "$kdir"/*.changes
	echo "$kstamp" >"$stage/.kernel-stamp"
fi
kernel_build_id=$(readelf -n "$kbuild/vmlinux" | awk '/Build ID:/ { print $3; exit }')
# The packaged kernel must be this vmlinux: its build id is what modules record.
dpkg-deb --fsys-tarfile "$stage/$image_deb" | tar -xO "./boot/vmlinuz-$release" >"$stage/.vmlinuz"
cmp -s "$stage/.vmlinuz" "$kbuild/arch/x86/boot/bzImage" ||
	die "the kernel in $image_deb is not $kbuild/arch/x86/boot/bzImage: remove $out and retry"
rm -f "$stage/.vmlinuz"

# --- modules and the CLI -------------------------------------------------------
say "[3/5] scheduler modules against kernel build id $kernel_build_id"
ENOKI_PROFILE="$profile" bash "$top/enoki/kbuild/build-modules.sh" >>"$log" 2>&1 ||
	die "building the modules failed; see $log"
modules=("$top/target/modules$sfx"/enoki_*.ko)
[ -e "${modules[0]}" ] || die "no modules in target/modules$sfx"
say "[4/5] enoki CLI, static"
(cd "$top" && CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
	cargo build -q --release -p enoki-cli --bin enoki --target x86_64-unknown-linux-gnu --target-dir target/guest) ||
	die "building the enoki CLI failed"
cli="$top/target/guest/x86_64-unknown-linux-gnu/release/enoki"

# --- the enoki package -----------------------------------------------------------
say "[5/5] enoki-$release package, manifest, checksums"
pkg="enoki-$release"
root=$(mktemp -d)
chmod 0755 "$root"
trap 'rm -rf "$root" "$stage"' EXIT
install -d "$root/DEBIAN" "$root/lib/modules/$release/extra/enoki" "$root/usr/sbin"
install -m 0644 "${modules[@]}" "$root/lib/modules/$release/extra/enoki/"
install -m 0755 "$cli" "$root/usr/sbin/enoki"
cat >"$root/DEBIAN/control" <<EOF
Package: $pkg
Version: $version
Architecture: amd64
Maintainer: Enoki developers <enoki@localhost>
Section: kernel
Priority: optional
Depends: linux-image-$release (= $kpkgver), kmod
Recommends: stress-ng
Description: Enoki schedulers for Linux $release and the enoki tool
 Scheduler modules written in safe Rust with libEnoki, built for the kernel
 package linux-image-$release $kpkgver (build id $kernel_build_id), and
 the enoki command that loads, upgrades and inspects them.
EOF
for script in postinst postrm; do
	cat >"$root/DEBIAN/$script" <<EOF
#!/bin/sh
set -e
# The module index of the kernel these modules belong to.
if [ -d /lib/modules/$release ]; then depmod -a $release; fi
EOF
	chmod 0755 "$root/DEBIAN/$script"
done

manifest() { # the manifest's JSON, from the facts below
	python3 - "$@" <<'PY'
import hashlib, json, os, subprocess, sys
(version, rev, dirty, profile, release, kpkgver, build_id, stage) = sys.argv[1:9]
modules = sys.argv[9:]
def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
def module_build_id(path):
    notes = subprocess.run(["readelf", "-n", path], capture_output=True, text=True).stdout
    return next((l.split()[-1] for l in notes.splitlines() if "Build ID:" in l), None)
def first_line(cmd):
    return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
print(json.dumps({
    "version": version,
    "git": {"revision": rev, "dirty": dirty == "yes"},
    "architecture": "amd64",
    "kernel": {"release": release, "profile": profile, "package_version": kpkgver, "build_id": build_id},
    "modules": [{"file": os.path.basename(m), "sha256": sha256(m), "build_id": module_build_id(m),
                 "kernel_build_id": build_id} for m in modules],
    "packages": [{"file": f, "sha256": sha256(os.path.join(stage, f)),
                  "size": os.path.getsize(os.path.join(stage, f))}
                 for f in sorted(os.listdir(stage)) if f.endswith(".deb")],
    "toolchain": {"kernel_rustc": first_line(["/usr/bin/rustc", "--version"]),
                  "clang": first_line(["clang", "--version"]),
                  "cli_rustc": first_line(["rustc", "--version"])},
}, indent=2))
PY
}
dpkg-deb --root-owner-group -Zxz --build "$root" "$stage/${pkg}_${version}_amd64.deb" >>"$log"
manifest "$version" "$rev" "$([ -n "$dirty" ] && echo yes || echo no)" "$profile" "$release" "$kpkgver" \
	"$kernel_build_id" "$stage" "${modules[@]}" >"$stage/manifest.json"
(cd "$stage" && sha256sum ./*.deb manifest.json | sed 's| \./| |' >SHA256SUMS)
rm -rf "$out"
mv "$stage" "$out"
trap 'rm -rf "$root"' EXIT

say "done in $(($(date +%s) - start))s: $out"
(cd "$out" && du -h ./*.deb manifest.json SHA256SUMS | sed 's|\./||; s/^/package:   /')
say "kernel $release (build id $kernel_build_id), ${#modules[@]} modules, version $version"
