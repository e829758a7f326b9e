// SPDX-License-Identifier: MIT OR Apache-2.0
//! Workload specs: the machine, the run and the tasks, from a TOML file,
//! from command-line flags, or drawn at random from a seed.

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use enoki::{CpuSet, Topology};

/// A whole simulation input.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Groups whose tasks are threads of one process (the group's first
    /// task is its thread group leader) rather than a process each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
    #[serde(default)]
    pub machine: Machine,
    #[serde(default)]
    pub run: Run,
    #[serde(default, rename = "spinner", skip_serializing_if = "Vec::is_empty")]
    pub spinners: Vec<Spinner>,
    #[serde(default, rename = "sleeper", skip_serializing_if = "Vec::is_empty")]
    pub sleepers: Vec<Sleeper>,
    #[serde(default, rename = "pingpong", skip_serializing_if = "Vec::is_empty")]
    pub pingpongs: Vec<PingPong>,
    #[serde(default, rename = "forkstorm", skip_serializing_if = "Vec::is_empty")]
    pub forkstorms: Vec<ForkStorm>,
    #[serde(default, rename = "requests", skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<Requests>,
    #[serde(default, rename = "affinity", skip_serializing_if = "Vec::is_empty")]
    pub affinity: Vec<AffinityChange>,
    #[serde(default, rename = "renice", skip_serializing_if = "Vec::is_empty")]
    pub renice: Vec<Renice>,
    #[serde(default, rename = "upgrade", skip_serializing_if = "Vec::is_empty")]
    pub upgrades: Vec<Upgrade>,
    #[serde(default, rename = "cgroup", skip_serializing_if = "Vec::is_empty")]
    pub cgroups: Vec<Cgroup>,
    #[serde(
        default,
        rename = "cgroup_weight",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cgroup_weights: Vec<CgroupWeight>,
    #[serde(default, rename = "cgroup_move", skip_serializing_if = "Vec::is_empty")]
    pub cgroup_moves: Vec<CgroupMove>,
    #[serde(default, rename = "cgroup_max", skip_serializing_if = "Vec::is_empty")]
    pub cgroup_maxes: Vec<CgroupMax>,
    #[serde(default, rename = "hint", skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<Hint>,
}

/// The simulated machine: `sockets` × `cores` × `threads`, one NUMA node
/// and one LLC per socket (`Topology::symmetric`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Machine {
    pub sockets: usize,
    pub cores: usize,
    pub threads: usize,
    /// NUMA distance between sockets (10 is local).
    pub numa_distance: u8,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            sockets: 1,
            cores: 2,
            threads: 1,
            numa_distance: 21,
        }
    }
}

impl Machine {
    pub fn nr_cpus(&self) -> usize {
        self.sockets * self.cores * self.threads
    }

    pub fn topology(&self) -> Result<Topology> {
        if self.sockets == 0 || self.cores == 0 || self.threads == 0 {
            bail!("machine: sockets, cores and threads must be at least 1");
        }
        if self.nr_cpus() > enoki::abi::MAX_CPUS || self.sockets > enoki::abi::MAX_NODES {
            bail!(
                "machine: at most {} CPUs and {} sockets",
                enoki::abi::MAX_CPUS,
                enoki::abi::MAX_NODES
            );
        }
        Topology::symmetric(self.sockets, self.cores, self.threads, self.numa_distance)
            .map_err(|_| anyhow::anyhow!("out of memory for the topology"))
    }

    /// `SxCxT` (e.g. `2x4x2`), `SxC`, or a CPU count.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<usize> = s
            .split('x')
            .map(|p| p.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .with_context(|| {
                format!("bad machine {s:?}: want SOCKETSxCORESxTHREADS or a CPU count")
            })?;
        let (sockets, cores, threads) = match parts[..] {
            [n] => (1, n, 1),
            [s, c] => (s, c, 1),
            [s, c, t] => (s, c, t),
            _ => bail!("bad machine {s:?}: want SOCKETSxCORESxTHREADS or a CPU count"),
        };
        Ok(Machine {
            sockets,
            cores,
            threads,
            ..Machine::default()
        })
    }
}

/// How long and how the simulation runs, and the module parameters.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Run {
    pub duration_ms: u64,
    pub tick_us: u64,
    /// The module's `slice_ns`, in µs.
    pub slice_us: u64,
    pub max_tasks: usize,
    /// The module's `args` string.
    pub args: String,
    /// A runnable task not run for longer than this is a stall. 0: the
    /// default, max(250 ms, 2 × runnable tasks × slice).
    pub stall_ms: u64,
}

impl Default for Run {
    fn default() -> Self {
        Run {
            duration_ms: 1000,
            tick_us: 1000,
            slice_us: 3000,
            max_tasks: 1024,
            args: String::new(),
            stall_ms: 0,
        }
    }
}

/// CPU-bound tasks that never sleep.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spinner {
    #[serde(default = "names::spin")]
    pub name: String,
    #[serde(default = "one")]
    pub count: usize,
    #[serde(default)]
    pub nice: i32,
    /// Allowed CPUs as a list (`0-3,6`); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
}

/// Tasks that run `run_us`, then sleep `sleep_us`, forever.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sleeper {
    #[serde(default = "names::sleep")]
    pub name: String,
    #[serde(default = "one")]
    pub count: usize,
    #[serde(default)]
    pub nice: i32,
    pub run_us: u64,
    pub sleep_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
}

/// Pairs passing a token, like `perf bench sched pipe`: the holder works
/// `work_us`, wakes its partner and blocks until woken back.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PingPong {
    #[serde(default = "names::pipe")]
    pub name: String,
    #[serde(default = "one")]
    pub pairs: usize,
    #[serde(default = "five")]
    pub work_us: u64,
    #[serde(default)]
    pub nice: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
}

/// Every `every_us`, `burst` short-lived tasks are forked; each runs
/// `run_us` of CPU time and exits. `limit` bounds the total (0: none).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForkStorm {
    #[serde(default = "names::fork")]
    pub name: String,
    pub every_us: u64,
    #[serde(default = "one")]
    pub burst: usize,
    pub run_us: u64,
    #[serde(default)]
    pub limit: usize,
    #[serde(default)]
    pub nice: i32,
}

/// One kind of request and how often it comes (relative weight).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RequestClass {
    pub weight: f64,
    pub service_us: f64,
}

/// Requests arriving at `rate_per_s` (Poisson) to a pool of `workers`; an
/// idle worker is woken for each, a busy pool queues them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Requests {
    #[serde(default = "names::rpc")]
    pub name: String,
    #[serde(default = "one")]
    pub workers: usize,
    pub rate_per_s: f64,
    pub mix: Vec<RequestClass>,
    #[serde(default)]
    pub nice: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
}

/// At `at_ms`, `target` (a group name, or a task name like `spin.2`) gets
/// the allowed CPUs `cpus`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AffinityChange {
    pub at_ms: u64,
    pub target: String,
    pub cpus: String,
}

/// At `at_ms`, `target` gets nice value `nice`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Renice {
    pub at_ms: u64,
    pub target: String,
    pub nice: i32,
}

/// A cgroup, created before any task, in spec order (so a parent comes
/// before its children), with `cpu.weight` `weight` and, with `quota_us`,
/// a `cpu.max` of `quota_us` per `period_us`. The tasks of the workload
/// groups named in `members` start in it; the others in the root.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cgroup {
    pub name: String,
    /// Another `[[cgroup]]` (the root when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default = "default_cgroup_weight")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_us: Option<u64>,
    #[serde(default = "default_cgroup_period_us")]
    pub period_us: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
}

fn default_cgroup_weight() -> u32 {
    100
}

/// cpu.max's default period.
fn default_cgroup_period_us() -> u64 {
    100_000
}

/// At `at_ms`, cgroup `cgroup` gets `cpu.weight` `weight`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CgroupWeight {
    pub at_ms: u64,
    pub cgroup: String,
    pub weight: u32,
}

/// At `at_ms`, cgroup `cgroup` gets a `cpu.max` of `quota_us` per
/// `period_us`, or none (`max`) without `quota_us`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CgroupMax {
    pub at_ms: u64,
    pub cgroup: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_us: Option<u64>,
    #[serde(default = "default_cgroup_period_us")]
    pub period_us: u64,
}

/// Whether `quota_us` per `period_us` is within cpu.max's own bounds: the
/// period 1 ms..1 s, the quota 1 ms on.
fn valid_cpu_max(quota_us: Option<u64>, period_us: u64) -> bool {
    (1_000..=1_000_000).contains(&period_us) && quota_us.is_none_or(|q| q >= 1_000)
}

/// At `at_ms`, `target` (a group, whose later forks follow, or a task)
/// moves to cgroup `cgroup` (`/` is the root).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CgroupMove {
    pub at_ms: u64,
    pub target: String,
    pub cgroup: String,
}

/// At `at_ms`, a hint about every live task of `target` (a group or a
/// task): `hex`, the bytes of the scheduler's hint type (e.g.
/// `"01000000"`, a `u32` 1, for Locality's group 1). It goes through one
/// hint queue the run opens from outside the spec's tasks, or, with
/// `own_queue`, through a queue the task's own process opens, as an
/// application asks for itself (Arachne's core requests).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Hint {
    pub at_ms: u64,
    pub target: String,
    pub hex: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own_queue: bool,
}

impl Hint {
    /// The hint's bytes.
    pub fn bytes(&self) -> Result<Vec<u8>> {
        let hex = &self.hex;
        if !hex.len().is_multiple_of(2) || hex.len() > 2 * enoki::abi::HINT_MAX {
            bail!("hint {hex:?}: an even number of hex digits, at most 64");
        }
        (0..hex.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(&hex[i..i + 2], 16)
                    .map_err(|_| anyhow::anyhow!("hint {hex:?}: not hex"))
            })
            .collect()
    }
}

/// At `at_ms`, the scheduler is live-upgraded to a new version of itself
/// created with `args` (default: the run's), starting from the old one's
/// state unless `fresh`, as `enoki upgrade` does.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Upgrade {
    pub at_ms: u64,
    #[serde(default)]
    pub args: Option<String>,
    #[serde(default)]
    pub fresh: bool,
}

fn one() -> usize {
    1
}

fn five() -> u64 {
    5
}

mod names {
    pub fn spin() -> String {
        "spin".into()
    }
    pub fn sleep() -> String {
        "sleep".into()
    }
    pub fn pipe() -> String {
        "pipe".into()
    }
    pub fn fork() -> String {
        "fork".into()
    }
    pub fn rpc() -> String {
        "rpc".into()
    }
}

/// Parses a CPU list (`0-3,6`) against `nr_cpus`.
pub fn parse_cpus(s: &str, nr_cpus: usize) -> Result<CpuSet> {
    let mut set = CpuSet::empty();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<usize>()?, b.trim().parse::<usize>()?),
            None => {
                let n = part
                    .parse::<usize>()
                    .with_context(|| format!("bad CPU list {s:?}"))?;
                (n, n)
            }
        };
        if a > b || b >= nr_cpus {
            bail!("CPU list {s:?}: CPUs are 0-{}", nr_cpus - 1);
        }
        for cpu in a..=b {
            set.insert(cpu);
        }
    }
    if set.is_empty() {
        bail!("CPU list {s:?} is empty");
    }
    Ok(set)
}

impl Spec {
    pub fn from_toml(text: &str) -> Result<Self> {
        let spec: Spec = toml::from_str(text)?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print the spec: {e}\n"))
    }

    /// True when no task of any kind is described.
    pub fn has_no_tasks(&self) -> bool {
        self.spinners.is_empty()
            && self.sleepers.is_empty()
            && self.pingpongs.is_empty()
            && self.forkstorms.is_empty()
            && self.requests.is_empty()
    }

    /// Names of every group, in the order tasks are created.
    pub fn group_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        v.extend(self.spinners.iter().map(|g| g.name.as_str()));
        v.extend(self.sleepers.iter().map(|g| g.name.as_str()));
        v.extend(self.pingpongs.iter().map(|g| g.name.as_str()));
        v.extend(self.forkstorms.iter().map(|g| g.name.as_str()));
        v.extend(self.requests.iter().map(|g| g.name.as_str()));
        v
    }

    /// Checks everything that does not need the scheduler.
    pub fn validate(&self) -> Result<()> {
        let n = self.machine.topology()?.nr_cpus();
        let r = &self.run;
        if r.duration_ms == 0 || r.tick_us == 0 || r.slice_us == 0 || r.max_tasks == 0 {
            bail!("run: duration_ms, tick_us, slice_us and max_tasks must be positive");
        }
        let names = self.group_names();
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() || name.contains('.') {
                bail!("group name {name:?}: must be non-empty and without '.'");
            }
            if names[..i].contains(name) {
                bail!("two groups are named {name:?}");
            }
        }
        let cpus = self
            .spinners
            .iter()
            .map(|g| &g.cpus)
            .chain(self.sleepers.iter().map(|g| &g.cpus))
            .chain(self.pingpongs.iter().map(|g| &g.cpus))
            .chain(self.requests.iter().map(|g| &g.cpus));
        for c in cpus.flatten() {
            parse_cpus(c, n)?;
        }
        for s in &self.sleepers {
            if s.run_us == 0 && s.sleep_us == 0 {
                bail!("sleeper {}: run_us and sleep_us cannot both be 0", s.name);
            }
        }
        for p in &self.pingpongs {
            if p.work_us == 0 {
                bail!("pingpong {}: work_us must be positive", p.name);
            }
        }
        for f in &self.forkstorms {
            if f.every_us == 0 {
                bail!("forkstorm {}: every_us must be positive", f.name);
            }
        }
        for q in &self.requests {
            if !(q.rate_per_s > 0.0 && q.rate_per_s.is_finite()) {
                bail!("requests {}: rate_per_s must be positive", q.name);
            }
            if q.mix.is_empty()
                || q.mix
                    .iter()
                    .any(|c| !(c.weight > 0.0 && c.service_us >= 0.0))
            {
                bail!(
                    "requests {}: mix needs classes with positive weight and service_us >= 0",
                    q.name
                );
            }
        }
        for a in &self.affinity {
            parse_cpus(&a.cpus, n)?;
        }
        self.validate_cgroups(&names)?;
        for h in &self.hints {
            h.bytes()?;
        }
        if let Some(p) = self.processes.iter().find(|p| !names.contains(&p.as_str())) {
            bail!("process {p:?}: no group of that name");
        }
        for target in self
            .affinity
            .iter()
            .map(|a| &a.target)
            .chain(self.renice.iter().map(|r| &r.target))
            .chain(self.cgroup_moves.iter().map(|m| &m.target))
            .chain(self.hints.iter().map(|h| &h.target))
        {
            let group = target.split('.').next().unwrap_or_default();
            if !names.contains(&group) {
                bail!("event target {target:?}: no group {group:?}");
            }
        }
        Ok(())
    }

    /// The cgroups' names, parents, weights and members, and the cgroups
    /// the events name.
    fn validate_cgroups(&self, groups: &[&str]) -> Result<()> {
        let weight = |w: u32, what: &str| {
            if !(1..=10_000).contains(&w) {
                bail!("{what}: weight {w} is not in 1..=10000");
            }
            Ok(())
        };
        let mut members = Vec::new();
        for (i, c) in self.cgroups.iter().enumerate() {
            let before: Vec<&str> = self.cgroups[..i].iter().map(|c| c.name.as_str()).collect();
            if c.name.is_empty() || c.name == "/" || before.contains(&c.name.as_str()) {
                bail!(
                    "cgroup {:?}: a name must be non-empty, not '/', and unique",
                    c.name
                );
            }
            if let Some(p) = &c.parent {
                if !before.contains(&p.as_str()) {
                    bail!(
                        "cgroup {}: parent {p:?} is not a cgroup defined before it",
                        c.name
                    );
                }
            }
            weight(c.weight, &format!("cgroup {}", c.name))?;
            if !valid_cpu_max(c.quota_us, c.period_us) {
                bail!(
                    "cgroup {}: period_us must be in 1000..=1000000 and quota_us at least 1000",
                    c.name
                );
            }
            for m in &c.members {
                if !groups.contains(&m.as_str()) || members.contains(&m) {
                    bail!(
                        "cgroup {}: member {m:?} is no group, or in two cgroups",
                        c.name
                    );
                }
                members.push(m);
            }
        }
        let known = |name: &str| name == "/" || self.cgroups.iter().any(|c| c.name == name);
        for w in &self.cgroup_weights {
            if w.cgroup == "/" || !known(&w.cgroup) {
                bail!("cgroup_weight: no cgroup {:?}", w.cgroup);
            }
            weight(w.weight, "cgroup_weight")?;
        }
        if let Some(m) = self.cgroup_moves.iter().find(|m| !known(&m.cgroup)) {
            bail!("cgroup_move: no cgroup {:?}", m.cgroup);
        }
        for m in &self.cgroup_maxes {
            if m.cgroup == "/" || !known(&m.cgroup) {
                bail!("cgroup_max: no cgroup {:?}", m.cgroup);
            }
            if !valid_cpu_max(m.quota_us, m.period_us) {
                bail!("cgroup_max: period_us must be in 1000..=1000000 and quota_us at least 1000");
            }
        }
        Ok(())
    }

    /// A random but valid workload, the same for the same seed: what
    /// `enoki-sim --seed N` runs when given no tasks.
    pub fn random(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x656e_6f6b_6973_696d);
        let machine = Machine {
            sockets: rng.random_range(1..=2),
            cores: rng.random_range(1..=4),
            threads: rng.random_range(1..=2),
            numa_distance: 21,
        };
        let n = machine.nr_cpus();
        let mut spec = Spec {
            machine,
            run: Run {
                duration_ms: rng.random_range(20..=100),
                slice_us: [1000, 3000, 5000][rng.random_range(0..3)],
                max_tasks: 256,
                ..Run::default()
            },
            ..Spec::default()
        };
        let pinned = |rng: &mut ChaCha8Rng| -> Option<String> {
            rng.random_bool(0.3).then(|| {
                let a = rng.random_range(0..n);
                let b = rng.random_range(a..n);
                format!("{a}-{b}")
            })
        };
        for i in 0..rng.random_range(0..=2) {
            let cpus = pinned(&mut rng);
            spec.spinners.push(Spinner {
                name: format!("spin{i}"),
                count: rng.random_range(1..=6),
                nice: rng.random_range(-5..=5),
                cpus,
            });
        }
        for i in 0..rng.random_range(0..=2) {
            let cpus = pinned(&mut rng);
            spec.sleepers.push(Sleeper {
                name: format!("sleep{i}"),
                count: rng.random_range(1..=4),
                nice: 0,
                run_us: rng.random_range(10..=5000),
                sleep_us: rng.random_range(10..=10000),
                cpus,
            });
        }
        if rng.random_bool(0.5) {
            spec.pingpongs.push(PingPong {
                name: "pipe".into(),
                pairs: rng.random_range(1..=3),
                work_us: rng.random_range(5..=50),
                nice: 0,
                cpus: None,
            });
        }
        if rng.random_bool(0.4) {
            spec.forkstorms.push(ForkStorm {
                name: "fork".into(),
                every_us: rng.random_range(200..=5000),
                burst: rng.random_range(1..=4),
                run_us: rng.random_range(10..=3000),
                limit: 200,
                nice: 0,
            });
        }
        if rng.random_bool(0.4) {
            spec.requests.push(Requests {
                name: "rpc".into(),
                workers: rng.random_range(1..=4),
                rate_per_s: rng.random_range(1000.0..20000.0),
                mix: vec![
                    RequestClass {
                        weight: 99.5,
                        service_us: 5.0,
                    },
                    RequestClass {
                        weight: 0.5,
                        service_us: 500.0,
                    },
                ],
                nice: 0,
                cpus: None,
            });
        }
        if spec.has_no_tasks() {
            spec.spinners.push(Spinner {
                name: "spin".into(),
                count: n + 1,
                nice: 0,
                cpus: None,
            });
        }
        let groups: Vec<String> = spec.group_names().into_iter().map(str::to_owned).collect();
        for _ in 0..rng.random_range(0..=3) {
            let target = groups[rng.random_range(0..groups.len())].clone();
            let a = rng.random_range(0..n);
            let b = rng.random_range(a..n);
            spec.affinity.push(AffinityChange {
                at_ms: rng.random_range(0..spec.run.duration_ms),
                target,
                cpus: format!("{a}-{b}"),
            });
        }
        if rng.random_bool(0.3) {
            let target = groups[rng.random_range(0..groups.len())].clone();
            spec.renice.push(Renice {
                at_ms: rng.random_range(0..spec.run.duration_ms),
                target,
                nice: rng.random_range(-10..=10),
            });
        }
        spec.random_cgroups(&mut rng, &groups);
        spec
    }

    /// Up to three cgroups, each under the root or the one before, holding
    /// some groups, and maybe a weight change, a move and a cpu.max
    /// change.
    fn random_cgroups(&mut self, rng: &mut ChaCha8Rng, groups: &[String]) {
        let n = rng.random_range(0..=3);
        for i in 0..n {
            let members = groups
                .iter()
                .enumerate()
                .filter(|(g, _)| g % n == i && rng.random_bool(0.7))
                .map(|(_, name)| name.clone())
                .collect();
            self.cgroups.push(Cgroup {
                name: format!("cg{i}"),
                parent: (i > 0 && rng.random_bool(0.5)).then(|| format!("cg{}", i - 1)),
                weight: rng.random_range(1..=1000),
                quota_us: rng
                    .random_bool(0.3)
                    .then(|| rng.random_range(1_000..=200_000)),
                period_us: rng.random_range(1_000..=200_000),
                members,
            });
        }
        let at_ms = |rng: &mut ChaCha8Rng| rng.random_range(0..self.run.duration_ms);
        if n > 0 && rng.random_bool(0.5) {
            self.cgroup_weights.push(CgroupWeight {
                at_ms: at_ms(rng),
                cgroup: format!("cg{}", rng.random_range(0..n)),
                weight: rng.random_range(1..=10_000),
            });
        }
        if n > 0 && rng.random_bool(0.5) {
            self.cgroup_moves.push(CgroupMove {
                at_ms: at_ms(rng),
                target: groups[rng.random_range(0..groups.len())].clone(),
                cgroup: format!("cg{}", rng.random_range(0..n)),
            });
        }
        if n > 0 && rng.random_bool(0.3) {
            self.cgroup_maxes.push(CgroupMax {
                at_ms: at_ms(rng),
                cgroup: format!("cg{}", rng.random_range(0..n)),
                quota_us: rng
                    .random_bool(0.5)
                    .then(|| rng.random_range(1_000..=200_000)),
                period_us: rng.random_range(1_000..=200_000),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_specs_are_valid_and_reproducible() {
        for seed in 0..200 {
            let s = Spec::random(seed);
            s.validate().unwrap();
            assert_eq!(s, Spec::random(seed));
            assert_eq!(
                Spec::from_toml(&s.to_toml()).unwrap(),
                s,
                "seed {seed} does not round-trip through TOML"
            );
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpus("0-2,5", 8).unwrap().iter().collect::<Vec<_>>(),
            [0, 1, 2, 5]
        );
        assert!(parse_cpus("7-8", 8).is_err());
        assert!(parse_cpus("", 8).is_err());
        assert!(parse_cpus("3-1", 8).is_err());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(Spec::from_toml("[run]\nduration = 5\n").is_err());
        assert!(Spec::from_toml("[[spinner]]\ncont = 5\n").is_err());
        assert!(
            Spec::from_toml("[[affinity]]\nat_ms = 1\ntarget = \"nope\"\ncpus = \"0\"\n").is_err()
        );
    }

    #[test]
    fn cgroups_must_name_what_exists() {
        let base = "[[spinner]]\nname = \"a\"\n[[cgroup]]\nname = \"c\"\nmembers = [\"a\"]\n";
        assert!(Spec::from_toml(base).is_ok());
        for bad in [
            "[[cgroup]]\nname = \"d\"\nparent = \"e\"\n",
            "[[cgroup]]\nname = \"c\"\n",
            "[[cgroup]]\nname = \"d\"\nmembers = [\"a\"]\n",
            "[[cgroup]]\nname = \"d\"\nweight = 0\n",
            "[[cgroup_weight]]\nat_ms = 1\ncgroup = \"/\"\nweight = 5\n",
            "[[cgroup_move]]\nat_ms = 1\ntarget = \"a\"\ncgroup = \"x\"\n",
            "[[cgroup_move]]\nat_ms = 1\ntarget = \"b\"\ncgroup = \"c\"\n",
        ] {
            assert!(Spec::from_toml(&format!("{base}{bad}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn machine_strings() {
        assert_eq!(Machine::parse("2x4x2").unwrap().nr_cpus(), 16);
        assert_eq!(Machine::parse("4").unwrap().nr_cpus(), 4);
        assert!(Machine::parse("2x").is_err());
    }
}
