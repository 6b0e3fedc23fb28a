//! # Roost
//!
//! An MQTT broker that applications embed in their own process, implementing MQTT 3.1, 3.1.1
//! and 5.0.
//!
//! The broker runs on your tokio runtime; network clients connect over TCP, and your
//! application talks to the same broker in-process through [`Client`], with the same
//! sessions, retained messages and QoS guarantees.
//!
//! ```
//! use roost::{Broker, ClientOptions, QoS};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = Broker::builder()
//!     .listen("127.0.0.1:0".parse()?)
//!     .build()
//!     .start()
//!     .await?;
//! println!("MQTT on {}", broker.local_addrs()[0]);
//!
//! let (client, mut deliveries) = broker.client(ClientOptions::new("app")).await?;
//! client.subscribe("sensors/+/temperature", QoS::AtLeastOnce).await?;
//! client.publish("sensors/kitchen/temperature", "21.5", QoS::AtLeastOnce, false).await?;
//! let message = deliveries.recv().await.expect("delivered");
//! assert_eq!(&message.payload[..], b"21.5");
//!
//! broker.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! The modules re-exported here:
//!
//! * [`codec`]: packets of every protocol level, incremental zero-copy decoding and encoding.
//! * [`topic`]: validated topic names and topic filters, and the subscription trie.
//! * [`plugin`]: the authenticator, authorizer and hooks traits.
//! * [`storage`]: the storage trait and its memory and sled backends.
//! * [`auth`]: built-in providers: allow-all, static users, Mosquitto password and ACL files.

pub use roost_auth as auth;
pub use roost_core::bridge;
pub use roost_core::codec::{self, QoS, ReasonCode};
pub use roost_core::events;
#[cfg(feature = "metrics")]
pub use roost_core::metrics_export;
pub use roost_core::plugin;
pub use roost_core::policy::{self, AnonymousAccess, SessionOwnership};
pub use roost_core::topic::{self, TopicFilter, TopicName};
#[cfg(feature = "tls")]
pub use roost_core::{crypto_provider, TlsConfig, TlsError};
pub use roost_core::{
    duplex_listener, Accepted, Broker, BrokerBuilder, BrokerHandle, Capabilities, Client,
    ClientError, ClientOptions, ControlError, Deliveries, DuplexConnector, DuplexListener,
    Durability, Error, InvalidSetting, Limits, Listener, Message, MetricsSnapshot, PublishOptions,
    Received, Reconfigured, Redirect, RetainedPage, SessionInfo, SettingInfo,
};
#[cfg(feature = "protect")]
pub use roost_protect as protect;

/// The attribute the [`plugin`] traits are implemented with: `#[roost::async_trait]` on an
/// `impl Authenticator for ...` block (no dependency of your own needed).
pub use async_trait::async_trait;
pub use roost_storage as storage;

/// The README's code blocks, compiled as doctests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
