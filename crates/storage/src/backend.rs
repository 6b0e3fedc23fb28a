//! Choosing a file backend: the default for new stores, and the one an existing data
//! directory was made with.

use std::path::Path;
use std::sync::Arc;

use crate::sync::sync_parent;
use crate::{Storage, StorageError};

/// What to do with a data directory that cannot be opened or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCorrupt {
    /// Refuse to start with [`StorageError::Corrupt`].
    #[default]
    Fail,
    /// Move it aside (to `<dir>.corrupt-<unix seconds>`) and start empty. A directory that
    /// another running broker holds is never moved: that is [`StorageError::InUse`].
    Quarantine,
}

/// Opens a store that lives in the directory `path` with `open`; a store that cannot be
/// opened or read is handled as `on_corrupt` says (the move aside is made durable).
pub(crate) fn open_dir_store<S>(
    path: &Path,
    on_corrupt: OnCorrupt,
    open: impl Fn(&Path) -> Result<S, StorageError>,
) -> Result<S, StorageError> {
    match open(path) {
        Ok(s) => Ok(s),
        Err(e @ StorageError::InUse { .. }) => Err(e),
        Err(e) if on_corrupt == OnCorrupt::Quarantine => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let mut aside = path.to_path_buf().into_os_string();
            aside.push(format!(".corrupt-{secs}"));
            std::fs::rename(path, &aside).map_err(StorageError::Io)?;
            sync_parent(path).map_err(StorageError::Io)?;
            tracing::warn!(
                path = %path.display(),
                moved_to = ?aside,
                error = %e,
                "data directory could not be read: moved aside, starting empty"
            );
            open(path)
        }
        Err(e) => Err(e),
    }
}

/// The file backends.
///
/// [`Backend::Redb`] is the default: both keep the acknowledged-means-durable promise
/// through a power cut (the power-loss tests in `tests/crash.rs` run on each), and redb did
/// so at an equal or lower cost in every load shape of `cargo bench --bench persistence`,
/// with a data directory about a tenth of the size (README, "Persistence and durability").
///
/// Both are always named here (a data directory of either is recognised); opening one
/// whose Cargo feature (`redb`, `sled`) is off is [`StorageError::BackendNotBuilt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `RedbStorage`: one file, `roost.redb`.
    Redb,
    /// `SledStorage` (sled 0.34): files `conf`, `db`, `snap.*`, `blobs/`.
    Sled,
}

/// Redb when built, else sled when built, else redb (which then fails to open, naming the
/// missing feature).
impl Default for Backend {
    fn default() -> Self {
        if cfg!(feature = "redb") || !cfg!(feature = "sled") {
            Backend::Redb
        } else {
            Backend::Sled
        }
    }
}

impl Backend {
    /// The backend whose store is in the directory `path`, if one is there.
    pub fn detect(path: &Path) -> Option<Backend> {
        if path.join("roost.redb").is_file() {
            Some(Backend::Redb)
        } else if path.join("conf").is_file() && path.join("db").is_file() {
            Some(Backend::Sled)
        } else {
            None
        }
    }

    /// Opens (or creates) this backend's store in the directory `path`.
    pub fn open(
        self,
        path: &Path,
        on_corrupt: OnCorrupt,
    ) -> Result<Arc<dyn Storage>, StorageError> {
        let _ = (path, on_corrupt);
        match self {
            #[cfg(feature = "redb")]
            Backend::Redb => Ok(Arc::new(crate::RedbStorage::open(path, on_corrupt)?)),
            #[cfg(feature = "sled")]
            Backend::Sled => Ok(Arc::new(crate::SledStorage::open(path, on_corrupt)?)),
            #[allow(unreachable_patterns)]
            other => Err(StorageError::BackendNotBuilt(other.name())),
        }
    }

    /// Its name, as the example broker's `--storage` flag takes it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Redb => "redb",
            Backend::Sled => "sled",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "redb" => Ok(Backend::Redb),
            "sled" => Ok(Backend::Sled),
            other => Err(format!("'{other}' is not a storage backend (redb, sled)")),
        }
    }
}

/// Opens the store in the directory `path` with the backend that made it, or, for a new
/// store, with `new` (usually [`Backend::default`]). A data directory of one backend is
/// never opened (and so emptied) by another: asking for a backend explicitly where the
/// other's store is, is an error.
///
/// ```
/// use roost::storage::{open_store, Backend, OnCorrupt};
///
/// let dir = std::env::temp_dir().join(format!("roost-doc-open-store-{}", std::process::id()));
/// let (backend, store) = open_store(&dir, None, OnCorrupt::Fail)?;
/// assert_eq!(backend, Backend::Redb, "a new data directory gets the default");
/// drop(store);
/// // Later runs find the same backend, whatever the default is then.
/// assert_eq!(Backend::detect(&dir), Some(Backend::Redb));
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), roost::storage::StorageError>(())
/// ```
pub fn open_store(
    path: &Path,
    wanted: Option<Backend>,
    on_corrupt: OnCorrupt,
) -> Result<(Backend, Arc<dyn Storage>), StorageError> {
    let found = Backend::detect(path);
    let backend = match (found, wanted) {
        (Some(f), Some(w)) if f != w => {
            return Err(StorageError::OtherBackend {
                path: path.to_path_buf(),
                found: f.name(),
                wanted: w.name(),
            })
        }
        (Some(f), _) => f,
        (None, w) => w.unwrap_or_default(),
    };
    Ok((backend, backend.open(path, on_corrupt)?))
}

#[cfg(all(test, feature = "redb", feature = "sled"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_existing_store_opens_with_its_own_backend() {
        let base = std::env::temp_dir().join(format!("roost-backend-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (a, b) = (base.join("a"), base.join("b"));
        let (kind, s) = open_store(&a, None, OnCorrupt::Fail).expect("new store");
        assert_eq!(kind, Backend::Redb, "the default for a new store");
        drop(s);
        let (kind, s) = open_store(&b, Some(Backend::Sled), OnCorrupt::Fail).expect("new store");
        assert_eq!(kind, Backend::Sled);
        drop(s);
        assert_eq!(Backend::detect(&a), Some(Backend::Redb));
        assert_eq!(Backend::detect(&b), Some(Backend::Sled));
        let (kind, s) = open_store(&b, None, OnCorrupt::Fail).expect("reopens");
        assert_eq!(kind, Backend::Sled, "a sled directory stays sled");
        drop(s);
        let err = open_store(&a, Some(Backend::Sled), OnCorrupt::Quarantine)
            .err()
            .expect("refused");
        assert!(matches!(err, StorageError::OtherBackend { .. }), "{err}");
        assert_eq!(Backend::detect(&a), Some(Backend::Redb), "left as it was");
        let _ = std::fs::remove_dir_all(&base);
    }
}
