//! The redb backend: one file, `roost.redb`, in the data directory, a table per table of
//! the shared layout (`layout.rs`) and a `meta` table with the format version.
//!
//! # Durability
//! Every commit is a `Durability::Immediate` one: one `fdatasync` of the file, and redb
//! checksums its commits, so a commit torn by a power cut rolls back to the last complete
//! one. [`Storage::write_durable`] (a batch in acked mode) is one such commit.
//! [`Storage::write`] (periodic mode) keeps the operations in memory and
//! [`Storage::flush`] commits them all at once: what redb's `Durability::None` commits
//! would promise (nothing until the next durable commit), without them. The power-loss test
//! lost commits older than the last durable one when non-durable commits of large values
//! came between them, so they are not used. Opening a store syncs the directory and its
//! parent, so the file's name is durable too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::backend::open_dir_store;
use crate::layout::{self, Held, Rows, Table, Tables};
use crate::sync::DirSync;
use crate::{OnCorrupt, Op, Snapshot, Storage, StorageError, FORMAT_VERSION};

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

const RETAINED: Def = TableDefinition::new("retained");
const SESSIONS: Def = TableDefinition::new("sessions");
const QUEUE: Def = TableDefinition::new("queue");
const INBOUND: Def = TableDefinition::new("inbound");
const PLUGIN: Def = TableDefinition::new("plugin");
const META: Def = TableDefinition::new("meta");

/// Operations [`Storage::write`] holds before it commits them without waiting for a flush.
const MAX_PENDING_OPS: usize = 16_384;

/// The file inside the data directory.
const FILE: &str = "roost.redb";

fn def(table: Table) -> Def {
    match table {
        Table::Retained => RETAINED,
        Table::Sessions => SESSIONS,
        Table::Queue => QUEUE,
        Table::Inbound => INBOUND,
        Table::Plugin => PLUGIN,
    }
}

fn io(e: impl Into<redb::Error>) -> StorageError {
    StorageError::Io(std::io::Error::other(e.into()))
}

/// Stores broker state in a redb database (one file in the data directory).
#[derive(Clone)]
pub struct RedbStorage {
    db: Arc<redb::Database>,
    path: PathBuf,
    sync: Arc<DirSync>,
    held: Arc<Held>,
    /// Operations written but not yet committed (periodic durability), oldest first.
    pending: Arc<Mutex<Vec<Op>>>,
}

impl std::fmt::Debug for RedbStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStorage")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbStorage {
    /// Opens (or creates) the store in the directory `path`, checking that every stored
    /// record can be read. A store that cannot be opened or read is handled as `on_corrupt`
    /// says; one that another process (or another store in this one) holds is
    /// [`StorageError::InUse`].
    pub fn open(path: impl AsRef<Path>, on_corrupt: OnCorrupt) -> Result<Self, StorageError> {
        open_dir_store(path.as_ref(), on_corrupt, Self::open_checked)
    }

    fn open_checked(path: &Path) -> Result<Self, StorageError> {
        let corrupt = |e: &dyn std::fmt::Display| StorageError::corrupt(path, e);
        std::fs::create_dir_all(path).map_err(StorageError::Io)?;
        let db = redb::Database::create(path.join(FILE)).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StorageError::InUse {
                path: path.to_path_buf(),
            },
            other => corrupt(&other),
        })?;
        let txn = db.begin_write().map_err(io)?;
        {
            let mut meta = txn.open_table(META).map_err(|e| corrupt(&e))?;
            let found = meta
                .get(b"format".as_slice())
                .map_err(|e| corrupt(&e))?
                .map(|v| v.value().to_vec());
            if layout::check_format(found.as_deref()).map_err(|e| corrupt(&e))? {
                meta.insert(b"format".as_slice(), [FORMAT_VERSION].as_slice())
                    .map_err(io)?;
            }
            for t in [RETAINED, SESSIONS, QUEUE, INBOUND, PLUGIN] {
                txn.open_table(t).map_err(|e| corrupt(&e))?;
            }
        }
        txn.commit().map_err(io)?;
        let sync = DirSync::new(path, &[], &[]).map_err(StorageError::Io)?;
        let store = RedbStorage {
            db: Arc::new(db),
            path: path.to_path_buf(),
            sync: Arc::new(sync),
            held: Arc::default(),
            pending: Arc::default(),
        };
        store.read_all().map_err(|e| corrupt(&e))?;
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `fdatasync`/`fsync` calls made by flushes so far (one per flush; redb's own), and
    /// by opening the store.
    pub fn syncs(&self) -> u64 {
        self.sync.syncs()
    }

    fn read_all(&self) -> Result<Snapshot, StorageError> {
        let txn = self.db.begin_read().map_err(io)?;
        let rows = |t: Table| -> Result<Rows, StorageError> {
            let table = txn.open_table(def(t)).map_err(io)?;
            table
                .iter()
                .map_err(io)?
                .map(|r| {
                    r.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                        .map_err(io)
                })
                .collect()
        };
        let (snapshot, held) = layout::snapshot(
            rows(Table::Retained)?,
            rows(Table::Sessions)?,
            rows(Table::Queue)?,
            rows(Table::Inbound)?,
            rows(Table::Plugin)?,
        )?;
        self.held.set(held);
        Ok(snapshot)
    }

    /// Commits what `write` left pending and `ops`, durably, as one transaction.
    fn commit(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        let mut all = std::mem::take(&mut *self.pending.lock());
        all.extend(ops);
        if all.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(io)?;
        txn.set_durability(redb::Durability::Immediate)
            .map_err(io)?;
        let delta = layout::apply(&mut Txn(&txn), all)?;
        txn.commit().map_err(io)?;
        self.held.add(delta);
        self.sync.count(1);
        Ok(())
    }
}

/// A write transaction, as the layout's [`Tables`].
struct Txn<'a>(&'a redb::WriteTransaction);

impl Tables for Txn<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<i64, StorageError> {
        let mut t = self.0.open_table(def(table)).map_err(io)?;
        let old = t.insert(key, value).map_err(io)?.map(|o| o.value().len());
        Ok(layout::put_delta(key, value, old))
    }

    fn remove(&mut self, table: Table, key: &[u8]) -> Result<i64, StorageError> {
        let mut t = self.0.open_table(def(table)).map_err(io)?;
        let old = t.remove(key).map_err(io)?.map(|o| o.value().len());
        Ok(old.map_or(0, |o| -layout::row_bytes(key, o)))
    }

    fn remove_prefix(&mut self, table: Table, prefix: &[u8]) -> Result<i64, StorageError> {
        let mut t = self.0.open_table(def(table)).map_err(io)?;
        let end = layout::prefix_end(prefix);
        let mut delta = 0;
        t.retain_in::<&[u8], _>(prefix..end.as_slice(), |k, v| {
            delta -= layout::row_bytes(k, v.len());
            false
        })
        .map_err(io)?;
        Ok(delta)
    }
}

#[async_trait]
impl Storage for RedbStorage {
    async fn load(&self) -> Result<Snapshot, StorageError> {
        let this = self.clone();
        // What was written and not yet flushed is part of what is stored.
        tokio::task::spawn_blocking(move || this.commit(Vec::new()).and_then(|()| this.read_all()))
            .await
            .map_err(|_| StorageError::Backend("storage task panicked"))?
    }

    async fn write(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        // Held until the next flush, which commits them in one durable transaction; or
        // committed now when that many are waiting, so memory stays bounded.
        let full = {
            let mut pending = self.pending.lock();
            pending.extend(ops);
            pending.len() >= MAX_PENDING_OPS
        };
        if full {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.write_durable(Vec::new()).await
    }

    async fn write_durable(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.commit(ops))
            .await
            .map_err(|_| StorageError::Backend("storage task panicked"))?
    }

    fn size_on_disk(&self) -> Result<u64, StorageError> {
        Ok(self.held.get())
    }
}
