//! The sled backend (sled 0.34, the stable line; 1.0 is still alpha).
//!
//! One sled tree per table of the shared layout (`layout.rs`: `retained`, `sessions`,
//! `queue`, `inbound`, `plugin`); a `format` entry in the default tree records the format version.
//!
//! # Durability
//! sled buffers writes and writes them out on its own timer, or when flushed. A sled flush
//! is not enough for a power cut: on Linux it ends with `sync_file_range`, which neither
//! syncs file metadata nor the drive's cache, and sled syncs for real (`fsync`) only from
//! its background thread, every 500 ms. So [`Storage::flush`] here flushes sled and then
//! syncs the data itself: `fdatasync` of the log file, and of any new file (sled's
//! blobs, snapshots) with its directory. Opening a store makes it durable as found
//! (its files, its directory, its name in the parent directory); quarantine syncs the
//! parent after the rename.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::open_dir_store;
use crate::layout::{self, Held, Rows, Table, Tables};
use crate::sync::DirSync;
use crate::{OnCorrupt, Op, Snapshot, Storage, StorageError, FORMAT_VERSION};

/// Stores broker state in a sled database.
#[derive(Debug, Clone)]
pub struct SledStorage {
    db: sled::Db,
    retained: sled::Tree,
    sessions: sled::Tree,
    queue: sled::Tree,
    inbound: sled::Tree,
    plugin: sled::Tree,
    path: PathBuf,
    sync: Arc<DirSync>,
    held: Arc<Held>,
}

impl SledStorage {
    /// Opens (or creates) the store in `path`, checking that every stored record can be read.
    /// A store that cannot be opened or read is handled as `on_corrupt` says.
    pub fn open(path: impl AsRef<Path>, on_corrupt: OnCorrupt) -> Result<Self, StorageError> {
        open_dir_store(path.as_ref(), on_corrupt, Self::open_checked)
    }

    /// Opens the store; a panic inside sled while it recovers is reported as
    /// [`StorageError::Corrupt`]. sled 0.34 assumes that its unsynced log writes reach the
    /// disk in order: a power cut that kept a later page and lost an earlier one can leave a
    /// log whose recovery panics (`tried to serialize Uninitialized`, seen in
    /// `tests/crash.rs` and reproduced in `backend_tests.rs`).
    fn open_checked(path: &Path) -> Result<Self, StorageError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Self::open_unguarded(path)))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                tracing::error!(dir = %path.display(), panic = %what, "sled panicked while recovering the store");
                Err(StorageError::corrupt(
                    path,
                    &format_args!("sled could not recover the store (it panicked: {what})"),
                ))
            })
    }

    fn open_unguarded(path: &Path) -> Result<Self, StorageError> {
        let corrupt = |e: &dyn std::fmt::Display| StorageError::corrupt(path, e);
        // No background flushes: sled's own thread would write and fsync the log between
        // ours, pointing at blob files nobody synced (a power cut then leaves a store sled
        // panics on). The log reaches the disk only in Storage::flush, after the blobs.
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .open()
            .map_err(|e| {
                if is_lock_conflict(&e) {
                    StorageError::InUse {
                        path: path.to_path_buf(),
                    }
                } else {
                    corrupt(&e)
                }
            })?;
        let open_tree = |name: &str| db.open_tree(name).map_err(|e| corrupt(&e));
        let (retained, sessions, queue, inbound, plugin) = (
            open_tree("retained")?,
            open_tree("sessions")?,
            open_tree("queue")?,
            open_tree("inbound")?,
            open_tree("plugin")?,
        );
        let found = db.get("format").map_err(|e| corrupt(&e))?;
        if layout::check_format(found.as_deref()).map_err(|e| corrupt(&e))? {
            db.insert("format", &[FORMAT_VERSION])
                .map_err(|e| corrupt(&e))?;
        }
        db.flush().map_err(StorageError::from)?;
        // sled's files: `conf`, `db` (the log, written in place), `snap.*`, `blobs/*`.
        let sync = DirSync::new(path, &["db"], &["blobs"]).map_err(StorageError::Io)?;
        let store = SledStorage {
            retained,
            sessions,
            queue,
            inbound,
            plugin,
            db,
            path: path.to_path_buf(),
            sync: Arc::new(sync),
            held: Arc::default(),
        };
        store.read_all().map_err(|e| corrupt(&e))?;
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `fdatasync`/`fsync` calls this store made so far (for measurements: each flush makes
    /// at least one).
    pub fn syncs(&self) -> u64 {
        self.sync.syncs()
    }

    fn tree(&self, table: Table) -> &sled::Tree {
        match table {
            Table::Retained => &self.retained,
            Table::Sessions => &self.sessions,
            Table::Queue => &self.queue,
            Table::Inbound => &self.inbound,
            Table::Plugin => &self.plugin,
        }
    }

    pub(crate) fn read_all(&self) -> Result<Snapshot, StorageError> {
        let rows = |t: Table| -> Result<Rows, StorageError> {
            self.tree(t)
                .iter()
                .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Into::into))
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
}

impl Tables for &SledStorage {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<i64, StorageError> {
        let old = self.tree(table).insert(key, value)?;
        Ok(layout::put_delta(key, value, old.map(|o| o.len())))
    }

    fn remove(&mut self, table: Table, key: &[u8]) -> Result<i64, StorageError> {
        let old = self.tree(table).remove(key)?;
        Ok(old.map_or(0, |o| -layout::row_bytes(key, o.len())))
    }

    fn remove_prefix(&mut self, table: Table, prefix: &[u8]) -> Result<i64, StorageError> {
        let tree = self.tree(table);
        let mut delta = 0;
        for k in tree.scan_prefix(prefix).keys() {
            let k = k?;
            if let Some(old) = tree.remove(&k)? {
                delta -= layout::row_bytes(&k, old.len());
            }
        }
        Ok(delta)
    }
}

/// True if sled could not open the directory because another handle holds its lock file.
/// sled 0.34 reports that only as an `Io` error of kind `Other` whose text starts "could not
/// acquire lock" (config.rs, `try_lock`); the version is pinned, so the text is too.
fn is_lock_conflict(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock"))
}

#[async_trait]
impl Storage for SledStorage {
    async fn load(&self) -> Result<Snapshot, StorageError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.read_all())
            .await
            .map_err(|_| StorageError::Backend("storage task panicked"))?
    }

    async fn write(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let delta = layout::apply(&mut &this, ops)?;
            this.held.add(delta);
            Ok(())
        })
        .await
        .map_err(|_| StorageError::Backend("storage task panicked"))?
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.write_durable(Vec::new()).await
    }

    async fn write_durable(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let delta = layout::apply(&mut &this, ops)?;
            this.held.add(delta);
            // Blobs (large values, files of their own) first: the log points at them.
            this.sync.sync_names().map_err(StorageError::Io)?;
            this.db.flush()?;
            this.sync.sync_logs().map_err(StorageError::Io)?;
            // Snapshots sled renamed into place meanwhile.
            this.sync.sync_names().map_err(StorageError::Io)
        })
        .await
        .map_err(|_| StorageError::Backend("storage task panicked"))?
    }

    fn size_on_disk(&self) -> Result<u64, StorageError> {
        Ok(self.held.get())
    }
}
