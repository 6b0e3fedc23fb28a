//! Broker counters, readable in-process ([`Metrics::snapshot`]) and published as retained
//! `$SYS/broker/...` topics.
//!
//! Counters are relaxed atomics: each is exact, but a snapshot is not one atomic cut across
//! all of them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Histogram (feature `metrics`): seconds each storage batch took to write.
#[cfg(feature = "metrics")]
pub(crate) const WRITE_SECONDS: &str = "roost_storage_write_seconds";
/// Histogram (feature `metrics`): seconds each storage flush took.
#[cfg(feature = "metrics")]
pub(crate) const FLUSH_SECONDS: &str = "roost_storage_flush_seconds";

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $name:ident => $topic:literal ),* $(,)?) => {
        /// Live counters of one broker.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[doc = $doc])* pub(crate) $name: AtomicU64, )*
            /// Protocol violations by the rule they broke (see `protocol_errors_by_rule`).
            by_rule: parking_lot::Mutex<hashbrown::HashMap<&'static str, u64>>,
        }

        /// A copy of every counter at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct MetricsSnapshot {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        impl Metrics {
            /// Reads every counter.
            pub fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                }
            }
        }

        impl MetricsSnapshot {
            /// Each counter with its field name.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($name), self.$name), )*]
            }

            /// Each counter's field name with its documentation.
            pub fn documentation() -> Vec<(&'static str, &'static str)> {
                vec![$( (stringify!($name), concat!($($doc, " ",)*).trim_ascii()), )*]
            }

            /// Each counter with the `$SYS` topic it is published on.
            pub fn sys_topics(&self) -> Vec<(&'static str, u64)> {
                vec![$( ($topic, self.$name), )*]
            }
        }
    };
}

counters! {
    /// Connections currently open (after CONNACK).
    clients_connected => "$SYS/broker/clients/connected",
    /// Connections accepted since start (including refused CONNECTs).
    connections_total => "$SYS/broker/connections/total",
    /// Connections refused because `max_connections` (or a listener's cap) was reached.
    connections_refused => "$SYS/broker/connections/refused",
    /// Failed authentications (refused credentials, or nobody accepting the client).
    auth_failures => "$SYS/broker/auth/failures",
    /// Authentications held back because the address or user name failed recently.
    auth_delayed => "$SYS/broker/auth/delayed",
    /// Connections dropped before authentication to make room for newer ones
    /// (`max_pending_connections`, `max_pending_per_address`).
    connections_evicted => "$SYS/broker/connections/evicted",
    /// Sessions currently held (connected or not).
    sessions => "$SYS/broker/sessions/count",
    /// PUBLISH packets received from clients.
    messages_received => "$SYS/broker/messages/received",
    /// PUBLISH packets sent to clients (re-sends included).
    messages_sent => "$SYS/broker/messages/sent",
    /// Lifecycle events lost because an event stream's buffer was full
    /// (`BrokerHandle::events`).
    events_dropped => "$SYS/broker/events/dropped",
    /// Messages dropped: a session queue was full.
    messages_dropped => "$SYS/broker/messages/dropped",
    /// QoS 0 messages not queued for an offline session.
    messages_dropped_offline => "$SYS/broker/messages/dropped/offline",
    /// Messages whose Message Expiry Interval passed before delivery started.
    messages_expired => "$SYS/broker/messages/expired",
    /// Publishes refused and deliveries withheld by an authorizer.
    messages_denied => "$SYS/broker/messages/denied",
    /// Publishes (and wills) refused by a hook ([`HookAction::Refuse`](crate::plugin::HookAction::Refuse)).
    messages_refused_by_hooks => "$SYS/broker/messages/refused/hooks",
    /// Deliveries a delivery transform withheld
    /// ([`Transformed::Withheld`](crate::plugin::Transformed::Withheld)).
    messages_withheld => "$SYS/broker/messages/withheld",
    /// Copies for persistent sessions dropped because the store was over its size budget.
    messages_dropped_storage_full => "$SYS/broker/messages/dropped/storage-full",
    /// Messages not sent because they exceed the client's Maximum Packet Size.
    messages_dropped_too_large => "$SYS/broker/messages/dropped/too-large",
    /// Times a publisher's connection stopped reading for a subscriber's queue to drain
    /// (see [`Limits::flow_control_queue`](crate::Limits::flow_control_queue)).
    flow_control_pauses => "$SYS/broker/flow-control/pauses",
    /// Flow-control pauses that ended because the subscriber did not drain in time.
    flow_control_timeouts => "$SYS/broker/flow-control/timeouts",
    /// Bytes read from network clients.
    bytes_received => "$SYS/broker/bytes/received",
    /// Bytes written to network clients.
    bytes_sent => "$SYS/broker/bytes/sent",
    /// Reads from network clients' streams that returned bytes (system calls, for plain
    /// TCP): `bytes_received` over this is the bytes per read.
    network_reads => "$SYS/broker/network/reads",
    /// Writes to network clients' streams (system calls, for plain TCP): `bytes_sent` over
    /// this is the bytes per write, which grows as the broker batches deliveries.
    network_writes => "$SYS/broker/network/writes",
    /// Subscriptions currently held.
    subscriptions => "$SYS/broker/subscriptions/count",
    /// Topics with a retained message.
    retained => "$SYS/broker/retained/count",
    /// Bytes the retained messages hold (`Limits::max_retained_bytes`).
    retained_bytes => "$SYS/broker/retained/bytes",
    /// Bytes queued across all sessions (`Limits::max_total_queued_bytes`).
    queued_bytes => "$SYS/broker/queued/bytes",
    /// Retained messages not kept because `max_retained` was reached.
    retained_refused => "$SYS/broker/retained/refused",
    /// Connections closed for a protocol violation or malformed packet.
    protocol_errors => "$SYS/broker/errors/protocol",
    /// Plugin calls that timed out or panicked (each counted as a denial).
    plugin_failures => "$SYS/broker/errors/plugin",
    /// Storage writes or flushes that failed (their acknowledgements were refused).
    storage_failures => "$SYS/broker/errors/storage",
    /// Sessions that expired while their client was away.
    sessions_expired => "$SYS/broker/sessions/expired",
    /// Deliveries refused because the receiving session's authorization context is unknown
    /// (a session restored from a record without an owner; fail closed).
    messages_denied_no_context => "$SYS/broker/messages/denied/no-context",
    /// Queued deliveries withdrawn when sent, because the authorizers in force no longer let
    /// the session's client read them (after an ACL reload, or a restart).
    messages_denied_on_send => "$SYS/broker/messages/denied/on-send",
    /// Persistent sessions discarded because a client of another identity connected with
    /// their client identifier (see `SessionOwnership`).
    sessions_ownership_discarded => "$SYS/broker/sessions/ownership-discarded",
    /// CONNECTs refused because the client identifier's session belongs to another
    /// identity (see `SessionOwnership::Refuse`).
    sessions_ownership_refused => "$SYS/broker/sessions/ownership-refused",
    /// Queued copies withdrawn before sending because a storage write they depend on failed
    /// (their publisher was refused, so no subscriber may have them).
    messages_withdrawn_storage => "$SYS/broker/messages/withdrawn/storage",
    /// PUBLISHes refused for carrying more User Properties than the limits allow.
    messages_refused_properties => "$SYS/broker/messages/refused/properties",
    /// Retained messages not sent on subscribe because `max_retained` were already waiting
    /// for the session.
    retained_not_sent => "$SYS/broker/retained/not-sent",
    /// Will messages not published because the authorizers in force refused them.
    wills_denied => "$SYS/broker/wills/denied",
    /// PUBLISHes from clients to `$SYS/...` topics refused (no authorizer allowed them).
    sys_publishes_denied => "$SYS/broker/messages/denied/sys",
}

impl Metrics {
    /// Protocol violations that closed a connection, by the rule (normative statement,
    /// section or limit) each broke, sorted by rule; `protocol_errors` is their sum.
    pub fn protocol_errors_by_rule(&self) -> Vec<(&'static str, u64)> {
        let mut rules: Vec<_> = self
            .by_rule
            .lock()
            .iter()
            .map(|(rule, n)| (*rule, *n))
            .collect();
        rules.sort_unstable();
        rules
    }

    /// Counts a protocol violation of `rule`.
    pub(crate) fn protocol_error(&self, rule: &'static str) {
        Self::inc(&self.protocol_errors);
        // A connection ends with each: rare enough for a lock. Rules are a fixed set (the
        // decoder's and the connection's), so the map stays small.
        *self.by_rule.lock().entry(rule).or_insert(0) += 1;
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        // Nothing to add: the shared cache line is left alone.
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dec(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn set(counter: &AtomicU64, n: u64) {
        counter.store(n, Ordering::Relaxed);
    }
}
