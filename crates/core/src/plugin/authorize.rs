//! The [`Authorizer`] trait: what an authenticated client may publish, subscribe to and
//! receive.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytestring::ByteString;

use super::Identity;
use crate::codec::{ProtocolVersion, QoS, ReasonCode};
use crate::topic::{TopicFilter, TopicName};

/// A client, as authorizers and hooks see it: the authorization context of a session.
///
/// It is kept with the session (and stored with a persistent one), so that deliveries to a
/// session whose client is away, or that was restored after a restart, are authorized
/// against the same identity as when it was connected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientInfo {
    /// Client Identifier.
    pub client_id: ByteString,
    /// User Name as the client sent it in CONNECT, unverified. Never authorize on it:
    /// [`ClientInfo::identity`] is who the authenticators said the client is (with no
    /// authenticator registered, the broker takes the claimed name as the identity).
    pub claimed_username: Option<ByteString>,
    /// The identity the authenticator vouched for (updated by re-authentication). This is
    /// what authorizers decide on; it also owns the client's persistent session.
    pub identity: Identity,
    /// Protocol level.
    pub protocol: ProtocolVersion,
    /// Peer address (none for in-process clients).
    pub peer: Option<SocketAddr>,
    /// The listener it came through (`"in-process"` for in-process clients).
    pub listener: Arc<str>,
    /// The broker's own bridge link: the authorizers are not asked about it.
    pub(crate) internal: bool,
}

impl ClientInfo {
    /// A client with this Client Identifier and identity, at MQTT 5.0, in-process (for a
    /// plugin's own tests; the broker builds the real ones).
    pub fn new(client_id: impl Into<ByteString>, identity: Identity) -> Self {
        Self {
            client_id: client_id.into(),
            claimed_username: identity.username.as_deref().map(ByteString::from),
            identity,
            protocol: ProtocolVersion::V5,
            peer: None,
            listener: Arc::from("in-process"),
            internal: false,
        }
    }

    /// Sets the protocol level.
    #[must_use]
    pub fn with_protocol(mut self, protocol: ProtocolVersion) -> Self {
        self.protocol = protocol;
        self
    }

    /// Sets the peer address.
    #[must_use]
    pub fn with_peer(mut self, peer: SocketAddr) -> Self {
        self.peer = Some(peer);
        self
    }

    /// Sets the listener's name.
    #[must_use]
    pub fn with_listener(mut self, listener: impl Into<Arc<str>>) -> Self {
        self.listener = listener.into();
        self
    }

    /// The authenticated user name ([`Identity::username`]), the one authorizers decide on.
    pub fn user(&self) -> Option<&str> {
        self.identity.username.as_deref()
    }
}

/// An authorizer's answer about a publish, a receive or a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Refused; v5 clients are told this code where the protocol has a place for it (0x87
    /// Not authorized is the usual one).
    Deny(ReasonCode),
    /// No opinion: ask the next authorizer.
    Defer,
}

/// An authorizer's answer about a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeDecision {
    /// Allowed, at no more than this QoS (a downgrade if lower than requested).
    Allow(QoS),
    /// Refused with this SUBACK code (v5; 3.1.1 clients get 0x80).
    Deny(ReasonCode),
    /// No opinion: ask the next authorizer.
    Defer,
}

/// Decides what clients may do. Every method defaults to "no opinion"; see the
/// [module docs](crate::plugin) for how several authorizers combine.
///
/// `authorize_publish` and `authorize_subscribe` are async: they run once per PUBLISH or
/// SUBSCRIBE in the client's own task. `authorize_receive` runs for every delivery on the
/// fan-out path of whoever published, so it is synchronous and must be fast and never block
/// (look things up in memory; refresh your tables elsewhere). It is what keeps a wildcard
/// subscription from receiving messages the subscriber may not read, and it also filters
/// retained messages sent on subscribe.
///
/// Will messages are authorized as publishes of their client when it connects.
#[async_trait]
pub trait Authorizer: Send + Sync + 'static {
    /// May `client` publish to `topic`? A refused PUBLISH is not routed: v5 clients get
    /// PUBACK/PUBREC 0x87, 3.1.1 clients a normal acknowledgement (MQTT-3.3.5-2).
    async fn authorize_publish(
        &self,
        client: &ClientInfo,
        topic: &TopicName,
        qos: QoS,
        retain: bool,
    ) -> Decision {
        let _ = (client, topic, qos, retain);
        Decision::Defer
    }

    /// May `client` subscribe to `filter` (for a shared subscription, the whole
    /// `$share/{group}/{filter}`) at `qos`?
    async fn authorize_subscribe(
        &self,
        client: &ClientInfo,
        filter: &TopicFilter,
        qos: QoS,
    ) -> SubscribeDecision {
        let _ = (client, filter, qos);
        SubscribeDecision::Defer
    }

    /// May `client` receive a message on `topic`? Synchronous; see the trait docs.
    fn authorize_receive(&self, client: &ClientInfo, topic: &TopicName, qos: QoS) -> Decision {
        let _ = (client, topic, qos);
        Decision::Defer
    }

    /// May `client` stay connected? Asked after authentication, and for every connected
    /// client when the authorizer is replaced with a re-check
    /// ([`BrokerHandle::set_authorizers`](crate::BrokerHandle::set_authorizers)); a refusal
    /// then disconnects the client (v5: DISCONNECT 0x98 Administrative action).
    async fn authorize_client(&self, client: &ClientInfo) -> Decision {
        let _ = client;
        Decision::Defer
    }
}
