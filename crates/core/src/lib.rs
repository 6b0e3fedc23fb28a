//! The core of Roost: the MQTT codec, topics, router, sessions, QoS flows and the embedding
//! API.
//!
//! Dependency order in the workspace: `roost-storage` ← `roost-core` ← `roost-auth` ←
//! `roost`. Everything in this crate that touches peer data returns typed errors and never
//! panics on input: see [`codec::DecodeError`] for the malformed-packet rules and the reason
//! code each one maps to.
//!
//! # Layout
//! * [`codec`]: packets, decoding and encoding.
//! * [`topic`]: topic names, filters and the subscription trie.
//! * `router`: matching a PUBLISH once, retained messages, fan-out.
//! * `session`: subscriptions, queues, inflight windows, takeover.
//! * `connection`: the per-connection reader loop and writer task.
//! * `transport`: network and in-process halves of a connection.
//! * [`Broker`], [`BrokerHandle`]: building, starting and stopping a broker.
//! * [`Client`]: the in-process client.
//! * [`bridge`]: forwarding to and from other brokers.
//! * [`Metrics`]: counters, also published as `$SYS` topics.

pub mod bridge;
pub mod codec;

pub mod plugin;
pub mod policy;
pub mod topic;

#[doc(hidden)]
pub mod bench_support;

mod accept;
mod admission;
mod authz;
mod broker;
mod client;
mod config;
mod connection;
mod context;
mod control;
mod error;
mod gate;
mod handle;
mod message;
mod metrics;
#[cfg(feature = "metrics")]
pub mod metrics_export;
mod persist;
mod pipeline;
mod recovery;
mod registry;
mod router;
mod session;
mod shown;
mod sys;
mod throttle;
mod timers;
mod transport;

pub use broker::{Broker, BrokerBuilder};
pub use client::{Client, ClientOptions, Deliveries, PublishOptions, Received};
pub use config::{Capabilities, InvalidSetting, Limits, Redirect, SettingInfo};
pub use control::{ControlError, RetainedPage, SessionInfo};
pub use error::{ClientError, Error};
pub use handle::{BrokerHandle, Reconfigured};
pub use message::{Delivery, Message};
pub use metrics::{Metrics, MetricsSnapshot};
pub use persist::Durability;
pub use plugin::events;
pub use policy::{AnonymousAccess, SessionOwnership};
pub use roost_storage as storage;
pub use transport::listener::{
    duplex_listener, Accepted, DuplexConnector, DuplexListener, Listener,
};
#[cfg(feature = "tls")]
pub use transport::tls::{crypto_provider, TlsConfig, TlsError};
