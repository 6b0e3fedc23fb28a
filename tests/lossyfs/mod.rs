//! A FUSE file system for power-loss tests: everything lives in memory, and only what was
//! synced survives a "power cut".
//!
//! The model is the strict POSIX one (the one LazyFS simulates for data):
//! - a file's bytes and length become durable when that file is `fsync`ed or
//!   `fdatasync`ed (through any descriptor). `sync_file_range`, `write` and `close` make
//!   nothing durable;
//! - a directory's entries (creations, renames, unlinks in it) become durable when that
//!   directory is `fsync`ed, all at once.
//!
//! [`LossyMount::power_cut`] unmounts and mounts again from the durable image: every write
//! since the last sync of its file is gone (but for the pages the caller lets through, as a
//! drive may have written some of them), every name since the last sync of its directory
//! too. Unmounting also drops the kernel's page cache of the mount, so nothing
//! unsynced can be read back.
//!
//! Writes reach the file system one by one (no FUSE writeback cache is asked for), so the
//! durable image is exactly what was synced.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    AccessFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use parking_lot::Mutex;

const PAGE: u64 = 4096;
const TTL: Duration = Duration::from_secs(1);

#[derive(Clone, Default)]
struct File {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Pages written (or cut by a truncation) since the last sync.
    dirty: BTreeSet<u64>,
}

impl File {
    fn mark(&mut self, from: u64, to: u64) {
        if to > from {
            self.dirty.extend(from / PAGE..=(to - 1) / PAGE);
        }
    }

    fn set_len(&mut self, len: u64) {
        let old = self.data.len() as u64;
        self.mark(len.min(old), len.max(old));
        self.data.resize(len as usize, 0);
    }

    fn sync(&mut self) {
        self.durable.resize(self.data.len(), 0);
        for page in std::mem::take(&mut self.dirty) {
            let from = (page * PAGE) as usize;
            let to = ((page + 1) * PAGE).min(self.data.len() as u64) as usize;
            if from < to {
                self.durable[from..to].copy_from_slice(&self.data[from..to]);
            }
        }
    }
}

#[derive(Clone, Default)]
struct Dir {
    parent: u64,
    entries: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
}

#[derive(Clone)]
enum Node {
    File(File),
    Dir(Dir),
}

/// The whole file system: what is there now and what would survive a power cut.
#[derive(Clone)]
struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// Owner (uid, gid) of every node: the owner of the mount point.
    owner: (u32, u32),
    /// Write and sync requests served since this mount (for diagnostics).
    requests: u64,
}

impl State {
    fn new(owner: (u32, u32)) -> Self {
        let root = Dir {
            parent: 1,
            ..Dir::default()
        };
        State {
            nodes: HashMap::from([(1, Node::Dir(root))]),
            next_ino: 2,
            owner,
            requests: 0,
        }
    }

    /// What a power cut leaves: the synced bytes and the synced names, and of the pages
    /// written since their file's last sync, those that `keep` picks (a drive may have
    /// written some of them, in any order, before the power went).
    fn after_power_cut(&self, keep: &mut dyn FnMut() -> bool) -> State {
        let nodes = self
            .nodes
            .iter()
            .map(|(ino, node)| {
                let node = match node {
                    Node::File(f) => {
                        let mut survived = f.durable.clone();
                        for &page in &f.dirty {
                            let from = page * PAGE;
                            if from >= f.data.len() as u64 || !keep() {
                                continue;
                            }
                            let to = ((page + 1) * PAGE).min(f.data.len() as u64);
                            if survived.len() < to as usize {
                                survived.resize(to as usize, 0);
                            }
                            survived[from as usize..to as usize]
                                .copy_from_slice(&f.data[from as usize..to as usize]);
                        }
                        Node::File(File {
                            data: survived.clone(),
                            durable: survived,
                            dirty: BTreeSet::new(),
                        })
                    }
                    Node::Dir(d) => Node::Dir(Dir {
                        parent: d.parent,
                        entries: d.durable.clone(),
                        durable: d.durable.clone(),
                    }),
                };
                (*ino, node)
            })
            .collect();
        State {
            nodes,
            next_ino: self.next_ino,
            owner: self.owner,
            requests: 0,
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, size, perm, nlink) = match self.nodes.get(&ino)? {
            Node::File(f) => (FileType::RegularFile, f.data.len() as u64, 0o644, 1),
            Node::Dir(_) => (FileType::Directory, 0, 0o755, 2),
        };
        let (uid, gid) = self.owner;
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid,
            gid,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    fn dir(&mut self, ino: u64) -> Result<&mut Dir, Errno> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn file(&mut self, ino: u64) -> Result<&mut File, Errno> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => Ok(f),
            Some(Node::Dir(_)) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn make(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<u64, Errno> {
        let ino = self.next_ino;
        let dir = self.dir(parent)?;
        if dir.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        dir.entries.insert(name.to_owned(), ino);
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        Ok(ino)
    }

    fn is_empty_dir(&self, ino: u64) -> bool {
        matches!(self.nodes.get(&ino), Some(Node::Dir(d)) if d.entries.is_empty())
    }
}

struct LossyFs(Arc<Mutex<State>>);

impl LossyFs {
    fn entry(&self, result: Result<u64, Errno>, reply: ReplyEntry) {
        let state = self.0.lock();
        match result.and_then(|ino| state.attr(ino).ok_or(Errno::ENOENT)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

fn empty(result: Result<(), Errno>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for LossyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = {
            let mut state = self.0.lock();
            state
                .dir(parent.0)
                .and_then(|d| d.entries.get(name).copied().ok_or(Errno::ENOENT))
        };
        self.entry(found, reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.0.lock().attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.0.lock();
        if let Some(len) = size {
            match state.file(ino.0) {
                Ok(f) => f.set_len(len),
                Err(e) => return reply.error(e),
            }
        }
        match state.attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let made = {
            let dir = Dir {
                parent: parent.0,
                ..Dir::default()
            };
            self.0.lock().make(parent.0, name, Node::Dir(dir))
        };
        self.entry(made, reply);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.0.lock();
        let made = state.make(parent.0, name, Node::File(File::default()));
        match made.and_then(|ino| state.attr(ino).ok_or(Errno::ENOENT)) {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.0.lock();
        let result = state
            .dir(parent.0)
            .and_then(|d| d.entries.remove(name).map(|_| ()).ok_or(Errno::ENOENT));
        empty(result, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.0.lock();
        let result = (|| {
            let ino = *state
                .dir(parent.0)?
                .entries
                .get(name)
                .ok_or(Errno::ENOENT)?;
            if !state.is_empty_dir(ino) {
                return Err(Errno::ENOTEMPTY);
            }
            state.dir(parent.0)?.entries.remove(name);
            Ok(())
        })();
        empty(result, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut state = self.0.lock();
        let result = (|| {
            let ino = *state
                .dir(parent.0)?
                .entries
                .get(name)
                .ok_or(Errno::ENOENT)?;
            let target = state.dir(newparent.0)?.entries.get(newname).copied();
            if let Some(t) = target {
                if matches!(state.nodes.get(&t), Some(Node::Dir(_))) && !state.is_empty_dir(t) {
                    return Err(Errno::ENOTEMPTY);
                }
            }
            state.dir(parent.0)?.entries.remove(name);
            state
                .dir(newparent.0)?
                .entries
                .insert(newname.to_owned(), ino);
            if let Ok(d) = state.dir(ino) {
                d.parent = newparent.0;
            }
            Ok(())
        })();
        empty(result, reply);
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut state = self.0.lock();
        match state.file(ino.0) {
            Ok(f) => {
                let from = (offset as usize).min(f.data.len());
                let to = (from + size as usize).min(f.data.len());
                reply.data(&f.data[from..to]);
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.0.lock();
        state.requests += 1;
        match state.file(ino.0) {
            Ok(f) => {
                let end = offset + data.len() as u64;
                if end > f.data.len() as u64 {
                    f.set_len(end);
                }
                f.data[offset as usize..end as usize].copy_from_slice(data);
                f.mark(offset, end);
                reply.written(data.len() as u32);
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() makes nothing durable.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.0.lock();
        let result = state.file(ino.0).map(File::sync);
        empty(result, reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut state = self.0.lock();
        let listing = match state.dir(ino.0) {
            Ok(d) => {
                let mut l = vec![
                    (ino.0, OsString::from(".")),
                    (d.parent, OsString::from("..")),
                ];
                l.extend(d.entries.iter().map(|(n, i)| (*i, n.clone())));
                l
            }
            Err(e) => return reply.error(e),
        };
        for (i, (child, name)) in listing.into_iter().enumerate().skip(offset as usize) {
            let kind = match state.nodes.get(&child) {
                Some(Node::File(_)) => FileType::RegularFile,
                _ => FileType::Directory,
            };
            if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.0.lock();
        let result = state.dir(ino.0).map(|d| d.durable = d.entries.clone());
        empty(result, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(
            1 << 24,
            1 << 23,
            1 << 23,
            1 << 20,
            1 << 19,
            PAGE as u32,
            255,
            PAGE as u32,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

/// A mounted [`LossyFs`].
pub(crate) struct LossyMount {
    state: Arc<Mutex<State>>,
    session: Option<fuser::BackgroundSession>,
    path: PathBuf,
}

impl LossyMount {
    /// Mounts an empty file system on `path` (an existing empty directory).
    pub(crate) fn mount(path: &Path) -> io::Result<LossyMount> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Self::mount_state(path, State::new((meta.uid(), meta.gid())))
    }

    fn mount_state(path: &Path, state: State) -> io::Result<LossyMount> {
        let state = Arc::new(Mutex::new(state));
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("roost-lossyfs".into())];
        let session = fuser::spawn_mount(LossyFs(state.clone()), path, &config)?;
        Ok(LossyMount {
            state,
            session: Some(session),
            path: path.to_path_buf(),
        })
    }

    /// Cuts the power: every unsynced name is lost, and every unsynced page but those
    /// `keep` picks (called once per page). Whoever used the mount must have been killed
    /// first (an open file keeps a mount busy).
    pub(crate) fn power_cut(mut self, keep: &mut dyn FnMut() -> bool) -> io::Result<LossyMount> {
        let survivor = self.state.lock().after_power_cut(keep);
        if let Some(session) = self.session.take() {
            session.umount_and_join()?;
        }
        Self::mount_state(&self.path, survivor)
    }

    /// The mount point.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes served since this mount.
    pub(crate) fn writes(&self) -> u64 {
        self.state.lock().requests
    }

    /// Pages that a power cut would lose now (written since their file's last sync).
    pub(crate) fn unsynced_pages(&self) -> usize {
        self.state
            .lock()
            .nodes
            .values()
            .map(|n| match n {
                Node::File(f) => f.dirty.len(),
                Node::Dir(_) => 0,
            })
            .sum()
    }
}

impl Drop for LossyMount {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}
