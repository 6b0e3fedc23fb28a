//! Deadlines that fire while no connection is attached to a session: Session Expiry
//! (v5 §3.1.2.11.2) and Will Delay (v5 §3.1.3.2.2).
//!
//! One task per broker sleeps until the earliest deadline. An entry names the session
//! weakly and the link that was detached when it was armed; when it fires, the broker checks
//! that the session is still detached from that same link, so a client that came back in
//! time makes the entry stale. A session keeps the key of each deadline it has armed
//! ([`TimerSlots`]): arming a kind again, the client coming back, and the session ending
//! remove the old entry, so the queue holds at most one deadline of each kind per session,
//! however often clients reconnect.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

pub(crate) use crate::session::TimerKind;
use crate::session::{Session, TimerSlots};

/// A deadline that has passed.
#[derive(Debug)]
pub(crate) struct Due {
    pub(crate) session: Weak<Session>,
    pub(crate) link_id: u64,
    pub(crate) kind: TimerKind,
}

/// The broker's deadline queue.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    queue: Mutex<BTreeMap<(Instant, u64), Due>>,
    seq: AtomicU64,
    wake: Notify,
}

impl Timers {
    /// Arms a deadline of `kind` for `session`, detached from link `link_id`, replacing the
    /// one of that kind it had armed (its key is kept in `slots`).
    pub(crate) fn schedule(
        &self,
        slots: &mut TimerSlots,
        at: Instant,
        session: &Arc<Session>,
        link_id: u64,
        kind: TimerKind,
    ) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut queue = self.queue.lock();
        if let Some(old) = slots.slot(kind).replace((at, seq)) {
            queue.remove(&old);
        }
        let earliest = queue.keys().next().is_none_or(|(first, _)| at < *first);
        queue.insert(
            (at, seq),
            Due {
                session: Arc::downgrade(session),
                link_id,
                kind,
            },
        );
        drop(queue);
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Removes every deadline `slots` names (the client came back, or the session ended).
    pub(crate) fn cancel(&self, slots: &mut TimerSlots) {
        let Some(armed) = slots.take() else {
            return;
        };
        let mut queue = self.queue.lock();
        for key in armed.iter().flatten() {
            queue.remove(key);
        }
    }

    /// Deadlines armed now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.lock().len()
    }

    /// Deadlines at or before `now`, removed from the queue.
    pub(crate) fn take_due(&self, now: Instant) -> Vec<Due> {
        let mut queue = self.queue.lock();
        let later = queue.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut *queue, later);
        due.into_values().collect()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.queue.lock().keys().next().map(|(at, _)| *at)
    }

    /// Runs until `stop` is cancelled, handing each due deadline to `fire`.
    pub(crate) async fn run(
        &self,
        stop: &tokio_util::sync::CancellationToken,
        mut fire: impl FnMut(Due),
    ) {
        loop {
            let next = self.next_deadline();
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            for due in self.take_due(Instant::now()) {
                fire(due);
            }
        }
    }
}
