//! Bridges: the broker forwards messages to and from another MQTT broker.
//!
//! A bridge is configured with [`BrokerBuilder::bridge`](crate::BrokerBuilder::bridge) and
//! runs while the broker runs. It holds two connections and relays between them:
//!
//! * towards the **remote** broker, an MQTT client connection (TCP or TLS, MQTT 3.1.1 or
//!   5.0) that subscribes to the remote side of the `in` rules;
//! * into the **local** broker, an in-process connection with a persistent session named
//!   `$bridge/<name>`, subscribed to the local side of the `out` rules. That session is
//!   stored like any persistent session: while the remote is away, outbound QoS 1 and 2
//!   messages wait in it (bounded by the session limits, overflow counted as for any
//!   session), and they survive a restart of the local broker.
//!
//! The relay mirrors each QoS exchange packet for packet, with the same packet identifier on
//! both sides: a local message is acknowledged to the local broker only once the remote
//! broker acknowledged it, and a remote message is acknowledged to the remote broker only
//! once the local broker acknowledged it (after storing it, under acked durability). A
//! QoS 2 message re-sent after a restart keeps its packet identifier on both sides, so the
//! receiving broker's QoS 2 state discards the copy. When either connection drops, both
//! are closed and the bridge reconnects after a capped exponential back-off with jitter;
//! the local broker then re-sends what was not acknowledged, as MQTT requires on every
//! reconnection.
//!
//! No echo: the bridge's local subscriptions have No Local (messages it brought in are not
//! sent back out) and Retain As Published; on a v5 remote it subscribes the same way; on a
//! 3.1.1 remote it connects with the bridge bit (level 0x84, as Mosquitto's
//! `try_private`), and if the remote refuses that, it drops inbound messages that repeat
//! one it just sent out on the same topic.
//!
//! The bridge's local side is the broker's own: the authorizers are not asked about it
//! (its topic rules are its access rules, as in Mosquitto), it cannot publish into `$SYS`,
//! and no client can connect with a `$bridge/` client identifier.

mod relay;
mod remote;
mod rules;
mod status;
#[cfg(feature = "tls")]
mod tls;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use rules::{BridgeDirection, BridgeTopic, BridgeTopicError};
pub use status::BridgeStatus;
#[cfg(feature = "tls")]
pub use tls::BridgeTls;

pub(crate) use status::BridgeState;

use crate::codec::{DecodeError, ReasonCode};
use crate::context::Context;
use crate::policy::BRIDGE_CLIENT_PREFIX;

/// The MQTT version a bridge speaks to its remote broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BridgeProtocol {
    /// MQTT 3.1.1 (Mosquitto's `mqttv311`), with the bridge bit if `try_private` is on.
    V311,
    /// MQTT 5.0 (`mqttv50`): No Local and Retain As Published keep messages from echoing.
    V5,
}

/// One bridge: where the remote broker is, how to connect to it, and which topics go which
/// way. Field names follow Mosquitto's bridge options where there is one.
///
/// ```
/// use roost::bridge::{BridgeConfig, BridgeTopic};
/// let bridge = BridgeConfig::new("cloud", "broker.example:1883")
///     .topic(BridgeTopic::parse("sensors/# out 1").unwrap())
///     .topic(BridgeTopic::parse("cmd/# in 1 \"\" edge7/").unwrap());
/// assert_eq!(bridge.name(), "cloud");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BridgeConfig {
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) protocol: BridgeProtocol,
    pub(crate) remote_client_id: Option<String>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Bytes>,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<BridgeTls>,
    pub(crate) keep_alive: Duration,
    pub(crate) clean_start: bool,
    pub(crate) session_expiry: u32,
    pub(crate) try_private: bool,
    pub(crate) topics: Vec<BridgeTopic>,
    pub(crate) backoff: (Duration, Duration),
    pub(crate) connect_timeout: Duration,
}

impl BridgeConfig {
    /// A bridge named `name` (Mosquitto's `connection`) to the broker at `address`
    /// (`host:port`), at MQTT 3.1.1 with the bridge bit, keep-alive 60 s, a persistent
    /// remote session, and no topics yet.
    pub fn new(name: impl Into<String>, address: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            address: address.into(),
            protocol: BridgeProtocol::V311,
            remote_client_id: None,
            username: None,
            password: None,
            #[cfg(feature = "tls")]
            tls: None,
            keep_alive: Duration::from_secs(60),
            clean_start: false,
            session_expiry: u32::MAX,
            try_private: true,
            topics: Vec::new(),
            backoff: (Duration::from_secs(5), Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// The bridge's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `bridge_protocol_version`.
    pub fn protocol(mut self, protocol: BridgeProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// `remote_clientid`: the client identifier on the remote broker. Default
    /// `roost-<name>`.
    pub fn remote_client_id(mut self, id: impl Into<String>) -> Self {
        self.remote_client_id = Some(id.into());
        self
    }

    /// `remote_username` and `remote_password`.
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<Bytes>) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// TLS towards the remote broker.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: BridgeTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// `keepalive_interval`. Default 60 s; zero turns keep-alive off.
    pub fn keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// `cleansession`: start a new remote session on every connection (messages the remote
    /// held for the bridge are then lost). Default false.
    pub fn clean_start(mut self, clean: bool) -> Self {
        self.clean_start = clean;
        self
    }

    /// The Session Expiry Interval asked of a v5 remote, in seconds. Default `u32::MAX`
    /// (never), 0 with [`BridgeConfig::clean_start`].
    pub fn session_expiry(mut self, seconds: u32) -> Self {
        self.session_expiry = seconds;
        self
    }

    /// `try_private`: mark a 3.1.1 connection as a bridge (level 0x84) so the remote does
    /// not echo. If the remote refuses it, the bridge connects without it. Default true.
    pub fn try_private(mut self, on: bool) -> Self {
        self.try_private = on;
        self
    }

    /// Adds a topic rule (Mosquitto's `topic`).
    pub fn topic(mut self, rule: BridgeTopic) -> Self {
        self.topics.push(rule);
        self
    }

    /// `restart_timeout`: the first wait before reconnecting, doubled after each failure
    /// up to `cap`, each wait drawn between half and all of it (jitter). Default 5 s, 30 s.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff = (base, cap.max(base));
        self
    }

    /// How long the TCP connection, TLS handshake and CONNACK may take. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The local session's client identifier: `$bridge/<name>`.
    pub(crate) fn local_client_id(&self) -> String {
        format!("{BRIDGE_CLIENT_PREFIX}{}", self.name)
    }

    /// The remote client identifier.
    pub(crate) fn remote_id(&self) -> String {
        self.remote_client_id
            .clone()
            .unwrap_or_else(|| format!("roost-{}", self.name))
    }

    /// What [`Broker::start`](crate::Broker::start) refuses (as
    /// [`Error::Config`](crate::Error::Config)): an empty name or one with `/`, `+` or
    /// `#`, no topic rule, an address that is not `host:port`.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.name.is_empty() || self.name.contains(['/', '+', '#', '\0']) {
            return Err("a bridge name must be non-empty, without '/', '+', '#'");
        }
        if self.topics.is_empty() {
            return Err("a bridge needs at least one topic rule");
        }
        match self.address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
            _ => Err("a bridge address must be host:port"),
        }
    }
}

/// Why a bridge's connection failed or ended (see [`BridgeStatus::last_error`]).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The TCP connection could not be made (or the name not resolved).
    #[error("cannot connect: {0}")]
    Connect(#[source] Arc<std::io::Error>),
    /// The TLS handshake failed (an untrusted certificate, say).
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] Arc<std::io::Error>),
    /// The remote broker refused the CONNECT with this code.
    #[error("the remote broker refused the connection: {0}")]
    Refused(ReasonCode),
    /// Connecting (TCP, TLS, CONNACK) took longer than the connect timeout.
    #[error("no CONNACK within the connect timeout")]
    Timeout,
    /// Nothing came from the remote broker within one and a half keep-alive intervals.
    #[error("the remote broker stopped answering (keep-alive)")]
    KeepAlive,
    /// The remote broker sent what MQTT does not allow here.
    #[error("protocol error by the remote broker: {0}")]
    Protocol(&'static str),
    /// The remote broker sent a malformed packet.
    #[error("malformed packet from the remote broker: {0}")]
    Malformed(#[source] DecodeError),
    /// The connection to the remote broker was lost.
    #[error("connection lost: {0}")]
    Lost(#[source] Arc<std::io::Error>),
    /// The remote broker closed the connection (with this DISCONNECT code for v5).
    #[error("the remote broker disconnected: {0}")]
    Disconnected(ReasonCode),
    /// The remote broker refused a subscription of the `in` rules.
    #[error("the remote broker refused a subscription: {0}")]
    SubscriptionRefused(ReasonCode),
    /// The local broker refused or closed the bridge's local session.
    #[error("the local broker closed the bridge's session: {0}")]
    Local(ReasonCode),
}

/// Checks the bridges and starts one task per bridge.
pub(crate) fn check_all(bridges: &[BridgeConfig]) -> Result<(), &'static str> {
    let mut names = std::collections::HashSet::new();
    for bridge in bridges {
        bridge.check()?;
        if !names.insert(bridge.name.as_str()) {
            return Err("two bridges have the same name");
        }
    }
    Ok(())
}

/// Makes each bridge's local session and subscriptions, then starts the bridges' tasks on
/// the broker's tracker; their states, in the same order. Awaited before the listeners
/// accept: a message published by the first client is then queued for the remote (a
/// session made by the task itself raced the first clients, and what they published
/// before it subscribed reached no one).
pub(crate) async fn start(ctx: &Arc<Context>, bridges: Vec<BridgeConfig>) -> Vec<Arc<BridgeState>> {
    let mut states = Vec::with_capacity(bridges.len());
    for config in bridges {
        let state = Arc::new(BridgeState::new(&config));
        relay::prepare(ctx, &config, &state).await;
        ctx.lifecycle.tracker.spawn(relay::run(
            Arc::clone(ctx),
            Arc::new(config),
            Arc::clone(&state),
        ));
        states.push(state);
    }
    states
}
