// SPDX-License-Identifier: MIT OR Apache-2.0
//! Helpers shared by the guest workloads: thread ids, CPU time, affinity,
//! nice, CPU lists, schbench's matrix work, percentiles. Linux only; the
//! binaries are built static for the Enoki VM (see
//! rootfs/guest-binaries.txt).

use std::hint::black_box;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// The calling thread's kernel id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock})");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time the calling thread has used, ns.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CLOCK_MONOTONIC, ns: one clock for every CPU of the guest.
pub fn mono_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn cpu_s(who: nix::sys::resource::UsageWho) -> Result<(f64, f64)> {
    let u = nix::sys::resource::getrusage(who).context("getrusage")?;
    let s = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok((s(u.user_time()), s(u.system_time())))
}

/// User and system CPU time, s, of every child process waited for (and of
/// theirs), so far.
pub fn children_cpu_s() -> Result<(f64, f64)> {
    cpu_s(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
}

/// User and system CPU time, s, of this process's threads so far.
pub fn process_cpu_s() -> Result<(f64, f64)> {
    cpu_s(nix::sys::resource::UsageWho::RUSAGE_SELF)
}

/// The CPU the caller runs on.
pub fn current_cpu() -> usize {
    // SAFETY: no arguments.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).unwrap_or(0)
}

/// CPU time of thread `tid` of this process, ns (`se.sum_exec_runtime`
/// from /proc; valid for any scheduling class).
pub fn task_cpu_ns(tid: i32) -> Result<u64> {
    let path = format!("/proc/self/task/{tid}/schedstat");
    let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    text.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("{path}: {text:?}"))
}

/// The CPU thread `tid` of this process last ran on (/proc stat field 39).
pub fn task_cpu(tid: i32) -> Result<usize> {
    let path = format!("/proc/self/task/{tid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("stat format")?;
    // rest starts at field 3 (state); field 39 is the 37th of rest.
    rest.split_whitespace()
        .nth(36)
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("{path}: no field 39"))
}

/// Restricts thread `tid` (0: the caller) to `cpus`.
pub fn set_affinity(tid: i32, cpus: &[usize]) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: CPU_SET writes one bit of `set`; c is bounds-checked by libc's macro.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        bail!(
            "sched_setaffinity({tid}, {cpus:?}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Sets thread `tid`'s (0: the caller's) nice value.
pub fn set_nice(tid: i32, nice: i32) -> Result<()> {
    // SAFETY: setpriority on a thread id is a plain syscall.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc != 0 {
        bail!(
            "setpriority({tid}, {nice}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Online CPUs of the machine (0..n).
pub fn nr_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(online_cpus().len())
}

/// The online CPUs (from /sys/devices/system/cpu/online).
pub fn online_cpus() -> Vec<usize> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()).ok())
        .unwrap_or_else(|| vec![0])
}

/// The CPUs of each NUMA node, by node number (empty if no NUMA info).
pub fn node_cpus() -> Vec<Vec<usize>> {
    let mut nodes = Vec::new();
    for n in 0.. {
        let path = format!("/sys/devices/system/node/node{n}/cpulist");
        let Ok(list) = std::fs::read_to_string(&path) else {
            break;
        };
        nodes.push(parse_cpu_list(list.trim()).unwrap_or_default());
    }
    nodes
}

/// Parses a kernel CPU list such as `0-3,6`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse()?, b.parse()?);
                if a > b {
                    bail!("bad CPU range {part}");
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse()?),
        }
    }
    Ok(out)
}

/// Formats CPUs as a kernel CPU list (`0-3,6`).
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut v = cpus.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            v[i].to_string()
        } else {
            format!("{}-{}", v[i], v[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// Busy work: `n` dependent additions the compiler cannot remove.
#[inline(never)]
pub fn burn(n: u64, acc: &mut u64) {
    let mut x = *acc;
    for i in 0..n {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    *acc = x;
}

/// Spins until the calling thread has used `ns` more CPU time.
pub fn spin_cpu_ns(ns: u64) {
    let end = thread_cpu_ns() + ns;
    let mut acc = 1;
    while thread_cpu_ns() < end {
        burn(2_000, &mut acc);
    }
    black_box(acc);
}

/// Spins until `ns` of wall time have passed (for "think time" in
/// latency benchmarks, where CPU time would hide preemption).
pub fn spin_wall_ns(ns: u64) {
    let start = Instant::now();
    let mut acc = 1;
    while (start.elapsed().as_nanos() as u64) < ns {
        burn(500, &mut acc);
    }
    black_box(acc);
}

/// schbench's work per request: a naive multiply of two square matrices
/// of `u64` into a third, the three filling a cache footprint. The naive
/// column walk of the second matrix is the point: the work's speed
/// depends on the footprint staying in the cache of the CPU it runs on,
/// so a scheduler that moves a worker around pays for it.
pub struct MatrixWork {
    side: usize,
    /// The three matrices, row-major, one after another.
    data: Vec<u64>,
}

impl MatrixWork {
    /// Rows (= columns) of each of three square matrices of `u64` that
    /// fit in `footprint_bytes` together (0: none fit).
    pub fn side_for(footprint_bytes: usize) -> usize {
        (footprint_bytes / 3 / std::mem::size_of::<u64>()).isqrt()
    }

    /// Three matrices, as large as fit in `footprint_bytes` together.
    pub fn new(footprint_bytes: usize) -> Result<Self> {
        let side = Self::side_for(footprint_bytes);
        if side == 0 {
            bail!("a footprint of {footprint_bytes} bytes holds no 3 matrices of u64");
        }
        // Not zeros, so the products are real numbers to compute.
        let data = (0..3 * side * side).map(|i| i as u64 | 1).collect();
        Ok(MatrixWork { side, data })
    }

    /// Multiplies the first two matrices into the third `times` times.
    pub fn run(&mut self, times: u64) {
        let n = self.side;
        let (ab, c) = self.data.split_at_mut(2 * n * n);
        let (a, b) = ab.split_at(n * n);
        for _ in 0..times {
            multiply(a, b, c, n);
            // The product is never read: without this the compiler could
            // drop the work.
            black_box(&mut *c);
        }
    }

    /// The product of the last `run`.
    #[cfg(test)]
    fn product(&self) -> &[u64] {
        &self.data[2 * self.side * self.side..]
    }

    #[cfg(test)]
    fn factors_mut(&mut self) -> (&mut [u64], &mut [u64]) {
        let n2 = self.side * self.side;
        let (a, rest) = self.data.split_at_mut(n2);
        (a, &mut rest[..n2])
    }
}

/// `c = a * b` for row-major `n` x `n` matrices, wrapping (overflow checks
/// are on in release builds, and the values do not matter).
fn multiply(a: &[u64], b: &[u64], c: &mut [u64], n: usize) {
    for (a_row, c_row) in a.chunks_exact(n).zip(c.chunks_exact_mut(n)) {
        for (j, out) in c_row.iter_mut().enumerate() {
            *out = a_row
                .iter()
                .zip(b.chunks_exact(n))
                .fold(0u64, |sum, (&x, b_row)| {
                    sum.wrapping_add(x.wrapping_mul(b_row[j]))
                });
        }
    }
}

/// The `p`-th percentile (0..=100) of sorted `v`, nearest rank.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    match percentile_rank(sorted.len(), p) {
        0 => 0,
        rank => sorted[rank - 1],
    }
}

/// Which of `len` sorted samples (1-based) is the `p`-th percentile,
/// nearest rank; 0 if there are none. `len` + 1 - rank of them are at or
/// above it: what the percentile rests on.
pub fn percentile_rank(len: usize, p: f64) -> usize {
    if len == 0 {
        return 0;
    }
    // Less a hair, so 0.99 * 1000 (990.000...01 in floating point) is 990.
    let rank = ((p / 100.0) * len as f64 - 1e-9).ceil() as usize;
    rank.clamp(1, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_round_trip() {
        assert_eq!(parse_cpu_list("0-3,6").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("5").unwrap(), vec![5]);
        assert!(parse_cpu_list("3-1").is_err());
        assert_eq!(format_cpu_list(&[6, 0, 1, 2, 3]), "0-3,6");
        assert_eq!(format_cpu_list(&[1, 3]), "1,3");
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 99.0), 990);
        assert_eq!(percentile(&v, 99.9), 999);
        assert_eq!(percentile_rank(1000, 99.0), 990);
        assert_eq!(percentile_rank(1918, 99.0), 1899);
        assert_eq!(percentile_rank(13, 99.0), 13);
        assert_eq!(percentile_rank(0, 99.0), 0);
    }

    #[test]
    fn matrix_work_fills_its_footprint_and_multiplies() {
        // schbench's default: 256 KiB holds three 104 x 104 matrices of u64.
        assert_eq!(MatrixWork::side_for(256 * 1024), 104);
        assert_eq!(
            MatrixWork::new(256 * 1024).unwrap().data.len(),
            3 * 104 * 104
        );
        assert!(MatrixWork::new(16).is_err());
        let mut w = MatrixWork::new(3 * 8 * 9).unwrap();
        assert_eq!(w.side, 3);
        let (a, b) = w.factors_mut();
        a.copy_from_slice(&[1, 0, 0, 0, 1, 0, 0, 0, 1]);
        b.copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        w.run(2);
        assert_eq!(w.product(), &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let (a, _) = w.factors_mut();
        a.copy_from_slice(&[0, 1, 0, 0, 0, 1, 1, 0, 0]);
        w.run(1);
        assert_eq!(w.product(), &[4, 5, 6, 7, 8, 9, 1, 2, 3]);
    }

    #[test]
    fn own_thread_shows_in_proc() {
        let tid = gettid();
        spin_cpu_ns(2_000_000);
        assert!(task_cpu_ns(tid).unwrap() >= 2_000_000);
        assert!(task_cpu(tid).unwrap() < nr_cpus());
    }
}
