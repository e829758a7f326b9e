// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki record`: drains Enoki-C's record rings into a `.enk` trace.
//!
//! Recording is started and stopped through `$ENOKI_SYSFS/record`; while it
//! runs, a thread reads `$ENOKI_DEBUGFS/trace` every few milliseconds (each
//! read returns whole records, a 32-byte `struct enoki_rec` followed by the
//! message for a call, 0 when the rings are empty) and keeps their bytes in
//! memory, so the per-CPU rings never overflow. Once the workload is over,
//! the records are parsed, sorted by sequence number and written with a
//! header that lets `enoki-sim replay` re-create the scheduler.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use enoki_trace::{Record, TraceHeader, TraceWriter, HEADER_LOCKS, KERNEL_MSG_REC_BYTES};

use crate::status::{read_attr, read_number};
use crate::{Error, Paths};

pub const DEFAULT_DEBUGFS: &str = "/sys/kernel/debug/enoki";
pub const DEFAULT_SYSMODULE: &str = "/sys/module";
pub const DEBUGFS_ENV: &str = "ENOKI_DEBUGFS";
pub const SYSMODULE_ENV: &str = "ENOKI_SYSMODULE";

/// The shortest and the longest the drain thread sleeps between passes.
pub const DRAIN_EVERY_MIN: Duration = Duration::from_millis(2);
pub const DRAIN_EVERY_MAX: Duration = Duration::from_millis(20);

/// How long the drain thread sleeps after a pass that read `read` bytes
/// `since` the pass before began, with rings of `ring_bytes` per CPU: as
/// long as the records coming at that rate take to fill an eighth of one
/// ring (as if they all came on one CPU), within [`DRAIN_EVERY_MIN`] and
/// [`DRAIN_EVERY_MAX`]. Every pass costs the recorded work a wakeup, a
/// context switch and a trace read, so a slow stream of records is read
/// rarely, and a fast one often enough that no ring fills.
pub fn drain_sleep(read: usize, since: Duration, ring_bytes: u64) -> Duration {
    if read == 0 {
        return DRAIN_EVERY_MAX;
    }
    let fill = since.as_secs_f64() * (ring_bytes / 8) as f64 / read as f64;
    Duration::try_from_secs_f64(fill)
        .unwrap_or(DRAIN_EVERY_MAX)
        .clamp(DRAIN_EVERY_MIN, DRAIN_EVERY_MAX)
}

/// Most a drain pass reads before the drain thread sleeps again: the rings
/// can fill as fast as it reads them, and a real-time thread must not run
/// on unbounded. (Sleeping as long as each pass ran, to leave half of the
/// CPU, lost most events under emulation: reading is the bottleneck.)
pub const DRAIN_PASS_MAX: usize = 2 << 20;

/// Every file `enoki record` touches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordPaths {
    /// Enoki-C's sysfs directory (`record`, `record_drops`, `scheduler`, `module`).
    pub sysfs: PathBuf,
    /// Enoki-C's debugfs directory (`trace`, `topology`).
    pub debugfs: PathBuf,
    /// `/sys/module`: `<module>/parameters/*`, `<module>/srcversion`.
    pub sysmodule: PathBuf,
}

impl RecordPaths {
    /// Defaults, overridden by `ENOKI_SYSFS`, `ENOKI_DEBUGFS`, `ENOKI_SYSMODULE`.
    pub fn from_env() -> Self {
        let pick = |var: &str, default: &str| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        RecordPaths {
            sysfs: Paths::from_env().sysfs,
            debugfs: pick(DEBUGFS_ENV, DEFAULT_DEBUGFS),
            sysmodule: pick(SYSMODULE_ENV, DEFAULT_SYSMODULE),
        }
    }
}

/// The loaded scheduler and its module, or `NoEnoki` / `NotLoaded`.
pub fn loaded(paths: &RecordPaths) -> Result<(String, String), Error> {
    if !paths.sysfs.is_dir() {
        return Err(Error::NoEnoki(paths.sysfs.clone()));
    }
    let sched = read_attr(&paths.sysfs, "scheduler")?.ok_or(Error::NotLoaded)?;
    let module = read_attr(&paths.sysfs, "module")?.unwrap_or_else(|| format!("enoki_{sched}"));
    Ok((sched, module))
}

/// The trace header for the loaded scheduler: name, build id (the module's
/// `srcversion`, else `kernel:<module>`), topology from debugfs, and the
/// module parameters `max_tasks`, `slice_us` (×1000) and `args`.
pub fn build_header(paths: &RecordPaths) -> Result<TraceHeader, Error> {
    let (sched, module) = loaded(paths)?;
    let topo_path = paths.debugfs.join("topology");
    let raw = std::fs::read(&topo_path).map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            Error::Malformed {
                path: topo_path.clone(),
                msg: "missing: is debugfs mounted (mount -t debugfs none /sys/kernel/debug)?"
                    .into(),
            }
        } else {
            Error::io(&topo_path, e)
        }
    })?;
    let topology = enoki_trace::topology_from_kernel(&raw).ok_or_else(|| Error::Malformed {
        path: topo_path.clone(),
        msg: format!("{} bytes, not a struct enoki_topology", raw.len()),
    })?;
    let moddir = paths.sysmodule.join(&module);
    let params = moddir.join("parameters");
    let build_id = read_attr(&moddir, "srcversion")?.unwrap_or_else(|| format!("kernel:{module}"));
    Ok(TraceHeader {
        abi_version: enoki::abi::ABI_VERSION,
        flags: HEADER_LOCKS,
        scheduler: sched,
        build_id,
        topology,
        dropped_events: 0,
        max_tasks: read_number(&params, "max_tasks")?.unwrap_or(0),
        slice_ns: read_number(&params, "slice_us")?.unwrap_or(0) * 1000,
        args: read_attr(&params, "args")?.unwrap_or_default(),
    })
}

/// Most bytes one read asks the kernel for.
const READ_CHUNK: usize = 1024 * KERNEL_MSG_REC_BYTES;

/// Bytes of one drain segment. A segment is zeroed by the allocator
/// (fresh pages, so a page costs only its first touch) and never moved.
const SEGMENT: usize = 16 << 20;

/// Most bytes of segments made ready before recording starts.
const RESERVE_MAX: u64 = 256 << 20;

/// A fresh segment: zeroed by the allocator, its pages not touched yet.
fn new_segment() -> Box<[u8]> {
    vec![0u8; SEGMENT].into_boxed_slice()
}

/// A fresh segment whose pages are all in memory: its page faults, and
/// the kernel zeroing its pages, happen now rather than while the recorded
/// workload runs. (Written through `black_box`, or the compiler would drop
/// stores of zero into memory it knows is zero.)
fn touched_segment() -> Box<[u8]> {
    let mut seg = std::hint::black_box(new_segment());
    for page in seg.chunks_mut(4096) {
        if let Some(first) = page.first_mut() {
            *first = 0;
        }
    }
    seg
}

/// Reads whole kernel records from a drain file until it returns 0, and
/// keeps their bytes as read. They are parsed only once recording is over
/// ([`Drained::records`]): while the workload runs, the drain thread competes
/// with it for the CPUs, so it only copies.
#[derive(Default)]
pub struct Drained {
    /// Filled segments, each with its bytes used (whole records).
    full: Vec<(Box<[u8]>, usize)>,
    /// The segment being filled and its bytes used.
    seg: Box<[u8]>,
    used: usize,
    /// Segments made ready in advance ([`Drained::with_reserve`]), used
    /// before any new one.
    spare: Vec<Box<[u8]>>,
}

impl Drained {
    /// Ready to keep `bytes` (at most [`RESERVE_MAX`]) without touching a
    /// new page: a recording's drain should not add page faults to the
    /// workload it records.
    pub fn with_reserve(bytes: u64) -> Self {
        let segments = bytes.min(RESERVE_MAX).div_ceil(SEGMENT as u64);
        Drained {
            spare: (0..segments).map(|_| touched_segment()).collect(),
            ..Drained::default()
        }
    }

    /// Reads from `src` until it is empty or [`DRAIN_PASS_MAX`] bytes came;
    /// returns the bytes read.
    pub fn drain(&mut self, src: &mut impl Read) -> std::io::Result<usize> {
        self.drain_up_to(src, DRAIN_PASS_MAX)
    }

    /// Reads from `src` until it is empty (recording has stopped, so it
    /// will be).
    pub fn drain_all(&mut self, src: &mut impl Read) -> std::io::Result<usize> {
        self.drain_up_to(src, usize::MAX)
    }

    fn drain_up_to(&mut self, src: &mut impl Read, max: usize) -> std::io::Result<usize> {
        let mut done = 0;
        // The kernel hands out whole records only, and 0 bytes only once
        // the rings are empty when asked for at least a message's bytes
        // (the largest record).
        while max - done >= KERNEL_MSG_REC_BYTES {
            if self.seg.len() - self.used < KERNEL_MSG_REC_BYTES {
                let next = self.spare.pop().unwrap_or_else(new_segment);
                let seg = std::mem::replace(&mut self.seg, next);
                if self.used > 0 {
                    self.full.push((seg, self.used));
                }
                self.used = 0;
            }
            let want = READ_CHUNK.min(max - done).min(self.seg.len() - self.used);
            let n = match src.read(&mut self.seg[self.used..self.used + want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.used += n;
            done += n;
        }
        Ok(done)
    }

    /// The bytes drained, in the order read.
    fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        let last = self.seg.get(..self.used).unwrap_or_default();
        self.full
            .iter()
            .filter_map(|(seg, used)| seg.get(..*used))
            .chain(std::iter::once(last))
    }

    /// Bytes drained so far.
    pub fn bytes(&self) -> u64 {
        self.chunks().map(|c| c.len() as u64).sum()
    }

    /// Every record drained, parsed (a message boxed), in the order read
    /// (CPU by CPU).
    pub fn records(&self) -> Result<Vec<Record>, enoki_trace::TraceError> {
        let mut records = Vec::new();
        let mut offset = 0;
        for chunk in self.chunks() {
            enoki_trace::append_kernel_records(chunk, offset, &mut records)?;
            offset += chunk.len() as u64;
        }
        Ok(records)
    }
}

/// What a recording produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub messages: u64,
    /// Live upgrades during the recording (replay stops at the first).
    pub upgrades: u64,
    pub drops: u64,
    pub bytes: u64,
    pub duration: Duration,
}

impl Summary {
    pub fn bytes_per_call(&self) -> f64 {
        if self.messages == 0 {
            0.0
        } else {
            self.bytes as f64 / self.messages as f64
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "records {}\ncalls {}\nupgrades {}\ndrops {}\nbytes {}\nbytes_per_call {:.1}\nduration_s {:.3}",
            self.records,
            self.messages,
            self.upgrades,
            self.drops,
            self.bytes,
            self.bytes_per_call(),
            self.duration.as_secs_f64()
        )
    }
}

/// Sorts the drained kernel records and writes them as a `.enk` to `out`.
pub fn write_trace(
    out: &Path,
    header: TraceHeader,
    records: Vec<Record>,
    drops: u64,
    compress: bool,
    duration: Duration,
) -> anyhow::Result<Summary> {
    let records = enoki_trace::in_sequence(records)?;
    let file = File::create(out).map_err(|e| Error::io(out, e))?;
    let mut w = TraceWriter::new(std::io::BufWriter::new(file), header)?;
    w.set_compression(compress);
    let (mut messages, mut upgrades) = (0, 0);
    for r in &records {
        match r.event {
            enoki_trace::Event::Msg(_) => messages += 1,
            enoki_trace::Event::Upgrade { .. } => upgrades += 1,
            _ => {}
        }
        w.write(r)?;
    }
    w.note_dropped(drops);
    let mut bw = w.finish()?;
    std::io::Write::flush(&mut bw).map_err(|e| Error::io(out, e))?;
    let bytes = std::fs::metadata(out).map_err(|e| Error::io(out, e))?.len();
    Ok(Summary {
        records: records.len() as u64,
        messages,
        upgrades,
        drops,
        bytes,
        duration,
    })
}

/// Sizes each CPU's record ring for the next recording, in KiB; returns the
/// size the kernel chose (whole records, a power of two of them, within its
/// limits).
pub fn set_buffer_kib(paths: &RecordPaths, kib: u64) -> Result<u64, Error> {
    let p = paths.sysfs.join("record_buffer_kib");
    std::fs::write(&p, kib.to_string()).map_err(|e| Error::io(&p, e))?;
    read_number(&paths.sysfs, "record_buffer_kib")?.ok_or_else(|| Error::Malformed {
        path: p,
        msg: "empty after a write".into(),
    })
}

fn set_recording(paths: &RecordPaths, on: bool) -> Result<(), Error> {
    let p = paths.sysfs.join("record");
    std::fs::write(&p, if on { "1" } else { "0" }).map_err(|e| Error::io(p, e))
}

/// Makes the calling thread SCHED_FIFO (priority 1) when allowed: the
/// real-time class runs before Enoki's, so the drain thread keeps up however
/// busy the recorded scheduler's CPUs are. Best effort.
fn realtime() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
}

/// A recording in progress: Enoki-C records, a thread drains the rings.
pub struct Recording {
    paths: RecordPaths,
    /// When recording was switched on (after the drain's memory was made
    /// ready).
    started: Instant,
    /// Dropped to stop the drain thread, which it wakes.
    stop: Option<mpsc::Sender<()>>,
    drain: Option<std::thread::JoinHandle<std::io::Result<Drained>>>,
}

impl Recording {
    /// Starts recording (which resets the rings and the sequence numbers)
    /// and the drain thread.
    pub fn start(paths: &RecordPaths) -> Result<Recording, Error> {
        let trace = paths.debugfs.join("trace");
        // Opening first fails early, before recording, if debugfs is missing.
        let file = File::open(&trace).map_err(|e| Error::io(&trace, e))?;
        // Unknown (an older kernel): as small as rings can be, 128 KiB.
        let ring_bytes = read_number(&paths.sysfs, "record_buffer_kib")?.unwrap_or(128) * 1024;
        // Room for what the rings hold, so that the drain does not fault in
        // new pages while the workload runs.
        let rings = std::thread::available_parallelism().map_or(1, usize::from);
        let mut d = Drained::with_reserve(ring_bytes.saturating_mul(rings as u64));
        let started = Instant::now();
        set_recording(paths, true)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let mut file = file;
        let drain = std::thread::spawn(move || -> std::io::Result<Drained> {
            realtime();
            let mut pass = Instant::now();
            loop {
                let read = d.drain(&mut file)?;
                let sleep = drain_sleep(read, pass.elapsed(), ring_bytes);
                pass = Instant::now();
                match stopped.recv_timeout(sleep) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
            d.drain_all(&mut file)?;
            Ok(d)
        });
        Ok(Recording {
            paths: paths.clone(),
            started,
            stop: Some(stop),
            drain: Some(drain),
        })
    }

    /// When recording was switched on: what came before (making the
    /// drain's memory ready) is setup, not recording.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Stops recording, drains the rest; returns what was drained and the
    /// kernel's drop count.
    pub fn stop(mut self) -> anyhow::Result<(Drained, u64)> {
        let trace = self.paths.debugfs.join("trace");
        let stopped = set_recording(&self.paths, false);
        self.stop.take();
        let drain = self.drain.take().expect("drain thread");
        let mut data = drain
            .join()
            .map_err(|_| anyhow::anyhow!("the drain thread panicked"))?
            .map_err(|e| Error::io(&trace, e))?;
        stopped?;
        // Whatever the kernel wrote between the thread's last read and the stop.
        let mut file = File::open(&trace).map_err(|e| Error::io(&trace, e))?;
        data.drain_all(&mut file)
            .map_err(|e| Error::io(&trace, e))?;
        let drops = read_number(&self.paths.sysfs, "record_drops")?.unwrap_or(0);
        Ok((data, drops))
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if self.drain.is_some() {
            let _ = set_recording(&self.paths, false);
            self.stop.take();
        }
    }
}

/// Records while `work` runs; returns what it returned, every record
/// drained and the drop count.
pub fn record_while<T>(
    paths: &RecordPaths,
    work: impl FnOnce() -> T,
) -> anyhow::Result<(T, Vec<Record>, u64)> {
    let rec = Recording::start(paths)?;
    let out = work();
    let (data, drops) = rec.stop()?;
    let trace = paths.debugfs.join("trace");
    let records = data.records().map_err(|e| Error::Malformed {
        path: trace,
        msg: e.to_string(),
    })?;
    Ok((out, records, drops))
}

#[cfg(test)]
mod tests {
    use super::*;
    use enoki::abi::{kind, Msg, RawTopology};
    use enoki_trace::Event;

    fn fake_topology() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        for cpu in 0..enoki::abi::MAX_CPUS {
            for v in [cpu as i32, 0, 0, 0] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        b.resize(core::mem::size_of::<RawTopology>(), 10);
        b
    }

    fn fake_tree(srcversion: bool) -> (tempfile::TempDir, RecordPaths) {
        let t = tempfile::tempdir().unwrap();
        let p = RecordPaths {
            sysfs: t.path().join("enoki"),
            debugfs: t.path().join("debug"),
            sysmodule: t.path().join("module"),
        };
        std::fs::create_dir_all(&p.sysfs).unwrap();
        std::fs::create_dir_all(&p.debugfs).unwrap();
        let params = p.sysmodule.join("enoki_fifo/parameters");
        std::fs::create_dir_all(&params).unwrap();
        std::fs::write(p.sysfs.join("scheduler"), "fifo\n").unwrap();
        std::fs::write(p.sysfs.join("module"), "enoki_fifo\n").unwrap();
        std::fs::write(p.debugfs.join("topology"), fake_topology()).unwrap();
        std::fs::write(params.join("max_tasks"), "4096\n").unwrap();
        std::fs::write(params.join("slice_us"), "3000\n").unwrap();
        std::fs::write(params.join("args"), "\n").unwrap();
        if srcversion {
            std::fs::write(p.sysmodule.join("enoki_fifo/srcversion"), "ABC123\n").unwrap();
        }
        (t, p)
    }

    #[test]
    fn header_from_fake_sysfs() {
        let (_t, p) = fake_tree(true);
        let h = build_header(&p).unwrap();
        assert_eq!(h.scheduler, "fifo");
        assert_eq!(h.build_id, "ABC123");
        assert_eq!(h.max_tasks, 4096);
        assert_eq!(h.slice_ns, 3_000_000);
        assert_eq!(h.args, "");
        assert_eq!(h.flags & HEADER_LOCKS, HEADER_LOCKS);
        assert_eq!(h.topology.nr_cpus, 2);
        assert_eq!(h.topology.cpus[1].core, 1);
        let (_t, p) = fake_tree(false);
        assert_eq!(build_header(&p).unwrap().build_id, "kernel:enoki_fifo");
    }

    #[test]
    fn header_errors() {
        let (_t, p) = fake_tree(true);
        std::fs::write(p.sysfs.join("scheduler"), "").unwrap();
        assert_eq!(
            build_header(&p).unwrap_err().to_string(),
            "no scheduler is loaded"
        );
        std::fs::write(p.sysfs.join("scheduler"), "fifo").unwrap();
        std::fs::write(p.debugfs.join("topology"), [0u8; 5]).unwrap();
        assert!(build_header(&p)
            .unwrap_err()
            .to_string()
            .contains("not a struct enoki_topology"));
        std::fs::remove_file(p.debugfs.join("topology")).unwrap();
        assert!(build_header(&p)
            .unwrap_err()
            .to_string()
            .contains("debugfs"));
        let p = RecordPaths {
            sysfs: "/nonexistent/enoki".into(),
            ..p
        };
        assert!(matches!(build_header(&p), Err(Error::NoEnoki(_))));
    }

    fn rec(seq: u64, event: Event) -> Record {
        Record {
            seq,
            cpu: (seq % 2) as u32,
            time_ns: seq * 10,
            event,
        }
    }

    fn lock(seq: u64) -> Record {
        rec(seq, Event::LockAcquire { addr: 0x1000 })
    }

    /// Gives its records out one whole record a read, like debugfs asked
    /// for a record's bytes.
    struct Chunky(std::vec::IntoIter<Vec<u8>>);
    impl Read for Chunky {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some(r) = self.0.next() else {
                return Ok(0);
            };
            buf[..r.len()].copy_from_slice(&r);
            Ok(r.len())
        }
    }

    /// A ring that fills as fast as it is read, with lock events and a
    /// message every eighth record, whole records only.
    struct Endless(u64);
    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let mut n = 0;
            loop {
                self.0 += 1;
                assert!(self.0 < 1 << 24, "the drain pass never ended");
                let r = if self.0.is_multiple_of(8) {
                    rec(self.0, Event::Msg(Box::new(Msg::new(kind::TASK_TICK, 0))))
                } else {
                    lock(self.0)
                };
                let b = r.to_kernel();
                if n + b.len() > buf.len() {
                    self.0 -= 1;
                    return Ok(n);
                }
                buf[n..n + b.len()].copy_from_slice(&b);
                n += b.len();
            }
        }
    }

    #[test]
    fn a_drain_pass_ends_while_the_rings_keep_filling() {
        let mut d = Drained::default();
        let n = d.drain(&mut Endless(0)).unwrap();
        assert_eq!(d.bytes(), n as u64);
        let records = d.records().unwrap();
        let bytes: usize = records.iter().map(|r| r.to_kernel().len()).sum();
        assert_eq!(bytes, n, "whole records only");
        assert!(
            (DRAIN_PASS_MAX - KERNEL_MSG_REC_BYTES..=DRAIN_PASS_MAX).contains(&n),
            "{n}"
        );
        assert!(records.iter().any(|r| matches!(r.event, Event::Msg(_))));
    }

    #[test]
    fn drains_fill_segments_with_whole_records_and_never_move_them() {
        let mut d = Drained::default();
        let mut src = Endless(0);
        let mut n = 0;
        while d.full.is_empty() {
            n += d.drain(&mut src).unwrap();
        }
        let first = d.full.first().map(|(seg, _)| seg.as_ptr());
        n += d.drain_all(&mut Take(&mut src, SEGMENT)).unwrap();
        assert!(d.full.len() >= 2, "{} segments", d.full.len());
        assert_eq!(d.full.first().map(|(seg, _)| seg.as_ptr()), first);
        assert_eq!(d.bytes(), n as u64);
        let records = d.records().unwrap();
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    }

    #[test]
    fn a_reserve_is_used_before_any_new_segment() {
        let mut d = Drained::with_reserve(SEGMENT as u64 + 1);
        assert_eq!(d.spare.len(), 2, "whole segments, enough for the bytes");
        let reserved: Vec<*const u8> = d.spare.iter().rev().map(|s| s.as_ptr()).collect();
        let mut src = Endless(0);
        let mut n = 0;
        while d.full.len() < 2 {
            n += d.drain(&mut src).unwrap();
        }
        let used: Vec<*const u8> = d.full.iter().map(|(s, _)| s.as_ptr()).collect();
        assert_eq!(used, reserved);
        assert!(d.spare.is_empty());
        assert_eq!(d.bytes(), n as u64);
        assert_eq!(
            Drained::with_reserve(u64::MAX).spare.len() as u64,
            RESERVE_MAX / SEGMENT as u64
        );
    }

    /// At most `.1` bytes of `.0`, whole records, then empty.
    struct Take<'a>(&'a mut Endless, usize);
    impl Read for Take<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len());
            let got = self.0.read(&mut buf[..n])?;
            self.1 -= got;
            Ok(got)
        }
    }

    #[test]
    fn drain_and_write() {
        let records = vec![
            lock(2),
            lock(0),
            rec(4, Event::Upgrade { state: 0x1000 }),
            rec(5, Event::Msg(Box::new(Msg::new(kind::TASK_TICK, 1)))),
            lock(3),
            lock(1),
        ];
        let raw: Vec<Vec<u8>> = records.iter().map(Record::to_kernel).collect();
        let bytes: usize = raw.iter().map(Vec::len).sum();
        let mut d = Drained::default();
        let mut src = Chunky(raw.into_iter());
        assert_eq!(d.drain(&mut src).unwrap(), bytes);
        assert_eq!(d.drain(&mut src).unwrap(), 0);
        assert_eq!(d.records().unwrap(), records);

        let (t, p) = fake_tree(true);
        let out = t.path().join("x.enk");
        let s = write_trace(
            &out,
            build_header(&p).unwrap(),
            d.records().unwrap(),
            7,
            true,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!((s.records, s.messages, s.upgrades, s.drops), (6, 1, 1, 7));
        assert_eq!(s.bytes, std::fs::metadata(&out).unwrap().len());
        let (h, recs, end) = enoki_trace::read_all(File::open(&out).unwrap()).unwrap();
        assert_eq!(h.scheduler, "fifo");
        assert_eq!(h.dropped_events, 7);
        assert_eq!(end.dropped_events, 7);
        assert_eq!(
            recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5]
        );
        assert_eq!(recs[4].event, enoki_trace::Event::Upgrade { state: 0x1000 });
    }

    #[test]
    fn the_drain_sleeps_until_an_eighth_of_a_ring_may_have_filled() {
        let ms = Duration::from_millis;
        let mib = 1 << 20;
        // 64 KiB in 10 ms: an eighth of 8 MiB takes 160 ms, more than the most.
        assert_eq!(drain_sleep(64 << 10, ms(10), 8 * mib), DRAIN_EVERY_MAX);
        // 1 MiB in 10 ms: an eighth of 8 MiB takes 10 ms.
        assert_eq!(drain_sleep(mib as usize, ms(10), 8 * mib), ms(10));
        // 1 MiB in 10 ms with 1 MiB rings: 1.25 ms, less than the least.
        assert_eq!(drain_sleep(mib as usize, ms(10), mib), DRAIN_EVERY_MIN);
        assert_eq!(drain_sleep(0, ms(10), mib), DRAIN_EVERY_MAX, "nothing came");
        assert_eq!(drain_sleep(1, Duration::MAX, mib), DRAIN_EVERY_MAX);
    }

    #[test]
    fn the_buffer_size_is_written_and_read_back() {
        let (_t, p) = fake_tree(true);
        assert_eq!(set_buffer_kib(&p, 19456).unwrap(), 19456);
        let file = p.sysfs.join("record_buffer_kib");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "19456");
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        let e = set_buffer_kib(&p, 1).unwrap_err().to_string();
        assert!(e.contains("record_buffer_kib"), "{e}");
    }

    #[test]
    fn record_while_with_fake_files() {
        let (_t, p) = fake_tree(true);
        let records = [
            lock(1),
            rec(0, Event::Msg(Box::new(Msg::new(kind::TASK_TICK, 1)))),
        ];
        let raw: Vec<u8> = records.iter().flat_map(Record::to_kernel).collect();
        std::fs::write(p.debugfs.join("trace"), &raw).unwrap();
        std::fs::write(p.sysfs.join("record_drops"), "0\n").unwrap();
        let (v, data, drops) = record_while(&p, || 5).unwrap();
        assert_eq!(v, 5);
        assert_eq!(drops, 0);
        // The fake file is read once by the thread and once more at the end.
        assert_eq!(data[..2], records);
        assert_eq!(
            std::fs::read_to_string(p.sysfs.join("record")).unwrap(),
            "0"
        );
    }
}
