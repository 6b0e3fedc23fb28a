//! Roost's persistence layer: the [`Storage`] trait the broker core writes through, with an
//! in-memory backend ([`MemoryStorage`]) and two file backends, [`RedbStorage`] (the
//! default, see [`Backend`]) and [`SledStorage`]; [`open_store`] opens a data directory
//! with the backend that made it.
//!
//! # What is stored
//! Everything a restart needs: retained messages; sessions with a non-zero Session Expiry
//! Interval (subscriptions with their options and identifiers, expiry, the time the client
//! went away, a will waiting out its delay); each session's queued and in-flight QoS 1/2
//! messages with their stage (queued, published with a packet id, or released after PUBREC);
//! and inbound QoS 2 packet ids awaiting PUBREL.
//!
//! # Records and format
//! Storage keeps its own record types ([`MessageRecord`], [`SessionRecord`], ...), so the
//! wire format (in `roost-core`) and the disk format change separately. Every stored value
//! starts with a format version byte ([`FORMAT_VERSION`]); a value of an unknown version is
//! an error at load, never silently misread, and a later format can migrate by version.
//!
//! # Guarantees
//! [`Storage::write`] applies a batch of operations in order; [`Storage::flush`] returns
//! once everything written before it is durable: on disk, surviving a power cut, not just
//! handed to the operating system. The broker decides when to flush (its
//! durability mode) and only acknowledges what a guarantee needs after `flush` returned.
//!
//! Features: `redb` and `sled` (both on by default) build the file backends; without either
//! only [`MemoryStorage`] is there, and [`Backend::open`] says which backend was left out.
//!
//! Dependency order: this crate knows nothing of packets or connections (`roost-storage` ←
//! `roost-core`).

// The file-backend helpers (layout, sync, quarantine) have no user when both file
// backends are left out.
#![cfg_attr(not(any(feature = "redb", feature = "sled")), allow(dead_code))]

mod backend;
#[cfg(all(test, feature = "redb", feature = "sled"))]
mod backend_tests;
mod error;
mod layout;
mod memory;
mod record;
#[cfg(feature = "redb")]
mod redb_backend;
#[cfg(feature = "sled")]
mod sled_backend;
mod sync;

use async_trait::async_trait;

pub use backend::{open_store, Backend, OnCorrupt};
pub use error::StorageError;
pub use memory::MemoryStorage;
pub use record::{
    MessageRecord, Op, OwnerRecord, PluginEntry, PropertiesRecord, QueueRecord, QueueStage,
    SessionRecord, SessionSnapshot, Snapshot, SubscriptionRecord, WillRecord, FORMAT_VERSION,
};
#[cfg(feature = "redb")]
pub use redb_backend::RedbStorage;
#[cfg(feature = "sled")]
pub use sled_backend::SledStorage;

/// A place where broker state survives restarts. Object-safe; the broker holds it as
/// `Arc<dyn Storage>` and calls it from one task at a time.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Everything stored, for recovery at start.
    async fn load(&self) -> Result<Snapshot, StorageError>;

    /// Applies `ops` in order. Not necessarily durable until [`Storage::flush`].
    async fn write(&self, ops: Vec<Op>) -> Result<(), StorageError>;

    /// Makes everything written so far durable: it survives a crash of the process and a
    /// power cut (file backends sync their files and directories before returning).
    async fn flush(&self) -> Result<(), StorageError>;

    /// Applies `ops` in order and makes them, and everything written before, durable: what
    /// [`Storage::write`] then [`Storage::flush`] do, which is the default. A store that
    /// can do both in one step (one durable commit) should.
    async fn write_durable(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        self.write(ops).await?;
        self.flush().await
    }

    /// Bytes the store holds: its records' keys and values (0 for memory-only stores). The
    /// broker's size budget (`Limits::max_storage_bytes`) compares this with the budget, so
    /// it must go down when records are deleted; a file backend's files can be larger (its
    /// own overhead, and freed space it reuses rather than gives back).
    fn size_on_disk(&self) -> Result<u64, StorageError>;
}
