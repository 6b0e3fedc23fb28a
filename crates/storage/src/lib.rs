//! Roost's persistence layer.
//!
//! This crate will hold the `Storage` trait that the broker core awaits wherever a delivery
//! guarantee depends on the disk (retained messages, persistent sessions, QoS 1/2 state,
//! offline queues, delayed wills), together with an in-memory backend and a sled backend.
//! Storage keeps its own versioned record types, so the wire format (in `roost-core`) and the
//! disk format can change separately.
//!
//! The dependency order of the workspace is `roost-storage` ← `roost-core` ← `roost-auth` ←
//! `roost`; this crate therefore knows nothing of packets or connections.
