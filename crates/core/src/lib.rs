//! The core of Roost: the MQTT codec, topics, and (as later work lands) the router, sessions,
//! QoS flows, transports and plugin traits.
//!
//! Dependency order in the workspace: `roost-storage` ← `roost-core` ← `roost-auth` ← `roost`.
//! Everything in this crate that touches peer data returns typed errors and never panics on
//! input: see [`codec::DecodeError`] for the malformed-packet rules and the reason code each
//! one maps to.

pub mod codec;
pub mod topic;
