//! The router: matches each PUBLISH once against the subscription trie, then hands one
//! shared message to every matching session's queue.
//!
//! The trie lock is held only while collecting targets; fan-out happens after it is
//! released, and each session's own lock is held only to push one queue entry. A session
//! with several matching ordinary subscriptions gets one copy at the highest granted QoS,
//! carrying every matching Subscription Identifier (MQTT-3.3.5-1 for 3.1.1; MQTT-3.3.4-2 to
//! -4 for v5).
//!
//! Shared subscriptions (`$share/{group}/{filter}`, v5 §4.8.2) sit in the same trie under the
//! inner filter, one entry per group. Each message goes to one member per matching group,
//! chosen round-robin among members whose client is connected; when none is, it is queued
//! for a member with a persistent session, and dropped if there is none. A shared delivery
//! is a separate copy from the member's ordinary subscriptions.

mod retained;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytestring::ByteString;
use parking_lot::RwLock;

pub(crate) use retained::RetainChange;
use retained::RetainedStore;

use crate::authz::Policy;
use crate::codec::QoS;
use crate::config::Limits;
use crate::gate::Gate;
use crate::message::{Delivery, Message};
use crate::metrics::Metrics;
use crate::plugin::DropReason;
use crate::session::{
    EnqueueError, Fanout, Held, QueueJournal, Queued, RunCopy, Session, SessionState, SubEntry,
    SubscriptionRecord, Targets,
};
use crate::topic::{SubscriptionTrie, TopicFilter, TopicName};

/// The members of one shared-subscription group on one filter.
#[derive(Debug, Default)]
pub(crate) struct SharedGroup {
    members: Vec<SubEntry>,
    next: AtomicUsize,
}

impl SharedGroup {
    /// The member to deliver the next message to: round-robin among connected members,
    /// else the first with a persistent session. Only members that `may_receive` the
    /// message are candidates, so a member the authorizers refuse does not swallow a message
    /// the group could have delivered.
    fn pick(&self, may_receive: impl Fn(&SubEntry) -> bool) -> Option<&SubEntry> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut fallback = None;
        for i in 0..n {
            let member = &self.members[(start + i) % n];
            let (connected, persistent) = {
                let st = member.session.state.lock();
                if st.ended {
                    continue;
                }
                (st.link.is_some(), st.expiry_interval > 0)
            };
            if !connected && (fallback.is_some() || !persistent) {
                continue;
            }
            if !may_receive(member) {
                continue;
            }
            if connected {
                return Some(member);
            }
            fallback = Some(member);
        }
        fallback
    }
}

/// Trie keys: a session's own subscription, or a shared group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum SubKey {
    Session(u64),
    Group(ByteString),
}

/// Trie values.
#[derive(Debug)]
pub(crate) enum SubValue {
    Session(SubEntry),
    Group(SharedGroup),
}

/// What routing one message did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RouteOutcome {
    /// Sessions that got a copy.
    pub(crate) delivered: usize,
    /// Sessions whose copy was dropped for want of room: a full queue, or the store over
    /// its budget. They exist, so the publisher is not told "no matching subscribers".
    pub(crate) dropped_full: usize,
    /// The storage writes of the copies queued for persistent sessions (Acked mode): what
    /// the publisher's acknowledgement waits for besides its own writes.
    pub(crate) gate: Gate,
}

/// What routing needs from the rest of the broker, borrowed for one message.
#[derive(Clone, Copy)]
pub(crate) struct Services<'a> {
    /// The receive check, the authorizers' epoch and the drop hooks.
    pub(crate) policy: &'a Policy,
    pub(crate) metrics: &'a Metrics,
    pub(crate) limits: &'a Limits,
    /// Where copies for persistent sessions are recorded, when there is storage.
    pub(crate) journal: Option<&'a dyn QueueJournal>,
}

/// Subscriptions and retained messages of one broker.
#[derive(Debug, Default)]
pub(crate) struct Router {
    subs: RwLock<SubscriptionTrie<SubKey, SubValue>>,
    retained: RwLock<RetainedStore>,
    /// Changes with every subscribe and unsubscribe: a publisher's remembered targets
    /// ([`Targets`]) are used only while it has not changed.
    generation: AtomicU64,
}

impl Router {
    /// Adds or replaces `session`'s subscription to `filter` (ordinary or `$share/...`).
    /// True if it is new.
    pub(crate) fn subscribe(
        &self,
        session: &Arc<Session>,
        filter: &TopicFilter,
        record: SubscriptionRecord,
    ) -> bool {
        let entry = SubEntry {
            session: Arc::clone(session),
            record,
        };
        let mut subs = self.subs.write();
        self.generation.fetch_add(1, Ordering::Release);
        match filter.shared() {
            Ok(Some((group, inner))) => {
                let value = subs.get_or_insert_with(&inner, SubKey::Group(group), || {
                    SubValue::Group(SharedGroup::default())
                });
                let SubValue::Group(g) = value else {
                    return false;
                };
                match g.members.iter_mut().find(|m| m.session.uid == session.uid) {
                    Some(existing) => {
                        *existing = entry;
                        false
                    }
                    None => {
                        g.members.push(entry);
                        true
                    }
                }
            }
            _ => subs
                .insert(
                    filter,
                    SubKey::Session(session.uid),
                    SubValue::Session(entry),
                )
                .is_none(),
        }
    }

    /// Removes `session`'s subscription to `filter`. True if there was one.
    pub(crate) fn unsubscribe(&self, session: &Session, filter: &TopicFilter) -> bool {
        let mut subs = self.subs.write();
        self.generation.fetch_add(1, Ordering::Release);
        match filter.shared() {
            Ok(Some((group, inner))) => {
                let key = SubKey::Group(group);
                let Some(SubValue::Group(g)) = subs.get_mut(&inner, &key) else {
                    return false;
                };
                let before = g.members.len();
                g.members.retain(|m| m.session.uid != session.uid);
                let removed = g.members.len() < before;
                if g.members.is_empty() {
                    subs.remove(&inner, &key);
                }
                removed
            }
            _ => subs.remove(filter, &SubKey::Session(session.uid)).is_some(),
        }
    }

    /// Stores or clears a retained message.
    pub(crate) fn retain(&self, message: Arc<Message>, limits: &Limits) -> RetainChange {
        self.retained
            .write()
            .apply(message, limits.max_retained, limits.max_retained_bytes)
    }

    /// Number of retained topics.
    pub(crate) fn retained_len(&self) -> usize {
        self.retained.read().len()
    }

    /// Bytes the retained messages hold.
    pub(crate) fn retained_bytes(&self) -> usize {
        self.retained.read().bytes()
    }

    /// The retained messages matching `filter` that have not expired.
    pub(crate) fn retained_for(&self, filter: &TopicFilter) -> Vec<Arc<Message>> {
        let mut out = Vec::new();
        self.retained.read().matches(filter, &mut out);
        let now = tokio::time::Instant::now();
        out.retain(|m| !m.is_expired(now));
        out
    }

    /// One page of the retained messages matching `filter` after the topic `after`, in
    /// topic order (see `RetainedStore::page`), expired ones left out; with the cursor of
    /// the next page if there may be one.
    pub(crate) fn retained_page(
        &self,
        filter: &TopicFilter,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<Arc<Message>>, Option<TopicName>) {
        let mut page = self.retained.read().page(filter, after, limit.max(1));
        let next = (page.len() >= limit.max(1))
            .then(|| page.last().map(|m| m.topic.clone()))
            .flatten();
        let now = tokio::time::Instant::now();
        page.retain(|m| !m.is_expired(now));
        (page, next)
    }

    /// Delivers `message` to every matching session; returns how many copies were queued
    /// and how many were dropped for want of room. The writers to wake, and connected
    /// sessions whose queue reached the flow-control threshold, are added to `fanout`.
    pub(crate) fn route(
        &self,
        message: &Arc<Message>,
        services: Services<'_>,
        fanout: &mut Fanout,
    ) -> RouteOutcome {
        // Read before any receive check: if the authorizers change meanwhile, the copies
        // queued now are checked again when sent.
        let epoch = services.policy.authz_epoch();
        // Read before the trie: a change after it makes what is remembered below stale.
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(targets) = fanout.take_targets() {
            if targets.fits(message, generation) {
                let outcome = deliver_all(message, &targets.entries, services, fanout, epoch);
                fanout.keep_targets(targets);
                return outcome;
            }
        }
        // On the stack up to a few targets: no allocation per PUBLISH in the common case.
        let mut targets: smallvec::SmallVec<[SubEntry; 8]> = smallvec::SmallVec::new();
        let mut shared_targets: smallvec::SmallVec<[SubEntry; 2]> = smallvec::SmallVec::new();
        let mut groups = false;
        self.subs
            .read()
            .for_each_match(&message.topic, |_, value| match value {
                SubValue::Session(entry) => {
                    // No Local (MQTT-3.8.3-3): not back to the publishing client.
                    let own = entry.record.options.no_local
                        && message.publisher.as_ref() == Some(&entry.session.client_id);
                    if !own {
                        targets.push(entry.clone());
                    }
                }
                SubValue::Group(group) => {
                    groups = true;
                    let allowed = |member: &SubEntry| {
                        let qos = message.qos.min(member.record.options.qos);
                        may_receive(services, &member.session, message, qos)
                    };
                    if let Some(member) = group.pick(allowed) {
                        shared_targets.push(member.clone());
                    }
                }
            });
        if targets.len() > 1 {
            targets.sort_by_key(|t| Arc::as_ptr(&t.session));
        }
        let mut outcome = deliver_all(message, &targets, services, fanout, epoch);
        for member in &shared_targets {
            // Picked among the members that may receive it.
            deliver(
                message,
                std::slice::from_ref(member),
                services,
                fanout,
                true,
                epoch,
            )
            .count(&mut outcome);
        }
        // A publisher's next messages on this topic (the rest of its run, mostly) go to the
        // same sessions until a subscription changes: remembered, unless a shared group
        // (which picks a member per message) matched.
        if fanout.is_batching() && !groups && fanout.routed_before() {
            fanout.keep_targets(Box::new(Targets::new(
                message,
                generation,
                targets.into_vec(),
            )));
        }
        outcome
    }
}

/// Delivers `message` to each session of `targets` (sorted by session, so that each
/// session's subscriptions are next to each other).
fn deliver_all(
    message: &Arc<Message>,
    targets: &[SubEntry],
    services: Services<'_>,
    fanout: &mut Fanout,
    epoch: u32,
) -> RouteOutcome {
    let mut outcome = RouteOutcome::default();
    let mut rest = targets;
    while let Some(first) = rest.first() {
        let n = rest
            .iter()
            .take_while(|t| Arc::ptr_eq(&t.session, &first.session))
            .count();
        let (group, tail) = rest.split_at(n);
        rest = tail;
        deliver(message, group, services, fanout, false, epoch).count(&mut outcome);
    }
    outcome
}

/// What became of one session's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyOutcome {
    /// Queued; the storage write it waits for (0: none).
    Queued(u64),
    /// Dropped for want of room (queue full, store over budget).
    NoRoom,
    /// Not for this session (refused by the receive check, offline QoS 0, session ended).
    Skipped,
}

impl CopyOutcome {
    #[inline]
    fn count(self, outcome: &mut RouteOutcome) {
        match self {
            CopyOutcome::Queued(gate) => {
                outcome.delivered += 1;
                outcome.gate = outcome.gate.join(Gate::seq(gate));
            }
            CopyOutcome::NoRoom => outcome.dropped_full += 1,
            CopyOutcome::Skipped => {}
        }
    }
}

/// The receive check: may the client of `session` receive `message` at `qos`? Always with
/// no authorizer registered. With authorizers, a session whose client is unknown (restored
/// from a record without an owner) receives nothing: fail closed, counted.
#[inline]
fn may_receive(services: Services<'_>, session: &Session, message: &Message, qos: QoS) -> bool {
    if services.policy.open_access() {
        return true;
    }
    let client = session.state.lock().client.clone();
    let Some(client) = client else {
        Metrics::inc(&services.metrics.messages_denied_no_context);
        return false;
    };
    services
        .policy
        .authorize_receive(&client, &message.topic, qos)
}

/// Queues one copy of `message` for the session of `group` (all entries share a session),
/// if its client may receive it (`checked`: the caller made sure already). `epoch`: the
/// authorizers' epoch read before any check.
fn deliver(
    message: &Arc<Message>,
    group: &[SubEntry],
    services: Services<'_>,
    fanout: &mut Fanout,
    checked: bool,
    epoch: u32,
) -> CopyOutcome {
    let Some(first) = group.first() else {
        return CopyOutcome::Skipped;
    };
    let metrics = services.metrics;
    let dropped = |reason: DropReason| {
        services.policy.hooks.each(metrics, |h| {
            h.message_dropped(&first.session.client_id, message, reason)
        });
    };
    let granted = group
        .iter()
        .map(|t| t.record.options.qos)
        .max()
        .unwrap_or(QoS::AtMostOnce);
    let qos = message.qos.min(granted);
    // The receive check: a wildcard subscription gets only what its client may read.
    if !checked && !may_receive(services, &first.session, message, qos) {
        Metrics::inc(&metrics.messages_denied);
        dropped(DropReason::NotAuthorized);
        return CopyOutcome::Skipped;
    }
    // MQTT-3.3.1-9: 0 for established subscriptions, unless Retain As Published.
    let retain = message.retain && group.iter().any(|t| t.record.options.retain_as_published);
    let session = &first.session;
    let delivery = || {
        let mut d = Delivery::new(
            Arc::clone(message),
            qos,
            retain,
            group.iter().filter_map(|t| t.record.id).collect(),
        );
        d.authorized_epoch = epoch;
        d
    };
    if fanout.is_batching() && message.qos == QoS::AtMostOnce {
        // No acknowledgement depends on this copy: held back, and queued with the others
        // for its session at the end of the run (see `session::Fanout`).
        let per_session = match services.limits.flow_control_queue {
            0 => usize::MAX,
            threshold => threshold / 4,
        };
        let full = if !retain && message.is_plain() && group.iter().all(|t| t.record.id.is_none()) {
            // The same wire form as every other subscriber's: shared (`session::Run`).
            fanout.hold_shared(session, message, epoch, per_session)
        } else {
            fanout.hold(session, delivery(), per_session)
        };
        if full {
            queue_held(fanout, services);
        }
        return CopyOutcome::Queued(0);
    }
    let delivery = delivery();
    if fanout.is_batching() {
        // Copies held back for this session go first: its copies keep their order.
        let earlier = fanout.take_held_for(session);
        if !earlier.is_empty() {
            queue_for(session, earlier, services, fanout);
        }
    }
    match session.enqueue(delivery, services.limits, services.journal, fanout) {
        Ok((Queued::Ok, gate)) => CopyOutcome::Queued(gate),
        Ok((Queued::Congested, gate)) => {
            fanout.congest(session);
            CopyOutcome::Queued(gate)
        }
        Err(e) => {
            let reason = refused(e, services, session, Some(message));
            if let Some(reason) = reason {
                dropped(reason);
            }
            match e {
                EnqueueError::QueueFull | EnqueueError::StorageFull => CopyOutcome::NoRoom,
                EnqueueError::Offline | EnqueueError::Ended => CopyOutcome::Skipped,
            }
        }
    }
}

/// Counts a copy the session's queue refused; the reason to tell the hooks, if any.
fn refused(
    e: EnqueueError,
    services: Services<'_>,
    session: &Session,
    message: Option<&Message>,
) -> Option<DropReason> {
    let metrics = services.metrics;
    match e {
        EnqueueError::QueueFull => {
            Metrics::inc(&metrics.messages_dropped);
            let topic = message.map(|m| m.topic.as_str());
            tracing::debug!(client_id = %session.client_id, ?topic, "queue full: message dropped");
            Some(DropReason::QueueFull)
        }
        EnqueueError::Offline => {
            Metrics::inc(&metrics.messages_dropped_offline);
            Some(DropReason::Offline)
        }
        EnqueueError::StorageFull => {
            Metrics::inc(&metrics.messages_dropped_storage_full);
            Some(DropReason::StorageFull)
        }
        EnqueueError::Ended => None,
    }
}

/// Queues the copies `fanout` holds back, one lock per session, and wakes their writers.
pub(crate) fn settle(fanout: &mut Fanout, services: Services<'_>) {
    if fanout.has_held() {
        queue_held(fanout, services);
    }
    fanout.wake_all();
}

/// Queues the copies `fanout` holds back, one lock per session; their writers are added to
/// the ones it wakes.
fn queue_held(fanout: &mut Fanout, services: Services<'_>) {
    for (session, held) in fanout.take_held() {
        if !held.is_empty() {
            queue_for(&session, held, services, fanout);
        }
    }
    fanout.end_run();
}

/// Queues the copies `held` back (in order) for `session` under one lock, shared ones as
/// runs; counts and reports the ones its queue refuses, as `deliver` does for one.
fn queue_for(session: &Arc<Session>, held: Vec<Held>, services: Services<'_>, fanout: &mut Fanout) {
    // The runs first (made or found outside the session's lock), in order among the rest.
    let mut items: smallvec::SmallVec<[Item; 4]> = smallvec::SmallVec::new();
    let mut spans: smallvec::SmallVec<[Held; 4]> = smallvec::SmallVec::new();
    for h in held {
        match h {
            Held::Shared(..) => spans.push(h),
            Held::One(at) => {
                if let Some(item) = run_of(fanout, &mut spans) {
                    items.push(item);
                }
                if let Some(d) = fanout.take_one(at) {
                    items.push(Item::One(d));
                }
            }
        }
    }
    if let Some(item) = run_of(fanout, &mut spans) {
        items.push(item);
    }
    let mut refusals: Vec<(Arc<Message>, DropReason)> = Vec::new();
    let mut congested = false;
    {
        let mut st = session.state.lock();
        for item in items {
            let copy = match item {
                Item::One(d) => {
                    push_one(session, &mut st, d, services, &mut refusals, &mut congested);
                    continue;
                }
                Item::Run(copy) => copy,
            };
            match st.push_run(copy, services.limits) {
                Ok(Queued::Ok) => {}
                Ok(Queued::Congested) => congested = true,
                // Not all of it fits, or the client went: one by one, as any copy.
                Err(copy) => {
                    for d in copy.deliveries() {
                        push_one(session, &mut st, d, services, &mut refusals, &mut congested);
                    }
                }
            }
        }
        if let Some(link) = &st.link {
            fanout.wake_later(&link.signals);
        }
    }
    if congested {
        fanout.congest(session);
    }
    for (message, reason) in refusals {
        services.policy.hooks.each(services.metrics, |h| {
            h.message_dropped(&session.client_id, &message, reason)
        });
    }
}

/// What `queue_for` queues: a copy of its own, or a session's copy of a shared run.
enum Item {
    One(Delivery),
    Run(RunCopy),
}

/// The shared spans gathered so far (emptied) as a run, or as one delivery if they hold
/// one message.
fn run_of(fanout: &mut Fanout, spans: &mut smallvec::SmallVec<[Held; 4]>) -> Option<Item> {
    if spans.is_empty() {
        return None;
    }
    let item = match fanout.single(spans) {
        Some(d) => Some(Item::One(d)),
        None => fanout.run_copy(spans).map(Item::Run),
    };
    spans.clear();
    item
}

/// Queues one copy for `session`, whose state `st` is; a refusal is counted, and kept in
/// `refusals` for the hooks (told once the lock is released).
fn push_one(
    session: &Session,
    st: &mut SessionState,
    delivery: Delivery,
    services: Services<'_>,
    refusals: &mut Vec<(Arc<Message>, DropReason)>,
    congested: &mut bool,
) {
    // Kept for the hooks only: another reference per copy is an atomic add on a count the
    // subscribers' writers are changing too.
    let hooks = !services.policy.hooks.is_empty();
    let message = hooks.then(|| Arc::clone(&delivery.message));
    match st.push(
        &session.client_id,
        delivery,
        services.limits,
        services.journal,
    ) {
        Ok((Queued::Ok, _)) => {}
        Ok((Queued::Congested, _)) => *congested = true,
        Err(e) => {
            let reason = refused(e, services, session, message.as_deref());
            if let (Some(message), Some(reason)) = (message, reason) {
                refusals.push((message, reason));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::SubscriptionOptions;
    use bytes::Bytes;

    fn message(topic: &str, publisher: &str) -> Message {
        let mut m = Message::new(
            TopicName::new(topic).expect("valid"),
            Bytes::from_static(b"x"),
            QoS::AtMostOnce,
            false,
        );
        m.publisher = Some(publisher.into());
        m
    }

    /// A publisher's remembered targets stand for the trie only while no subscription has
    /// changed since they were read: every subscribe and unsubscribe (a new one, a
    /// replaced one, a shared one) moves the generation they are checked against, and they
    /// fit only the same topic from the same publisher (No Local, MQTT-3.8.3-3, depends on
    /// who publishes).
    #[test]
    fn remembered_targets_go_stale_with_any_subscription_change() {
        let router = Router::default();
        let session = Session::new(1, "s".into(), 0);
        let record = SubscriptionRecord {
            options: SubscriptionOptions::new(QoS::AtMostOnce),
            id: None,
        };
        let t = message("a/b", "p");
        let generation = || router.generation.load(Ordering::Acquire);
        let mut seen = vec![generation()];
        let changes: [&dyn Fn(); 5] = [
            &|| {
                router.subscribe(&session, &TopicFilter::new("a/#").expect("valid"), record);
            },
            &|| {
                router.subscribe(&session, &TopicFilter::new("a/#").expect("valid"), record);
            },
            &|| {
                let shared = TopicFilter::new("$share/g/a/b").expect("valid");
                router.subscribe(&session, &shared, record);
            },
            &|| {
                router.unsubscribe(&session, &TopicFilter::new("a/#").expect("valid"));
            },
            &|| {
                router.unsubscribe(&session, &TopicFilter::new("x").expect("valid"));
            },
        ];
        for change in changes {
            let remembered = Targets::new(&t, generation(), Vec::new());
            assert!(remembered.fits(&t, generation()));
            change();
            assert!(!seen.contains(&generation()), "a new generation");
            seen.push(generation());
            assert!(!remembered.fits(&t, generation()), "stale after a change");
        }
        let remembered = Targets::new(&t, generation(), Vec::new());
        assert!(!remembered.fits(&message("a/c", "p"), generation()));
        assert!(!remembered.fits(&message("a/b", "q"), generation()));
        assert!(remembered.fits(&message("a/b", "p"), generation()));
    }
}
