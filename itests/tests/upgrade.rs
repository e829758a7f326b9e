// SPDX-License-Identifier: MIT OR Apache-2.0
//! Live upgrade in the real kernel: WFQ replaced by new versions of itself
//! 51 times under a mixed load (CPU hogs, pipes, fork/exec) with its state
//! carried over, the first 10 recorded (the trace replays up to the first
//! upgrade), refusals that leave the running version going, upgrades
//! between schedulers, and bad input. Every workload process must finish
//! and the kernel log stay clean.

use enoki_itests::{self as it, field, number, DUMP};
use serial_test::serial;

/// Upgrades in a row besides the one whose names are checked, alternating
/// two settings.
const ROUNDS: u64 = 50;
/// The first rounds, recorded from the load of WFQ on (a trace replays
/// only from a scheduler's first message).
const RECORDED: u64 = 10;

#[test]
#[serial]
fn wfq_is_upgraded_live_under_load_and_refusals_change_nothing() {
    let dir = it::shared_tempdir();
    let trace = dir.path().join("upgrades.enk");
    let script = format!(
        r#"{DUMP}
ms() {{ awk '{{ printf "%d", $1 * 1000 }}' /proc/uptime; }}
load() {{ # SECONDS: the mixed load, in the background
    stress-ng -c 8 --pipe 2 -t "$1"s >/dev/null 2>&1 & hogs=$!
    ( end=$(( $(ms) + $1 * 1000 )); while [ $(ms) -lt $end ]; do /bin/true; done ) & forks=$!
}}
finish() {{ # NAME: waits for the load and reports how it ended
    rc=0; wait $hogs || rc=$?; echo "$1.hogs-exit $rc"
    rc=0; wait $forks || rc=$?; echo "$1.forks-exit $rc"
}}
try() {{ # NAME CMD...: runs an upgrade that must be refused
    name=$1; shift
    rc=0; out=$("$@" 2>&1) || rc=$?
    echo "$name.rc $rc"
    echo "$name.error $out"
    echo "$name.module $(cat /sys/kernel/enoki/module)"
    echo "$name.state $(cat /sys/kernel/enoki/state)"
    echo "$name.dmesg $(dmesg | grep 'enoki: upgrade of .* refused (' | tail -n 1)"
}}

cat > /tmp/rounds.sh <<'R'
# FIRST LAST NAME: upgrades FIRST..LAST, alternating two settings
ok=0
for i in $(seq $1 $2); do
    if [ $((i % 2)) = 1 ]; then p=6000; else p=9000; fi
    enoki upgrade wfq --args period_us=$p >/dev/null && ok=$((ok + 1))
done
echo "$3.ok $ok"
R

# Recorded without the hogs: on a slow emulator they make the recorder
# drop events, and a trace replays only up to its first gap.
rc=0
enoki record -o /tmp/up.enk --load wfq --mode all -- sh -c \
    'enoki-pipe -l 2000 >/dev/null; sh /tmp/rounds.sh 1 {RECORDED} recorded' \
    >/tmp/record.out 2>&1 || rc=$?
echo "record.exit $rc"
sed 's/^/record./' /tmp/record.out
cp /tmp/up.enk {trace}
load 30
echo "named.out $(enoki upgrade wfq --args period_us=9000)"
echo "named.module $(cat /sys/kernel/enoki/module)"
echo "named.args $(cat /sys/module/enoki_wfq_u1/parameters/args)"
echo "named.old-gone $([ -e /sys/module/enoki_wfq ] && echo no || echo yes)"
enoki-spin group --tasks 8 --cpu-ms 2000 >/tmp/spin.out 2>&1 & spin=$!
# Weights change while tasks meet each new version (logged, handed over).
( n=0; while kill -0 $spin 2>/dev/null; do
    for p in $(pidof stress-ng); do renice -n $((n % 10)) -p $p >/dev/null 2>&1; done
    n=$((n + 1))
done ) & renice=$!
sh /tmp/rounds.sh {RECORDED1} {ROUNDS} after
rc=0; wait $spin || rc=$?; echo "spin.exit $rc"
wait $renice
sed 's/^/spin./' /tmp/spin.out
echo "changes $(dmesg | grep -o '[0-9]* changed meanwhile' | awk '{{ s += $1 }} END {{ print s + 0 }}')"
sed 's/^/wfq./' /sys/kernel/enoki/upgrades
echo "wfq.carried $(dmesg | grep -c 'enoki: upgraded.*state carried')"
echo "wfq.precopied $(dmesg | grep -c 'enoki: upgraded.*state carried.*pre-copied in [1-9]')"
echo "wfq.listed $(dmesg | sed -n 's/.*enoki: upgraded.*: \([0-9]*\) tasks, .* of \([0-9]*\) looked at.*/\1 \2/p' |
    awk '$2 < $1 {{ n++ }} END {{ print n + 0 }}')"
enoki status | grep upgrades
dump wfq.
finish wfq

enoki unload >/dev/null
enoki load buggy --mode all --args bug=prep >/dev/null
load 10
try prep enoki upgrade buggy
enoki upgrade buggy --fresh --args bug=none >/dev/null && echo "prep.fresh ok"
try adopt enoki upgrade buggy --args bug=adopt
try mismatch enoki upgrade wfq
enoki upgrade wfq --fresh >/dev/null && echo "buggy-wfq ok"
enoki upgrade fifo >/dev/null && echo "wfq-fifo ok"
enoki upgrade wfq >/dev/null && echo "fifo-wfq ok"
dump mixed.
finish mixed
try unknown enoki upgrade nope
enoki unload >/dev/null
try none enoki upgrade wfq
"#,
        RECORDED1 = RECORDED + 1,
        trace = trace.display(),
    );
    let path = dir.path().join("upgrade.sh");
    std::fs::write(&path, script).unwrap();
    let r = it::boot(it::heavy_config(), &format!("sh {}", path.display()));
    r.assert_exit(0);

    assert!(
        field(&r, "named.out").starts_with("upgraded enoki_wfq -> enoki_wfq_u1, calls held off"),
        "{}",
        field(&r, "named.out")
    );
    assert_eq!(field(&r, "named.module"), "enoki_wfq_u1");
    assert_eq!(
        field(&r, "named.args"),
        "period_us=9000",
        "the new version runs with its own settings"
    );
    assert_eq!(
        field(&r, "named.old-gone"),
        "yes",
        "the old module is removed"
    );
    let ok: u64 = ["record.recorded", "after"]
        .iter()
        .map(|part| number(&r, &format!("{part}.ok")))
        .sum();
    assert_eq!(ok, ROUNDS);
    assert_recorded_upgrades_replay_up_to_the_first(&r, &trace);
    // Spinners ran through the later upgrades: each finished, and the
    // longest any went without a CPU is the upgrades' worst wait.
    assert_eq!(field(&r, "spin.exit"), "0", "every spinner finished");
    let summary = field(&r, "spin.summary");
    let max_gap = summary
        .split_whitespace()
        .skip_while(|w| *w != "max_gap_ms")
        .nth(1)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no max_gap_ms in {summary:?}"));
    assert!(max_gap > 0.0, "{summary}");
    eprintln!(
        "longest a spinner went without a CPU during {} upgrades: {max_gap:.1} ms; \
         {} task changes handed over from while tasks met the new versions",
        ROUNDS - RECORDED,
        number(&r, "changes")
    );
    assert_eq!(number(&r, "wfq.upgrades"), ROUNDS + 1);
    assert_eq!(
        number(&r, "wfq.carried"),
        ROUNDS + 1,
        "WFQ's state went along each time"
    );
    assert_eq!(
        number(&r, "wfq.precopied"),
        ROUNDS + 1,
        "each time a first copy went over before calls were held off"
    );
    // Tokens: the tasks that may wait, not every task, are looked at in
    // the hold (all of them only when more were queued meanwhile than
    // Enoki-C lists).
    assert!(
        number(&r, "wfq.listed") >= ROUNDS / 2,
        "{} of {} upgrades looked at fewer tasks than there are",
        number(&r, "wfq.listed"),
        ROUNDS + 1
    );
    let max_us = number(&r, "wfq.blackout_max_ns") / 1000;
    eprintln!(
        "calls held off: last {} ns, at most {max_us} us",
        number(&r, "wfq.blackout_last_ns")
    );
    it::assert_enabled(&r, "wfq.");
    assert_eq!(number(&r, "wfq.pick_errors"), 0);
    for load in ["wfq", "mixed"] {
        assert_eq!(
            field(&r, &format!("{load}.hogs-exit")),
            "0",
            "{load}: stress-ng"
        );
        assert_eq!(
            field(&r, &format!("{load}.forks-exit")),
            "0",
            "{load}: fork/exec"
        );
    }

    for (name, errno, module) in [
        ("prep", "ECANCELED", "enoki_buggy"),
        ("adopt", "ECANCELED", "enoki_buggy_u1"),
        ("mismatch", "EPROTO", "enoki_buggy_u1"),
    ] {
        assert_ne!(number(&r, &format!("{name}.rc")), 0, "{name}: refused");
        let error = field(&r, &format!("{name}.error"));
        assert!(error.contains(errno), "{name}: {error}");
        assert!(
            error.contains("the running scheduler goes on"),
            "{name}: {error}"
        );
        assert_eq!(
            field(&r, &format!("{name}.module")),
            module,
            "{name}: untouched"
        );
        assert_eq!(field(&r, &format!("{name}.state")), "enabled", "{name}");
    }
    // A hand-over that fails, fails in its pre-copy: no call waited for it.
    for name in ["prep", "adopt"] {
        let dmesg = field(&r, &format!("{name}.dmesg"));
        assert!(
            dmesg.contains("refused (-125) before any call was held off"),
            "{name}: {dmesg}"
        );
    }
    for step in ["prep.fresh", "buggy-wfq", "wfq-fifo", "fifo-wfq"] {
        assert_eq!(field(&r, step), "ok", "{step}");
    }
    it::assert_enabled(&r, "mixed.");
    assert_eq!(field(&r, "mixed.scheduler"), "wfq");
    assert!(field(&r, "unknown.error").contains("unknown scheduler 'nope'"));
    assert!(field(&r, "none.error").contains("no scheduler is running"));
    r.assert_clean();
}

/// The rounds recorded went into the trace, and the trace replays on the
/// host without divergence up to the first of them.
fn assert_recorded_upgrades_replay_up_to_the_first(r: &it::Run, trace: &std::path::Path) {
    assert_eq!(field(r, "record.exit"), "0");
    assert_eq!(number(r, "record.recorded.ok"), RECORDED);
    assert_eq!(number(r, "record.upgrades"), RECORDED);
    let mut reader = enoki_sim::trace::TraceReader::open(trace).expect("reading the trace");
    let header = reader.header().clone();
    assert_eq!(header.scheduler, "wfq");
    assert_eq!(header.args, "", "the version loaded at the start");
    let wfq = enoki_sim::registry::find("wfq").unwrap();
    let rep = (wfq.replay_by_locks)(&header, &mut reader, &Default::default()).expect("replay");
    assert!(rep.read_error.is_none(), "{:?}", rep.read_error);
    if let Some(d) = &rep.divergence {
        let keep = it::shared_tempdir().keep().join("diverged.enk");
        std::fs::copy(trace, &keep).unwrap();
        panic!("replay diverged (trace kept at {}):\n{d}", keep.display());
    }
    let upgrade = rep.upgrade.expect("replay stopped at the first upgrade");
    assert_ne!(upgrade.state, 0, "WFQ's state was carried");
    assert!(rep.messages > 1000, "{} messages before it", rep.messages);
}

/// The edit-to-running loop with no reboot: a dev VM with a control port
/// runs WFQ; `control::reload` rebuilds the module on the host and
/// upgrades the VM to it through the port; the guest then runs the new
/// version with its new settings.
#[test]
#[serial]
fn reload_upgrades_a_running_dev_vm_through_its_control_port() {
    use enoki_vm::control;
    use std::time::{Duration, Instant};

    let dir = it::shared_tempdir();
    let socket = dir.path().join("control.sock");
    let vm = it::vm(it::heavy_config().control(&socket));
    // The guest idles until the host says stop (through the port).
    let guest = std::thread::spawn(move || {
        vm.run("mkfifo /tmp/stop && read -r _ </tmp/stop && echo stopped")
    });
    let ask = |cmd: &str| {
        let mut out = Vec::new();
        let rc = control::run(&socket, cmd, Duration::from_secs(300), &mut out)
            .unwrap_or_else(|e| panic!("{cmd}: {e:#}"));
        (rc, String::from_utf8_lossy(&out).into_owned())
    };
    // QEMU creates the socket once it runs; the guest reads once booted.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "QEMU never opened {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        ask("enoki load wfq --mode all"),
        (0, "loaded wfq (mode all)\n".into())
    );

    let root = enoki_vm::find_root().unwrap();
    let mut out = Vec::new();
    let args = ["--args".to_string(), "period_us=7000".to_string()];
    let took = control::reload(&root, &socket, "wfq", &args, &mut out).expect("reload");
    let out = String::from_utf8_lossy(&out).into_owned();
    assert!(
        out.starts_with("upgraded enoki_wfq -> enoki_wfq_u1, calls held off"),
        "{out}"
    );
    eprintln!("reload: build {:?}, upgrade {:?}", took.build, took.upgrade);

    let (rc, now) = ask("cat /sys/module/enoki_wfq_u1/parameters/args /sys/kernel/enoki/state");
    assert_eq!((rc, now.as_str()), (0, "period_us=7000\nenabled\n"));
    assert_eq!(ask("enoki unload >/dev/null && echo >/tmp/stop").0, 0);
    let r = it::Run {
        out: guest.join().unwrap().expect("the VM ran"),
    };
    r.assert_exit(0);
    r.assert_clean();
}
