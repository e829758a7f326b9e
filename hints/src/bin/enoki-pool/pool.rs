// SPDX-License-Identifier: GPL-2.0
//! The pool: the requests waiting, the workers that serve them, and the
//! parking that keeps no more workers running than the pool has CPUs for.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

/// One request: when it arrived (was due), and in which phase.
pub struct Request {
    pub arrival: Instant,
    pub phase: usize,
}

/// What the workers, the load generator and the arbiter share.
pub struct State {
    pub queue: VecDeque<Request>,
    /// Workers 0..active run; the others park.
    pub active: u32,
    /// Workers not parked (serving a request or waiting for one).
    pub running: u32,
    pub arrived: u64,
    pub completed: u64,
    /// No more requests: workers leave once the queue is empty.
    pub done: bool,
    /// Changes of `active`: (ms since the start, workers).
    pub active_log: Vec<(f64, u32)>,
}

impl State {
    /// Whether worker `index` parks: it is not among the active ones, and
    /// requests may still come (once done, every worker helps empty the
    /// queue).
    fn parks(&self, index: u32) -> bool {
        index >= self.active && !(self.done && self.queue.is_empty())
    }
}

pub struct Pool {
    state: Mutex<State>,
    /// Active workers wait here for requests.
    work: Condvar,
    /// Parked workers wait here.
    park: Condvar,
    /// The arbiter waits here for workers to park.
    parked: Condvar,
    start: Instant,
}

/// (phase, latency in ns) of each request a worker served.
pub type Served = Vec<(usize, u64)>;

impl Pool {
    /// A pool for `workers` workers (all running until they park), `active`
    /// of them serving.
    pub fn new(workers: u32, active: u32) -> Self {
        Pool {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                active,
                running: workers,
                arrived: 0,
                completed: 0,
                done: false,
                active_log: vec![(0.0, active)],
            }),
            work: Condvar::new(),
            park: Condvar::new(),
            parked: Condvar::new(),
            start: Instant::now(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked left consistent state: carry on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Milliseconds from the pool's start to `at`.
    pub fn ms(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64() * 1e3
    }

    /// Runs `n` workers from now on.
    pub fn set_active(&self, n: u32) {
        let now = self.ms(Instant::now());
        let mut st = self.lock();
        if st.active != n {
            st.active = n;
            st.active_log.push((now, n));
        }
        drop(st);
        self.work.notify_all();
        self.park.notify_all();
    }

    /// Waits up to `limit` until no more workers run than are active;
    /// says whether they fit.
    pub fn wait_parked(&self, limit: Duration) -> bool {
        let st = self.lock();
        let (st, _) = self
            .parked
            .wait_timeout_while(st, limit, |st| st.running > st.active)
            .unwrap_or_else(|e| e.into_inner());
        st.running <= st.active
    }

    /// Queues a request of `phase` that arrived at each of `due`, and
    /// wakes a worker for each.
    pub fn arrive(&self, phase: usize, due: &[Instant]) {
        let mut st = self.lock();
        st.queue
            .extend(due.iter().map(|&arrival| Request { arrival, phase }));
        st.arrived += due.len() as u64;
        drop(st);
        for _ in due {
            self.work.notify_one();
        }
    }

    /// Requests arrived so far, and those of them waiting.
    pub fn arrived_and_queued(&self) -> (u64, usize) {
        let st = self.lock();
        (st.arrived, st.queue.len())
    }

    /// Waits up to `limit` for every request that arrived to be served;
    /// returns the requests still waiting then (0 if all were served).
    pub fn drain(&self, limit: Duration) -> usize {
        let end = Instant::now().checked_add(limit);
        loop {
            let st = self.lock();
            if st.completed == st.arrived {
                return 0;
            }
            if end.is_some_and(|end| Instant::now() >= end) {
                return st.queue.len();
            }
            drop(st);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Ends the run: drops the requests still waiting and lets every
    /// worker leave.
    pub fn finish(&self) {
        {
            let mut st = self.lock();
            st.queue.clear();
            st.done = true;
        }
        self.work.notify_all();
        self.park.notify_all();
    }
}

/// Starts `n` workers, each serving requests of `work` of spinning.
pub fn spawn_workers(pool: &Arc<Pool>, n: u32, work: Duration) -> Vec<JoinHandle<Served>> {
    (0..n)
        .map(|i| {
            let pool = Arc::clone(pool);
            std::thread::spawn(move || worker(&pool, i, work))
        })
        .collect()
}

/// Waits for the workers to leave: the latencies (ns) of the requests
/// they served, by phase (of `phases`).
pub fn join_workers(workers: Vec<JoinHandle<Served>>, phases: usize) -> Result<Vec<Vec<u64>>> {
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); phases];
    for w in workers {
        for (phase, ns) in w.join().map_err(|_| anyhow!("a worker panicked"))? {
            if let Some(l) = latencies.get_mut(phase) {
                l.push(ns);
            }
        }
    }
    Ok(latencies)
}

/// Worker `index`: serves requests while it is among the active ones,
/// parks otherwise.
fn worker(pool: &Pool, index: u32, work: Duration) -> Served {
    let mut served = Vec::new();
    let mut st = pool.lock();
    loop {
        if st.parks(index) {
            st = park(pool, st, index);
            continue;
        }
        if let Some(req) = st.queue.pop_front() {
            drop(st);
            served.push((req.phase, serve(&req, work)));
            st = pool.lock();
            st.completed += 1;
            continue;
        }
        if st.done {
            break;
        }
        st = pool.work.wait(st).unwrap_or_else(|e| e.into_inner());
    }
    drop(st);
    // Parked workers wait for the queue to empty once done.
    pool.park.notify_all();
    served
}

/// Parks worker `index` (not counted as running) until it may run again.
fn park<'a>(pool: &'a Pool, mut st: MutexGuard<'a, State>, index: u32) -> MutexGuard<'a, State> {
    st.running -= 1;
    pool.parked.notify_all();
    let mut st = pool
        .park
        .wait_while(st, |st| st.parks(index))
        .unwrap_or_else(|e| e.into_inner());
    st.running += 1;
    st
}

/// Serves `req` (spins for `work`); returns its latency in ns, from its
/// arrival to now.
fn serve(req: &Request, work: Duration) -> u64 {
    let end = Instant::now() + work;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
    u64::try_from(req.arrival.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Workers beyond the active count park, and the pool serves every
    /// request with the active ones only.
    #[test]
    fn parked_workers_wait_and_the_rest_serve() {
        let pool = Arc::new(Pool::new(4, 2));
        let workers = spawn_workers(&pool, 4, Duration::from_micros(10));
        assert!(
            pool.wait_parked(Duration::from_secs(10)),
            "workers never parked"
        );
        assert_eq!(pool.lock().running, 2);
        pool.arrive(0, &[Instant::now(); 100]);
        pool.set_active(1);
        assert!(pool.wait_parked(Duration::from_secs(10)));
        assert_eq!(pool.lock().running, 1);
        pool.lock().done = true;
        pool.work.notify_all();
        pool.park.notify_all();
        let served: Vec<usize> = workers
            .into_iter()
            .map(|w| w.join().unwrap().len())
            .collect();
        assert_eq!(served.iter().sum::<usize>(), 100);
        assert_eq!(
            served[2] + served[3],
            0,
            "a parked worker served: {served:?}"
        );
        assert_eq!(pool.lock().completed, 100);
        let active: Vec<u32> = pool.lock().active_log.iter().map(|(_, n)| *n).collect();
        assert_eq!(active, vec![2, 1]);
    }

    /// Finishing drops the requests waiting; draining counts them.
    #[test]
    fn drain_counts_what_was_never_served() {
        let pool = Arc::new(Pool::new(1, 0));
        let workers = spawn_workers(&pool, 1, Duration::ZERO);
        pool.arrive(0, &[Instant::now(); 3]);
        assert_eq!(pool.drain(Duration::from_millis(20)), 3);
        pool.finish();
        let latencies = join_workers(workers, 1).unwrap();
        assert_eq!(latencies, vec![Vec::<u64>::new()]);
        assert_eq!(pool.arrived_and_queued(), (3, 0));
    }
}
