#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# check-sched-lints.sh SCHED_DIR...: refuses scheduler crates that could
# panic. A panic in a scheduler is a BUG() under the run-queue lock in the
# kernel, so the constructs that panic are denied: indexing and slicing,
# unwrap/expect, panic!/unreachable!/todo!/unimplemented!, and arithmetic
# that can overflow or divide by zero (use checked_, saturating_ or
# wrapping_ operations). Runs clippy on each crate's library only (tests
# may unwrap); prints clippy's file:line report and exits 1 on any hit.
# CARGO_TARGET_DIR is honoured (the module build shares the host's).
set -euo pipefail

lints=(
	clippy::indexing_slicing
	clippy::unwrap_used
	clippy::expect_used
	clippy::panic
	clippy::unreachable
	clippy::todo
	clippy::unimplemented
	clippy::arithmetic_side_effects
	clippy::integer_division
	clippy::modulo_arithmetic
)
deny=()
for l in "${lints[@]}"; do deny+=(-D "$l"); done

bad=0
for dir in "$@"; do
	[ -f "$dir/Cargo.toml" ] || { echo "check-sched-lints: no $dir/Cargo.toml" >&2; exit 2; }
	if ! out=$(cargo clippy --quiet --no-deps --lib --manifest-path "$dir/Cargo.toml" -- "${deny[@]}" 2>&1); then
		echo "$out" | grep -E '^(error|warning)|^ *--> ' >&2 || echo "$out" >&2
		echo "check-sched-lints: $(basename "$dir") could panic in the kernel: refused (see schedulers/README.md, Rules)" >&2
		bad=1
	fi
done
exit "$bad"
