//! What routing leaves its caller to do once a run of messages is routed: wake the writers
//! it queued for, once each, and pause for the sessions whose queue reached the
//! flow-control threshold.
//!
//! Waking a subscriber's writer per message made it run beside the publisher's reader (on
//! the other worker thread) and write each message almost on its own: with one publisher and
//! 32 subscribers, about ten deliveries per `sendto` and a lock taken in turn by the two
//! sides for every one. A reader now routes everything its read buffer holds, then wakes
//! each writer once, which takes the whole run in one write.
//!
//! A connection's reader also holds back the copies of QoS 0 messages (no acknowledgement
//! depends on where they end up) and queues them per session in one go: one lock of the
//! subscriber's session per run instead of one per message, which the subscriber's writer,
//! draining on the other core, took in turn (the lock's cache line moved between the cores
//! for every copy). What a session holds back is bounded (see [`Fanout::hold`]).
//!
//! Copies whose wire form is the same for every subscriber (see [`super::Run`]) are held
//! as spans of positions in the run's list of messages ([`Fanout::hold_shared`]: a copy of
//! the message after a session's last one extends its span), and queued as runs shared by
//! every session that got the same messages: one reference per message instead of one per
//! copy, and no list entry per copy.

use std::sync::Arc;

use bytestring::ByteString;

use super::{LinkSignals, Run, RunCopy, Session, SubEntry};
use crate::message::{Delivery, Message};
use crate::topic::TopicName;

/// Writers to wake, and sessions to wait for, after routing (see the module docs).
///
/// Dropping it wakes what is still to be woken: a wake is never lost, only moved to the
/// end of the caller's run.
#[derive(Default)]
pub(crate) struct Fanout {
    /// Whether copies of QoS 0 messages are held back (a connection's reader).
    batching: bool,
    /// Boxed, and made on first use: a connection that never publishes (most idle ones)
    /// holds one pointer for it.
    pending: Option<Box<Pending>>,
}

/// The sessions a publisher's last message went to, remembered for its next message on the
/// same topic until a subscription changes anywhere (the router's generation), and at most
/// until the end of the publisher's run ([`Fanout::wake_all`]): most messages of a run go
/// where the one before went, and then need no walk of the trie, no reference taken per
/// target and no sort.
#[derive(Debug)]
pub(crate) struct Targets {
    /// The topic, with a buffer of its own (not the read buffer's).
    topic: TopicName,
    /// No Local depends on who publishes.
    publisher: Option<ByteString>,
    generation: u64,
    /// Sorted by session.
    pub(crate) entries: Vec<SubEntry>,
}

impl Targets {
    /// What `message` went to, in the router's `generation`.
    pub(crate) fn new(message: &Message, generation: u64, entries: Vec<SubEntry>) -> Self {
        Self {
            topic: message.topic.owned(),
            publisher: message.publisher.clone(),
            generation,
            entries,
        }
    }

    /// Whether `message` goes to the same sessions (the router is in `generation`).
    pub(crate) fn fits(&self, message: &Message, generation: u64) -> bool {
        self.generation == generation
            && self.topic == message.topic
            && self.publisher == message.publisher
    }
}

/// What a [`Fanout`] has still to do.
#[derive(Default)]
struct Pending {
    /// Sessions whose queue reached the flow-control threshold (connected ones only).
    congested: Vec<Arc<Session>>,
    /// Writers to wake, each once.
    wakes: Vec<Arc<LinkSignals>>,
    /// The writers in `wakes`, by address.
    seen: hashbrown::HashSet<usize>,
    /// Copies held back, per session in the order first met, with how many there are.
    held: Vec<(Arc<Session>, Vec<Held>, usize)>,
    /// The copies with a form of their own ([`Held::One`] points into it), until queued.
    ones: Vec<Option<Delivery>>,
    /// Where each session's copies are in `held`, by the session's address.
    held_at: hashbrown::HashMap<usize, usize>,
    /// Copies in `held`.
    held_count: usize,
    /// What the last message was routed to (see [`Targets`]).
    targets: Option<Box<Targets>>,
    /// A message was routed since the last [`Fanout::wake_all`].
    routed: bool,
    /// Where in `held` the next session is expected: routing meets a topic's sessions in
    /// the same order for every message, so this saves a lookup in `held_at` per copy.
    next_held: usize,
    /// The messages of shared copies held back ([`Held::Shared`] points into it).
    run: Vec<Arc<Message>>,
    /// The authorizers' epoch in which every shared copy held back was checked (0 when
    /// they differ: the writers check them again).
    run_epoch: Option<u32>,
    /// The runs made from `run`, by the spans they hold: sessions that got the same
    /// messages share one.
    runs: hashbrown::HashMap<Box<[Held]>, Arc<Run>>,
}

/// Copies held back for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Held {
    /// A copy with a form of its own: its place among the fanout's ([`Fanout::take_one`]).
    One(u32),
    /// QoS 0 copies whose wire form every subscriber shares: of the messages at positions
    /// `.0..​.1` of the fanout's run.
    Shared(u32, u32),
}

/// The most copies held back for one session, and for all: past either, the caller queues
/// them ([`Fanout::hold`] says so). Flow control looks at a queue only when its copies are
/// queued, so this is also how far past the flow-control threshold a publisher gets.
const HOLD_PER_SESSION: usize = 64;
const HOLD_TOTAL: usize = 16 * 1024;

/// Past this many writers or sessions, the lists are given back once done with, so a
/// publisher that once reached many subscribers does not keep the room for life.
const KEEP: usize = 64;

impl Fanout {
    /// A fanout that holds back copies of QoS 0 messages (see the module docs); its owner
    /// queues them with `router::settle` at the end of each run.
    pub(crate) fn batching() -> Self {
        Self {
            batching: true,
            pending: None,
        }
    }

    /// Whether copies of QoS 0 messages may be held back.
    pub(crate) fn is_batching(&self) -> bool {
        self.batching
    }

    #[inline]
    fn pending(&mut self) -> &mut Pending {
        self.pending.get_or_insert_with(Box::default)
    }

    /// Notes that `session`'s queue reached the flow-control threshold.
    pub(crate) fn congest(&mut self, session: &Arc<Session>) {
        self.pending().congested.push(Arc::clone(session));
    }

    /// Whether a queue reached the flow-control threshold since the last `take_congested`.
    pub(crate) fn is_congested(&self) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|p| !p.congested.is_empty())
    }

    /// The sessions whose queue reached the flow-control threshold; hand the list back
    /// with [`Fanout::keep_congested`] to keep its room.
    pub(crate) fn take_congested(&mut self) -> Vec<Arc<Session>> {
        self.pending
            .as_mut()
            .map(|p| std::mem::take(&mut p.congested))
            .unwrap_or_default()
    }

    /// Keeps the room of a list from `take_congested`, emptied, for the next time.
    pub(crate) fn keep_congested(&mut self, mut list: Vec<Arc<Session>>) {
        list.clear();
        if let Some(p) = self.pending.as_mut() {
            p.congested = list;
        }
    }

    /// Holds `delivery` back for `session`. True when what is held has reached its bound
    /// (`per_session` for one session, at most [`HOLD_PER_SESSION`]) and should be queued.
    pub(crate) fn hold(
        &mut self,
        session: &Arc<Session>,
        delivery: Delivery,
        per_session: usize,
    ) -> bool {
        let p = self.pending();
        p.ones.push(Some(delivery));
        let at = (p.ones.len() - 1) as u32;
        p.hold(session, Held::One(at), per_session)
    }

    /// Holds back a QoS 0 copy of `message` for `session` whose wire form every
    /// subscriber shares (no Subscription Identifier, RETAIN or expiry countdown; see
    /// [`super::Run`]), checked by the authorizers in `epoch`. True as for
    /// [`Fanout::hold`].
    pub(crate) fn hold_shared(
        &mut self,
        session: &Arc<Session>,
        message: &Arc<Message>,
        epoch: u32,
        per_session: usize,
    ) -> bool {
        let p = self.pending();
        // Routing takes one message to all of its sessions before the next: only the last
        // message can be this one.
        if !p.run.last().is_some_and(|m| Arc::ptr_eq(m, message)) {
            p.run.push(Arc::clone(message));
        }
        let at = (p.run.len() - 1) as u32;
        p.run_epoch = match p.run_epoch {
            None => Some(epoch),
            Some(e) if e == epoch => Some(e),
            Some(_) => Some(0),
        };
        p.hold(session, Held::Shared(at, at + 1), per_session)
    }

    /// Takes the copy [`Held::One`] points at.
    pub(crate) fn take_one(&mut self, at: u32) -> Option<Delivery> {
        self.pending.as_mut()?.ones.get_mut(at as usize)?.take()
    }

    /// The copy of `spans` as an ordinary delivery when they hold one message: a run of
    /// one (a client publishing now and then, an in-process client) would cost a run, its
    /// list and its entry in `runs` to save nothing.
    pub(crate) fn single(&mut self, spans: &[Held]) -> Option<Delivery> {
        let p = self.pending.as_mut()?;
        let [Held::Shared(from, to)] = *spans else {
            return None;
        };
        if to != from + 1 {
            return None;
        }
        let message = Arc::clone(p.run.get(from as usize)?);
        let mut d = Delivery::new(message, crate::codec::QoS::AtMostOnce, false, Vec::new());
        d.authorized_epoch = p.run_epoch.unwrap_or(0);
        Some(d)
    }

    /// The run of the held spans `spans` (made once for every session that holds the same
    /// ones), as one session's copy.
    pub(crate) fn run_copy(&mut self, spans: &[Held]) -> Option<RunCopy> {
        let p = self.pending.as_mut()?;
        let epoch = p.run_epoch.unwrap_or(0);
        if let Some(run) = p.runs.get(spans) {
            return Some(RunCopy::new(Arc::clone(run), epoch));
        }
        let mut messages = Vec::new();
        for held in spans {
            if let Held::Shared(from, to) = *held {
                messages.extend_from_slice(p.run.get(from as usize..to as usize)?);
            }
        }
        if messages.is_empty() {
            return None;
        }
        let run = Run::new(messages.into_boxed_slice());
        p.runs.insert(spans.into(), Arc::clone(&run));
        Some(RunCopy::new(run, epoch))
    }

    /// Takes the copies held back for `session` (to queue them before one that cannot
    /// wait, so that its copies keep their order).
    pub(crate) fn take_held_for(&mut self, session: &Arc<Session>) -> Vec<Held> {
        let Some(p) = self.pending.as_mut().filter(|p| p.held_count > 0) else {
            return Vec::new();
        };
        match p.held_at.get(&(Arc::as_ptr(session) as usize)) {
            Some(&at) => {
                let (_, list, count) = &mut p.held[at];
                p.held_count -= std::mem::take(count);
                std::mem::take(list)
            }
            None => Vec::new(),
        }
    }

    /// Takes every held copy, per session. Their shared messages stay until
    /// [`Fanout::end_run`].
    pub(crate) fn take_held(&mut self) -> Vec<(Arc<Session>, Vec<Held>)> {
        let Some(p) = self.pending.as_mut() else {
            return Vec::new();
        };
        p.held_count = 0;
        p.next_held = 0;
        if p.held_at.capacity() > KEEP {
            p.held_at = hashbrown::HashMap::new();
        } else {
            p.held_at.clear();
        }
        p.held.drain(..).map(|(s, list, _)| (s, list)).collect()
    }

    /// Lets go of the shared messages and runs, once every held copy was queued.
    pub(crate) fn end_run(&mut self) {
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        if p.held_count > 0 {
            return; // copies still point into the run
        }
        p.run.clear();
        p.ones.clear();
        p.run_epoch = None;
        if p.runs.capacity() > KEEP {
            p.runs = hashbrown::HashMap::new();
        } else {
            p.runs.clear();
        }
    }

    /// Whether copies are held back.
    pub(crate) fn has_held(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| p.held_count > 0)
    }

    /// Takes the remembered targets (see [`Targets`]).
    pub(crate) fn take_targets(&mut self) -> Option<Box<Targets>> {
        self.pending.as_mut().and_then(|p| p.targets.take())
    }

    /// Notes that a message is being routed; true if one was before it in this run. Only
    /// then are its targets worth remembering: a run of one message (a client publishing
    /// now and then, an in-process client) would pay for remembering and never use it.
    pub(crate) fn routed_before(&mut self) -> bool {
        std::mem::replace(&mut self.pending().routed, true)
    }

    /// Remembers `targets` until the end of the run (see [`Targets`]).
    pub(crate) fn keep_targets(&mut self, targets: Box<Targets>) {
        self.pending().targets = Some(targets);
    }

    /// Wakes `signals`' writer when [`Fanout::wake_all`] runs (or this is dropped).
    pub(crate) fn wake_later(&mut self, signals: &Arc<LinkSignals>) {
        let p = self.pending();
        if p.seen.insert(Arc::as_ptr(signals) as usize) {
            p.wakes.push(Arc::clone(signals));
        }
    }

    /// Whether a writer waits to be woken or a copy to be queued.
    pub(crate) fn has_work(&self) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|p| !p.wakes.is_empty() || p.held_count > 0)
    }

    /// Wakes every writer queued for since the last call, and forgets the remembered
    /// targets (the end of a run: a publisher gone quiet keeps no references to sessions).
    pub(crate) fn wake_all(&mut self) {
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        p.targets = None;
        p.routed = false;
        if p.wakes.is_empty() {
            return;
        }
        for signals in p.wakes.drain(..) {
            signals.wake();
        }
        if p.seen.capacity() > KEEP {
            p.seen = hashbrown::HashSet::new();
            p.wakes = Vec::new();
        } else {
            p.seen.clear();
        }
    }
}

impl Pending {
    fn hold(&mut self, session: &Arc<Session>, held: Held, per_session: usize) -> bool {
        // After the last session, the next message starts again with the first.
        let guess = if self.next_held < self.held.len() {
            self.next_held
        } else {
            0
        };
        let at = match self.held.get(guess) {
            Some((s, _, _)) if Arc::ptr_eq(s, session) => guess,
            _ => {
                let key = Arc::as_ptr(session) as usize;
                *self.held_at.entry(key).or_insert_with(|| {
                    self.held.push((Arc::clone(session), Vec::new(), 0));
                    self.held.len() - 1
                })
            }
        };
        self.next_held = at + 1;
        let (_, list, count) = &mut self.held[at];
        // The message after this session's last shared one: its span grows.
        match (list.last_mut(), held) {
            (Some(Held::Shared(_, to)), Held::Shared(from, next)) if *to == from => *to = next,
            _ => list.push(held),
        }
        *count += 1;
        let full = *count >= per_session.clamp(1, HOLD_PER_SESSION);
        self.held_count += 1;
        full || self.held_count >= HOLD_TOTAL
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        // Held copies are queued by the owner before it ends (`router::settle`); one left
        // (a task dropped mid-run at shutdown) is a QoS 0 copy lost, which at most once
        // allows.
        self.wake_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_writer_is_woken_once_and_only_when_asked() {
        let a = LinkSignals::new();
        let b = LinkSignals::new();
        let mut fanout = Fanout::default();
        for _ in 0..3 {
            fanout.wake_later(&a);
            fanout.wake_later(&b);
        }
        assert_eq!(fanout.pending().wakes.len(), 2, "one entry per writer");
        let pending = |s: &LinkSignals| {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            s.woken(&mut cx).is_ready()
        };
        assert!(!pending(&a), "not woken before wake_all");
        fanout.wake_all();
        assert!(pending(&a) && pending(&b));
        assert!(!fanout.has_work());
    }

    #[tokio::test]
    async fn dropping_it_wakes_what_was_left() {
        let a = LinkSignals::new();
        let mut fanout = Fanout::default();
        fanout.wake_later(&a);
        drop(fanout);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(a.woken(&mut cx).is_ready());
    }
}
