//! Persistence: the broker's side of [`roost_storage::Storage`].
//!
//! # Flow
//! Code that changes durable state (a retained message, a persistent session's
//! subscriptions, queue or inbound QoS 2 ids) describes the change as storage
//! [`Op`]s and submits them. Submissions get increasing sequence numbers and go, in order,
//! to one storage task, which writes whatever has accumulated in one batch (group commit
//! across all clients) and, in [`Durability::Acked`] mode, flushes before publishing the
//! highest sequence number that is now durable. In [`Durability::Periodic`] mode it flushes
//! on a timer instead.
//!
//! # Acknowledgements
//! In `Acked` mode a PUBACK/PUBREC for a QoS 1/2 message that was retained or queued for a
//! persistent session, and a SUBACK that changed a persistent session, carry the sequence
//! number of their writes: the connection's writer holds them (and every control packet
//! after them, to keep order) until that number is durable. If the write failed, the
//! acknowledgement becomes a refusal (v5: 0x80; 3.1.1: the connection is closed), never a
//! silent success.
//!
//! # Back-pressure
//! At most [`MAX_PENDING_OPS`] operations wait for the storage task; a client whose
//! publishes need more waits (its connection stops reading) until the store catches up.

mod convert;
pub(crate) mod journal;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use roost_storage::{Op, Storage};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

pub(crate) use convert::{
    client_from_owner, delivery_from_record, message_from_record, message_record, queue_record,
    session_record, subscription_from_record, unix_now_ms, will_from_record,
};

pub(crate) use crate::gate::Gate;
use crate::message::{Delivery, Message};
use crate::metrics::Metrics;
use crate::session::{QueueJournal, SessionState};

/// The broker's storage as the rest of the broker sees it: changes described by what
/// happened go in, gates come out. Without storage it records nothing and every gate is
/// [`Gate::NONE`].
#[derive(Debug)]
pub(crate) struct Journal(Option<Persistence>);

impl Journal {
    /// A journal over `persistence` (`None`: the broker keeps nothing).
    pub(crate) fn new(persistence: Option<Persistence>) -> Self {
        Journal(persistence)
    }

    /// The storage handle, when there is storage.
    pub(crate) fn persistence(&self) -> Option<&Persistence> {
        self.0.as_ref()
    }

    /// True if the broker keeps its state.
    pub(crate) fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// True in [`Durability::Acked`] mode: acknowledgements wait for their writes.
    pub(crate) fn acked(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|p| p.durability == Durability::Acked)
    }

    /// Where sessions record their queued deliveries, when there is storage.
    pub(crate) fn queue(&self) -> Option<&dyn QueueJournal> {
        self.0.as_ref().map(|p| p as &dyn QueueJournal)
    }

    /// Submits `ops` now; returns what an acknowledgement must wait for (nothing without
    /// storage, or in Periodic mode).
    pub(crate) fn store_gated(&self, ops: Vec<Op>) -> Gate {
        match &self.0 {
            Some(p) => Gate::seq(p.gate(p.submit_now(ops))),
            None => Gate::NONE,
        }
    }

    /// Submits `ops` that nothing waits for.
    pub(crate) fn store_now(&self, ops: Vec<Op>) {
        if let Some(p) = &self.0 {
            p.submit_now(ops);
        }
    }

    /// The record of a persistent session, as its state now says (`None`: not persistent,
    /// or no storage).
    pub(crate) fn session_record(&self, client_id: &str, st: &SessionState) -> Option<Op> {
        self.0.as_ref()?;
        (st.expiry_interval > 0).then(|| journal::session_saved(client_id, st))
    }

    /// A persistent session changed: its record is written again.
    pub(crate) fn session_changed(&self, client_id: &str, st: &SessionState) {
        if let Some(op) = self.session_record(client_id, st) {
            self.store_now(vec![op]);
        }
    }

    /// A session ended: its record and everything under it go.
    pub(crate) fn session_ended(&self, client_id: &str) {
        if self.is_on() {
            self.store_now(vec![journal::session_ended(client_id)]);
        }
    }

    /// The storage operation of a change to a retained message, if it is kept (`$SYS`
    /// topics are not).
    pub(crate) fn retained(&self, message: &Message, cleared: bool) -> Option<Op> {
        if !self.is_on() || message.topic.as_str().starts_with("$SYS/") {
            return None;
        }
        Some(if cleared {
            journal::retained_cleared(message.topic.as_str())
        } else {
            journal::retained_set(message)
        })
    }

    /// Writes what is pending and stops the storage task. Unless `sweeps_owed`, clients
    /// hold no packet id the store does not know (see [`IDS_UNSURE`]).
    pub(crate) async fn close(&self, sweeps_owed: bool) {
        if let Some(p) = &self.0 {
            if !sweeps_owed {
                p.submit_now(vec![Op::DeletePluginState {
                    plugin: IDS_UNSURE.0.to_string(),
                    key: IDS_UNSURE.1.to_vec(),
                }]);
            }
            p.close().await;
        }
    }
}

impl QueueJournal for Persistence {
    fn full(&self) -> bool {
        self.over_budget()
    }

    fn queued(&self, client_id: &str, seq: u64, delivery: &Delivery) -> u64 {
        let op = journal::queued(client_id, seq, delivery);
        self.gate(self.submit_now(vec![op]))
    }
}

/// The broker's own entry among the plugins' values (names starting with `$` are refused
/// to plugins): present while clients may hold outbound packet ids the store does not know.
///
/// Under [`Durability::Periodic`] a QoS 2 PUBLISH leaves before its record is durable, so a
/// crash can lose ids that subscribers still hold (see `session::inflight::Sweep`). A
/// periodic run writes this entry, durably, before it accepts a client, and a clean
/// shutdown removes it once no session still owes its client a sweep; a start that finds
/// it sweeps the packet ids of every persistent session subscribed at QoS 2.
const IDS_UNSURE: (&str, &[u8]) = ("$roost", b"packet-ids-unsure");

/// Takes the broker's own entry out of the plugins' values; true if it was there (the last
/// run used periodic durability and did not shut down cleanly, or left sweeps owed).
pub(crate) fn take_ids_unsure(entries: &mut Vec<roost_storage::PluginEntry>) -> bool {
    let before = entries.len();
    entries.retain(|e| !(e.plugin == IDS_UNSURE.0 && e.key == IDS_UNSURE.1));
    entries.len() != before
}

/// Operations that may wait for the storage task before submitters are held back.
pub(crate) const MAX_PENDING_OPS: usize = 65_536;

/// When stored state becomes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Flush every interval. Acknowledgements do not wait: up to one interval of
    /// acknowledged messages can be lost in a crash. After a crash, a persistent session
    /// subscribed at QoS 2 first releases (PUBREL) every packet id its client may still
    /// hold from before it, so that no later message is taken for a duplicate (see the
    /// README, "Packet ids after a crash").
    Periodic(Duration),
    /// Flush before acknowledging: a PUBACK/PUBREC for a QoS 1/2 message that is retained or
    /// goes to a persistent session, and a SUBACK for a persistent session, are sent only
    /// once the change is durable. Many clients' writes share each flush.
    Acked,
}

enum Command {
    Write { last_seq: u64, ops: Vec<Op> },
    Close(oneshot::Sender<()>),
}

/// The handle the rest of the broker uses.
pub(crate) struct Persistence {
    /// The store, until shutdown lets go of it (so a file-based store can be reopened).
    storage: Mutex<Option<Arc<dyn Storage>>>,
    pub(crate) durability: Durability,
    tx: mpsc::UnboundedSender<Command>,
    next_seq: Mutex<u64>,
    permits: Arc<Semaphore>,
    durable: watch::Receiver<u64>,
    /// The sending side, shared with the storage task (for [`Persistence::poke`]).
    durable_tx: Arc<watch::Sender<u64>>,
    failed: Arc<Mutex<VecDeque<(u64, u64)>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Sequence numbers handed out so far (for tests and metrics).
    submitted: AtomicU64,
    /// The store is over its size budget.
    over_budget: Arc<AtomicBool>,
}

impl std::fmt::Debug for Persistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistence")
            .field("durability", &self.durability)
            .field("durable", &*self.durable.borrow())
            .finish_non_exhaustive()
    }
}

impl Persistence {
    /// Starts the storage task.
    pub(crate) fn start(
        storage: Arc<dyn Storage>,
        durability: Durability,
        budget: Option<u64>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let over_budget = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::unbounded_channel();
        let (durable_tx, durable) = watch::channel(0);
        let durable_tx = Arc::new(durable_tx);
        let permits = Arc::new(Semaphore::new(MAX_PENDING_OPS));
        let failed = Arc::new(Mutex::new(VecDeque::new()));
        let task = tokio::spawn(run(
            TaskState {
                storage: Arc::clone(&storage),
                durability,
                durable: Arc::clone(&durable_tx),
                permits: Arc::clone(&permits),
                failed: Arc::clone(&failed),
                metrics,
                budget: budget.map(|b| (b, Arc::clone(&over_budget))),
            },
            rx,
        ));
        Self {
            storage: Mutex::new(Some(storage)),
            durability,
            tx,
            next_seq: Mutex::new(0),
            permits,
            durable,
            durable_tx,
            failed,
            task: Mutex::new(Some(task)),
            submitted: AtomicU64::new(0),
            over_budget,
        }
    }

    /// Loads everything stored.
    pub(crate) async fn load(
        &self,
    ) -> Result<roost_storage::Snapshot, roost_storage::StorageError> {
        let storage = self.storage.lock().clone();
        match storage {
            Some(s) => s.load().await,
            None => Err(roost_storage::StorageError::Backend(
                "storage already closed",
            )),
        }
    }

    /// Under periodic durability, records that clients may come to hold packet ids the
    /// store loses (see [`IDS_UNSURE`]), durably: before any client is accepted.
    pub(crate) async fn mark_ids_unsure(&self) -> Result<(), roost_storage::StorageError> {
        let storage = self.storage.lock().clone();
        match (self.durability, storage) {
            (Durability::Periodic(_), Some(s)) => {
                let entry = roost_storage::PluginEntry {
                    plugin: IDS_UNSURE.0.to_string(),
                    key: IDS_UNSURE.1.to_vec(),
                    value: Vec::new(),
                };
                s.write_durable(vec![Op::PutPluginState(entry)]).await
            }
            _ => Ok(()),
        }
    }

    /// Submits `ops` without waiting for room; returns their sequence number (0 for none).
    /// For code that cannot wait (timers, the writer); bounded by the callers' own bounds.
    pub(crate) fn submit_now(&self, ops: Vec<Op>) -> u64 {
        if ops.is_empty() {
            return 0;
        }
        let n = ops.len();
        let mut next = self.next_seq.lock();
        *next += 1;
        let seq = *next;
        self.submitted.fetch_add(n as u64, Ordering::Relaxed);
        // The receiver lives until `close`; a failed send means the broker is stopping.
        let _ = self.tx.send(Command::Write { last_seq: seq, ops });
        seq
    }

    /// Submits `ops`, first waiting until the storage task has room for them
    /// (back-pressure). Returns their sequence number (0 for none).
    pub(crate) async fn submit(&self, ops: Vec<Op>) -> u64 {
        if ops.is_empty() {
            return 0;
        }
        let n = u32::try_from(ops.len().min(MAX_PENDING_OPS)).unwrap_or(u32::MAX);
        if let Ok(permit) = self.permits.acquire_many(n).await {
            permit.forget();
        }
        self.submit_now(ops)
    }

    /// The store's size on disk, if it can tell (for the metrics).
    #[cfg(feature = "metrics")]
    pub(crate) fn size_on_disk(&self) -> Option<u64> {
        let storage = self.storage.lock().clone()?;
        storage.size_on_disk().ok()
    }

    /// True while the store is over its size budget.
    pub(crate) fn over_budget(&self) -> bool {
        self.over_budget.load(Ordering::Relaxed)
    }

    /// The sequence number an acknowledgement must wait for: `seq` in `Acked` mode, else 0.
    pub(crate) fn gate(&self, seq: u64) -> u64 {
        match self.durability {
            Durability::Acked => seq,
            Durability::Periodic(_) => 0,
        }
    }

    /// A receiver that changes whenever more becomes durable.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    /// True once everything `gate` waits for has been written (and flushed in `Acked`
    /// mode), successfully or not.
    pub(crate) fn settled(&self, gate: Gate) -> bool {
        gate.is_none() || *self.durable.borrow() >= gate.through
    }

    /// True if a write that `gate` waits for failed.
    pub(crate) fn failed(&self, gate: Gate) -> bool {
        !gate.is_none()
            && self
                .failed
                .lock()
                .iter()
                .any(|&(lo, hi)| lo <= gate.through && hi > gate.after)
    }

    /// Wakes every writer waiting for storage, so that it looks again at what it waits for
    /// (a held message was released without a write of its own to wait for).
    pub(crate) fn poke(&self) {
        self.durable_tx.send_modify(|_| {});
    }

    /// Writes what is pending, flushes, and stops the storage task.
    pub(crate) async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Close(tx)).is_ok() {
            let _ = rx.await;
        }
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.storage.lock().take();
    }
}

/// Most operations written in one batch.
const MAX_BATCH_OPS: usize = 16_384;

/// What the storage task works with.
struct TaskState {
    storage: Arc<dyn Storage>,
    durability: Durability,
    durable: Arc<watch::Sender<u64>>,
    permits: Arc<Semaphore>,
    failed: Arc<Mutex<VecDeque<(u64, u64)>>>,
    metrics: Arc<Metrics>,
    budget: Option<(u64, Arc<AtomicBool>)>,
}

async fn run(task: TaskState, mut rx: mpsc::UnboundedReceiver<Command>) {
    let TaskState {
        storage,
        durability,
        durable,
        permits,
        failed,
        metrics,
        budget,
    } = task;
    let mut last_size_check = tokio::time::Instant::now() - Duration::from_secs(1);
    let mut written_through = 0u64;
    let mut dirty = false;
    let tick = match durability {
        Durability::Periodic(every) => every,
        Durability::Acked => Duration::from_secs(3600),
    };
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing: Option<oneshot::Sender<()>> = None;
    loop {
        let first = if closing.is_some() {
            rx.try_recv().ok()
        } else {
            tokio::select! {
                c = rx.recv() => c,
                _ = ticker.tick(), if dirty => {
                    flush(&storage, written_through, &durable, &failed, &metrics, written_through).await;
                    dirty = false;
                    continue;
                }
            }
        };
        let Some(first) = first else {
            break;
        };
        let mut ops = Vec::new();
        let mut lo = 0;
        let mut hi = 0;
        let mut take =
            |c: Command, ops: &mut Vec<Op>, closing: &mut Option<oneshot::Sender<()>>| match c {
                Command::Write {
                    last_seq,
                    ops: more,
                } => {
                    if lo == 0 {
                        lo = last_seq;
                    }
                    hi = last_seq;
                    ops.extend(more);
                }
                Command::Close(done) => *closing = Some(done),
            };
        take(first, &mut ops, &mut closing);
        while ops.len() < MAX_BATCH_OPS {
            match rx.try_recv() {
                Ok(c) => take(c, &mut ops, &mut closing),
                Err(_) => break,
            }
        }
        if !ops.is_empty() {
            let n = ops.len();
            let acked = durability == Durability::Acked;
            #[cfg(feature = "metrics")]
            let started = std::time::Instant::now();
            let result = if acked {
                // Written and made durable in one go (one commit where the store can).
                storage.write_durable(ops).await
            } else {
                storage.write(ops).await
            };
            #[cfg(feature = "metrics")]
            metrics::histogram!(crate::metrics::WRITE_SECONDS).record(started.elapsed());
            permits.add_permits(n.min(MAX_PENDING_OPS));
            match result {
                Ok(()) => {
                    written_through = hi;
                    dirty = !acked;
                    if acked {
                        let current = *durable.borrow();
                        durable.send_replace(hi.max(current));
                    }
                }
                Err(e) => {
                    Metrics::inc(&metrics.storage_failures);
                    tracing::error!(error = %e, "storage write failed: acknowledgements refused");
                    record_failure(&failed, lo, hi);
                    written_through = hi;
                    durable.send_replace(hi);
                }
            }
        }
        if let Some((max, over)) = &budget {
            if last_size_check.elapsed() >= Duration::from_millis(500) {
                last_size_check = tokio::time::Instant::now();
                let size = storage.size_on_disk().unwrap_or(0);
                let now_over = size > *max;
                if now_over != over.swap(now_over, Ordering::Relaxed) {
                    tracing::warn!(size, budget = max, over = now_over, "storage size budget");
                }
            }
        }
        if closing.is_some() && rx.is_empty() {
            break;
        }
    }
    if dirty || closing.is_some() {
        flush(
            &storage,
            written_through,
            &durable,
            &failed,
            &metrics,
            written_through,
        )
        .await;
    }
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

fn record_failure(failed: &Mutex<VecDeque<(u64, u64)>>, lo: u64, hi: u64) {
    let mut f = failed.lock();
    f.push_back((lo, hi));
    // Waiters check soon after a failure; old ranges are of no use.
    while f.len() > 1024 {
        f.pop_front();
    }
}

/// Flushes and publishes `through` as durable; on failure marks `lo..=through` failed.
async fn flush(
    storage: &Arc<dyn Storage>,
    lo: u64,
    durable: &watch::Sender<u64>,
    failed: &Mutex<VecDeque<(u64, u64)>>,
    metrics: &Metrics,
    through: u64,
) {
    #[cfg(feature = "metrics")]
    let started = std::time::Instant::now();
    let flushed = storage.flush().await;
    #[cfg(feature = "metrics")]
    metrics::histogram!(crate::metrics::FLUSH_SECONDS).record(started.elapsed());
    if let Err(e) = flushed {
        Metrics::inc(&metrics.storage_failures);
        tracing::error!(error = %e, "storage flush failed: acknowledgements refused");
        record_failure(failed, lo.max(1), through);
    }
    // Read first: holding the borrow while sending would deadlock the watch.
    let current = *durable.borrow();
    durable.send_replace(through.max(current));
}
