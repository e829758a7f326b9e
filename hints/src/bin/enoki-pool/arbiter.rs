// SPDX-License-Identifier: GPL-2.0
//! The pool's conversation with the Arachne arbiter through its hint
//! queue: it asks for the CPUs its load needs, runs as many workers as the
//! newest grant names CPUs, and gives back those it is asked for; and the
//! log of what it saw and did, for the report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use enoki::CpuSet;
use enoki_arachne::{CoreGrant, CoreRequest, GRANT_HELD, GRANT_RECLAIM};
use enoki_hints::{Error as HintError, HintQueue};

use crate::load::CoreEstimate;
use crate::pool::Pool;

pub type Queue = HintQueue<CoreRequest, CoreGrant>;

/// The longest the pool waits for its first grant before the load starts.
const FIRST_GRANT_WAIT: Duration = Duration::from_secs(10);

/// The longest the arbiter waits for workers to park before it gives
/// reclaimed CPUs back anyway (a request in progress finishes first).
const PARK_WAIT: Duration = Duration::from_secs(2);

/// What the pool asks for, and how often it estimates it.
#[derive(Clone, Copy)]
pub struct Settings {
    /// Fewest CPUs asked for (and workers run with nothing held).
    pub min: u32,
    /// Most CPUs asked for (and workers run).
    pub max: u32,
    pub priority: u32,
    /// CPU time per request.
    pub work_us: u64,
    /// How often the CPUs needed are estimated.
    pub interval: Duration,
}

/// One grant or request, for the timeline.
pub struct Event {
    pub ms: f64,
    pub what: &'static str,
    pub count: u32,
    /// The grant's (None: a request).
    pub generation: Option<u32>,
}

/// One reclaim answered: when it came, the CPUs asked for, ms until the
/// last `release` was sent, releases refused (the scheduler had taken the
/// CPU already: nothing of the pool was left to run there once its worker
/// parked, or the grace period was over), and ms until a `GRANT_HELD`
/// without any of them came (None: none came).
pub struct Reclaimed {
    at: Instant,
    pub ms: f64,
    pub cpus: CpuSet,
    pub took_ms: f64,
    pub refused: u32,
    pub gone_ms: Option<f64>,
}

/// What the arbiter thread saw and did.
#[derive(Default)]
pub struct ArbiterLog {
    pub events: Vec<Event>,
    /// CPUs asked for: (ms since the pool's start, CPUs) at each change.
    pub asked: Vec<(f64, u32)>,
    /// CPUs held: (ms since the pool's start, CPUs) at each grant.
    pub held: Vec<(f64, u32)>,
    pub reclaims: Vec<Reclaimed>,
    pub requests: u64,
    /// Grants older than one already read, ignored.
    pub stale: u64,
    /// Grants the scheduler could not send: the reverse ring was full.
    pub rev_dropped: u32,
}

impl ArbiterLog {
    /// Grants read and acted on.
    pub fn grants(&self) -> usize {
        self.events
            .iter()
            .filter(|e| e.generation.is_some())
            .count()
    }

    /// Notes that the reclaims not yet resolved whose CPUs are all out of
    /// `held` (granted at `at`) are.
    fn resolve_reclaims(&mut self, held: CpuSet, at: Instant) {
        for r in self.reclaims.iter_mut().filter(|r| r.gone_ms.is_none()) {
            if (r.cpus & held).is_empty() {
                r.gone_ms = Some(at.duration_since(r.at).as_secs_f64() * 1e3);
            }
        }
    }
}

/// What the process holds, as the newest grants say.
#[derive(Default)]
struct Holdings {
    /// The newest grant's.
    generation: Option<u32>,
    held: CpuSet,
    /// CPUs held that the scheduler asked back.
    asked_back: CpuSet,
}

impl Holdings {
    /// Whether a grant of `generation` is not older than every one seen;
    /// if so it is the newest now.
    fn accept(&mut self, generation: u32) -> bool {
        // Generations wrap: newer is less than 2^31 ahead.
        if let Some(seen) = self.generation {
            if (generation.wrapping_sub(seen) as i32) < 0 {
                return false;
            }
        }
        self.generation = Some(generation);
        true
    }

    /// Holds `cpus` now (a `GRANT_HELD`): CPUs no longer held are no
    /// longer asked back.
    fn hold(&mut self, cpus: CpuSet) {
        self.held = cpus;
        self.asked_back = self.asked_back & cpus;
    }

    /// `cpus` are asked back (a `GRANT_RECLAIM`).
    fn ask_back(&mut self, cpus: CpuSet) {
        self.asked_back = self.asked_back | cpus;
    }

    /// Workers to run: one per CPU held and not asked back, at most `max`;
    /// with nothing held (no grant: the process runs with everyone
    /// else), `min`.
    fn workers(&self, min: u32, max: u32) -> u32 {
        if self.held.is_empty() {
            return min;
        }
        let keep = self.held.without(self.asked_back).len();
        u32::try_from(keep).unwrap_or(u32::MAX).min(max)
    }
}

/// The arbiter thread, and what stops it.
pub struct ArbiterThread {
    handle: JoinHandle<Result<ArbiterLog>>,
    stop: Arc<AtomicBool>,
    /// Told of the first grant held.
    first_grant: mpsc::Receiver<()>,
}

impl ArbiterThread {
    /// Starts talking to the arbiter through `queue` for `pool`.
    pub fn spawn(queue: Queue, pool: &Arc<Pool>, settings: Settings) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (first_tx, first_grant) = mpsc::channel();
        let handle = {
            let (pool, stop) = (Arc::clone(pool), Arc::clone(&stop));
            std::thread::spawn(move || {
                Arbiter {
                    pool: &pool,
                    first_grant: Some(first_tx),
                    queue,
                    settings,
                    holdings: Holdings::default(),
                    asked: None,
                    log: ArbiterLog::default(),
                }
                .run(&stop)
            })
        };
        ArbiterThread {
            handle,
            stop,
            first_grant,
        }
    }

    /// Waits for the first grant, up to [`FIRST_GRANT_WAIT`]; without one,
    /// stops the thread and says why it failed, if it did.
    pub fn wait_first_grant(self) -> Result<Self> {
        if self.first_grant.recv_timeout(FIRST_GRANT_WAIT).is_ok() {
            return Ok(self);
        }
        self.stop.store(true, Ordering::Relaxed);
        if self.handle.is_finished() {
            if let Ok(Err(e)) = self.handle.join() {
                return Err(e.context("the arbiter thread failed"));
            }
        }
        bail!(
            "no CoreGrant from the scheduler within {} s",
            FIRST_GRANT_WAIT.as_secs()
        );
    }

    /// Stops the thread: its log, or why it failed (the outer error: it
    /// panicked).
    pub fn stop(self) -> Result<Result<ArbiterLog>> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .map_err(|_| anyhow!("the arbiter thread panicked"))
    }
}

struct Arbiter<'a> {
    pool: &'a Pool,
    /// Told of the first grant held (then dropped).
    first_grant: Option<mpsc::Sender<()>>,
    queue: Queue,
    settings: Settings,
    holdings: Holdings,
    /// CPUs last asked for.
    asked: Option<u32>,
    log: ArbiterLog,
}

impl Arbiter<'_> {
    /// Every interval, asks for the CPUs the load needs if that changed;
    /// meanwhile acts on the grants; until `stop`.
    fn run(mut self, stop: &AtomicBool) -> Result<ArbiterLog> {
        let s = self.settings;
        let mut tick = Instant::now();
        let mut estimate = CoreEstimate::new(s.min, s.max, s.work_us, s.interval, tick);
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= tick {
                let (arrived, queued) = self.pool.arrived_and_queued();
                let want = estimate.next(now, arrived, queued);
                if self.asked != Some(want) {
                    self.ask(want)?;
                }
                tick += s.interval;
                if tick <= now {
                    tick = now + s.interval;
                }
            }
            let wait = tick.saturating_duration_since(Instant::now());
            if let Some(g) = self.queue.recv(Some(wait)).context("reading grants")? {
                self.grant(&g.hint)?;
            }
        }
        self.log.rev_dropped = self.queue.rev_dropped();
        Ok(self.log)
    }

    fn ask(&mut self, n: u32) -> Result<()> {
        self.queue
            .send(0, &CoreRequest::cores(n, self.settings.priority))
            .with_context(|| format!("asking for {n} CPUs"))?;
        let ms = self.pool.ms(Instant::now());
        self.asked = Some(n);
        self.log.asked.push((ms, n));
        self.log.requests += 1;
        self.log.events.push(Event {
            ms,
            what: "asked",
            count: n,
            generation: None,
        });
        Ok(())
    }

    /// Acts on `g` unless it is stale.
    fn grant(&mut self, g: &CoreGrant) -> Result<()> {
        if !self.holdings.accept(g.generation) {
            self.log.stale += 1;
            return Ok(());
        }
        let at = Instant::now();
        let ms = self.pool.ms(at);
        let what = match g.kind {
            GRANT_HELD => "held",
            GRANT_RECLAIM => "reclaim",
            other => bail!("a CoreGrant of unknown kind {other}"),
        };
        self.log.events.push(Event {
            ms,
            what,
            count: g.count(),
            generation: Some(g.generation),
        });
        if g.kind == GRANT_HELD {
            self.held(g, at, ms);
            Ok(())
        } else {
            self.reclaim(g.cpus(), at, ms)
        }
    }

    /// Runs as many workers as `g` (a `GRANT_HELD`, read at `at`, `ms`)
    /// names CPUs not asked back.
    fn held(&mut self, g: &CoreGrant, at: Instant, ms: f64) {
        let cpus = g.cpus();
        self.holdings.hold(cpus);
        self.log.held.push((ms, g.count()));
        self.log.resolve_reclaims(cpus, at);
        self.set_workers();
        if let Some(first) = self.first_grant.take() {
            // The main thread no longer listens once it gave up waiting.
            let _ = first.send(());
        }
    }

    /// Parks workers until the rest fit on the CPUs kept, then gives
    /// `cpus` (asked back at `at`, `ms`) back.
    fn reclaim(&mut self, cpus: CpuSet, at: Instant, ms: f64) -> Result<()> {
        self.holdings.ask_back(cpus);
        self.set_workers();
        // Given back even if workers still run then: the scheduler takes
        // the CPUs when the grace period ends anyway.
        self.pool.wait_parked(PARK_WAIT);
        let refused = self.release(cpus)?;
        self.log.reclaims.push(Reclaimed {
            at,
            ms,
            cpus,
            took_ms: at.elapsed().as_secs_f64() * 1e3,
            refused,
            gone_ms: None,
        });
        Ok(())
    }

    fn set_workers(&self) {
        let Settings { min, max, .. } = self.settings;
        self.pool.set_active(self.holdings.workers(min, max));
    }

    /// Gives each of `cpus` back; returns how many the scheduler refused.
    fn release(&self, cpus: CpuSet) -> Result<u32> {
        let mut refused = 0;
        for cpu in cpus.iter() {
            let cpu = u32::try_from(cpu).with_context(|| format!("CPU {cpu}"))?;
            match self.queue.send(0, &CoreRequest::release(cpu)) {
                Ok(()) => {}
                // Taken already (the grace period ended, or nothing of
                // ours was left to run there).
                Err(HintError::Refused(_)) => refused += 1,
                Err(e) => return Err(e).with_context(|| format!("giving CPU {cpu} back")),
            }
        }
        Ok(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPUs a grant with `mask` names.
    fn cpus(mask: [u64; 3]) -> CpuSet {
        CoreGrant {
            mask,
            ..CoreGrant::default()
        }
        .cpus()
    }

    #[test]
    fn workers_follow_the_cpus_held_and_not_asked_back() {
        let held = [0b1111_0000, 0, 1];
        let workers = |asked_back: [u64; 3], max| {
            let mut h = Holdings::default();
            h.hold(cpus(held));
            h.ask_back(cpus(asked_back));
            h.workers(2, max)
        };
        assert_eq!(workers([0; 3], 7), 5);
        assert_eq!(workers([0b0011_0000, 0, 0], 7), 3);
        // a CPU asked back that is not held anyway changes nothing
        assert_eq!(workers([0b1, 0, 0], 7), 5);
        assert_eq!(workers(held, 7), 0);
        assert_eq!(workers([0; 3], 3), 3);
        // no grant: run with everyone else on the minimum
        assert_eq!(Holdings::default().workers(2, 7), 2);
        assert_eq!(
            cpus([0b101, 0, 1 << 63]).iter().collect::<Vec<_>>(),
            vec![0, 2, 191]
        );
    }

    /// A CPU given up (no longer held) is no longer asked back.
    #[test]
    fn a_new_grant_forgets_cpus_gone() {
        let mut h = Holdings::default();
        h.hold(cpus([0b1111, 0, 0]));
        h.ask_back(cpus([0b1100, 0, 0]));
        assert_eq!(h.workers(1, 8), 2);
        h.hold(cpus([0b0011, 0, 0]));
        h.hold(cpus([0b1111, 0, 0]));
        assert_eq!(h.workers(1, 8), 4);
    }

    #[test]
    fn stale_generations_are_refused_across_the_wrap() {
        let mut h = Holdings::default();
        assert!(h.accept(u32::MAX - 1));
        assert!(h.accept(u32::MAX));
        assert!(!h.accept(u32::MAX - 1));
        assert!(h.accept(0), "after the wrap");
        assert!(!h.accept(u32::MAX));
        assert!(h.accept(0), "the same again");
        assert_eq!(h.generation, Some(0));
    }

    #[test]
    fn a_reclaim_resolves_once_none_of_its_cpus_is_held() {
        let at = Instant::now();
        let mut log = ArbiterLog::default();
        log.reclaims.push(Reclaimed {
            at,
            ms: 0.0,
            cpus: cpus([0b1100, 0, 0]),
            took_ms: 0.0,
            refused: 0,
            gone_ms: None,
        });
        log.resolve_reclaims(cpus([0b0111, 0, 0]), at + Duration::from_millis(3));
        assert_eq!(log.reclaims[0].gone_ms, None);
        let gone_after_5ms = |log: &ArbiterLog| {
            log.reclaims[0]
                .gone_ms
                .is_some_and(|g| (g - 5.0).abs() < 1e-6)
        };
        log.resolve_reclaims(cpus([0b0011, 0, 0]), at + Duration::from_millis(5));
        assert!(gone_after_5ms(&log));
        // resolved once: a later grant changes nothing
        log.resolve_reclaims(cpus([0, 0, 0]), at + Duration::from_millis(9));
        assert!(gone_after_5ms(&log));
    }
}
