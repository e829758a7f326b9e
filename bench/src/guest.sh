#!/bin/bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# enoki-bench's guest script: one VM, each workload under the default
# scheduler and under each scheduler the run list names.
#
# Parameters, from the environment:
#   BENCH_RAW      directory for the raw output of every run
#   BENCH_SCHED    the scheduler bench_upgrades upgrades (enoki load NAME);
#                  each run names its own
#   BENCH_ARGS     the schedulers' parameters (enoki load --args), empty
#                  for none
#   BENCH_TIMEOUT  limit for one run, seconds
#   BENCH_RECORD   1: run every Enoki run once more under `enoki record`
#                  (the run list sets BENCH_RECORD=0 where there is nothing
#                  to record)
#                  (before the plain run where BENCH_RECORD_FIRST=1, else
#                  after it)
#   BENCH_SCHBENCH_WORK  enoki-schbench's work options in the upgrade runs
#                  (the A/B workloads' own, bench/src/workloads.rs)
#   BENCH_MODE     the load mode (enoki load --mode), empty for the
#                  module's default; scoped_run sets it
# The run list may end with bench_upgrades N (`enoki-bench --upgrades N`).
# Argument: the run list, a script of one bench_setup call and then
# bench_run calls, each naming its scheduler (sweep_run calls for `--only
# shinjuku`, scoped_run calls for `--only locality` and `--only arachne`).

RAW=$BENCH_RAW
cd /tmp || exit 1

# enoki_load NAME: loads scheduler NAME with BENCH_ARGS and BENCH_MODE.
enoki_load() {
	local mode=()
	[ -n "$BENCH_MODE" ] && mode=(--mode "$BENCH_MODE")
	if [ -n "$BENCH_ARGS" ]; then
		enoki load "$1" "${mode[@]}" --args "$BENCH_ARGS"
	else
		enoki load "$1" "${mode[@]}"
	fi
}

# Around each Enoki run, with the run's id, raw-output directory and the
# workload command as $1, $2 and $3. With BENCH_RECORD=1, one of them runs
# the workload once more, still under Enoki, inside `enoki record`
# (record_begin where BENCH_RECORD_FIRST=1, record_end otherwise, so that
# the order alternates): its time goes to RAW/ID.rec.time, its output and
# the recorder's summary (calls, bytes_per_call, ...) to RAW/ID.rec.out.
record_begin() {
	[ "$BENCH_RECORD_FIRST" = 1 ] || return 0
	record_run "$@"
}
record_end() {
	[ "$BENCH_RECORD_FIRST" = 1 ] && return 0
	record_run "$@"
}
record_run() {
	local id=$1 raw=$2 cmd=$3 t0 t1 rc
	[ "$BENCH_RECORD" = 1 ] || return 0
	t0=$EPOCHREALTIME
	enoki record -o /tmp/x.enk -- timeout -k 5 "$BENCH_TIMEOUT" bash -c "$cmd" >"$raw/$id.rec.out" 2>&1
	rc=$?
	t1=$EPOCHREALTIME
	echo "$rc" >"$raw/$id.rec.status"
	echo "$t0 $t1" >"$raw/$id.rec.time"
	rm -f /tmp/x.enk
}

# The scheduler `enoki status` shows: `-` (or nothing, without enoki) when
# none is loaded.
loaded_scheduler() {
	enoki status 2>/dev/null | awk '$1 == "scheduler" { print $2 }'
}

# bench_run ID SCHED LABEL CMD: runs CMD under SCHED, `default` or the
# scheduler to load for this run only (and unload after it); writes
# RAW/ID.{out,status,time}.
bench_run() {
	local id=$1 sched=$2 label=$3 cmd=$4 status=ok rc t0 t1 loaded
	printf 'bench: %s ... ' "$label"
	loaded=$(loaded_scheduler)
	if [ -n "$loaded" ] && [ "$loaded" != - ]; then
		# An earlier unload failed: a default run would measure that
		# scheduler, and no other can be loaded.
		echo "scheduler $loaded still loaded" >"$RAW/$id.status"
		echo "FAILED (scheduler $loaded still loaded)"
		return
	fi
	if [ "$sched" != default ]; then
		if ! enoki_load "$sched" >"$RAW/$id.load" 2>&1; then
			echo "load failed: $(tail -1 "$RAW/$id.load")" >"$RAW/$id.status"
			echo "FAILED (enoki load)"
			return
		fi
		record_begin "$id" "$RAW" "$cmd"
	fi
	t0=$EPOCHREALTIME
	timeout -k 5 "$BENCH_TIMEOUT" bash -c "$cmd" >"$RAW/$id.out" 2>&1
	rc=$?
	t1=$EPOCHREALTIME
	if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status=timeout; elif [ $rc -ne 0 ]; then status="exit $rc"; fi
	if [ "$sched" != default ]; then
		record_end "$id" "$RAW" "$cmd"
		if [ "$(cat /sys/kernel/enoki/state)" != enabled ]; then
			status="ejected: $(cat /sys/kernel/enoki/last_exit)"
		fi
		echo "$(cat /sys/kernel/enoki/pick_errors) pick errors" >>"$RAW/$id.load"
		enoki unload >>"$RAW/$id.load" 2>&1
	fi
	echo "$status" >"$RAW/$id.status"
	echo "$t0 $t1" >"$RAW/$id.time"
	echo "$status ($(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }") s)"
	[ "$sched" = default ] || unloaded "$id" "$label"
}

# unloaded ID LABEL: after a run of a scheduler, fails the run if the
# scheduler is still loaded (its unload failed): its numbers may be fine,
# but the next run would fail (see bench_run), so this one says why.
unloaded() {
	local loaded
	loaded=$(loaded_scheduler)
	if [ -n "$loaded" ] && [ "$loaded" != - ] && [ "$(cat "$RAW/$1.status")" = ok ]; then
		echo "unload failed: $(tail -1 "$RAW/$1.load")" >"$RAW/$1.status"
		echo "bench: $2: FAILED (enoki unload: $loaded still loaded)"
	fi
}

# sweep_run ID SCHED ARGS LABEL CMD: bench_run for the sweep, where each run
# names its scheduler: `default`, or the Enoki scheduler to load (with
# ARGS, empty for none) for this run only, in its default mode (no
# `--mode all`: only tasks that set SCHED_EXT, the workers, run under it).
sweep_run() {
	local BENCH_ARGS=$3 BENCH_RECORD=0
	bench_run "$1" "$2" "$4" "$5"
}

# scoped_run ID SCHED ARGS LABEL CMD: bench_run for the repeated tables
# (`--only locality`, `--only arachne`), where each run names its
# scheduler: `default`, or the Enoki scheduler to load (with ARGS, empty
# for none) for this run only, with `--mode all` (every task under it, the
# hinted threads included: a hint about a task outside Enoki is refused).
scoped_run() {
	local BENCH_ARGS=$3 BENCH_MODE=all BENCH_RECORD=0
	bench_run "$1" "$2" "$4" "$5"
}

# bench_upgrades N: Enoki's live upgrade, in this boot: a pipe round trip
# (enoki-pipe, CPUs 0 and 1), then enoki-schbench before, during and after
# N upgrades of the scheduler to itself. RAW/upgrade.{pipe,before,during,
# after} hold the outputs, RAW/upgrade.blackouts each upgrade's blackout
# (ns), RAW/upgrade.failed the upgrades that failed.
bench_upgrades() {
	local n=$1 up
	echo "bench: live upgrade: $n upgrades of $BENCH_SCHED under enoki-schbench"
	if ! enoki_load "$BENCH_SCHED" >"$RAW/upgrade.load" 2>&1; then
		echo "bench: live upgrade: enoki load failed"
		return
	fi
	enoki-pipe -l 20000 --cpus 0,1 >"$RAW/upgrade.pipe" 2>&1
	enoki-schbench -m 2 -t 2 -w 1 -r 4 $BENCH_SCHBENCH_WORK >"$RAW/upgrade.before" 2>&1
	(
		for _ in $(seq "$n"); do
			if [ -n "$BENCH_ARGS" ]; then
				enoki upgrade "$BENCH_SCHED" --args "$BENCH_ARGS"
			else
				enoki upgrade "$BENCH_SCHED"
			fi >/dev/null 2>>"$RAW/upgrade.failed" &&
				sed -n 's/^blackout_last_ns //p' /sys/kernel/enoki/upgrades
		done >"$RAW/upgrade.blackouts"
	) &
	up=$!
	enoki-schbench -m 2 -t 2 -w 1 -r 8 $BENCH_SCHBENCH_WORK >"$RAW/upgrade.during" 2>&1
	wait "$up"
	enoki-schbench -m 2 -t 2 -w 1 -r 4 $BENCH_SCHBENCH_WORK >"$RAW/upgrade.after" 2>&1
	enoki unload >/dev/null 2>&1
}

# bench_setup CMD: generates the input data.
bench_setup() {
	echo "bench: setup: generating input data"
	bash -c "$1" || echo "bench: setup failed"
}

# shellcheck source=/dev/null
. "$1"
echo bench: all runs done
