//! Errors of the auth providers.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Why a password or ACL file could not be loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A line of the file is not in the expected format.
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The operating system's random number generator failed (needed for salts).
    #[error("no randomness available for a password salt")]
    Random,
}
