#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Builds every scheduler in schedulers/ as an out-of-tree Rust-for-Linux
# module against target/kernel, into target/modules/enoki_<name>.ko: a
# scheduler is a directory whose src/lib.rs calls `enoki::export_scheduler!`.
# target/modules holds those and nothing else (the guest gets all of it):
# modules of schedulers whose directory is gone are removed, and the hello
# smoke-test module (kernel/module/hello) is built in target/kbuild/hello
# only, to prove the out-of-tree build works.
#
# Each module is one crate whose root is generated here: libEnoki and the
# scheduler source are included as modules (`extern crate self as enoki`
# keeps `enoki::` paths working), plus kernel/module/enoki_params.c for the
# module parameters. The scheduler sources are the same files cargo builds;
# their module is #[forbid(unsafe_code)], and a source that uses the
# kernel crate is refused (check-sched-source.sh).
# Its modinfo description, "Enoki scheduler <name>", is what `enoki load`
# recognises a scheduler module by.
#
# `build-modules.sh --prune` only removes what is no longer built (no kernel
# needed); ENOKI_ONLY=NAME builds scheduler NAME alone (`cargo make reload`); ENOKI_TOP names another tree (for tests). ENOKI_PROFILE=NAME
# builds against another kernel profile (target/kernel-NAME, see
# kernel/build.sh) into target/modules-NAME.
set -euo pipefail

top=${ENOKI_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
profile=${ENOKI_PROFILE:-vm}
sfx=""
[ "$profile" = vm ] || sfx="-$profile"
kdir="$top/target/kernel$sfx"
gen="$top/target/kbuild$sfx"
out="$top/target/modules$sfx"
mkdir -p "$gen" "$out"
# One build at a time: two makes in the same module directory corrupt it.
exec 9>"$gen/.lock"
flock 9

# The schedulers to build, by directory name.
schedulers=()
for sched in "$top"/schedulers/*/; do
	name=$(basename "$sched")
	[ -f "$sched/src/lib.rs" ] || continue
	grep -q 'export_scheduler!' "$sched/src/lib.rs" || { echo "modules: skipping $name (no export_scheduler!)"; continue; }
	schedulers+=("$name")
done
# ...and the C baselines (kernel/module/NAME/enoki_NAME.c: a module that
# loads a scheduler built into Enoki-C, such as cfifo).
c_schedulers=()
for d in "$top"/kernel/module/*/; do
	name=$(basename "$d")
	[ -f "$d/enoki_$name.c" ] && c_schedulers+=("$name")
done
is_scheduler() { # NAME
	local s
	for s in "${schedulers[@]}" "${c_schedulers[@]}"; do [ "$s" = "$1" ] && return 0; done
	return 1
}

# What is no longer built goes: modules, and their generated crates.
for ko in "$out"/*.ko; do
	[ -e "$ko" ] || continue
	name=$(basename "$ko" .ko)
	name=${name#enoki_}
	is_scheduler "$name" && continue
	rm -f "$ko"
	echo "modules: removed $(basename "$ko") (no scheduler schedulers/$name)"
done
for d in "$gen"/*/; do
	[ -d "$d" ] || continue
	name=$(basename "$d")
	[ "$name" = hello ] || is_scheduler "$name" || rm -rf "$d"
done
[ "${1:-}" = --prune ] && exit 0

# What this run builds: every scheduler, or ENOKI_ONLY.
only=${ENOKI_ONLY:-}
if [ -n "$only" ]; then
	[ -d "$top/schedulers/$only" ] && is_scheduler "$only" ||
		{ echo "modules: no scheduler schedulers/$only" >&2; exit 1; }
	schedulers=("$only")
	c_schedulers=()
fi

# Schedulers are safe Rust on enoki:: alone: the generated crate root
# forbids unsafe code in them, and this refuses the kernel crate.
here=$(cd "$(dirname "$0")" && pwd)
for name in "${schedulers[@]}"; do
	bash "$here/check-sched-source.sh" "$top/schedulers/$name" ||
		{ echo "modules: refusing to build $name (see above)" >&2; exit 1; }
done

[ -f "$kdir/Module.symvers" ] || { echo "modules: no kernel build at $kdir: run 'cargo make kernel${sfx}'" >&2; exit 1; }
bindgen="${BINDGEN:-$(command -v bindgen || echo "$HOME/.cargo/bin/bindgen")}"

# write_if_changed FILE: stdin to FILE, keeping the mtime when equal
write_if_changed() {
	local tmp
	tmp=$(mktemp)
	cat >"$tmp"
	if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

# What `enoki load` checks a module against (kernel/module/enoki_params.c):
# a relinked vmlinux has a new one, so it is part of the stamp.
kernel_build_id=$(readelf -n "$kdir/vmlinux" | awk '/Build ID:/ { print $3; exit }')
[ -n "$kernel_build_id" ] || { echo "modules: no GNU build id in $kdir/vmlinux" >&2; exit 1; }

# Nothing changed since the last build: no work at all.
stamp=$( (echo "$kernel_build_id"; cat "$kdir/../stamp" 2>/dev/null; find "$top/enoki/src" "$top"/schedulers/*/src "$top/kernel/module" \
	"$0" "$here/check-sched-source.sh" "$here/check-sched-lints.sh" -type f -name '*.rs' -o -type f -name '*.[ch]' -o -type f -name '*.sh' | sort | xargs cat) | sha256sum | cut -c1-32)
if [ -z "$only" ] && [ "$(cat "$gen/stamp" 2>/dev/null)" = "$stamp" ] && ls "$out"/*.ko >/dev/null 2>&1; then
	echo "modules: up to date ($(ls "$out" | wc -l) modules in $out)"
	exit 0
fi

# ...and nothing in them can panic: a panic is a BUG() under the rq lock.
echo "modules: checking ${#schedulers[@]} schedulers cannot panic (clippy)"
for name in "${schedulers[@]}"; do
	bash "$here/check-sched-lints.sh" "$top/schedulers/$name" ||
		{ echo "modules: refusing to build $name (see above)" >&2; exit 1; }
done

dirs=()
for name in "${schedulers[@]}"; do
	sched="$top/schedulers/$name"
	d="$gen/$name"
	mkdir -p "$d"
	write_if_changed "$d/Kbuild" <<-KB
	obj-m := enoki_$name.o
	enoki_$name-y := enoki_params.o ${name}_sched.o
	rustflags-y += --cfg enoki_kernel
	CFLAGS_enoki_params.o += -DENOKI_KERNEL_BUILD_ID='"$kernel_build_id"'
	KB
	cp -p "$top/kernel/module/enoki_params.c" "$d/enoki_params.c"
	write_if_changed "$d/${name}_sched.rs" <<-RS
	// SPDX-License-Identifier: GPL-2.0
	//! Crate root of enoki_$name.ko, generated by enoki/kbuild/build-modules.sh.

	extern crate self as enoki;

	#[path = "$top/enoki/src/lib.rs"]
	mod enoki_lib;
	pub use enoki_lib::*;

	#[path = "$sched/src/lib.rs"]
	#[forbid(unsafe_code)]
	pub mod scheduler_src;

	type Module = enoki_lib::kmod::EnokiModule<scheduler_src::EnokiSched>;

	kernel::prelude::module! {
	    type: Module,
	    name: "enoki_$name",
	    author: "Enoki",
	    description: "Enoki scheduler $name",
	    license: "GPL",
	}
	RS
	dirs+=("$d")
done
for name in "${c_schedulers[@]}"; do
	d="$gen/$name"
	mkdir -p "$d"
	write_if_changed "$d/Kbuild" <<-KB
	obj-m := enoki_$name.o
	enoki_$name-y := enoki_params.o ${name}_sched.o
	ccflags-y += -I\$(srctree)/kernel/sched
	CFLAGS_enoki_params.o += -DENOKI_KERNEL_BUILD_ID='"$kernel_build_id"'
	KB
	cp -p "$top/kernel/module/enoki_params.c" "$top/kernel/module/enoki_params.h" "$d/"
	cp -p "$top/kernel/module/$name/enoki_$name.c" "$d/${name}_sched.c"
	dirs+=("$d")
done
hello="$gen/hello"
if [ -z "$only" ]; then
	mkdir -p "$hello"
	echo 'obj-m := enoki_hello.o' | write_if_changed "$hello/Kbuild"
	cp -p "$top/kernel/module/hello/enoki_hello.rs" "$hello/enoki_hello.rs"
	dirs+=("$hello")
fi

for d in "${dirs[@]}"; do
	name=$(basename "$d")
	log="$d/build.log"
	if ! make -C "$kdir" M="$d" LLVM=1 RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
		BINDGEN="$bindgen" -j"$(nproc)" modules >"$log" 2>&1; then
		echo "modules: $name FAILED; errors from $log:" >&2
		grep -E -A6 '^(error|warning: unused)' "$log" | head -60 >&2 || tail -40 "$log" >&2
		exit 1
	fi
	[ "$d" = "$hello" ] && continue # built, not installed
	for ko in "$d"/*.ko; do
		if ! cmp -s "$ko" "$out/$(basename "$ko")"; then
			cp "$ko" "$out/"
			echo "modules: built $(basename "$ko") ($(grep -c '^warning' "$log" || true) warnings, log $log)"
		fi
	done
done
[ -n "$only" ] || echo "$stamp" >"$gen/stamp"
echo "modules: $(ls "$out" | wc -l) modules in $out"
