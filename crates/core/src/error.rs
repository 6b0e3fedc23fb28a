//! Errors of the broker and of in-process clients.

use std::io;
use std::net::SocketAddr;

use thiserror::Error;

use crate::codec::ReasonCode;

/// Why a broker could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A listener could not bind its address.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The broker has no listener and was asked to run as a network server.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// Stored state could not be loaded.
    #[error("cannot load stored state")]
    Storage(#[source] roost_storage::StorageError),
    /// A per-listener option (named) was set on the builder before any listener was added,
    /// so there was no listener for it to apply to.
    #[error("BrokerBuilder::{0} was called before any listener was added")]
    ListenerOptionWithoutListener(&'static str),
    /// A limit or capability has a value the broker cannot work with.
    #[error("invalid setting")]
    InvalidSetting(#[source] crate::config::InvalidSetting),
}

/// Why an in-process client operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The broker refused the connection with this CONNACK code.
    #[error("connection refused: {0}")]
    Refused(ReasonCode),
    /// The connection is closed (by `disconnect`, by the broker, or at shutdown).
    #[error("client is disconnected")]
    Disconnected,
    /// The broker answered with a failure code.
    #[error("operation failed: {0}")]
    Failed(ReasonCode),
    /// The broker's answer did not arrive within the client's timeout.
    #[error("no answer from the broker in time")]
    Timeout,
    /// A topic name or filter given to the client is not valid.
    #[error("invalid topic: {0}")]
    InvalidTopic(#[from] crate::topic::TopicError),
    /// All 65,535 packet identifiers are in use by unanswered requests.
    #[error("too many requests in flight")]
    TooManyInflight,
}

/// A topic that is already a [`TopicName`](crate::topic::TopicName) or
/// [`TopicFilter`](crate::topic::TopicFilter) cannot fail to convert: this lets the client's
/// methods take those as well as strings.
impl From<std::convert::Infallible> for ClientError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}
