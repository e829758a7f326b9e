#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# `cargo make vm` helper: cargo-make's duckscript hands the task arguments over
# as ENOKI_VM_ARG_1..ENOKI_VM_ARGC (the only way to keep them intact through
# cargo-make), and this runs the launcher with them.
set -euo pipefail
args=()
for ((i = 1; i <= ${ENOKI_VM_ARGC:-0}; i++)); do
	v="ENOKI_VM_ARG_$i"
	args+=("${!v}")
	unset "$v"
done
unset ENOKI_VM_ARGC
exec cargo run --quiet -p enoki-vm -- "${args[@]}"
