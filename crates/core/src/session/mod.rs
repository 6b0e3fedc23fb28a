//! Sessions: the state that outlives a connection (subscriptions, queued and inflight
//! messages, inbound QoS 2 ids), and the link to the connection currently attached.
//!
//! # Ownership and locking
//! A [`Session`] is shared (`Arc`) by the broker's session table, the subscription trie
//! entries that point at it, and the tasks of its connection. Its mutable state sits behind
//! one `parking_lot` mutex, held only for short sections and never across an `.await`:
//! publishers push into its queue, the connection's reader applies acknowledgements, and the
//! connection's writer drains queue and outbox into its write buffer.
//!
//! # Queue and overflow policy
//! The queue is bounded by message count and bytes ([`Limits`]). When a message would exceed
//! either bound it is dropped (the newest message is the one dropped; queued messages are
//! never evicted), the drop is counted, and a `tracing` event is emitted.
//!
//! # Flow control
//! Before the queue fills, publishers are slowed instead: [`Session::enqueue`] reports a
//! connected session whose queue reached `Limits::flow_control_queue`, and the publishing
//! connection waits (bounded by `Limits::flow_control_pause`) for the session's writer to
//! bring it down to half ([`LinkSignals::drained`]). A session that does not drain in time
//! is marked slow and pauses nobody until it has drained, so a stuck subscriber costs each
//! publisher one pause, not a stall.

mod deadlines;
mod fanout;
mod ids;
mod inflight;
mod outgoing;
mod queue;

use std::collections::VecDeque;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytestring::ByteString;
// hashbrown's default hasher is 8 bytes where std's is 16: a map in every session.
use hashbrown::HashMap;
use parking_lot::Mutex;
use tokio::sync::Notify;

pub(crate) use deadlines::{TimerKind, TimerSlots};
pub(crate) use fanout::{Fanout, Held, Targets};
pub(crate) use ids::IdSet;
pub(crate) use inflight::{Entry, Inflight, Stage};
pub(crate) use outgoing::{AckKind, Outgoing};
pub(crate) use queue::{Queue, Run, RunCopy};

use crate::codec::{QoS, ReasonCode, SubscriptionOptions};
use crate::config::Limits;
use crate::gate::Gate;
use crate::message::Delivery;
use crate::topic::TopicFilter;

/// A subscription as the session records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubscriptionRecord {
    pub(crate) options: SubscriptionOptions,
    pub(crate) id: Option<NonZeroU32>,
}

/// One subscription of one session, as the subscription trie holds it.
#[derive(Debug, Clone)]
pub(crate) struct SubEntry {
    pub(crate) session: Arc<Session>,
    pub(crate) record: SubscriptionRecord,
}

/// How a closing connection says goodbye.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The broker is shutting down: v5 clients get DISCONNECT 0x8B.
    Shutdown,
    /// Close without a DISCONNECT (the client disconnected, or the socket failed).
    Silent,
    /// v5 clients get DISCONNECT with this code first.
    Disconnect(ReasonCode),
}

/// Signals between a connection's reader, its writer, and the rest of the broker.
///
/// Work for the writer and closing are flags, not futures each side keeps: [`LinkSignals::wake`]
/// and [`LinkSignals::close`] set theirs and wake the connection's one task (its reader and
/// writer run in it side by side and leave the same waker, through [`LinkSignals::closing`]
/// and [`LinkSignals::woken`]); `close` also wakes the publishers waiting on `drained`. An
/// idle connection so holds no wait of its own (issue 19: the reader's and the writer's
/// close waits took 72 bytes of its task each, a cancellation token another ~100, and the
/// writer's `Notify` wait ~90 more).
#[derive(Debug)]
pub(crate) struct LinkSignals {
    /// The connection's task: woken when the writer has work or the connection must close.
    task: atomic_waker::AtomicWaker,
    /// Set when something was queued for the writer; cleared when it looks.
    work: AtomicBool,
    /// Set once, when the connection must close.
    closed: AtomicBool,
    /// Wakes publishers paused by flow control: the queue is down to half the threshold,
    /// or the connection is closing.
    pub(crate) drained: Notify,
    /// This connection's reader is paused by flow control; nobody waits for its session
    /// then, so no two readers can wait for each other.
    pub(crate) paused: AtomicBool,
    reason: Mutex<Option<CloseReason>>,
}

impl LinkSignals {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            task: atomic_waker::AtomicWaker::new(),
            work: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            drained: Notify::new(),
            paused: AtomicBool::new(false),
            reason: Mutex::new(None),
        })
    }

    /// Asks the connection to close. The first reason given wins.
    pub(crate) fn close(&self, reason: CloseReason) {
        self.reason.lock().get_or_insert(reason);
        if !self.closed.swap(true, Ordering::SeqCst) {
            self.task.wake();
            self.drained.notify_waiters();
        }
    }

    /// Tells the writer that something was queued for it. Only the first call after the
    /// writer last looked wakes the task: the rest find the flag set.
    pub(crate) fn wake(&self) {
        if !self.work.swap(true, Ordering::AcqRel) {
            self.task.wake();
        }
    }

    /// For the writer: ready once something was queued since it last looked (clearing the
    /// flag) or the connection is closing; until then, leaves the task's waker.
    pub(crate) fn woken(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.ready_or_register(cx, || {
            self.work.swap(false, Ordering::AcqRel) || self.is_closed()
        })
    }

    /// True once [`LinkSignals::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Ready once the connection is closing; until then, leaves the polling task's waker to
    /// be woken by [`LinkSignals::close`]. For the connection's own task (its reader and
    /// writer share it, so one waker is kept); another task waits on `drained`.
    pub(crate) fn closing(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.ready_or_register(cx, || self.is_closed())
    }

    /// Ready if `ready` says so; else leaves the task's waker and asks again, since `wake`
    /// or `close` may have run while the waker was being left and found none.
    fn ready_or_register(
        &self,
        cx: &mut std::task::Context<'_>,
        ready: impl Fn() -> bool,
    ) -> std::task::Poll<()> {
        if ready() {
            return std::task::Poll::Ready(());
        }
        self.task.register(cx.waker());
        if ready() {
            return std::task::Poll::Ready(());
        }
        std::task::Poll::Pending
    }

    /// Why the connection is closing; [`CloseReason::Shutdown`] when the broker's shutdown
    /// cancelled it without a reason of its own.
    pub(crate) fn reason(&self) -> CloseReason {
        self.reason.lock().unwrap_or(CloseReason::Shutdown)
    }
}

/// The connection currently attached to a session.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) id: u64,
    pub(crate) signals: Arc<LinkSignals>,
    /// Control packets (acks, CONNACK, SUBACK, ...) for the writer, sent before messages.
    pub(crate) outbox: VecDeque<Outgoing>,
    /// Control packets waiting for storage to make their changes durable (with the writes
    /// to wait for), and every control packet queued after them, in order. Made when the
    /// first packet must wait (with storage only; most links never have one).
    #[allow(clippy::box_collection)] // on purpose: an empty VecDeque takes 32 bytes
    pub(crate) pending: Option<Box<VecDeque<(Gate, Outgoing)>>>,
    /// Outbound window: the smaller of our `max_inflight` and the client's Receive Maximum
    /// (both 16-bit; 16 bits here keep the session in its size class).
    pub(crate) window: u16,
    /// Re-send the inflight messages before anything else (set when a session resumes).
    pub(crate) resend: bool,
    /// When the connection attached, in milliseconds since the epoch.
    pub(crate) since_ms: u64,
    /// The Keep Alive in force, in seconds (0: none).
    pub(crate) keep_alive: u16,
}

impl Link {
    /// No control packet waits for storage (so one queued now may go straight out).
    pub(crate) fn nothing_gated(&self) -> bool {
        self.pending.as_ref().is_none_or(|p| p.is_empty())
    }
}

/// Mutable state of a session.
#[derive(Debug, Default)]
pub(crate) struct SessionState {
    pub(crate) subscriptions: HashMap<TopicFilter, SubscriptionRecord>,
    pub(crate) queue: Queue,
    pub(crate) queued_bytes: usize,
    pub(crate) inflight: Inflight,
    /// Packet ids of inbound QoS 2 PUBLISHes awaiting PUBREL (MQTT-4.3.3-2 method B: the
    /// message is routed on PUBLISH; a re-sent PUBLISH with the same id is not routed again).
    pub(crate) inbound_qos2: IdSet,
    pub(crate) link: Option<Link>,
    /// True once the session is discarded; queued deliveries to it are ignored.
    pub(crate) ended: bool,
    /// Session Expiry Interval in seconds: 0 ends the session with its connection (3.1.1
    /// Clean Session 1); `u32::MAX` never expires (3.1.1 Clean Session 0).
    pub(crate) expiry_interval: u32,
    /// A will waiting out its Will Delay Interval while no connection is attached, with
    /// when it is due (boxed together: most sessions have none).
    pub(crate) pending_will: Option<Box<PendingWill>>,
    /// The link detached last; timers armed at that detach check it is still current.
    pub(crate) detached_link: u64,
    /// The client as plugins see it, from its latest connection.
    pub(crate) client: Option<Arc<crate::plugin::ClientInfo>>,
    /// Last sequence number used in the stored queue.
    pub(crate) next_storage_seq: u64,
    /// Packet ids reserved by queued messages of a persistent session.
    pub(crate) reserved_ids: IdSet,
    /// When the client went away (ms since the epoch), for storage.
    pub(crate) disconnected_at_ms: Option<NonZeroU64>,
    /// A publisher waits for this queue to drain (flow control).
    pub(crate) flow_waiters: bool,
    /// A flow-control wait for this session timed out; it pauses nobody until drained.
    pub(crate) slow: bool,
    /// Retained messages released by new subscriptions, not queued yet.
    /// Boxed and allocated only while something waits: most sessions hold one pointer (an
    /// empty `VecDeque` would take 32 bytes in every session).
    #[allow(clippy::box_collection)]
    pub(crate) retained_backlog: Option<Box<VecDeque<RetainedBatch>>>,
    /// Messages in `retained_backlog`.
    pub(crate) retained_waiting: u32,
    /// The deadlines this session has armed (session expiry, will delay).
    pub(crate) timers: TimerSlots,
    /// What the subscriptions hold, as [`subscription_cost`] counts it
    /// (`Limits::max_subscription_bytes_per_client`).
    pub(crate) subscription_bytes: u32,
    /// Bytes queued across all of the broker's sessions (`Limits::max_total_queued_bytes`),
    /// shared by every session; a session of its own until the broker sets it.
    pub(crate) total_queued: Arc<std::sync::atomic::AtomicUsize>,
    /// What this session has counted in `total_queued`: its queued bytes rounded up to
    /// [`TOTAL_GRANULE`], adjusted only when they leave that band, so the shared counter is
    /// touched once per kilobyte or so of queue movement rather than per message.
    total_reserved: usize,
}

/// A will waiting out its Will Delay Interval.
#[derive(Debug)]
pub(crate) struct PendingWill {
    pub(crate) will: crate::codec::LastWill,
    /// When it is due (ms since the epoch), for storage.
    pub(crate) at_ms: u64,
}

/// Where the queued deliveries of persistent sessions are recorded: the broker's journal,
/// when it has storage (implemented in `persist`, which knows the records).
pub(crate) trait QueueJournal {
    /// True while storage takes no more records (over its size budget).
    fn full(&self) -> bool;
    /// Records `delivery`, queued for `client_id` at position `seq`; returns the storage
    /// sequence number its sending waits for (0: none, see [`Delivery::gate`]).
    fn queued(&self, client_id: &str, seq: u64, delivery: &Delivery) -> u64;
}

/// Step in which sessions count their queues in the broker-wide total.
const TOTAL_GRANULE: usize = 1024;

fn granules(bytes: usize) -> usize {
    bytes.div_ceil(TOTAL_GRANULE) * TOTAL_GRANULE
}

/// How a flow-control wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// No wait was needed (disconnected, slow, drained, or its own reader paused).
    NotNeeded,
    /// The queue drained, or the session's connection closed.
    Drained,
    /// The deadline passed first; the session is now marked slow.
    TimedOut,
}

/// A queued delivery, and whether its session asks publishers to pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queued {
    /// Queued; the queue is below the flow-control threshold.
    Ok,
    /// Queued; the session is connected and its queue is at or over the threshold.
    Congested,
}

/// Why a delivery was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnqueueError {
    /// The queue's message or byte bound was reached.
    QueueFull,
    /// QoS 0 for an offline session, not queued by policy.
    Offline,
    /// The session was discarded.
    Ended,
    /// The store is over its size budget.
    StorageFull,
}

/// The retained messages one subscription released, waiting for the writer to have room
/// (so a `#` subscription to 50,000 retained topics gets all of them, at the connection's
/// pace, instead of a queue's worth). The messages are shared pointers into the retained
/// store (8 bytes each), taken when the subscription was made.
#[derive(Debug)]
pub(crate) struct RetainedBatch {
    pub(crate) messages: VecDeque<Arc<crate::message::Message>>,
    /// The subscription's granted QoS.
    pub(crate) qos: QoS,
    pub(crate) subscription_id: Option<NonZeroU32>,
}

/// A session, shared by the broker and its connection.
#[derive(Debug)]
pub(crate) struct Session {
    /// Unique for the broker's lifetime; keys this session's trie entries, so a newer session
    /// with the same client identifier never collides with an older one.
    pub(crate) uid: u64,
    pub(crate) client_id: ByteString,
    pub(crate) state: Mutex<SessionState>,
}

impl Session {
    pub(crate) fn new(uid: u64, client_id: ByteString, expiry_interval: u32) -> Arc<Self> {
        Arc::new(Self {
            uid,
            client_id,
            state: Mutex::new(SessionState {
                expiry_interval,
                ..SessionState::default()
            }),
        })
    }

    /// Queues `delivery`; the attached writer is woken through `fanout`. With a `journal`,
    /// a QoS 1/2 delivery to a persistent session is also recorded; the returned number is
    /// the storage write it waits for (0: none).
    pub(crate) fn enqueue(
        &self,
        delivery: Delivery,
        limits: &Limits,
        journal: Option<&dyn QueueJournal>,
        fanout: &mut Fanout,
    ) -> Result<(Queued, u64), EnqueueError> {
        let mut st = self.state.lock();
        let queued = st.push(&self.client_id, delivery, limits, journal)?;
        let Some(link) = &st.link else {
            return Ok((Queued::Ok, queued.1));
        };
        fanout.wake_later(&link.signals);
        Ok(queued)
    }

    /// Queues the retained messages a new subscription releases, to be sent as the writer
    /// has room (see [`RetainedBatch`]). At most `limits.max_retained` messages wait per
    /// session; the rest are not sent, and counted. Returns how many were cut.
    pub(crate) fn queue_retained(&self, batch: RetainedBatch, limits: &Limits) -> usize {
        let mut st = self.state.lock();
        if st.ended {
            return 0;
        }
        // Counted in 32 bits (a session's size, issue 19): no store holds 2^32 messages.
        let room = limits
            .max_retained
            .min(u32::MAX as usize)
            .saturating_sub(st.retained_waiting as usize);
        let RetainedBatch {
            mut messages,
            qos,
            subscription_id,
        } = batch;
        let cut = messages.len().saturating_sub(room);
        messages.truncate(room);
        if messages.is_empty() {
            return cut;
        }
        st.retained_waiting += messages.len() as u32; // at most `room`, below 2^32
        st.retained_backlog
            .get_or_insert_with(Box::default)
            .push_back(RetainedBatch {
                messages,
                qos,
                subscription_id,
            });
        if let Some(link) = &st.link {
            link.signals.wake();
        }
        cut
    }

    /// Waits, at most until `deadline`, for this session's queue to drain to half of
    /// `threshold` (flow control). Returns immediately if the session is disconnected, slow,
    /// already drained, or its own reader is paused.
    pub(crate) async fn wait_drained(
        &self,
        threshold: usize,
        deadline: tokio::time::Instant,
    ) -> Wait {
        let Some(signals) = self
            .state
            .lock()
            .link
            .as_ref()
            .map(|l| Arc::clone(&l.signals))
        else {
            return Wait::NotNeeded;
        };
        if signals.paused.load(std::sync::atomic::Ordering::SeqCst) {
            return Wait::NotNeeded;
        }
        // Registered before the check, so a notification between the two is not lost.
        let drained = signals.drained.notified();
        tokio::pin!(drained);
        drained.as_mut().enable();
        {
            let mut st = self.state.lock();
            let same_link = st
                .link
                .as_ref()
                .is_some_and(|l| Arc::ptr_eq(&l.signals, &signals));
            if !same_link || st.slow || st.queue.len() <= threshold / 2 || signals.is_closed() {
                return Wait::NotNeeded;
            }
            st.flow_waiters = true;
        }
        tokio::select! {
            // Also when the connection closes (`LinkSignals::close` notifies `drained`).
            _ = drained => Wait::Drained,
            _ = tokio::time::sleep_until(deadline) => {
                let mut st = self.state.lock();
                if st.flow_waiters && st.queue.len() > threshold / 2 {
                    st.slow = true;
                    Wait::TimedOut
                } else {
                    Wait::Drained
                }
            }
        }
    }

    /// The signals of the connection attached now, if one is.
    pub(crate) fn link_signals(&self) -> Option<Arc<LinkSignals>> {
        self.state
            .lock()
            .link
            .as_ref()
            .map(|l| Arc::clone(&l.signals))
    }

    /// Queues a control packet for the link `link_id`; false if that link is gone.
    pub(crate) fn send_control(&self, link_id: u64, packet: impl Into<Outgoing>) -> bool {
        self.send_control_gated(link_id, packet, Gate::NONE)
    }

    /// Queues a control packet that may only leave once the writes of `gate` are durable.
    /// Packets keep their order: once one waits, later ones wait behind it.
    pub(crate) fn send_control_gated(
        &self,
        link_id: u64,
        packet: impl Into<Outgoing>,
        gate: Gate,
    ) -> bool {
        let packet = packet.into();
        self.state.lock().send_control(link_id, packet, gate)
    }
}

/// Bytes a subscription to `filter` is counted as holding: the filter string twice (the
/// session's copy and the trie's levels refer to it) and a trie node per level, whether or
/// not another subscription shares them (an upper bound).
///
/// In 32 bits, as a session counts it (its size, issue 19): a filter has at most 65,535
/// bytes, so its cost stays below 11 MB.
pub(crate) fn subscription_cost(filter: &TopicFilter) -> u32 {
    const PER_LEVEL: usize = 160;
    const PER_SUBSCRIPTION: usize = 96;
    let levels = filter.as_str().split('/').count();
    let cost = PER_SUBSCRIPTION + filter.as_str().len() + levels * PER_LEVEL;
    u32::try_from(cost).unwrap_or(u32::MAX)
}

impl SessionState {
    /// [`Session::send_control_gated`] under a lock already held (an acknowledgement that
    /// changes the session and answers in one go).
    pub(crate) fn send_control(&mut self, link_id: u64, packet: Outgoing, gate: Gate) -> bool {
        match &mut self.link {
            Some(link) if link.id == link_id => {
                if gate.is_none() && link.nothing_gated() {
                    link.outbox.push_back(packet);
                } else {
                    let pending = link.pending.get_or_insert_with(Box::default);
                    pending.push_back((gate, packet));
                }
                link.signals.wake();
                true
            }
            _ => false,
        }
    }

    /// Records a subscription; returns the one it replaces.
    pub(crate) fn add_subscription(
        &mut self,
        filter: TopicFilter,
        record: SubscriptionRecord,
    ) -> Option<SubscriptionRecord> {
        let cost = subscription_cost(&filter);
        let old = self.subscriptions.insert(filter, record);
        if old.is_none() {
            self.subscription_bytes = self.subscription_bytes.saturating_add(cost);
        }
        old
    }

    /// Forgets a subscription; returns it.
    pub(crate) fn remove_subscription(
        &mut self,
        filter: &TopicFilter,
    ) -> Option<SubscriptionRecord> {
        let old = self.subscriptions.remove(filter);
        if old.is_some() {
            self.subscription_bytes = self
                .subscription_bytes
                .saturating_sub(subscription_cost(filter));
        }
        old
    }

    /// Takes every subscription (the session ends).
    pub(crate) fn take_subscriptions(&mut self) -> HashMap<TopicFilter, SubscriptionRecord> {
        self.subscription_bytes = 0;
        std::mem::take(&mut self.subscriptions)
    }

    /// Queues `delivery` (the body of [`Session::enqueue`], for callers that hold the lock).
    #[inline]
    pub(crate) fn push(
        &mut self,
        client_id: &str,
        mut delivery: Delivery,
        limits: &Limits,
        journal: Option<&dyn QueueJournal>,
    ) -> Result<(Queued, u64), EnqueueError> {
        if self.ended {
            return Err(EnqueueError::Ended);
        }
        if self.link.is_none() && delivery.qos == QoS::AtMostOnce && !limits.queue_qos0_offline {
            return Err(EnqueueError::Offline);
        }
        if self.link.is_none() {
            // Kept until the client returns: a copy that owns its bytes, so the queue holds
            // what `max_queued_bytes` counts and not the read buffers the message came in.
            delivery.message = delivery.message.for_keeping();
        }
        let size = delivery.message.size();
        if self.queue.len() >= limits.max_queued_messages
            || self.queued_bytes + size > limits.max_queued_bytes
            || self.over_total(size, limits.max_total_queued_bytes)
        {
            return Err(EnqueueError::QueueFull);
        }
        if let Some(journal) = journal {
            if self.expiry_interval > 0 && delivery.qos != QoS::AtMostOnce {
                if journal.full() {
                    return Err(EnqueueError::StorageFull);
                }
                // A persistent session's message gets its packet id now and is stored with
                // it; it is sent only once that is durable (Acked mode), so a restart never
                // re-sends it under another id (QoS 2 receivers dedupe by id).
                let SessionState {
                    inflight,
                    reserved_ids,
                    ..
                } = self;
                let Some(id) = inflight.alloc_id(reserved_ids) else {
                    return Err(EnqueueError::QueueFull);
                };
                reserved_ids.insert(id.get());
                self.next_storage_seq += 1;
                let seq = self.next_storage_seq;
                delivery.storage_seq = std::num::NonZeroU64::new(seq);
                delivery.packet_id = Some(id);
                delivery.gate = journal.queued(client_id, seq, &delivery);
            }
        }
        self.add_queued_bytes(size);
        let gate = delivery.gate;
        self.queue.push_back(delivery);
        let threshold = limits.flow_control_queue;
        if self.link.is_some() && threshold > 0 && !self.slow && self.queue.len() >= threshold {
            Ok((Queued::Congested, gate))
        } else {
            Ok((Queued::Ok, gate))
        }
    }

    /// Moves up to `n` retained messages from the backlog into the queue, as deliveries
    /// that are checked against the authorizers when sent. Returns how many the queue
    /// refused (the broker-wide byte budget, the store's size budget), for the caller to
    /// count as dropped.
    pub(crate) fn refill_retained(
        &mut self,
        client_id: &str,
        n: usize,
        limits: &Limits,
        journal: Option<&dyn QueueJournal>,
    ) -> usize {
        let mut moved = 0;
        let mut refused = 0;
        while moved < n {
            let Some(backlog) = self.retained_backlog.as_mut() else {
                break;
            };
            let Some(batch) = backlog.front_mut() else {
                self.retained_backlog = None;
                break;
            };
            let Some(size) = batch.messages.front().map(|m| m.size()) else {
                backlog.pop_front();
                continue;
            };
            // Not taken while the session's bound has no room for it: it waits for the
            // messages held (queued, or sent and unacknowledged) to go. One that would not
            // fit even alone is refused below.
            if !self.queue.is_empty() || self.queued_bytes > 0 {
                let full = self.queue.len() >= limits.max_queued_messages
                    || self.queued_bytes + size > limits.max_queued_bytes;
                if full {
                    break;
                }
            }
            let Some(message) = batch.messages.pop_front() else {
                continue;
            };
            self.retained_waiting -= 1;
            let qos = message.qos.min(batch.qos);
            let sids = batch.subscription_id.into_iter().collect();
            // MQTT-3.3.1-8 (3.1.1): retained messages sent on subscribe keep RETAIN 1 (v5
            // §3.3.1.3 likewise, whatever Retain As Published). Authorized when sent
            // (epoch 0), like anything queued.
            let delivery = Delivery::new(message, qos, true, sids);
            match self.push(client_id, delivery, limits, journal) {
                Ok(_) => moved += 1,
                Err(_) => refused += 1,
            }
        }
        refused
    }

    /// Moves a delivery into the inflight window with its reserved packet id (or a new
    /// one); `None` if no id is free.
    pub(crate) fn start_inflight(&mut self, delivery: Delivery) -> Option<&Entry> {
        if let Some(id) = delivery.packet_id {
            self.reserved_ids.remove(&id.get());
        }
        let size = delivery.message.size();
        self.inflight.push(delivery, &self.reserved_ids)?;
        // Held until acknowledged: `max_queued_bytes` counts it as it did in the queue.
        self.add_queued_bytes(size);
        self.inflight.last()
    }

    /// Puts back an inflight entry recovered from storage, counted as held.
    pub(crate) fn restore_inflight(
        &mut self,
        id: crate::codec::PacketId,
        delivery: Delivery,
        stage: Stage,
    ) {
        self.add_queued_bytes(delivery.message.size());
        self.inflight.restore(id, delivery, stage);
    }

    /// Ends an inflight delivery taken out by `take` (PUBACK, PUBCOMP, a refusing PUBREC):
    /// its bytes are no longer held. Returns the entry, if there was one.
    pub(crate) fn end_inflight(
        &mut self,
        take: impl FnOnce(&mut Inflight) -> Option<Entry>,
    ) -> Option<Entry> {
        let entry = take(&mut self.inflight)?;
        if !self.ended {
            // An ended session counts nothing (see `Registry::discard`).
            self.sub_queued_bytes(entry.delivery.message.size());
        }
        Some(entry)
    }

    /// Forgets a queued delivery that will never be sent (expired, too large): releases its
    /// packet id and returns its position in the stored queue, if it was stored.
    pub(crate) fn drop_queued(&mut self, delivery: &Delivery) -> Option<u64> {
        if let Some(id) = delivery.packet_id {
            self.reserved_ids.remove(&id.get());
        }
        delivery.storage_seq.map(std::num::NonZeroU64::get)
    }

    /// Takes the next queued delivery, keeping the byte count right.
    pub(crate) fn pop(&mut self) -> Option<Delivery> {
        let d = self.queue.pop_front()?;
        self.sub_queued_bytes(d.message.size());
        Some(d)
    }

    /// Queues a shared run of QoS 0 copies (see [`Queue`]) if all of it fits the queue's
    /// bounds and the session's client is connected. Otherwise hands it back, for the
    /// caller to queue its copies one by one with [`SessionState::push`], which drops and
    /// counts those that do not fit (or are for an offline client) as it does any copy.
    pub(crate) fn push_run(&mut self, copy: RunCopy, limits: &Limits) -> Result<Queued, RunCopy> {
        let size = queue::run_bytes(&copy);
        if self.ended
            || self.link.is_none()
            || self.queue.len() + copy.run.len() > limits.max_queued_messages
            || self.queued_bytes + size > limits.max_queued_bytes
            || self.over_total(size, limits.max_total_queued_bytes)
        {
            return Err(copy);
        }
        self.add_queued_bytes(size);
        self.queue.push_run(copy);
        let threshold = limits.flow_control_queue;
        if threshold > 0 && !self.slow && self.queue.len() >= threshold {
            Ok(Queued::Congested)
        } else {
            Ok(Queued::Ok)
        }
    }

    /// Takes the run the queue starts with, whole (see [`Queue::take_run`]), keeping the
    /// byte count right.
    pub(crate) fn take_run(&mut self) -> Option<RunCopy> {
        let copy = self.queue.take_run()?;
        self.sub_queued_bytes(queue::run_bytes(&copy));
        Some(copy)
    }

    /// True if `n` more queued bytes would take the broker-wide total past `max` (only what
    /// this session has not reserved yet counts).
    #[inline]
    fn over_total(&self, n: usize, max: usize) -> bool {
        if self.queued_bytes + n <= self.total_reserved {
            return false; // within what this session holds already
        }
        let need = granules(self.queued_bytes + n).saturating_sub(self.total_reserved);
        need > 0 && self.total_queued.load(std::sync::atomic::Ordering::Relaxed) + need > max
    }

    /// Counts `n` more queued bytes, here and broker-wide.
    #[inline]
    pub(crate) fn add_queued_bytes(&mut self, n: usize) {
        self.queued_bytes += n;
        if self.queued_bytes > self.total_reserved {
            let want = granules(self.queued_bytes);
            self.total_queued.fetch_add(
                want - self.total_reserved,
                std::sync::atomic::Ordering::Relaxed,
            );
            self.total_reserved = want;
        }
    }

    /// Counts `n` fewer queued bytes, here and broker-wide. An empty queue keeps one
    /// granule reserved (a queue that empties and fills again touches nothing shared).
    #[inline]
    pub(crate) fn sub_queued_bytes(&mut self, n: usize) {
        debug_assert!(n <= self.queued_bytes, "more bytes released than counted");
        self.queued_bytes = self.queued_bytes.saturating_sub(n);
        let keep = granules(self.queued_bytes).max(TOTAL_GRANULE);
        // Give back only what is two steps past the need (one step when empty), so a
        // queue moving within a step or two touches nothing shared.
        let slack = if self.queued_bytes == 0 {
            0
        } else {
            2 * TOTAL_GRANULE
        };
        if self.total_reserved > keep + slack {
            self.total_queued.fetch_sub(
                self.total_reserved - keep,
                std::sync::atomic::Ordering::Relaxed,
            );
            self.total_reserved = keep;
        }
    }

    /// Gives back everything this session counted broker-wide (it ends).
    pub(crate) fn release_total(&mut self) {
        self.total_queued.fetch_sub(
            std::mem::take(&mut self.total_reserved),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// After the writer took from the queue: once it is down to half the flow-control
    /// threshold, wakes paused publishers and clears the slow mark.
    pub(crate) fn after_drain(&mut self, threshold: usize) {
        if (self.flow_waiters || self.slow) && self.queue.len() <= threshold / 2 {
            self.slow = false;
            if std::mem::take(&mut self.flow_waiters) {
                if let Some(link) = &self.link {
                    link.signals.drained.notify_waiters();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::topic::TopicName;
    use bytes::Bytes;

    fn delivery(message: &Arc<Message>) -> Delivery {
        Delivery::new(Arc::clone(message), QoS::AtLeastOnce, false, Vec::new())
    }

    /// Every session, connected or not, holds one (issue 19): with its `Arc` counts it
    /// fits mimalloc's 384-byte size class (it took the 448 one before the link's gated
    /// packets were boxed and its times kept as milliseconds). Growing it needs a reason.
    #[test]
    fn a_session_stays_in_its_size_class() {
        let size = std::mem::size_of::<Session>() + 2 * std::mem::size_of::<usize>();
        assert!(
            size <= 384,
            "a session takes {size} bytes with its Arc counts"
        );
    }

    #[test]
    fn offline_sessions_keep_one_copy_that_owns_its_bytes() {
        // The payload is a slice of a larger buffer, as decoded from a read.
        let buffer = Bytes::from(vec![1u8; 8192]);
        let message = Arc::new(Message::new(
            TopicName::new("t").expect("valid"),
            buffer.slice(0..16),
            QoS::AtLeastOnce,
            false,
        ));
        let limits = Limits::default();
        let a = Session::new(1, "a".into(), u32::MAX);
        let b = Session::new(2, "b".into(), u32::MAX);
        assert_eq!(
            a.enqueue(delivery(&message), &limits, None, &mut Fanout::default()),
            Ok((Queued::Ok, 0))
        );
        assert_eq!(
            b.enqueue(delivery(&message), &limits, None, &mut Fanout::default()),
            Ok((Queued::Ok, 0))
        );
        let kept_a = a.state.lock().pop().expect("queued").message;
        let kept_b = b.state.lock().pop().expect("queued").message;
        assert_eq!(kept_a.payload, message.payload);
        assert_ne!(
            kept_a.payload.as_ptr(),
            buffer.as_ptr(),
            "not a slice of the read buffer"
        );
        assert!(
            Arc::ptr_eq(&kept_a, &kept_b),
            "one copy shared by both sessions"
        );
    }
}
