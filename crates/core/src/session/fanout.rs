//! What routing leaves its caller to do once a run of messages is routed: wake the writers
//! it queued for, once each, and pause for the sessions whose queue reached the
//! flow-control threshold.
//!
//! Waking a subscriber's writer per message made it run beside the publisher's reader (on
//! the other worker thread) and write each message almost on its own: with one publisher and
//! 32 subscribers, about ten deliveries per `sendto` and a lock taken in turn by the two
//! sides for every one. A reader now routes everything its read buffer holds, then wakes
//! each writer once, which takes the whole run in one write.

use std::sync::Arc;

use super::{LinkSignals, Session};

/// Writers to wake, and sessions to wait for, after routing (see the module docs).
///
/// Dropping it wakes what is still to be woken: a wake is never lost, only moved to the
/// end of the caller's run.
#[derive(Default)]
pub(crate) struct Fanout {
    /// Sessions whose queue reached the flow-control threshold (connected ones only).
    pub(crate) congested: Vec<Arc<Session>>,
    /// Writers to wake, each once.
    wakes: Vec<Arc<LinkSignals>>,
    /// The writers in `wakes`, by address.
    seen: hashbrown::HashSet<usize>,
}

/// Past this many writers waiting to be woken, the lists are given back after a wake, so a
/// publisher that once reached many subscribers does not keep the room for life.
const KEEP: usize = 64;

impl Fanout {
    /// Wakes `signals`' writer when [`Fanout::wake_all`] runs (or this is dropped).
    pub(crate) fn wake_later(&mut self, signals: &Arc<LinkSignals>) {
        if self.seen.insert(Arc::as_ptr(signals) as usize) {
            self.wakes.push(Arc::clone(signals));
        }
    }

    /// Whether a writer waits to be woken.
    pub(crate) fn has_wakes(&self) -> bool {
        !self.wakes.is_empty()
    }

    /// Wakes every writer queued for since the last call.
    pub(crate) fn wake_all(&mut self) {
        if self.wakes.is_empty() {
            return;
        }
        for signals in self.wakes.drain(..) {
            signals.wake.notify_one();
        }
        if self.seen.capacity() > KEEP {
            self.seen = hashbrown::HashSet::new();
            self.wakes = Vec::new();
        } else {
            self.seen.clear();
        }
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        self.wake_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn each_writer_is_woken_once_and_only_when_asked() {
        let a = LinkSignals::new(CancellationToken::new());
        let b = LinkSignals::new(CancellationToken::new());
        let mut fanout = Fanout::default();
        for _ in 0..3 {
            fanout.wake_later(&a);
            fanout.wake_later(&b);
        }
        assert_eq!(fanout.wakes.len(), 2, "one entry per writer");
        let pending = |s: &LinkSignals| {
            let notified = s.wake.notified();
            tokio::pin!(notified);
            // `enable` is true when a permit is already stored.
            notified.as_mut().enable()
        };
        assert!(!pending(&a), "not woken before wake_all");
        fanout.wake_all();
        assert!(pending(&a) && pending(&b));
        assert!(!fanout.has_wakes());
    }

    #[tokio::test]
    async fn dropping_it_wakes_what_was_left() {
        let a = LinkSignals::new(CancellationToken::new());
        let mut fanout = Fanout::default();
        fanout.wake_later(&a);
        drop(fanout);
        let notified = a.wake.notified();
        tokio::pin!(notified);
        assert!(notified.as_mut().enable());
    }
}
