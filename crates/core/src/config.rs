//! Limits and settings of a broker. Every limit is enforced; each says what happens when it
//! is reached.
//!
//! [`Limits`] and [`Capabilities`] are `#[non_exhaustive]`: build them from their defaults
//! and the `with_*` setters, so that a setting added later is not a breaking change:
//!
//! ```
//! use std::time::Duration;
//! use roost::{Capabilities, Limits, QoS};
//!
//! let limits = Limits::default()
//!     .with_max_packet_size(64 * 1024)
//!     .with_connect_timeout(Duration::from_secs(5));
//! let capabilities = Capabilities::default().with_maximum_qos(QoS::AtLeastOnce);
//! assert!(limits.validate().is_ok() && capabilities.validate().is_ok());
//! ```
//!
//! With the `serde` feature both deserialize from a table of the same names (durations in
//! human form, `"10s"`, `"250ms"`; unknown names refused), and [`Limits::SETTINGS`] lists
//! every name with its documentation, for configuration files and command lines.

use std::time::Duration;

use crate::codec::QoS;

/// One setting of [`Limits`] or [`Capabilities`]: its name (the same in a configuration
/// file and, with `-` for `_`, on the broker binary's command line), its Rust type and its
/// documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SettingInfo {
    /// The field's name.
    pub name: &'static str,
    /// The field's Rust type as written in the source, e.g. `"usize"`, `"Duration"`.
    pub ty: &'static str,
    /// The field's documentation, one line per source line.
    pub doc: &'static str,
}

impl SettingInfo {
    /// The first sentence of the documentation on one line, for a help text.
    pub fn summary(&self) -> String {
        let paragraph: Vec<&str> = self
            .doc
            .lines()
            .map(str::trim)
            .take_while(|l| !l.is_empty())
            .collect();
        let text = paragraph.join(" ");
        match text.find(". ") {
            Some(end) => text[..=end].to_string(),
            None => text,
        }
    }
}

/// A setting with a value the broker cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {reason}")]
#[non_exhaustive]
pub struct InvalidSetting {
    /// The setting's name, as in [`SettingInfo::name`].
    pub name: &'static str,
    /// Why the value is refused.
    pub reason: &'static str,
}

/// Defines a settings struct: public documented fields, `Default`, a `with_*` setter per
/// field and the `SETTINGS` table, from one list.
macro_rules! settings {
    (
        $(#[$outer:meta])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                $(#[serde($($serde:tt)*)])?
                pub $field:ident : $ty:ty = $default:expr => $setter:ident,
            )*
        }
    ) => {
        $(#[$outer])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[non_exhaustive]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
        pub struct $name {
            $(
                $(#[doc = $doc])*
                $(#[cfg_attr(feature = "serde", serde($($serde)*))])?
                pub $field: $ty,
            )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $($field: $default,)* }
            }
        }

        impl $name {
            /// Every setting, in declaration order, with its documentation.
            pub const SETTINGS: &'static [SettingInfo] = &[$(
                SettingInfo {
                    name: stringify!($field),
                    ty: stringify!($ty),
                    doc: concat!($($doc, "\n",)*),
                },
            )*];

            /// The names of the settings whose values differ between `self` and `other`.
            pub fn differences(&self, other: &Self) -> Vec<&'static str> {
                let mut names = Vec::new();
                $(
                    if self.$field != other.$field {
                        names.push(stringify!($field));
                    }
                )*
                names
            }

            /// Sets the setting `name` to its value in `from` (unused for `Capabilities`,
            /// which are all per connection).
            #[allow(dead_code)]
            pub(crate) fn copy_setting(&mut self, from: &Self, name: &str) {
                match name {
                    $(stringify!($field) => self.$field = from.$field.clone(),)*
                    _ => {}
                }
            }

            $(
                #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), ").")]
                #[must_use]
                pub fn $setter(mut self, value: $ty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

settings! {
    /// Resource limits. The defaults suit a gateway or desktop application; raise them for a
    /// large deployment.
    pub struct Limits {
        /// Authenticated connections at most. A client authenticated while this many are open is
        /// refused with CONNACK 0x89 Server busy (3.1.1: 0x03); connections still in their
        /// handshake are bounded by `max_pending_connections` instead. Default 10,000.
        pub max_connections: usize = 10_000 => with_max_connections,
        /// Largest packet accepted, fixed header included. A larger one closes the connection
        /// (v5: DISCONNECT 0x95) as soon as its fixed header is read. Default 1 MiB.
        pub max_packet_size: u32 = 1024 * 1024 => with_max_packet_size,
        /// Unacknowledged outbound QoS 1/2 messages per session (for a v5 client, at most its
        /// Receive Maximum). Further messages wait in the session's queue. A subscriber gets
        /// at most this many messages per round trip, so the window bounds its rate: 1,024
        /// messages per millisecond of round trip (10,240 a second over a 100 ms link). What
        /// the window holds counts in `max_queued_bytes`, and the window's own list is freed
        /// whenever it empties. Default 1,024.
        pub max_inflight: u16 = 1024 => with_max_inflight,
        /// Messages waiting in one session's queue (online or offline). When full, new messages
        /// for that session are dropped (the newest is dropped, never one already queued) and
        /// counted in [`Metrics`](crate::Metrics). With storage, a persistent session's QoS 1/2
        /// messages keep their packet id while stored, so it holds 65,535 of them at most,
        /// whatever this says. Default 1,000.
        pub max_queued_messages: usize = 1000 => with_max_queued_messages,
        /// Bytes one session holds for its client: its queue and the messages it sent and has
        /// not had acknowledged, counting what each message holds (topic, payload, forwarded
        /// properties such as User Properties, the message's own struct and queue entry, and
        /// one cached wire form: 552 bytes, with topic and properties counted twice); same policy.
        /// Default 16 MiB.
        pub max_queued_bytes: usize = 16 * 1024 * 1024 => with_max_queued_bytes,
        /// Subscriptions per session; a SUBSCRIBE past it is refused for that filter (3.1.1:
        /// 0x80, v5: 0x97). Default 1,000.
        pub max_subscriptions_per_client: usize = 1000 => with_max_subscriptions_per_client,
        /// Levels in a topic name or filter; longer ones are refused (PUBLISH: connection closed,
        /// v5 0x90; SUBSCRIBE: that filter refused). Default 32.
        pub max_topic_levels: usize = 32 => with_max_topic_levels,
        /// Bytes in a topic name or filter; same policy. Default 65,535.
        pub max_topic_length: usize = 65_535 => with_max_topic_length,
        /// Topics with a retained message; a retained PUBLISH to a new topic past it is delivered
        /// but not retained (and counted). Also the most retained messages waiting to be sent to
        /// one session after its subscriptions (they go out at the connection's pace; past it
        /// they are not sent, and counted in `retained_not_sent`). Default 100,000.
        pub max_retained: usize = 100_000 => with_max_retained,
        /// Time a new connection has to send CONNECT before it is closed. Default 10 s.
        #[serde(with = "humantime_serde")]
        pub connect_timeout: Duration = Duration::from_secs(10) => with_connect_timeout,
        /// Time a TLS handshake may take before the connection is dropped. Default 10 s.
        #[serde(with = "humantime_serde")]
        pub handshake_timeout: Duration = Duration::from_secs(10) => with_handshake_timeout,
        /// Queue QoS 0 messages for persistent sessions while their client is away. Default
        /// false, as in Mosquitto: QoS 0 is "at most once".
        pub queue_qos0_offline: bool = false => with_queue_qos0_offline,
        /// Size budget of the store, in bytes of records held (`Storage::size_on_disk`: keys
        /// and values; the files run somewhat larger with the backend's overhead, and keep the
        /// high-water mark of what they held, reusing that space). While the store is over it,
        /// new copies
        /// for persistent sessions are dropped (counted in `messages_dropped_storage_full`, with a
        /// `message_dropped` hook event); sessions and retained messages are still written.
        /// Checked at most twice a second. Default: no budget.
        pub max_storage_bytes: Option<u64> = None => with_max_storage_bytes,
        /// Publisher flow control: when a PUBLISH is queued for a connected session whose queue
        /// then holds at least this many messages, the publishing connection stops reading until
        /// that queue is down to half of it, so messages are delivered while they are published
        /// instead of piling up. A wait ends after `flow_control_pause` at most; a session that
        /// did not drain in that time counts as slow and no longer pauses anyone until its queue
        /// is down to half (its queue's overflow policy applies instead). A client is never paused
        /// for its own session, nor for a session whose own connection is paused (so two clients
        /// cannot wait for each other). 0 turns flow control off. Default 256.
        pub flow_control_queue: usize = 256 => with_flow_control_queue,
        /// Longest single flow-control pause of a publisher. Default 1 s.
        #[serde(with = "humantime_serde")]
        pub flow_control_pause: Duration = Duration::from_secs(1) => with_flow_control_pause,
        /// Connections not yet authenticated (PROXY header, TLS or WebSocket handshake, CONNECT
        /// and authentication still under way), at most. When full, the oldest of them is
        /// dropped to make room for a new one, so sockets that never send CONNECT cannot lock
        /// out real clients. They do not count against `max_connections`, which a connection
        /// joins once authenticated. Default 1,024.
        pub max_pending_connections: usize = 1024 => with_max_pending_connections,
        /// Pending connections from one source address, at most; when full, that address's
        /// oldest pending connection is dropped. Default 128.
        pub max_pending_per_address: usize = 128 => with_max_pending_per_address,
        /// Wait before checking the credentials of a client whose address or user name failed
        /// authentication recently: this, doubled for each further failure, up to
        /// `auth_failure_backoff_max`. The wait costs no CPU and holds up nobody else; a success
        /// clears the record, and records idle for 10 minutes are forgotten. `ZERO` turns it
        /// off. Default 100 ms.
        #[serde(with = "humantime_serde")]
        pub auth_failure_backoff: Duration = Duration::from_millis(100) => with_auth_failure_backoff,
        /// Longest such wait. Default 10 s.
        #[serde(with = "humantime_serde")]
        pub auth_failure_backoff_max: Duration = Duration::from_secs(10) => with_auth_failure_backoff_max,
        /// Topic filters in one SUBSCRIBE, at most; the filters past it are refused (v5 0x97
        /// Quota exceeded, 3.1.1 0x80). Repeats of a filter in one SUBSCRIBE count once (the
        /// last one wins, as if each had been sent on its own). Default 256.
        pub max_filters_per_subscribe: usize = 256 => with_max_filters_per_subscribe,
        /// User Properties in one PUBLISH or Will, at most, and their bytes (names and values)
        /// at most. A PUBLISH over either is not routed (v5 PUBACK/PUBREC 0x97 Quota exceeded;
        /// 3.1.1 clients cannot send properties); a will over either refuses the CONNECT
        /// (0x97). Defaults 128 and 64 KiB.
        pub max_user_properties: usize = 128 => with_max_user_properties,
        /// See `max_user_properties`.
        pub max_user_property_bytes: usize = 64 * 1024 => with_max_user_property_bytes,
        /// Bytes one session's subscriptions may hold, counting the filter and a trie node per
        /// level (an upper bound of what they cost); a SUBSCRIBE past it is refused for that
        /// filter (v5 0x97, 3.1.1 0x80). Default 2 MiB.
        pub max_subscription_bytes_per_client: usize = 2 * 1024 * 1024 => with_max_subscription_bytes_per_client,
        /// Sessions held at once (connected or not), at most. A CONNECT that would create one
        /// more is refused (v5 0x97 Quota exceeded, 3.1.1 0x03); resuming a session is always
        /// possible. Sessions never expire by default (`Capabilities::max_session_expiry_interval`
        /// is `u32::MAX`, as 3.1.1's Clean Session 0 asks and Mosquitto does): this bound is
        /// what keeps them from growing without end. Default 100,000.
        pub max_sessions: usize = 100_000 => with_max_sessions,
        /// Bytes held by retained messages (as `Message::size` counts them), at most; a retained
        /// PUBLISH that would pass it is delivered but not retained (counted in
        /// `retained_refused`). Default 256 MiB.
        pub max_retained_bytes: usize = 256 * 1024 * 1024 => with_max_retained_bytes,
        /// Bytes queued (or sent and unacknowledged) across all sessions, at most (the
        /// broker-wide budget beside each session's `max_queued_bytes`); a message that would
        /// pass it is dropped for that session, newest first, and counted in
        /// `messages_dropped`. Sessions count what they hold in it in 1 KiB steps (so the
        /// shared counter is not touched per message), and a session keeps one step while it
        /// holds nothing. Default 1 GiB.
        pub max_total_queued_bytes: usize = 1024 * 1024 * 1024 => with_max_total_queued_bytes,
        /// Bytes in a Client Identifier, at most; a longer one is refused (v5 0x85, 3.1.1
        /// 0x02). Default 256 (the standards require servers to accept 1 to 23).
        pub max_client_id_length: usize = 256 => with_max_client_id_length,
        /// Longest wait, when a connection ends (shutdown, DISCONNECT, takeover, a refused
        /// CONNECT), for its last packets to reach a client that stopped reading; the socket
        /// is then closed anyway. It bounds how long [`BrokerHandle::shutdown`](crate::BrokerHandle::shutdown)
        /// waits for such a client. Default 5 s.
        #[serde(with = "humantime_serde")]
        pub close_flush_timeout: Duration = Duration::from_secs(5) => with_close_flush_timeout,
    }
}

impl Limits {
    /// The limits a connection takes when it starts and keeps for its life, so that
    /// [`BrokerHandle::reconfigure`](crate::BrokerHandle::reconfigure) can change them for
    /// new connections. The others are broker-wide (queues, retained messages, sessions,
    /// storage, connection places) and keep their value from start until a restart. Every
    /// [`Capabilities`] setting is per connection.
    pub const PER_CONNECTION: &'static [&'static str] = &[
        "max_packet_size",
        "max_inflight",
        "max_subscriptions_per_client",
        "max_topic_levels",
        "max_topic_length",
        "connect_timeout",
        "handshake_timeout",
        "flow_control_pause",
        "max_filters_per_subscribe",
        "max_user_properties",
        "max_user_property_bytes",
        "max_subscription_bytes_per_client",
        "max_client_id_length",
        "close_flush_timeout",
    ];

    /// Checks the values the broker cannot work with: a limit of 0 where at least one is
    /// needed, a packet size too small for a CONNECT, a back-off longer than its maximum.
    /// [`BrokerBuilder::start`](crate::Broker::start) runs it.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let checks: [(bool, &'static str, &'static str); 8] = [
            (
                self.max_connections == 0,
                "max_connections",
                "must be at least 1",
            ),
            (
                self.max_packet_size < 64,
                "max_packet_size",
                "must be at least 64 bytes",
            ),
            (self.max_inflight == 0, "max_inflight", "must be at least 1"),
            (
                self.max_topic_levels == 0,
                "max_topic_levels",
                "must be at least 1",
            ),
            (
                self.max_pending_connections == 0,
                "max_pending_connections",
                "must be at least 1",
            ),
            (
                self.max_pending_per_address == 0,
                "max_pending_per_address",
                "must be at least 1",
            ),
            (
                self.max_client_id_length < 23,
                "max_client_id_length",
                "must be at least 23 (servers must accept 1 to 23 bytes, MQTT-3.1.3-5)",
            ),
            (
                self.auth_failure_backoff > self.auth_failure_backoff_max,
                "auth_failure_backoff",
                "must not exceed auth_failure_backoff_max",
            ),
        ];
        refuse_first(&checks)
    }

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
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
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

settings! {
    /// What the broker offers MQTT 5.0 clients, advertised in CONNACK and enforced: a client
    /// that uses what is not offered gets the reason code the standard names.
    pub struct Capabilities {
        /// Highest QoS accepted on PUBLISH (v5 Maximum QoS). A PUBLISH above it ends the
        /// connection with 0x9B; a will above it is refused with CONNACK 0x9B; subscriptions are
        /// granted at most this QoS. Default QoS 2.
        pub maximum_qos: QoS = QoS::ExactlyOnce => with_maximum_qos,
        /// Retained messages accepted (v5 Retain Available). If false, a retained PUBLISH ends the
        /// connection with 0x9A and a retained will is refused with CONNACK 0x9A. Default true.
        pub retain_available: bool = true => with_retain_available,
        /// Wildcards accepted in subscriptions; if false such filters get SUBACK 0xA2. Default
        /// true.
        pub wildcard_subscriptions: bool = true => with_wildcard_subscriptions,
        /// Subscription Identifiers accepted; if false a SUBSCRIBE with one gets SUBACK 0xA1 for
        /// each filter. Default true.
        pub subscription_identifiers: bool = true => with_subscription_identifiers,
        /// `$share/{group}/{filter}` subscriptions accepted; if false they get SUBACK 0x9E.
        /// Default true.
        pub shared_subscriptions: bool = true => with_shared_subscriptions,
        /// Topic aliases a client may use towards the broker (v5 Topic Alias Maximum); 0 turns
        /// them off. An alias of 0 or above it ends the connection with 0x94. Default 64.
        pub topic_alias_maximum: u16 = 64 => with_topic_alias_maximum,
        /// Topic aliases the broker uses on the PUBLISHes it sends to an MQTT 5.0 client
        /// (§3.3.2.3.4), never more than the client's own Topic Alias Maximum; the least
        /// recently used one is replaced when all are taken. Each connection keeps a copy of
        /// up to this many topics. 0 turns outbound aliases off. Default 32.
        pub outbound_topic_aliases: u16 = 32 => with_outbound_topic_aliases,
        /// Unacknowledged inbound QoS 2 PUBLISHes a client may have (v5 Receive Maximum); one
        /// more ends the connection with 0x93. Default 1,024.
        pub receive_maximum: u16 = 1024 => with_receive_maximum,
        /// Longest Keep Alive accepted, in seconds. A client asking for more (or for 0) is told
        /// this value as Server Keep Alive (v5) and held to it. `None`: the client's value.
        pub max_keep_alive: Option<u16> = None => with_max_keep_alive,
        /// Longest Session Expiry Interval granted, in seconds (`u32::MAX`: sessions may never
        /// expire). A longer request is cut and the granted value sent in CONNACK. Default
        /// `u32::MAX`.
        pub max_session_expiry_interval: u32 = u32::MAX => with_max_session_expiry_interval,
        /// Response Information for clients that ask for it (v5 Request Response Information).
        pub response_information: Option<String> = None => with_response_information,
        /// Refuse every connection with Use another server / Server moved and this reference.
        pub redirect: Option<Redirect> = None => with_redirect,
    }
}

impl Capabilities {
    /// Checks the values MQTT does not allow: a Receive Maximum of 0 (MQTT 5.0 §3.2.2.3.3).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        refuse_first(&[(
            self.receive_maximum == 0,
            "receive_maximum",
            "must be at least 1 (a Receive Maximum of 0 is a protocol error)",
        )])
    }
}

/// The first check that holds, as an error.
fn refuse_first(checks: &[(bool, &'static str, &'static str)]) -> Result<(), InvalidSetting> {
    match checks.iter().find(|(bad, _, _)| *bad) {
        Some(&(_, name, reason)) => Err(InvalidSetting { name, reason }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_each_check_names_its_setting() {
        assert_eq!(Limits::default().validate(), Ok(()));
        assert_eq!(Capabilities::default().validate(), Ok(()));
        let bad = Limits::default().with_max_inflight(0).validate();
        assert_eq!(bad.map_err(|e| e.name), Err("max_inflight"));
        // MQTT-3.1.3-5: a server must accept Client Identifiers of 1 to 23 bytes.
        let bad = Limits::default().with_max_client_id_length(22).validate();
        assert_eq!(bad.map_err(|e| e.name), Err("max_client_id_length"));
        let bad = Limits::default()
            .with_auth_failure_backoff(Duration::from_secs(20))
            .validate();
        assert_eq!(bad.map_err(|e| e.name), Err("auth_failure_backoff"));
        let bad = Capabilities::default().with_receive_maximum(0).validate();
        assert_eq!(bad.map_err(|e| e.name), Err("receive_maximum"));
    }

    #[test]
    fn the_settings_table_lists_every_field_with_its_documentation() {
        let names: Vec<_> = Limits::SETTINGS.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), 28);
        assert!(names.contains(&"max_packet_size") && names.contains(&"max_client_id_length"));
        let timeout = Limits::SETTINGS
            .iter()
            .find(|s| s.name == "connect_timeout")
            .expect("listed");
        assert_eq!(timeout.ty, "Duration");
        assert_eq!(
            timeout.summary(),
            "Time a new connection has to send CONNECT before it is closed."
        );
        assert!(Capabilities::SETTINGS.iter().all(|s| !s.doc.is_empty()));
    }

    #[cfg(feature = "serde")]
    mod serde_form {
        use super::*;

        #[test]
        fn defaults_round_trip_through_toml_with_every_setting_named() {
            let text = toml::to_string(&Limits::default()).expect("serializes");
            assert!(text.contains("connect_timeout = \"10s\""), "{text}");
            let back: Limits = toml::from_str(&text).expect("deserializes");
            assert_eq!(back, Limits::default());
            for s in Limits::SETTINGS {
                // Options that are None are left out of the file.
                assert!(
                    text.contains(&format!("{} =", s.name)) || s.ty.starts_with("Option"),
                    "{} missing from {text}",
                    s.name
                );
            }
            let caps = Capabilities::default().with_maximum_qos(QoS::AtLeastOnce);
            let text = toml::to_string(&caps).expect("serializes");
            assert!(text.contains("maximum_qos = 1"), "{text}");
            assert_eq!(toml::from_str::<Capabilities>(&text).expect("back"), caps);
        }

        #[test]
        fn a_partial_table_keeps_the_other_defaults() {
            let limits: Limits =
                toml::from_str("max_packet_size = 4096\nflow_control_pause = \"250ms\"\n")
                    .expect("deserializes");
            assert_eq!(
                limits,
                Limits::default()
                    .with_max_packet_size(4096)
                    .with_flow_control_pause(Duration::from_millis(250))
            );
        }

        #[test]
        fn unknown_names_wrong_types_bad_durations_and_qos_3_are_refused() {
            let cases = [
                ("max_packet_sise = 1", "unknown field `max_packet_sise`"),
                ("max_packet_size = \"big\"", "invalid type"),
                ("connect_timeout = \"10 parsecs\"", "expected a duration"),
                ("connect_timeout = 10", "invalid type"),
            ];
            for (text, expected) in cases {
                let err = toml::from_str::<Limits>(text).expect_err(text).to_string();
                assert!(err.contains(expected), "{text}: {err}");
            }
            let err = toml::from_str::<Capabilities>("maximum_qos = 3")
                .expect_err("QoS 3")
                .to_string();
            assert!(err.contains("a QoS of 0, 1 or 2"), "{err}");
        }
    }
}
