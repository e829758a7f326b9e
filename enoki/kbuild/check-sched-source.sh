#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# check-sched-source.sh SCHED_DIR...: refuses scheduler sources that reach
# into the `kernel` crate. A scheduler is safe Rust that may use `enoki::`
# only: safe `kernel::` calls (a sleeping allocation, printk) still kill
# the machine under the run-queue lock. Prints file:line for each use and
# exits 1 if there is one. Comments count too: say "the kernel's", not
# the path.
set -euo pipefail

# `kernel::`, `::kernel`, `extern crate kernel`, `use kernel` (as a whole word).
pattern='(^|[^A-Za-z0-9_])kernel[[:space:]]*::|::[[:space:]]*kernel([^A-Za-z0-9_]|$)|extern[[:space:]]+crate[[:space:]]+kernel([^A-Za-z0-9_]|$)|(^|[^A-Za-z0-9_])use[[:space:]]+kernel([^A-Za-z0-9_]|$)'
bad=0
for dir in "$@"; do
	[ -d "$dir/src" ] || { echo "check-sched-source: no $dir/src" >&2; exit 2; }
	while IFS= read -r hit; do
		echo "$hit: a scheduler uses enoki:: only, never the kernel crate" >&2
		bad=1
	done < <(grep -rnE --include='*.rs' "$pattern" "$dir/src" || true)
done
exit "$bad"
