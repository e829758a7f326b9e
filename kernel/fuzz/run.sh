#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Builds and runs the libFuzzer target of Enoki-C's hint rings
# (hint_ring_fuzz.c over kernel/sched/enoki_hint_ring.h) in target/fuzz-hints/.
#
#   kernel/fuzz/run.sh                  fuzz for FUZZ_SECONDS (default 30), summary line
#   kernel/fuzz/run.sh --break CHECK    build the ring code with CHECK (size or tail)
#                                       removed; succeed only if the fuzzer finds that
#                                       within FUZZ_BREAK_SECONDS (default 60)
#
# The corpus grows in target/fuzz-hints/corpus, seeded from kernel/fuzz/seeds.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out="$top/target/fuzz-hints"
header="$top/kernel/src/kernel/sched/enoki_hint_ring.h"
say() { echo "fuzz-hints: $*"; }
die() { echo "fuzz-hints: error: $*" >&2; exit 1; }

brk=""
case "${1:-}" in
"") ;;
--break) brk="${2:?--break needs size or tail}" ;;
*) die "unknown argument '$1' (--break size|tail)" ;;
esac

# The check each break removes, as a sed expression on the ring code: it must
# match, or the test would pass against code that no longer has that check.
case "$brk" in
"") edit="" ;;
size) edit='s/if (h->size != s->hint_size)/if (0 \&\& h->size != s->hint_size)/' ;;
tail) edit='s/if (tail - \*head > ENOKI_RING_ENTRIES) {/if (0 \&\& tail - *head > ENOKI_RING_ENTRIES) {/' ;;
*) die "unknown break '$brk' (size, tail)" ;;
esac

command -v clang-14 >/dev/null || die "clang-14 not found: run 'cargo make deps'"
dir="$out/${brk:+break-$brk}"
dir="${dir%/}"
mkdir -p "$dir"
incdir="$top/kernel/src/kernel/sched"
if [ -n "$brk" ]; then
	incdir="$dir/include"
	mkdir -p "$incdir"
	sed "$edit" "$header" >"$incdir/enoki_hint_ring.h"
	! cmp -s "$header" "$incdir/enoki_hint_ring.h" ||
		die "the $brk check is no longer where --break $brk expects it in $header"
fi

bin="$dir/hint_ring_fuzz"
clang-14 -g -O1 -Wall -Wextra -Werror -Wno-unused-parameter \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-DENOKI_FUZZ_BREAK="\"${brk:-none}\"" -I "$incdir" -I "$top/kernel/src/include" \
	"$here/hint_ring_fuzz.c" -o "$bin" ||
	die "build failed (libclang-rt-14-dev installed? 'cargo make deps')"

log="$dir/fuzz.log"
if [ -z "$brk" ]; then
	secs="${FUZZ_SECONDS:-30}"
	mkdir -p "$out/corpus"
	status=0
	(cd "$dir" && "$bin" -max_total_time="$secs" -print_final_stats=1 \
		-artifact_prefix="$dir/" "$out/corpus" "$here/seeds") >"$log" 2>&1 || status=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	if [ "$status" -ne 0 ]; then
		grep -E 'invariant broken|ERROR: |SUMMARY' "$log" | head -5 >&2 || tail -20 "$log" >&2
		die "the fuzzer found an input that breaks the ring code (log $log, input $dir/crash-*)"
	fi
	say "${runs:-?} inputs in ${secs}s, corpus of $(find "$out/corpus" -type f | wc -l), every invariant held (log $log)"
	exit 0
fi

secs="${FUZZ_BREAK_SECONDS:-60}"
# no seeds and a fresh corpus: the finding must come from the search itself
rm -rf "$dir/corpus" "$dir"/crash-*
mkdir -p "$dir/corpus"
start=$(date +%s)
status=0
(cd "$dir" && "$bin" -max_total_time="$secs" -artifact_prefix="$dir/" \
	"$dir/corpus") >"$log" 2>&1 || status=$?
took=$(($(date +%s) - start))
if [ "$status" -ne 0 ] && grep -q 'invariant broken' "$log"; then
	say "without the $brk check: found in ${took}s: $(grep -m1 'invariant broken' "$log")"
	exit 0
fi
tail -20 "$log" >&2
die "without the $brk check the fuzzer found nothing in ${secs}s (log $log)"
