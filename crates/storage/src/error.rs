//! Storage errors.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Why a storage operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The data directory could not be opened or read: it is damaged, or not a Roost store.
    #[error("the data directory {path} is corrupted or unreadable")]
    Corrupt {
        /// The directory.
        path: PathBuf,
        /// What the backend reported.
        #[source]
        source: io::Error,
    },
    /// The data directory is held by another running broker (another process, or another
    /// store opened on it in this one). Never quarantined: the store is not damaged.
    #[error("the data directory {path} is in use by another process")]
    InUse {
        /// The directory.
        path: PathBuf,
    },
    /// The data directory holds a store of another backend than the one asked for.
    #[error("the data directory {path} holds a {found} store, not {wanted}")]
    OtherBackend {
        /// The directory.
        path: PathBuf,
        /// The backend whose store is there.
        found: &'static str,
        /// The backend asked for.
        wanted: &'static str,
    },
    /// A stored value has a format this version does not know.
    #[error("stored record of format version {0}, expected {exp}", exp = crate::FORMAT_VERSION)]
    UnsupportedVersion(u8),
    /// A stored value could not be decoded.
    #[error("stored record is truncated or invalid")]
    InvalidRecord,
    /// The backend failed to read or write.
    #[error("storage i/o failed")]
    Io(#[source] io::Error),
    /// The backend failed (for backends that are not file based, or injected failures).
    #[error("storage backend failed: {0}")]
    Backend(&'static str),
    /// The named file backend was left out of this build (its Cargo feature is off).
    #[error("the {0} storage backend is not built in (enable the `{0}` feature)")]
    BackendNotBuilt(&'static str),
}

impl StorageError {
    /// The store in `path` cannot be read: `e` says why.
    pub(crate) fn corrupt(path: &std::path::Path, e: &dyn std::fmt::Display) -> Self {
        StorageError::Corrupt {
            path: path.to_path_buf(),
            source: io::Error::other(e.to_string()),
        }
    }
}

#[cfg(feature = "sled")]
impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => StorageError::Io(io),
            other => StorageError::Io(io::Error::other(other.to_string())),
        }
    }
}
