//! Limits and settings of a broker. Every limit is enforced; each says what happens when it
//! is reached.

use std::time::Duration;

/// Resource limits. The defaults suit a gateway or desktop application; raise them for a
/// large deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most. Further TCP connections are closed as soon as they are
    /// accepted, without reading anything. Default 10,000.
    pub max_connections: usize,
    /// Largest packet accepted, fixed header included. A larger one closes the connection
    /// (v5: DISCONNECT 0x95) as soon as its fixed header is read. Default 1 MiB.
    pub max_packet_size: u32,
    /// Unacknowledged outbound QoS 1/2 messages per session. Further messages wait in the
    /// session's queue. Default 32.
    pub max_inflight: u16,
    /// Messages waiting in one session's queue (online or offline). When full, new messages
    /// for that session are dropped (the newest is dropped, never one already queued) and
    /// counted in [`Metrics`](crate::Metrics). Default 1,000.
    pub max_queued_messages: usize,
    /// Bytes (topic + payload) waiting in one session's queue; same policy. Default 16 MiB.
    pub max_queued_bytes: usize,
    /// Subscriptions per session; a SUBSCRIBE past it is refused for that filter (3.1.1:
    /// 0x80, v5: 0x97). Default 1,000.
    pub max_subscriptions_per_client: usize,
    /// Levels in a topic name or filter; longer ones are refused (PUBLISH: connection closed,
    /// v5 0x90; SUBSCRIBE: that filter refused). Default 32.
    pub max_topic_levels: usize,
    /// Bytes in a topic name or filter; same policy. Default 65,535.
    pub max_topic_length: usize,
    /// Topics with a retained message; a retained PUBLISH to a new topic past it is delivered
    /// but not retained (and counted). Default 100,000.
    pub max_retained: usize,
    /// Time a new connection has to send CONNECT before it is closed. Default 10 s.
    pub connect_timeout: Duration,
    /// Queue QoS 0 messages for persistent sessions while their client is away. Default
    /// false, as in Mosquitto: QoS 0 is "at most once".
    pub queue_qos0_offline: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_packet_size: 1024 * 1024,
            max_inflight: 32,
            max_queued_messages: 1000,
            max_queued_bytes: 16 * 1024 * 1024,
            max_subscriptions_per_client: 1000,
            max_topic_levels: 32,
            max_topic_length: 65_535,
            max_retained: 100_000,
            connect_timeout: Duration::from_secs(10),
            queue_qos0_offline: false,
        }
    }
}

impl Limits {
    /// True when `topic` (a name or filter) is within the level and length limits.
    pub(crate) fn topic_ok(&self, topic: &str) -> bool {
        topic.len() <= self.max_topic_length
            && topic.bytes().filter(|&b| b == b'/').count() < self.max_topic_levels
    }
}
