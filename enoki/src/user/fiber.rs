// SPDX-License-Identifier: GPL-2.0
//! Fibers: several CPUs' scheduler calls on one host thread.
//!
//! Each fiber has its own stack and acts as its own CPU for the deadlock
//! detector (its locks, its waits, its fault), and gives the thread back
//! only where a lock acquisition waits ([`suspend`]): libEnoki's lock wait
//! suspends the running fiber, since a spin would never let the holder,
//! another fiber on the same thread, run. Lock-ordered replay runs one fiber
//! per recorded CPU: handing the turn at a lock to another CPU then costs a
//! stack switch of a few nanoseconds instead of a thread wake-up (~10 us on
//! a 2-core host).

use core::cell::Cell;
use core::ptr;

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};

use super::{ContextSlot, FAULT};
use crate::fault::Fault;

/// Stack per fiber: debug builds of scheduler code are stack-hungry, and
/// untouched pages cost nothing.
const STACK_BYTES: usize = 2 << 20;

type FiberYielder = Yielder<(), ()>;

std::thread_local! {
    /// The yielder of the fiber running on this thread; null when none is.
    ///
    /// # Invariants
    ///
    /// Non-null only while the fiber owning that yielder runs on this
    /// thread: a fiber sets it when it starts and again when it comes back
    /// from [`suspend`]; [`suspend`] clears it before switching out, and
    /// [`Fiber::resume`] clears it when the fiber returns or unwinds.
    static CURRENT: Cell<*const FiberYielder> = const { Cell::new(ptr::null()) };
    /// The detector context the running fiber acts as.
    pub(super) static ACTING: Cell<Option<usize>> = const { Cell::new(None) };
}

/// What [`Fiber::resume`] came back with.
#[derive(Debug, PartialEq, Eq)]
pub enum Resumed<R> {
    /// The fiber waits for a lock ([`suspend`]); resume it again later.
    Suspended,
    /// The fiber's body returned this.
    Finished(R),
}

/// A body run on its own stack, switched to by [`Fiber::resume`].
pub struct Fiber<R> {
    co: Coroutine<(), (), R, DefaultStack>,
    /// Its own detector context; `None` once every context is taken (then
    /// only lock timeouts work for it).
    slot: Option<ContextSlot>,
    /// A fault its call raised, kept while other fibers run.
    fault: Option<Fault>,
}

impl<R: 'static> Fiber<R> {
    /// A fiber that will run `body` when first resumed.
    pub fn new(body: impl FnOnce() -> R + 'static) -> std::io::Result<Self> {
        let stack = DefaultStack::new(STACK_BYTES)?;
        let co = Coroutine::with_stack(stack, move |y: &FiberYielder, ()| {
            CURRENT.with(|c| c.set(y));
            body()
        });
        Ok(Fiber {
            co,
            slot: ContextSlot::claim(),
            fault: None,
        })
    }

    /// Runs the fiber until it suspends or its body returns. A panic in
    /// the body is passed on.
    pub fn resume(&mut self) -> Resumed<R> {
        let _out = SwitchedIn::enter(self.slot.as_ref().map(|s| s.0), self.fault.take());
        let result = self.co.resume(());
        self.fault = FAULT.with(|f| f.take());
        match result {
            CoroutineResult::Yield(()) => Resumed::Suspended,
            CoroutineResult::Return(r) => Resumed::Finished(r),
        }
    }

    /// Whether its body has returned.
    pub fn done(&self) -> bool {
        self.co.done()
    }
}

/// The thread acts as a fiber until dropped (also when the fiber panics).
struct SwitchedIn;

impl SwitchedIn {
    fn enter(slot: Option<usize>, fault: Option<Fault>) -> Self {
        ACTING.with(|a| a.set(slot));
        FAULT.with(|f| f.set(fault));
        SwitchedIn
    }
}

impl Drop for SwitchedIn {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(ptr::null()));
        ACTING.with(|a| a.set(None));
    }
}

/// Gives the thread back to whoever resumed the running fiber; returns
/// when it is resumed again. Does nothing outside a fiber.
pub fn suspend() {
    let y = CURRENT.with(|c| c.replace(ptr::null()));
    if y.is_null() {
        return;
    }
    // SAFETY: `CURRENT` was non-null, so (its invariant) `y` is the yielder
    // of the fiber running here, which lives as long as that fiber's body.
    unsafe { &*y }.suspend(());
    CURRENT.with(|c| c.set(y));
}

/// Whether this thread runs a fiber now.
pub fn in_fiber() -> bool {
    CURRENT.with(|c| !c.get().is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::SpinLock;
    use crate::FaultKind;
    use std::rc::Rc;
    use std::sync::Arc;

    #[test]
    fn fibers_interleave_at_suspend_and_return_their_values() {
        let log = Rc::new(std::cell::RefCell::new(Vec::new()));
        let (a, b) = (log.clone(), log.clone());
        let mut fa = Fiber::new(move || {
            a.borrow_mut().push("a1");
            suspend();
            a.borrow_mut().push("a2");
            1
        })
        .unwrap();
        let mut fb = Fiber::new(move || {
            b.borrow_mut().push("b1");
            2
        })
        .unwrap();
        assert!(!in_fiber());
        assert_eq!(fa.resume(), Resumed::Suspended);
        assert!(!in_fiber(), "the thread is back outside every fiber");
        assert_eq!(fb.resume(), Resumed::Finished(2));
        assert_eq!(fa.resume(), Resumed::Finished(1));
        assert!(fa.done() && fb.done());
        assert_eq!(*log.borrow(), ["a1", "b1", "a2"]);
    }

    #[test]
    fn a_fiber_waiting_for_a_lock_another_fiber_holds_lets_it_run() {
        let lock = Arc::new(SpinLock::new(0u32));
        let (l1, l2) = (lock.clone(), lock.clone());
        let mut holder = Fiber::new(move || {
            let mut g = l1.lock().unwrap();
            *g += 1;
            suspend();
            *g += 1;
        })
        .unwrap();
        let mut waiter = Fiber::new(move || {
            let mut g = l2.lock().unwrap();
            *g *= 10;
        })
        .unwrap();
        assert_eq!(holder.resume(), Resumed::Suspended);
        // Without the suspend in the lock wait this would spin until the
        // lock timeout and fail.
        assert_eq!(waiter.resume(), Resumed::Suspended);
        assert_eq!(holder.resume(), Resumed::Finished(()));
        assert_eq!(waiter.resume(), Resumed::Finished(()));
        assert_eq!(*lock.lock().unwrap(), 20);
    }

    #[test]
    fn each_fiber_is_its_own_cpu_to_the_deadlock_detector() {
        let (x, y) = (Arc::new(SpinLock::new(())), Arc::new(SpinLock::new(())));
        let body = |first: Arc<SpinLock<()>>, second: Arc<SpinLock<()>>| {
            move || {
                let _a = first.lock().unwrap();
                suspend();
                let got = second.lock().map(|_| ()).map_err(|_| ());
                let fault = crate::sync::detect::take_fault().map(|f| f.kind);
                (got, fault)
            }
        };
        let mut f1 = Fiber::new(body(x.clone(), y.clone())).unwrap();
        let mut f2 = Fiber::new(body(y, x)).unwrap();
        assert_eq!(f1.resume(), Resumed::Suspended);
        assert_eq!(f2.resume(), Resumed::Suspended);
        // ABBA between the two fibers: one of them finds the cycle, the
        // other then gets its lock.
        let mut ends = Vec::new();
        while ends.len() < 2 {
            for f in [&mut f1, &mut f2] {
                if !f.done() {
                    if let Resumed::Finished(r) = f.resume() {
                        ends.push(r);
                    }
                }
            }
        }
        assert!(
            ends.contains(&(Err(()), Some(FaultKind::Cycle))),
            "{ends:?}"
        );
        assert!(ends.contains(&(Ok(()), None)), "{ends:?}");
    }
}
