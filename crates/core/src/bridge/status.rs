//! What a bridge reports: [`BridgeStatus`] through `BrokerHandle::bridges` and `$SYS`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::BridgeError;
use crate::registry::Sessions;

/// A bridge's state and counters at one moment.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BridgeStatus {
    /// The bridge's name.
    pub name: String,
    /// The remote broker's address.
    pub address: String,
    /// Connected to the remote broker (and relaying) now.
    pub connected: bool,
    /// Why the last connection failed or ended, if one did.
    pub last_error: Option<BridgeError>,
    /// Connections to the remote broker made.
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Messages sent to the remote broker (QoS 1/2: acknowledged by it).
    pub messages_out: u64,
    /// Messages from the remote broker routed locally (QoS 1/2: acknowledged locally).
    pub messages_in: u64,
    /// Messages not forwarded: no rule places the topic on the other side, the remote
    /// broker refused or cannot take them (too large), a QoS 0 message found the remote
    /// away, or an echo of the bridge's own message came back.
    pub dropped: u64,
    /// Outbound messages waiting in the bridge's local session.
    pub queued: usize,
    /// Outbound messages sent to the remote broker and not yet acknowledged.
    pub inflight: usize,
}

/// The live state behind [`BridgeStatus`], shared by the bridge's task and the handle.
#[derive(Debug)]
pub(crate) struct BridgeState {
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) local_client_id: String,
    pub(crate) connected: AtomicBool,
    pub(crate) last_error: Mutex<Option<BridgeError>>,
    pub(crate) connects: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) inflight: AtomicUsize,
}

impl BridgeState {
    pub(crate) fn new(config: &super::BridgeConfig) -> Self {
        Self {
            name: config.name.clone(),
            address: config.address.clone(),
            local_client_id: config.local_client_id(),
            connected: AtomicBool::new(false),
            last_error: Mutex::new(None),
            connects: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            messages_in: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
        }
    }

    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The status now; queued counts come from the bridge's local session.
    pub(crate) fn status(&self, sessions: &Sessions) -> BridgeStatus {
        let queued = sessions
            .get(&self.local_client_id)
            .map(|s| s.state.lock().queue.len())
            .unwrap_or(0);
        BridgeStatus {
            name: self.name.clone(),
            address: self.address.clone(),
            connected: self.connected.load(Ordering::Relaxed),
            last_error: self.last_error.lock().clone(),
            connects: self.connects.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            messages_in: self.messages_in.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            queued,
            inflight: self.inflight.load(Ordering::Relaxed),
        }
    }
}

impl BridgeStatus {
    /// The `$SYS/broker/bridge/<name>/...` topics and values published for this bridge.
    pub(crate) fn sys_topics(&self) -> Vec<(String, String)> {
        let base = format!("$SYS/broker/bridge/{}", self.name);
        let state = if self.connected {
            "connected"
        } else {
            "disconnected"
        };
        vec![
            (format!("{base}/state"), state.to_string()),
            (
                format!("{base}/messages/sent"),
                self.messages_out.to_string(),
            ),
            (
                format!("{base}/messages/received"),
                self.messages_in.to_string(),
            ),
            (format!("{base}/messages/dropped"), self.dropped.to_string()),
            (format!("{base}/queued"), self.queued.to_string()),
            (format!("{base}/inflight"), self.inflight.to_string()),
            (format!("{base}/connects"), self.connects.to_string()),
        ]
    }
}
