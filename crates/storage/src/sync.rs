//! Making a file-based store durable: `fdatasync` of its files, `fsync` of its directories.
//!
//! A write that reached the operating system is not on disk: it sits in the page cache until
//! the file is synced, and a power cut loses it. The same holds for a directory's entries:
//! a file created or renamed is only durably there once its directory is synced. (On macOS
//! the standard library's `sync_data`/`sync_all` issue `F_FULLFSYNC`, which also flushes the
//! drive's own cache; a plain `fsync` there does not.)
//!
//! [`DirSync`] does this for a store directory. Each [`DirSync::sync`] syncs the files the
//! store always appends to, and for each directory it watches, lists the names; if they
//! changed since the last sync, it syncs the new files and then the directory. Listing a
//! directory is one system call and no disk write, so a flush in which no file came or
//! went costs one `fdatasync` per log file.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Syncs a directory, so that the names created, renamed or removed in it are durable.
/// A no-op where directories cannot be opened as files (Windows, whose file systems
/// journal directory changes themselves).
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(path)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// Syncs the parent of `path` (where `path`'s own name lives).
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => sync_dir(p),
        _ => sync_dir(Path::new(".")),
    }
}

/// The files and directories of one store to sync on each flush.
#[derive(Debug)]
pub(crate) struct DirSync {
    /// Files that are written in place or appended to: synced on every flush.
    logs: Vec<File>,
    /// Directories whose new files are synced (then the directory), with the names
    /// they held at the last sync.
    dirs: Mutex<Vec<(PathBuf, BTreeSet<OsString>)>>,
    /// `fdatasync`/`fsync` calls made, for measurements.
    syncs: AtomicU64,
}

fn names(dir: &Path) -> io::Result<BTreeSet<OsString>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.map(|e| e.file_name())).collect(),
        // A directory the backend has not made yet holds nothing.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e),
    }
}

impl DirSync {
    /// Makes the store in `root` durable as it is now (every file in the watched
    /// directories, the directories, and `root`'s own name in its parent), then watches it:
    /// `logs` are synced on each flush; new files in `root` and in `watched` (relative to
    /// `root`) when they appear.
    pub(crate) fn new(root: &Path, logs: &[&str], watched: &[&str]) -> io::Result<DirSync> {
        let logs = logs
            .iter()
            .map(|name| File::open(root.join(name)))
            .collect::<io::Result<Vec<_>>>()?;
        let dirs = std::iter::once(root.to_path_buf())
            .chain(watched.iter().map(|w| root.join(w)))
            .map(|d| (d, BTreeSet::new()))
            .collect();
        let sync = DirSync {
            logs,
            dirs: Mutex::new(dirs),
            syncs: AtomicU64::new(0),
        };
        sync.sync()?;
        sync_parent(root)?;
        sync.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(sync)
    }

    /// Makes durable everything written to the store's files so far. Blocking: call it off
    /// the async threads.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.sync_names()?;
        self.sync_logs()
    }

    /// Syncs the log files.
    pub(crate) fn sync_logs(&self) -> io::Result<()> {
        for f in &self.logs {
            f.sync_data()?;
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Syncs the files that appeared in the watched directories since the last time, then
    /// the directories whose names changed. A backend whose log points at such files (sled's
    /// blobs) calls this before it writes and syncs the log, so that nothing durable points
    /// at a file that is not.
    pub(crate) fn sync_names(&self) -> io::Result<()> {
        let mut dirs = self.dirs.lock();
        for (dir, known) in dirs.iter_mut() {
            let now = names(dir)?;
            if now == *known {
                continue;
            }
            for name in now.difference(known) {
                let path = dir.join(name);
                match File::open(&path) {
                    // Directories are synced as watched directories, not here.
                    Ok(f) if f.metadata()?.is_file() => {
                        f.sync_data()?;
                        self.syncs.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    // Created and removed again since the listing: nothing to keep.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            if dir.exists() {
                sync_dir(dir)?;
                self.syncs.fetch_add(1, Ordering::Relaxed);
            }
            *known = now;
        }
        Ok(())
    }

    /// Counts `n` syncs made by the backend itself.
    #[cfg(feature = "redb")]
    pub(crate) fn count(&self, n: u64) {
        self.syncs.fetch_add(n, Ordering::Relaxed);
    }

    /// `fdatasync`/`fsync` calls made so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_logs_every_time_and_directories_when_names_change() {
        let root = std::env::temp_dir().join(format!("roost-dirsync-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("blobs")).expect("dirs");
        std::fs::write(root.join("log"), b"x").expect("log");
        let s = DirSync::new(&root, &["log"], &["blobs"]).expect("syncs");
        let base = s.syncs();
        s.sync().expect("syncs");
        assert_eq!(s.syncs() - base, 1, "only the log: no name changed");
        std::fs::write(root.join("blobs").join("b1"), b"blob").expect("blob");
        s.sync().expect("syncs");
        assert_eq!(s.syncs() - base, 1 + 3, "log, the new blob, its directory");
        std::fs::remove_file(root.join("blobs").join("b1")).expect("rm");
        s.sync().expect("syncs");
        assert_eq!(
            s.syncs() - base,
            1 + 3 + 2,
            "log, the directory of the removal"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
