//! A per-thread reactor: one epoll instance, its timers, and `block_on`,
//! which drives a future on this thread and waits in `epoll_wait` when it
//! has nothing to run.
//!
//! Each worker thread runs its own reactor, so a socket event wakes the
//! thread that owns the socket and no other: no process-wide reactor
//! thread, no lock, no cross-thread wake-up on the request path. Sockets
//! are registered once, edge-triggered, for reading and writing; waiting
//! costs no `epoll_ctl` (see [`tcp`](super::tcp)). Wakers from other threads (channels,
//! `smol::unblock`) write to an eventfd that ends the wait.
//!
//! This module knows file descriptors and deadlines, not HTTP or plugins.
//! Tasks are scheduled by whatever executor the future runs (a
//! `LocalExecutor` in workers).

use rustix::event::epoll;
use rustix::event::{eventfd, EventfdFlags};
use rustix::fd::{AsFd, OwnedFd};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// Events taken from the kernel per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;

/// The epoll key of the eventfd that cross-thread wakers write to.
const NOTIFY_KEY: u64 = u64::MAX;

/// Longest single wait; a later deadline is waited for in several steps.
const MAX_WAIT: Duration = Duration::from_secs(3600);

thread_local! {
    static CURRENT: RefCell<Option<Rc<Reactor>>> = const { RefCell::new(None) };
}

/// The reactor of the current thread, if `block_on` runs on it.
pub(crate) fn current() -> Option<Rc<Reactor>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Runs `future` to completion on this thread, serving socket readiness
/// and timers while it waits. Nested calls on one thread share the
/// thread's reactor.
///
/// # Errors
/// When the kernel refuses an epoll instance or an eventfd (out of file
/// descriptors); the future is not run. A thread that must not fail once
/// started makes its reactor beforehand with [`prepare`].
pub fn block_on<T>(future: impl Future<Output = T>) -> io::Result<T> {
    match current() {
        Some(reactor) => Ok(run(&reactor, future)),
        None => Ok(prepare()?.block_on(future)),
    }
}

/// A reactor's kernel objects, made before the thread that runs it starts,
/// where failing can still be reported (they can move between threads;
/// the reactor cannot).
pub struct Prepared {
    epoll: OwnedFd,
    eventfd: OwnedFd,
}

/// Makes the kernel objects of a reactor: an epoll instance with an
/// eventfd registered for cross-thread wake-ups.
pub fn prepare() -> io::Result<Prepared> {
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    let eventfd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
    epoll::add(
        &epoll,
        &eventfd,
        epoll::EventData::new_u64(NOTIFY_KEY),
        epoll::EventFlags::IN | epoll::EventFlags::ET,
    )?;
    Ok(Prepared { epoll, eventfd })
}

impl Prepared {
    /// Installs this reactor on the current thread and runs `future` to
    /// completion on it, like [`block_on`] (inside which these kernel
    /// objects are not needed: the running reactor serves).
    pub fn block_on<T>(self, future: impl Future<Output = T>) -> T {
        if let Some(reactor) = current() {
            return run(&reactor, future);
        }
        let reactor = Rc::new(Reactor::from(self));
        CURRENT.with(|c| *c.borrow_mut() = Some(Rc::clone(&reactor)));
        let _uninstall = Uninstall;
        run(&reactor, future)
    }
}

fn run<T>(reactor: &Reactor, future: impl Future<Output = T>) -> T {
    let notify = Arc::clone(&reactor.notify);
    let waker = Waker::from(Arc::clone(&notify));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        notify.woken.store(false, Ordering::SeqCst);
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        reactor.wait(&notify);
    }
}

/// Removes the thread's reactor when the outermost `block_on` returns.
struct Uninstall;

impl Drop for Uninstall {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

/// One thread's epoll instance, registered sources and timers.
pub(crate) struct Reactor {
    epoll: OwnedFd,
    notify: Arc<Notify>,
    sources: RefCell<Slots>,
    timers: RefCell<BTreeMap<(Instant, u64), Waker>>,
    next_timer: Cell<u64>,
    events: RefCell<Vec<epoll::Event>>,
}

/// Wakes a thread's `block_on` from any thread.
struct Notify {
    /// Set by every wake; cleared before each poll of the future.
    woken: AtomicBool,
    /// True while the thread is (about to be) in `epoll_wait`.
    sleeping: AtomicBool,
    eventfd: OwnedFd,
}

impl Wake for Notify {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Only a sleeping thread needs the syscall; `SeqCst` on both
        // flags makes sure either the waker sees `sleeping` or the
        // sleeper sees `woken`.
        if !self.woken.swap(true, Ordering::SeqCst) && self.sleeping.load(Ordering::SeqCst) {
            let _ = rustix::io::write(&self.eventfd, &1u64.to_ne_bytes());
        }
    }
}

/// Registered sources by key; freed keys are reused.
#[derive(Default)]
struct Slots {
    entries: Vec<Option<Rc<Source>>>,
    free: Vec<usize>,
}

/// Readiness of one registered file descriptor.
pub(crate) struct Source {
    key: usize,
    pub(crate) read: Direction,
    pub(crate) write: Direction,
}

/// Readiness of one direction (read or write) of a source.
#[derive(Default)]
pub(crate) struct Direction {
    /// Counts the kernel's readiness events for this direction.
    events: Cell<u64>,
    /// The event count when this direction was last seen not ready
    /// (would block, or a short read or write): nothing new can be done
    /// until the count moves on.
    exhausted_at: Cell<Option<u64>>,
    /// Set for good by a hang-up or error: attempts never block again
    /// (they return end of stream or the error at once).
    closed: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Direction {
    /// True when an attempt can only block: no event since it last did.
    pub(crate) fn is_exhausted(&self) -> bool {
        !self.closed.get() && self.exhausted_at.get() == Some(self.events.get())
    }

    /// Records that the direction is not ready now (as of the last event).
    pub(crate) fn exhaust(&self) {
        self.exhausted_at.set(Some(self.events.get()));
    }

    /// Parks `cx`'s task until the next event of this direction.
    pub(crate) fn park(&self, cx: &Context<'_>) {
        let mut slot = self.waker.borrow_mut();
        match &*slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
    }

    fn fire(&self, closed: bool) {
        if closed {
            self.closed.set(true);
        }
        self.events.set(self.events.get().wrapping_add(1));
        let waker = self.waker.borrow_mut().take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl From<Prepared> for Reactor {
    fn from(Prepared { epoll, eventfd }: Prepared) -> Reactor {
        Reactor {
            epoll,
            notify: Arc::new(Notify {
                woken: AtomicBool::new(false),
                sleeping: AtomicBool::new(false),
                eventfd,
            }),
            sources: RefCell::default(),
            timers: RefCell::default(),
            next_timer: Cell::new(0),
            events: RefCell::new(Vec::with_capacity(EVENTS_PER_WAIT)),
        }
    }
}

impl Reactor {
    /// Registers `fd` for edge-triggered read and write readiness.
    pub(crate) fn register(&self, fd: impl AsFd) -> io::Result<Rc<Source>> {
        let mut slots = self.sources.borrow_mut();
        let key = slots.free.pop().unwrap_or(slots.entries.len());
        let source = Rc::new(Source {
            key,
            read: Direction::default(),
            write: Direction::default(),
        });
        let flags = epoll::EventFlags::IN
            | epoll::EventFlags::OUT
            | epoll::EventFlags::RDHUP
            | epoll::EventFlags::ET;
        if let Err(e) = epoll::add(
            &self.epoll,
            fd,
            epoll::EventData::new_u64(key as u64),
            flags,
        ) {
            slots.free.push(key);
            return Err(e.into());
        }
        if key == slots.entries.len() {
            slots.entries.push(Some(Rc::clone(&source)));
        } else {
            slots.entries[key] = Some(Rc::clone(&source));
        }
        Ok(source)
    }

    /// Forgets `source`; `fd` must be the descriptor it was registered
    /// with, still open.
    pub(crate) fn deregister(&self, source: &Source, fd: impl AsFd) {
        let _ = epoll::delete(&self.epoll, fd);
        let mut slots = self.sources.borrow_mut();
        if let Some(slot) = slots.entries.get_mut(source.key) {
            *slot = None;
            slots.free.push(source.key);
        }
    }

    /// Waits for events (or not at all when the future was woken while it
    /// ran), then wakes what they concern and what timers expired.
    fn wait(&self, notify: &Notify) {
        let mut timeout = self
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        if notify.woken.load(Ordering::SeqCst) {
            timeout = Some(Duration::ZERO);
        } else {
            notify.sleeping.store(true, Ordering::SeqCst);
            if notify.woken.load(Ordering::SeqCst) {
                timeout = Some(Duration::ZERO);
            }
        }
        let timespec = timeout.map(|t| {
            let t = t.min(MAX_WAIT);
            rustix::time::Timespec {
                tv_sec: t.as_secs() as _,
                tv_nsec: t.subsec_nanos() as _,
            }
        });
        let mut events = self.events.borrow_mut();
        events.clear();
        let waited = epoll::wait(
            &self.epoll,
            rustix::buffer::spare_capacity(&mut *events),
            timespec.as_ref(),
        );
        notify.sleeping.store(false, Ordering::SeqCst);
        if let Err(e) = waited {
            if e != rustix::io::Errno::INTR {
                log::error!("epoll_wait failed: {e}");
            }
        }
        for event in events.iter() {
            let (key, flags) = (event.data.u64(), event.flags);
            if key == NOTIFY_KEY {
                let mut drain = [0u8; 8];
                let _ = rustix::io::read(&notify.eventfd, &mut drain);
                continue;
            }
            let source = {
                let slots = self.sources.borrow();
                slots.entries.get(key as usize).cloned().flatten()
            };
            let Some(source) = source else { continue };
            use epoll::EventFlags as F;
            if flags.intersects(F::IN | F::PRI | F::HUP | F::RDHUP | F::ERR) {
                source
                    .read
                    .fire(flags.intersects(F::HUP | F::RDHUP | F::ERR));
            }
            if flags.intersects(F::OUT | F::HUP | F::ERR) {
                source.write.fire(flags.intersects(F::HUP | F::ERR));
            }
        }
        drop(events);
        self.fire_timers();
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.borrow().keys().next().map(|(at, _)| *at)
    }

    fn fire_timers(&self) {
        let now = Instant::now();
        loop {
            let due = {
                let mut timers = self.timers.borrow_mut();
                match timers.first_key_value() {
                    Some((&(at, _), _)) if at <= now => timers.pop_first().map(|(_, w)| w),
                    _ => None,
                }
            };
            match due {
                Some(waker) => waker.wake(),
                None => return,
            }
        }
    }
}

/// A future that completes at a deadline. On a thread without a reactor
/// (not inside [`block_on`]) it falls back to `smol::Timer`.
pub struct Timer {
    when: When,
    inner: TimerImpl,
}

/// When a timer completes.
#[derive(Clone, Copy)]
enum When {
    At(Instant),
    /// This long after the first poll: a timeout that is never polled
    /// (its operation finished at once) never reads the clock.
    After(Duration),
}

enum TimerImpl {
    Local {
        reactor: Rc<Reactor>,
        /// The key under which a waker is registered, once polled.
        key: Option<(Instant, u64)>,
    },
    Smol(smol::Timer),
}

impl Timer {
    /// Completes `d` from now.
    pub fn after(d: Duration) -> Timer {
        let inner = match current() {
            Some(reactor) => TimerImpl::Local { reactor, key: None },
            None => TimerImpl::Smol(smol::Timer::after(d)),
        };
        Timer {
            when: When::After(d),
            inner,
        }
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let me = self.get_mut();
        match &mut me.inner {
            TimerImpl::Smol(t) => std::pin::Pin::new(t).poll(cx).map(|_| ()),
            TimerImpl::Local { reactor, key } => {
                let now = Instant::now();
                let at = match me.when {
                    When::At(at) => at,
                    When::After(d) => {
                        let at = now.checked_add(d).unwrap_or(now + MAX_WAIT);
                        me.when = When::At(at);
                        at
                    }
                };
                if now >= at {
                    if let Some(k) = key.take() {
                        reactor.timers.borrow_mut().remove(&k);
                    }
                    return Poll::Ready(());
                }
                let mut timers = reactor.timers.borrow_mut();
                match key {
                    Some(k) => match timers.get_mut(k) {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        Some(w) => *w = cx.waker().clone(),
                        None => {
                            // It fired, but the deadline is not reached
                            // by this clock reading: wait again.
                            timers.insert(*k, cx.waker().clone());
                        }
                    },
                    None => {
                        let id = reactor.next_timer.get();
                        reactor.next_timer.set(id.wrapping_add(1));
                        timers.insert((at, id), cx.waker().clone());
                        *key = Some((at, id));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let TimerImpl::Local {
            reactor,
            key: Some(k),
        } = &self.inner
        {
            reactor.timers.borrow_mut().remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_order_and_dropped_ones_never() {
        let fired = block_on(async {
            let start = Instant::now();
            let dropped = Timer::after(Duration::from_millis(5));
            drop(dropped);
            let fast = async {
                Timer::after(Duration::from_millis(10)).await;
                "fast"
            };
            let slow = async {
                Timer::after(Duration::from_secs(5)).await;
                "slow"
            };
            let winner = smol::future::or(fast, slow).await;
            (winner, start.elapsed())
        })
        .unwrap();
        assert_eq!(fired.0, "fast");
        assert!(fired.1 >= Duration::from_millis(10), "{:?}", fired.1);
        assert!(fired.1 < Duration::from_secs(2), "{:?}", fired.1);
    }

    #[test]
    fn a_waker_from_another_thread_ends_the_wait() {
        let (tx, rx) = smol::channel::bounded::<u32>(1);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            smol::block_on(tx.send(7)).unwrap();
        });
        let got = block_on(async { rx.recv().await.unwrap() }).unwrap();
        assert_eq!(got, 7);
        sender.join().unwrap();
    }

    /// Workers make their reactor before they start, so that running out
    /// of descriptors is an error at start, not a panic in the thread.
    #[test]
    fn a_reactor_prepared_on_one_thread_runs_on_another() {
        let prepared = prepare().unwrap();
        let worker = std::thread::spawn(move || {
            let inner = prepare().unwrap();
            let n = prepared.block_on(async {
                Timer::after(Duration::from_millis(5)).await;
                // Nested: the running reactor serves.
                inner.block_on(async { current().is_some() as u32 })
            });
            (n, current().is_none())
        });
        assert_eq!(worker.join().unwrap(), (1, true));
    }

    #[test]
    fn a_timer_outside_block_on_uses_the_fallback() {
        let start = Instant::now();
        smol::block_on(Timer::after(Duration::from_millis(5)));
        assert!(start.elapsed() >= Duration::from_millis(5));
    }
}
