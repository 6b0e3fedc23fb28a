//! Limits and settings of a broker. Every limit is enforced; each says what happens when it
//! is reached.

use std::time::Duration;

/// Resource limits. The defaults suit a gateway or desktop application; raise them for a
/// large deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Authenticated connections at most. A client authenticated while this many are open is
    /// refused with CONNACK 0x89 Server busy (3.1.1: 0x03); connections still in their
    /// handshake are bounded by `max_pending_connections` instead. Default 10,000.
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
    /// Bytes waiting in one session's queue, counting what each message holds (topic,
    /// payload, forwarded properties such as User Properties, and 64 bytes for the message
    /// itself); same policy. Default 16 MiB.
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
    /// but not retained (and counted). Also the most retained messages waiting to be sent to
    /// one session after its subscriptions (they go out at the connection's pace; past it
    /// they are not sent, and counted in `retained_not_sent`). Default 100,000.
    pub max_retained: usize,
    /// Time a new connection has to send CONNECT before it is closed. Default 10 s.
    pub connect_timeout: Duration,
    /// Time a TLS handshake may take before the connection is dropped. Default 10 s.
    pub handshake_timeout: Duration,
    /// Queue QoS 0 messages for persistent sessions while their client is away. Default
    /// false, as in Mosquitto: QoS 0 is "at most once".
    pub queue_qos0_offline: bool,
    /// Size budget of the store, in bytes of records held (`Storage::size_on_disk`: keys
    /// and values; the files run somewhat larger with the backend's overhead, and keep the
    /// high-water mark of what they held, reusing that space). While the store is over it,
    /// new copies
    /// for persistent sessions are dropped (counted in `messages_dropped_storage_full`, with a
    /// `message_dropped` hook event); sessions and retained messages are still written.
    /// Checked at most twice a second. Default: no budget.
    pub max_storage_bytes: Option<u64>,
    /// Publisher flow control: when a PUBLISH is queued for a connected session whose queue
    /// then holds at least this many messages, the publishing connection stops reading until
    /// that queue is down to half of it, so messages are delivered while they are published
    /// instead of piling up. A wait ends after `flow_control_pause` at most; a session that
    /// did not drain in that time counts as slow and no longer pauses anyone until its queue
    /// is down to half (its queue's overflow policy applies instead). A client is never paused
    /// for its own session, nor for a session whose own connection is paused (so two clients
    /// cannot wait for each other). 0 turns flow control off. Default 256.
    pub flow_control_queue: usize,
    /// Longest single flow-control pause of a publisher. Default 1 s.
    pub flow_control_pause: Duration,
    /// Connections not yet authenticated (PROXY header, TLS or WebSocket handshake, CONNECT
    /// and authentication still under way), at most. When full, the oldest of them is
    /// dropped to make room for a new one, so sockets that never send CONNECT cannot lock
    /// out real clients. They do not count against `max_connections`, which a connection
    /// joins once authenticated. Default 1,024.
    pub max_pending_connections: usize,
    /// Pending connections from one source address, at most; when full, that address's
    /// oldest pending connection is dropped. Default 128.
    pub max_pending_per_address: usize,
    /// Wait before checking the credentials of a client whose address or user name failed
    /// authentication recently: this, doubled for each further failure, up to
    /// `auth_failure_backoff_max`. The wait costs no CPU and holds up nobody else; a success
    /// clears the record, and records idle for 10 minutes are forgotten. `ZERO` turns it
    /// off. Default 100 ms.
    pub auth_failure_backoff: Duration,
    /// Longest such wait. Default 10 s.
    pub auth_failure_backoff_max: Duration,
    /// Topic filters in one SUBSCRIBE, at most; the filters past it are refused (v5 0x97
    /// Quota exceeded, 3.1.1 0x80). Repeats of a filter in one SUBSCRIBE count once (the
    /// last one wins, as if each had been sent on its own). Default 256.
    pub max_filters_per_subscribe: usize,
    /// User Properties in one PUBLISH or Will, at most, and their bytes (names and values)
    /// at most. A PUBLISH over either is not routed (v5 PUBACK/PUBREC 0x97 Quota exceeded;
    /// 3.1.1 clients cannot send properties); a will over either refuses the CONNECT
    /// (0x97). Defaults 128 and 64 KiB.
    pub max_user_properties: usize,
    /// See `max_user_properties`.
    pub max_user_property_bytes: usize,
    /// Bytes one session's subscriptions may hold, counting the filter and a trie node per
    /// level (an upper bound of what they cost); a SUBSCRIBE past it is refused for that
    /// filter (v5 0x97, 3.1.1 0x80). Default 2 MiB.
    pub max_subscription_bytes_per_client: usize,
    /// Sessions held at once (connected or not), at most. A CONNECT that would create one
    /// more is refused (v5 0x97 Quota exceeded, 3.1.1 0x03); resuming a session is always
    /// possible. Sessions never expire by default (`Capabilities::max_session_expiry_interval`
    /// is `u32::MAX`, as 3.1.1's Clean Session 0 asks and Mosquitto does): this bound is
    /// what keeps them from growing without end. Default 100,000.
    pub max_sessions: usize,
    /// Bytes held by retained messages (as `Message::size` counts them), at most; a retained
    /// PUBLISH that would pass it is delivered but not retained (counted in
    /// `retained_refused`). Default 256 MiB.
    pub max_retained_bytes: usize,
    /// Bytes queued across all sessions, at most (the broker-wide budget beside each
    /// session's `max_queued_bytes`); a message that would pass it is dropped for that
    /// session, newest first, and counted in `messages_dropped`. Sessions count their
    /// queues in it in 1 KiB steps (so the shared counter is not touched per message), and
    /// a session keeps one step while its queue is empty. Default 1 GiB.
    pub max_total_queued_bytes: usize,
    /// Bytes in a Client Identifier, at most; a longer one is refused (v5 0x85, 3.1.1
    /// 0x02). Default 256 (the standards require servers to accept 1 to 23).
    pub max_client_id_length: usize,
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
            handshake_timeout: Duration::from_secs(10),
            queue_qos0_offline: false,
            max_storage_bytes: None,
            flow_control_queue: 256,
            flow_control_pause: Duration::from_secs(1),
            max_pending_connections: 1024,
            max_pending_per_address: 128,
            auth_failure_backoff: Duration::from_millis(100),
            auth_failure_backoff_max: Duration::from_secs(10),
            max_filters_per_subscribe: 256,
            max_sessions: 100_000,
            max_subscription_bytes_per_client: 2 * 1024 * 1024,
            max_retained_bytes: 256 * 1024 * 1024,
            max_total_queued_bytes: 1024 * 1024 * 1024,
            max_user_properties: 128,
            max_user_property_bytes: 64 * 1024,
            max_client_id_length: 256,
        }
    }
}

impl Limits {
    /// True when `properties` are within the user-property limits.
    pub(crate) fn user_properties_ok(&self, properties: &[crate::codec::UserProperty]) -> bool {
        properties.len() <= self.max_user_properties
            && properties
                .iter()
                .map(|u| u.name.len() + u.value.len())
                .sum::<usize>()
                <= self.max_user_property_bytes
    }

    /// True when `topic` (a name or filter) is within the level and length limits.
    pub(crate) fn topic_ok(&self, topic: &str) -> bool {
        topic.len() <= self.max_topic_length
            && topic.bytes().filter(|&b| b == b'/').count() < self.max_topic_levels
    }
}

/// Where to send clients instead (MQTT 5.0 Server Reference, §4.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `true`: Server moved (0x9D), permanently; `false`: Use another server (0x9C).
    pub permanent: bool,
    /// The Server Reference sent to the client, e.g. `"other-host:1883"`.
    pub reference: String,
}

impl Redirect {
    /// The refusing CONNACK's reason code and Server Reference.
    pub(crate) fn refusal(&self) -> (crate::codec::ReasonCode, bytestring::ByteString) {
        let code = if self.permanent {
            crate::codec::ReasonCode::ServerMoved
        } else {
            crate::codec::ReasonCode::UseAnotherServer
        };
        (code, self.reference.as_str().into())
    }
}

/// What the broker offers MQTT 5.0 clients, advertised in CONNACK and enforced: a client
/// that uses what is not offered gets the reason code the standard names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Highest QoS accepted on PUBLISH (v5 Maximum QoS). A PUBLISH above it ends the
    /// connection with 0x9B; a will above it is refused with CONNACK 0x9B; subscriptions are
    /// granted at most this QoS. Default QoS 2.
    pub maximum_qos: crate::codec::QoS,
    /// Retained messages accepted (v5 Retain Available). If false, a retained PUBLISH ends the
    /// connection with 0x9A and a retained will is refused with CONNACK 0x9A. Default true.
    pub retain_available: bool,
    /// Wildcards accepted in subscriptions; if false such filters get SUBACK 0xA2. Default
    /// true.
    pub wildcard_subscriptions: bool,
    /// Subscription Identifiers accepted; if false a SUBSCRIBE with one gets SUBACK 0xA1 for
    /// each filter. Default true.
    pub subscription_identifiers: bool,
    /// `$share/{group}/{filter}` subscriptions accepted; if false they get SUBACK 0x9E.
    /// Default true.
    pub shared_subscriptions: bool,
    /// Topic aliases a client may use towards the broker (v5 Topic Alias Maximum); 0 turns
    /// them off. An alias of 0 or above it ends the connection with 0x94. Default 64.
    pub topic_alias_maximum: u16,
    /// Topic aliases the broker uses on the PUBLISHes it sends to an MQTT 5.0 client
    /// (§3.3.2.3.4), never more than the client's own Topic Alias Maximum; the least
    /// recently used one is replaced when all are taken. Each connection keeps a copy of
    /// up to this many topics. 0 turns outbound aliases off. Default 32.
    pub outbound_topic_aliases: u16,
    /// Unacknowledged inbound QoS 2 PUBLISHes a client may have (v5 Receive Maximum); one
    /// more ends the connection with 0x93. Default 1,024.
    pub receive_maximum: u16,
    /// Longest Keep Alive accepted, in seconds. A client asking for more (or for 0) is told
    /// this value as Server Keep Alive (v5) and held to it. `None`: the client's value.
    pub max_keep_alive: Option<u16>,
    /// Longest Session Expiry Interval granted, in seconds (`u32::MAX`: sessions may never
    /// expire). A longer request is cut and the granted value sent in CONNACK. Default
    /// `u32::MAX`.
    pub max_session_expiry_interval: u32,
    /// Response Information for clients that ask for it (v5 Request Response Information).
    pub response_information: Option<String>,
    /// Refuse every connection with Use another server / Server moved and this reference.
    pub redirect: Option<Redirect>,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            maximum_qos: crate::codec::QoS::ExactlyOnce,
            retain_available: true,
            wildcard_subscriptions: true,
            subscription_identifiers: true,
            shared_subscriptions: true,
            topic_alias_maximum: 64,
            outbound_topic_aliases: 32,
            receive_maximum: 1024,
            max_keep_alive: None,
            max_session_expiry_interval: u32::MAX,
            response_information: None,
            redirect: None,
        }
    }
}
