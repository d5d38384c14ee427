//! A one-shot flag for the tasks of one thread: any number of them wait
//! until it is set, then all wake. Waiting allocates nothing once the
//! thread's waiter slots exist, and touches no memory another thread
//! writes, unlike a channel shared between worker threads.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A flag tasks of one thread can wait for.
#[derive(Default)]
pub struct Flag {
    set: Cell<bool>,
    waiters: RefCell<Waiters>,
}

#[derive(Default)]
struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Flag {
    /// Sets the flag and wakes every waiting task.
    pub fn set(&self) {
        self.set.set(true);
        let wakers: Vec<Waker> = {
            let mut w = self.waiters.borrow_mut();
            w.slots.iter_mut().filter_map(Option::take).collect()
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// Completes once the flag is set.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            flag: self,
            slot: None,
        }
    }
}

/// The future of [`Flag::wait`].
pub struct Wait<'a> {
    flag: &'a Flag,
    /// The waiter slot this future holds, once polled.
    slot: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let me = self.get_mut();
        if me.flag.set.get() {
            return Poll::Ready(());
        }
        let mut w = me.flag.waiters.borrow_mut();
        let slot = match me.slot {
            Some(slot) => slot,
            None => {
                let slot = w.free.pop().unwrap_or_else(|| {
                    w.slots.push(None);
                    w.slots.len() - 1
                });
                me.slot = Some(slot);
                slot
            }
        };
        match &mut w.slots[slot] {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            other => *other = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let mut w = self.flag.waiters.borrow_mut();
            w.slots[slot] = None;
            w.free.push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn setting_wakes_every_waiter_and_slots_are_reused() {
        let flag = Rc::new(Flag::default());
        let executor = smol::LocalExecutor::new();
        let woken = Rc::new(Cell::new(0));
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let (flag, woken) = (Rc::clone(&flag), Rc::clone(&woken));
                executor.spawn(async move {
                    flag.wait().await;
                    woken.set(woken.get() + 1);
                })
            })
            .collect();
        // A waiter that gives up frees its slot for the next one.
        smol::future::block_on(executor.run(async {
            for _ in 0..10 {
                let gave_up = smol::future::or(async { flag.wait().await }, async {});
                gave_up.await;
            }
            smol::future::yield_now().await;
            assert_eq!(woken.get(), 0);
            assert!(flag.waiters.borrow().slots.len() <= 4);
            flag.set();
            for t in tasks {
                t.await;
            }
        }));
        assert_eq!(woken.get(), 3);
        smol::future::block_on(flag.wait());
    }
}
