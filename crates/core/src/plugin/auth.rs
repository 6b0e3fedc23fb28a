//! The [`Authenticator`] trait: who may connect, including MQTT 5.0 enhanced authentication
//! (the AUTH exchange, §4.12) and re-authentication.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use bytestring::ByteString;

use crate::codec::{ProtocolVersion, ReasonCode};

/// What a connecting client presents. The broker builds it; a plugin's own tests can
/// with [`ConnectInfo::new`] and the `with_*` setters.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectInfo {
    /// Client Identifier (the assigned one if the client sent an empty one).
    pub client_id: ByteString,
    /// User Name, if any.
    pub username: Option<ByteString>,
    /// Password, if any.
    pub password: Option<Bytes>,
    /// Protocol level of the connection.
    pub protocol: ProtocolVersion,
    /// Peer address (none for in-process clients).
    pub peer: Option<SocketAddr>,
    /// Name of the listener the client came through (`"in-process"` for in-process ones).
    pub listener: Arc<str>,
    /// TLS client certificate chain (DER), leaf first; empty without TLS client auth.
    pub certificates: Vec<Bytes>,
    /// v5 Authentication Method, if the client asked for enhanced authentication.
    pub authentication_method: Option<ByteString>,
}

/// Who the authenticator says the client is; later decisions (authorization) see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Identity {
    /// The authenticated user name, if the method has one.
    pub username: Option<String>,
    /// Free-form roles or groups the application assigns.
    pub roles: Vec<String>,
}

impl Identity {
    /// An identity with a user name and no roles.
    pub fn user(name: impl Into<String>) -> Self {
        Self {
            username: Some(name.into()),
            roles: Vec::new(),
        }
    }

    /// An identity without a user name (a certificate fingerprint's roles, say).
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Adds a role.
    #[must_use]
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.roles.push(role.into());
        self
    }
}

impl ConnectInfo {
    /// A client with this Client Identifier at this protocol level, and nothing else: no
    /// credentials, no peer address, listener `"in-process"`, no certificates.
    pub fn new(client_id: impl Into<ByteString>, protocol: ProtocolVersion) -> Self {
        Self {
            client_id: client_id.into(),
            username: None,
            password: None,
            protocol,
            peer: None,
            listener: Arc::from("in-process"),
            certificates: Vec::new(),
            authentication_method: None,
        }
    }

    /// Sets the User Name.
    #[must_use]
    pub fn with_username(mut self, username: impl Into<ByteString>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Sets the Password.
    #[must_use]
    pub fn with_password(mut self, password: impl Into<Bytes>) -> Self {
        self.password = Some(password.into());
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

    /// Sets the TLS client certificate chain (DER, leaf first).
    #[must_use]
    pub fn with_certificates(mut self, certificates: Vec<Bytes>) -> Self {
        self.certificates = certificates;
        self
    }

    /// Sets the v5 Authentication Method.
    #[must_use]
    pub fn with_authentication_method(mut self, method: impl Into<ByteString>) -> Self {
        self.authentication_method = Some(method.into());
        self
    }
}

/// An authenticator's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthOutcome {
    /// Let the client in as this identity. In enhanced authentication the optional data is
    /// sent to the client with the CONNACK (or the final AUTH of a re-authentication).
    Allow(Identity, Option<Bytes>),
    /// Enhanced authentication continues: the broker sends AUTH 0x18 with this data and
    /// calls [`Authenticator::authenticate_enhanced`] again with the client's answer.
    Continue(Option<Bytes>),
    /// Refuse with this reason code (for example 0x86 Bad User Name or Password, 0x87 Not
    /// authorized, 0x8C Bad authentication method). 3.1.1 clients get the nearest return
    /// code.
    Deny(ReasonCode),
    /// No opinion: ask the next authenticator.
    Defer,
}

/// One step of an enhanced-authentication exchange.
pub struct AuthExchange<'a> {
    /// The client.
    pub client: &'a ConnectInfo,
    /// The Authentication Method (the same for every step of one exchange).
    pub method: &'a ByteString,
    /// Authentication Data the client sent in this step.
    pub data: Option<Bytes>,
    /// True for a re-authentication (AUTH 0x19) of a connected client.
    pub reauthenticating: bool,
    /// Scratch state the authenticator keeps between steps of this exchange (for example a
    /// nonce). Empty at the first step; dropped when the exchange ends.
    pub state: &'a mut Option<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for AuthExchange<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthExchange")
            .field("client", &self.client.client_id)
            .field("method", self.method)
            .field("reauthenticating", &self.reauthenticating)
            .finish_non_exhaustive()
    }
}

/// Decides who may connect. Both methods default to [`AuthOutcome::Defer`]; implement the
/// ones you need. See the [module docs](crate::plugin) for how several authenticators
/// combine.
///
/// ```
/// use roost::plugin::{AuthOutcome, Authenticator, ConnectInfo, Identity};
/// use roost::ReasonCode;
///
/// /// Lets in one user with one password.
/// struct SingleUser;
///
/// // The traits are `#[async_trait]`: `roost::async_trait` is the attribute, no
/// // dependency of your own needed.
/// #[roost::async_trait]
/// impl Authenticator for SingleUser {
///     async fn authenticate(&self, client: &ConnectInfo) -> AuthOutcome {
///         match (client.username.as_deref(), client.password.as_deref()) {
///             (Some("admin"), Some(b"s3cret")) => AuthOutcome::Allow(Identity::user("admin"), None),
///             _ => AuthOutcome::Deny(ReasonCode::BadUserNameOrPassword),
///         }
///     }
/// }
/// ```
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Plain authentication: CONNECT without an Authentication Method (every 3.1/3.1.1
    /// client, and v5 clients that do not ask for enhanced authentication).
    async fn authenticate(&self, client: &ConnectInfo) -> AuthOutcome {
        let _ = client;
        AuthOutcome::Defer
    }

    /// One step of v5 enhanced authentication, at CONNECT, on each AUTH 0x18 from the client,
    /// and for re-authentication (AUTH 0x19). Return [`AuthOutcome::Defer`] for a method you
    /// do not implement: if nobody implements it the client gets 0x8C (Bad authentication
    /// method).
    async fn authenticate_enhanced(&self, exchange: &mut AuthExchange<'_>) -> AuthOutcome {
        let _ = exchange;
        AuthOutcome::Defer
    }
}
