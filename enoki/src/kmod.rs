// SPDX-License-Identifier: GPL-2.0
//! The kernel backend: Rust-for-Linux module glue and the FFI to Enoki-C.
//! All of libEnoki's kernel `unsafe` lives here.

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_void, CStr};
use core::sync::atomic::{AtomicI32, Ordering};

use kernel::alloc::{flags::GFP_KERNEL, KBox, KVVec};
use kernel::error::{code, Error};

use super::abi::{self, Msg, RawOps, RawTopology};
use super::collections::AllocError;
use super::dispatch::Loaded;
use super::fault::Fault;
use super::hint::HintData;
use super::log::{format_line, Level};
use super::scheduler::{Args, EnokiScheduler, InitContext, InitError};
use super::services::Services;
use super::sync::detect::{self, MAX_CONTEXTS};
use super::sync::LockOp;
use super::topology::Topology;
use super::types::CpuId;
use super::upgrade::{self, PlainData};

extern "C" {
    fn enoki_register(ops: *const RawOps) -> c_int;
    fn enoki_upgrade(ops: *const RawOps, fresh: bool) -> c_int;
    fn enoki_unregister(ops: *const RawOps);
    fn enoki_get_topology(topo: *mut RawTopology) -> c_int;
    fn enoki_kick_cpu(cpu: c_int, flags: u32);
    fn enoki_set_timer(cpu: c_int, ns: u64);
    fn enoki_cancel_timer(cpu: c_int);
    fn enoki_send_rev_hint(queue: u32, pid: i32, hint: *const c_void, size: u32);
    fn enoki_log(level: c_int, msg: *const u8, len: usize);
    fn enoki_record_lock(addr: u64, rec_type: u32);
    fn enoki_this_cpu() -> c_int;
    fn enoki_clock_ns() -> u64;
    fn enoki_fail(report: *const u8, len: usize);
    /// Enoki-C's `int enoki_recording` (same layout as an `AtomicI32`),
    /// published with release when recording starts.
    static enoki_recording: AtomicI32;

    // Module parameters, from kernel/module/enoki_params.c.
    static enoki_param_mode: *const c_char;
    static enoki_param_max_tasks: u32;
    static enoki_param_slice_us: u32;
    static enoki_param_watchdog_ms: u32;
    static enoki_param_lock_timeout_ms: u32;
    static enoki_param_args: *const c_char;
    static enoki_param_upgrade: *const c_char;
}

/// The backend handle inside [`Services`]: calls into Enoki-C.
#[derive(Clone, Copy, Default)]
pub struct Host;

impl Host {
    pub(super) fn kick_cpu(&self, cpu: CpuId, preempt: bool) {
        let flags = if preempt {
            abi::kick::PREEMPT
        } else {
            abi::kick::RESCHED
        };
        // SAFETY: Enoki-C checks the CPU number; callable from any context.
        unsafe { enoki_kick_cpu(cpu as c_int, flags) };
    }

    pub(super) fn rev_hint(&self, queue: u32, pid: i32, hint: &[u8]) {
        // SAFETY: `hint` is readable for its length; Enoki-C copies it
        // and checks the queue and the size; callable with interrupts off.
        unsafe { enoki_send_rev_hint(queue, pid, hint.as_ptr().cast(), hint.len() as u32) };
    }

    pub(super) fn set_timer(&self, cpu: CpuId, ns: Option<u64>) {
        match ns {
            // SAFETY: Enoki-C checks the CPU number; hrtimers are irq-safe.
            Some(ns) => unsafe { enoki_set_timer(cpu as c_int, ns) },
            // SAFETY: as above.
            None => unsafe { enoki_cancel_timer(cpu as c_int) },
        }
    }
}

/// Nothing waits before a lock in the kernel.
#[inline(always)]
pub(super) fn lock_wait(_addr: usize) {}

/// A CPU spinning for a lock only spins.
#[inline(always)]
pub(super) fn lock_spin() {}

/// Records a lock event while Enoki-C records; one load and branch otherwise.
#[inline(always)]
pub(super) fn lock_event(addr: usize, op: LockOp) {
    let rec_type = match op {
        LockOp::Acquire => abi::rec_type::LOCK_ACQUIRE,
        LockOp::AcquireShared => abi::rec_type::LOCK_ACQUIRE_SHARED,
        LockOp::Release => abi::rec_type::LOCK_RELEASE,
    };
    record_lock(addr, rec_type);
}

/// Records a lock taken and released at once (one record for the pair).
#[inline(always)]
pub(super) fn lock_access(addr: usize) {
    record_lock(addr, abi::rec_type::LOCK_ACCESS);
}

#[inline(always)]
fn record_lock(addr: usize, rec_type: u32) {
    // SAFETY: an int Enoki-C only ever accesses atomically; acquire pairs
    // with its release on start, so the rings it set up are seen.
    let on = unsafe { enoki_recording.load(Ordering::Acquire) };
    if on != 0 {
        // SAFETY: callable from any context; it checks the flag again, and
        // `rec_type` is one of the four lock record types it takes.
        unsafe { enoki_record_lock(addr as u64, rec_type) };
    }
}

/// Calls run with interrupts off, so the guest never deschedules a lock
/// holder; a hypervisor can, though (a vCPU it does not run for a while,
/// seen for over 100 ms under emulation on a busy host): a second is far
/// beyond any legitimate wait and still far under the watchdog. The
/// module's `lock_timeout_ms` sets it (0: this, capped at half the
/// watchdog).
pub(super) const DEFAULT_LOCK_TIMEOUT_NS: u64 = 1_000_000_000;

/// This CPU, inside a scheduler call; `None` elsewhere (module init may
/// sleep and move between CPUs, so it cannot have a CPU's context).
pub(super) fn context() -> Option<usize> {
    // SAFETY: callable from any context.
    usize::try_from(unsafe { enoki_this_cpu() }).ok()
}

/// CLOCK_MONOTONIC (`ktime_get_mono_fast_ns()`), ns.
pub(super) fn now_ns() -> u64 {
    // SAFETY: callable from any context.
    unsafe { enoki_clock_ns() }
}

/// The fault each CPU's current call ran into.
///
/// # Invariants
/// Entry `i` is only accessed on CPU `i` inside a scheduler call, with
/// interrupts off ([`context`] is `None` elsewhere), so accesses to one
/// entry never overlap.
struct PendingFaults([UnsafeCell<Option<Fault>>; MAX_CONTEXTS]);

// SAFETY: by the invariants each entry has one accessor at a time.
unsafe impl Sync for PendingFaults {}

static PENDING: PendingFaults = PendingFaults([const { UnsafeCell::new(None) }; MAX_CONTEXTS]);

/// Runs `f` on the pending fault of context `ctx`, this CPU's
/// ([`context`]), inside a call.
fn with_pending<R>(ctx: Option<usize>, f: impl FnOnce(&mut Option<Fault>) -> R) -> Option<R> {
    let cell = PENDING.0.get(ctx?)?;
    // SAFETY: this CPU's entry, inside a call (see the invariants).
    Some(f(unsafe { &mut *cell.get() }))
}

/// Keeps `fault` for this CPU's call (the first one wins).
pub(super) fn raise_fault(fault: Fault) {
    with_pending(context(), |p| {
        p.get_or_insert(fault);
    });
}

/// The fault this CPU's call ran into, forgetting it; `ctx` is this CPU's
/// [`context`], which the caller already has.
pub(super) fn take_fault(ctx: Option<usize>) -> Option<Fault> {
    with_pending(ctx, Option::take).flatten()
}

/// A scheduler failed: Enoki-C logs the report and ejects it.
pub(super) fn report_failure(_name: &str, fault: &Fault) {
    let line = format_line::<1000>(format_args!("{fault}"));
    let bytes = line.as_bytes();
    // SAFETY: the pointer and length describe `bytes`, alive for the call;
    // enoki_fail() copies them and is safe under runqueue locks.
    unsafe { enoki_fail(bytes.as_ptr(), bytes.len()) };
}

pub(super) type Storage<T> = KVVec<T>;

pub(super) fn try_alloc_with<T, E: From<AllocError>>(
    n: usize,
    mut f: impl FnMut(usize) -> Result<T, E>,
) -> Result<Storage<T>, E> {
    let mut v = KVVec::with_capacity(n, GFP_KERNEL).map_err(|_| AllocError)?;
    for i in 0..n {
        // Within the capacity reserved above: never allocates.
        v.push(f(i)?, GFP_KERNEL).map_err(|_| AllocError)?;
    }
    Ok(v)
}

pub(super) fn log(level: Level, args: core::fmt::Arguments<'_>) {
    let line = format_line::<200>(args);
    let level = match level {
        Level::Error => 0,
        Level::Warn => 1,
        Level::Info => 2,
        Level::Debug => 3,
    };
    let bytes = line.as_bytes();
    // SAFETY: the pointer and length describe `bytes`, alive for the call;
    // enoki_log() defers printing, so it is safe under runqueue locks.
    unsafe { enoki_log(level, bytes.as_ptr(), bytes.len()) };
}

/// Reads a `charp` module parameter.
///
/// # Safety
/// `p` must be NULL or a NUL-terminated string that outlives the module.
unsafe fn param_str(p: *const c_char) -> &'static str {
    if p.is_null() {
        return "";
    }
    // SAFETY: the caller guarantees a valid NUL-terminated string.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("")
}

struct Params {
    mode: u32,
    max_tasks: usize,
    slice_ns: u64,
    timeout_ms: u32,
    lock_timeout_ms: u32,
    args: &'static str,
    /// A live upgrade (`Some(fresh)`) rather than a load.
    upgrade: Option<bool>,
}

impl Params {
    fn read() -> Result<Self, InitError> {
        // SAFETY: module parameters are written by the module loader before
        // init runs and never again (they are read-only in sysfs).
        let (mode, max_tasks, slice_us, watchdog_ms, lock_timeout_ms, args, upgrade) = unsafe {
            (
                param_str(enoki_param_mode),
                enoki_param_max_tasks,
                enoki_param_slice_us,
                enoki_param_watchdog_ms,
                enoki_param_lock_timeout_ms,
                param_str(enoki_param_args),
                param_str(enoki_param_upgrade),
            )
        };
        let upgrade = match upgrade {
            "" => None,
            "state" => Some(false),
            "fresh" => Some(true),
            _ => return Err(InitError::InvalidArgument("upgrade (state or fresh)")),
        };
        let mode = match mode {
            "all" => abi::mode::ALL,
            "opt-in" => abi::mode::OPT_IN,
            _ => return Err(InitError::InvalidArgument("mode (all or opt-in)")),
        };
        if !(16..=1 << 20).contains(&max_tasks) {
            return Err(InitError::InvalidArgument("max_tasks (16..=1048576)"));
        }
        if !(50..=1_000_000).contains(&slice_us) {
            return Err(InitError::InvalidArgument("slice_us (50..=1000000)"));
        }
        if !(500..=30_000).contains(&watchdog_ms) {
            return Err(InitError::InvalidArgument("watchdog_ms (500..=30000)"));
        }
        // Well under the watchdog, so a deadlock is ours to report.
        let default_ms = (DEFAULT_LOCK_TIMEOUT_NS / 1_000_000) as u32;
        let lock_timeout_ms = match lock_timeout_ms {
            0 => default_ms.min(watchdog_ms / 2),
            ms => ms,
        };
        if !(1..=watchdog_ms / 2).contains(&lock_timeout_ms) {
            return Err(InitError::InvalidArgument(
                "lock_timeout_ms (1..=watchdog_ms/2)",
            ));
        }
        Ok(Params {
            mode,
            max_tasks: max_tasks as usize,
            slice_ns: slice_us as u64 * 1000,
            timeout_ms: watchdog_ms,
            lock_timeout_ms,
            args,
            upgrade,
        })
    }
}

fn init_error(e: InitError) -> Error {
    match e {
        InitError::InvalidArgument(what) => {
            super::log::emit(Level::Error, format_args!("bad parameter: {}", what));
            code::EINVAL
        }
        InitError::OutOfMemory => {
            super::log::emit(
                Level::Error,
                format_args!("out of memory creating the scheduler"),
            );
            code::ENOMEM
        }
    }
}

/// What Enoki-C points at while the scheduler is loaded.
struct State<S: EnokiScheduler> {
    loaded: Loaded<S>,
    ops: RawOps,
    /// Room for the previous version's state, in an upgrade.
    carry: Option<KBox<S::UpgradeState>>,
}

/// Room for an upgrade state, all zeroes.
fn zeroed_state<T: PlainData>() -> Result<KBox<T>, Error> {
    let boxed = KBox::<T>::new_uninit(GFP_KERNEL | kernel::alloc::flags::__GFP_ZERO)?;
    // SAFETY: the memory is zeroed, and all zeroes is a valid `T`: plain
    // data is integers, booleans and arrays and structs of them.
    Ok(unsafe { boxed.assume_init() })
}

/// Enoki-C's `export_state`: this version's state for the next one.
///
/// # Safety
/// `sched` is this module's registered `Loaded<S>`; `state` is the next
/// version's `state` room, which Enoki-C passes only when the two
/// fingerprints match: the same definition, so the same layout as
/// `S::UpgradeState`, valid for any value this version writes.
unsafe extern "C" fn export_state<S: EnokiScheduler>(
    sched: *const c_void,
    state: *mut c_void,
) -> c_int {
    let state = state as *mut S::UpgradeState;
    // SAFETY: guaranteed by the caller, see above; all zeroes is a valid
    // `S::UpgradeState` (plain data), and the scheduler writes into zeroes
    // even when an earlier pass of the same upgrade wrote here.
    unsafe { core::ptr::write_bytes(state, 0, 1) };
    // SAFETY: guaranteed by the caller, see above; only the upgrading CPU
    // uses the next version's room.
    let (loaded, state) = unsafe { (&*(sched as *const Loaded<S>), &mut *state) };
    match loaded.export_state(this_cpu(), state) {
        Ok(()) => 0,
        Err(_) => -(kernel::bindings::ECANCELED as c_int),
    }
}

/// Enoki-C's `adopt_state`: start from the previous version's state.
///
/// # Safety
/// `sched` is this module's `Loaded<S>`; `state` is this module's own
/// `carry` room, written by the previous version (see [`export_state`]).
unsafe extern "C" fn adopt_state<S: EnokiScheduler>(
    sched: *const c_void,
    state: *const c_void,
) -> c_int {
    // SAFETY: guaranteed by the caller, see above.
    let (loaded, state) = unsafe {
        (
            &*(sched as *const Loaded<S>),
            &*(state as *const S::UpgradeState),
        )
    };
    match loaded.adopt_state(this_cpu(), state) {
        Ok(()) => 0,
        Err(_) => -(kernel::bindings::ECANCELED as c_int),
    }
}

/// The CPU an upgrade runs on (interrupts are off there).
fn this_cpu() -> CpuId {
    context().unwrap_or(0)
}

/// A loaded scheduler module; `kernel::module!` takes this type.
pub struct EnokiModule<S: EnokiScheduler> {
    state: KBox<State<S>>,
}

// SAFETY: the raw pointers in `RawOps` point into `state` itself or at the
// module; the scheduler is `Send + Sync`, so the whole may be shared.
unsafe impl<S: EnokiScheduler> Send for EnokiModule<S> {}
// SAFETY: as above.
unsafe impl<S: EnokiScheduler> Sync for EnokiModule<S> {}

/// The one entry point Enoki-C calls.
///
/// # Safety
/// `sched` is the pointer registered in [`EnokiModule::init`], valid until
/// `enoki_unregister()` returns; `msg` is valid and exclusive for the call.
unsafe extern "C" fn process<S: EnokiScheduler>(sched: *const c_void, msg: *mut Msg) -> i64 {
    // SAFETY: guaranteed by the caller, see above.
    let (loaded, msg) = unsafe { (&*(sched as *const Loaded<S>), &mut *msg) };
    loaded.handle(msg);
    msg.ret
}

fn read_topology() -> Result<Topology, Error> {
    let mut raw = KBox::<RawTopology>::new_uninit(GFP_KERNEL)?;
    // SAFETY: `raw` is writable memory of the right size; Enoki-C fills it all
    // (or fails without us reading it).
    let ret = unsafe { enoki_get_topology(raw.as_mut_ptr()) };
    if ret < 0 {
        return Err(Error::from_errno(ret));
    }
    // SAFETY: enoki_get_topology() returned 0, so it initialised every byte.
    let raw = unsafe { raw.assume_init() };
    Topology::from_raw(&raw).map_err(init_error)
}

impl<S: EnokiScheduler> kernel::Module for EnokiModule<S> {
    fn init(module: &'static kernel::ThisModule) -> kernel::error::Result<Self> {
        let params = Params::read().map_err(init_error)?;
        detect::set_timeout_ns(u64::from(params.lock_timeout_ms) * 1_000_000);
        let topology = read_topology()?;
        let ctx = InitContext {
            topology: &topology,
            max_tasks: params.max_tasks,
            slice_ns: params.slice_ns,
            args: Args(params.args),
            services: Services { host: Host },
        };
        let sched = S::init(&ctx).map_err(init_error)?;
        let mut name = [0u8; abi::NAME_LEN];
        let n = S::NAME.len().min(abi::NAME_LEN - 1);
        name[..n].copy_from_slice(&S::NAME.as_bytes()[..n]);
        let mut state = KBox::new(
            State {
                loaded: Loaded::new(sched, topology.nr_cpus(), params.max_tasks)
                    .map_err(|e| init_error(e.into()))?,
                ops: RawOps {
                    abi_version: abi::ABI_VERSION,
                    mode: params.mode,
                    slice_ns: params.slice_ns,
                    timeout_ms: params.timeout_ms,
                    handles: S::MESSAGES.bits(),
                    name,
                    owner: module.as_ptr() as *mut c_void,
                    sched: core::ptr::null(),
                    process: process::<S>,
                    state_fp: upgrade::fingerprint::<S>(),
                    state: core::ptr::null_mut(),
                    export_state: export_state::<S>,
                    adopt_state: adopt_state::<S>,
                    hint_fp: <S::Hint as HintData>::FINGERPRINT,
                    hint_size: <S::Hint as HintData>::SIZE as u32,
                    rev_hint_size: <S::RevHint as HintData>::SIZE as u32,
                    rev_hint_fp: <S::RevHint as HintData>::FINGERPRINT,
                },
                carry: match params.upgrade {
                    Some(false) => Some(zeroed_state::<S::UpgradeState>()?),
                    _ => None,
                },
            },
            GFP_KERNEL,
        )?;
        state.ops.sched = &state.loaded as *const Loaded<S> as *const c_void;
        if let Some(carry) = state.carry.as_mut() {
            state.ops.state = &mut **carry as *mut S::UpgradeState as *mut c_void;
        }
        // SAFETY: `state` is heap-allocated and outlives the registration:
        // Drop unregisters before freeing it.
        let ret = unsafe {
            match params.upgrade {
                Some(fresh) => enoki_upgrade(&state.ops, fresh),
                None => enoki_register(&state.ops),
            }
        };
        if ret < 0 {
            return Err(Error::from_errno(ret));
        }
        Ok(EnokiModule { state })
    }
}

impl<S: EnokiScheduler> Drop for EnokiModule<S> {
    fn drop(&mut self) {
        // SAFETY: registered in init; returns once Enoki-C no longer calls in.
        unsafe { enoki_unregister(&self.state.ops) };
    }
}
