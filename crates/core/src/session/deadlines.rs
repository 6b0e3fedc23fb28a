//! The deadlines a session has armed in the broker's timer queue (see `crate::timers`):
//! session state, so that the session knows which entries to remove when its client comes
//! back or it ends.

use tokio::time::Instant;

/// What happens when a deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerKind {
    /// The session expires (if still detached).
    SessionExpiry,
    /// The pending will is published (if the session is still detached).
    WillDelay,
}

/// Where one armed deadline sits in the queue.
pub(crate) type TimerKey = (Instant, u64);

/// The deadlines a session has armed, one per kind (session expiry, will delay). Boxed and
/// allocated only while a deadline is armed: a connected session holds one pointer.
#[derive(Debug, Default)]
pub(crate) struct TimerSlots(Option<Box<[Option<TimerKey>; 2]>>);

impl TimerSlots {
    /// The key armed for `kind`, allocating the slots on first use.
    pub(crate) fn slot(&mut self, kind: TimerKind) -> &mut Option<TimerKey> {
        let slots = self.0.get_or_insert_with(Box::default);
        match kind {
            TimerKind::SessionExpiry => &mut slots[0],
            TimerKind::WillDelay => &mut slots[1],
        }
    }

    /// Takes every armed key (to remove them from the queue).
    pub(crate) fn take(&mut self) -> Option<Box<[Option<TimerKey>; 2]>> {
        self.0.take()
    }
}
