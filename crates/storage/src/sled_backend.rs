//! The sled backend (sled 0.34, the stable line; 1.0 is still alpha).
//!
//! Four trees: `retained` (topic → message), `sessions` (client id → session), `queue`
//! (client id, 0x00, sequence number big-endian → entry), `inbound` (client id, 0x00, packet
//! id big-endian → empty). Client identifiers cannot contain U+0000, so the 0x00 separator
//! makes prefix scans exact. A `meta` entry records the format version.
//!
//! sled buffers writes and syncs them on its own timer; only [`Storage::flush`] (which
//! awaits `flush_async`) makes them durable, and the broker acknowledges accordingly.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::record::{MessageRecord, QueueRecord, SessionRecord};
use crate::{Op, SessionSnapshot, Snapshot, Storage, StorageError, FORMAT_VERSION};

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

/// Stores broker state in a sled database.
#[derive(Debug, Clone)]
pub struct SledStorage {
    db: sled::Db,
    retained: sled::Tree,
    sessions: sled::Tree,
    queue: sled::Tree,
    inbound: sled::Tree,
    path: PathBuf,
}

fn key(client: &str, suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(client.len() + 1 + suffix.len());
    k.extend_from_slice(client.as_bytes());
    k.push(0);
    k.extend_from_slice(suffix);
    k
}

fn prefix(client: &str) -> Vec<u8> {
    key(client, &[])
}

impl SledStorage {
    /// Opens (or creates) the store in `path`, checking that every stored record can be read.
    /// A store that cannot be opened or read is handled as `on_corrupt` says.
    pub fn open(path: impl AsRef<Path>, on_corrupt: OnCorrupt) -> Result<Self, StorageError> {
        let path = path.as_ref().to_path_buf();
        match Self::open_checked(&path) {
            Ok(s) => Ok(s),
            Err(e @ StorageError::InUse { .. }) => Err(e),
            Err(e) if on_corrupt == OnCorrupt::Quarantine => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let mut aside = path.clone().into_os_string();
                aside.push(format!(".corrupt-{secs}"));
                std::fs::rename(&path, &aside).map_err(StorageError::Io)?;
                tracing::warn!(
                    path = %path.display(),
                    moved_to = ?aside,
                    error = %e,
                    "data directory could not be read: moved aside, starting empty"
                );
                Self::open_checked(&path)
            }
            Err(e) => Err(e),
        }
    }

    fn open_checked(path: &Path) -> Result<Self, StorageError> {
        let corrupt = |e: &dyn std::fmt::Display| StorageError::Corrupt {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        };
        let db = sled::Config::new().path(path).open().map_err(|e| {
            if is_lock_conflict(&e) {
                StorageError::InUse {
                    path: path.to_path_buf(),
                }
            } else {
                corrupt(&e)
            }
        })?;
        let open_tree = |name: &str| db.open_tree(name).map_err(|e| corrupt(&e));
        let store = SledStorage {
            retained: open_tree("retained")?,
            sessions: open_tree("sessions")?,
            queue: open_tree("queue")?,
            inbound: open_tree("inbound")?,
            db: db.clone(),
            path: path.to_path_buf(),
        };
        match db.get("format").map_err(|e| corrupt(&e))? {
            Some(v) if v.as_ref() == [FORMAT_VERSION] => {}
            Some(v) => {
                return Err(corrupt(&format!(
                    "format version {:?}, this build reads {FORMAT_VERSION}",
                    v.as_ref()
                )))
            }
            None => {
                db.insert("format", &[FORMAT_VERSION])
                    .map_err(|e| corrupt(&e))?;
            }
        }
        store.read_all().map_err(|e| corrupt(&e))?;
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_all(&self) -> Result<Snapshot, StorageError> {
        let mut retained = Vec::new();
        for item in self.retained.iter() {
            let (k, v) = item?;
            let topic = String::from_utf8(k.to_vec()).map_err(|_| StorageError::InvalidRecord)?;
            retained.push((topic, MessageRecord::decode(&v)?));
        }
        let mut sessions = Vec::new();
        for item in self.sessions.iter() {
            let (k, v) = item?;
            let client = String::from_utf8(k.to_vec()).map_err(|_| StorageError::InvalidRecord)?;
            let p = prefix(&client);
            let mut queue = Vec::new();
            for entry in self.queue.scan_prefix(&p) {
                let (k, v) = entry?;
                let seq_bytes: [u8; 8] = k[p.len()..]
                    .try_into()
                    .map_err(|_| StorageError::InvalidRecord)?;
                queue.push((u64::from_be_bytes(seq_bytes), QueueRecord::decode(&v)?));
            }
            let mut inbound = Vec::new();
            for entry in self.inbound.scan_prefix(&p) {
                let (k, _) = entry?;
                let id: [u8; 2] = k[p.len()..]
                    .try_into()
                    .map_err(|_| StorageError::InvalidRecord)?;
                inbound.push(u16::from_be_bytes(id));
            }
            sessions.push(SessionSnapshot {
                client_id: client,
                session: SessionRecord::decode(&v)?,
                queue,
                inbound,
            });
        }
        Ok(Snapshot { retained, sessions })
    }

    fn apply(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        for op in ops {
            match op {
                Op::PutRetained(topic, m) => {
                    self.retained.insert(topic.as_bytes(), m.encode())?;
                }
                Op::DeleteRetained(topic) => {
                    self.retained.remove(topic.as_bytes())?;
                }
                Op::PutSession(client, s) => {
                    self.sessions.insert(client.as_bytes(), s.encode())?;
                }
                Op::DeleteSession(client) => {
                    self.sessions.remove(client.as_bytes())?;
                    let p = prefix(&client);
                    for tree in [&self.queue, &self.inbound] {
                        for k in tree.scan_prefix(&p).keys() {
                            tree.remove(k?)?;
                        }
                    }
                }
                Op::PutQueued {
                    client,
                    seq,
                    record,
                } => {
                    self.queue
                        .insert(key(&client, &seq.to_be_bytes()), record.encode())?;
                }
                Op::DeleteQueued { client, seq } => {
                    self.queue.remove(key(&client, &seq.to_be_bytes()))?;
                }
                Op::PutInbound { client, packet_id } => {
                    self.inbound
                        .insert(key(&client, &packet_id.to_be_bytes()), &[])?;
                }
                Op::DeleteInbound { client, packet_id } => {
                    self.inbound
                        .remove(key(&client, &packet_id.to_be_bytes()))?;
                }
            }
        }
        Ok(())
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
        tokio::task::spawn_blocking(move || this.apply(ops))
            .await
            .map_err(|_| StorageError::Backend("storage task panicked"))?
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.db.flush_async().await?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StorageError> {
        Ok(self.db.size_on_disk()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{QueueStage, SubscriptionRecord};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("roost-sled-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn msg(topic: &str) -> MessageRecord {
        MessageRecord {
            topic: topic.into(),
            payload: b"p".to_vec(),
            qos: 1,
            ..MessageRecord::default()
        }
    }

    #[tokio::test]
    async fn survives_reopen_and_deletes_session_state() {
        let dir = temp_dir("reopen");
        {
            let s = SledStorage::open(&dir, OnCorrupt::Fail).expect("opens");
            s.write(vec![
                Op::PutRetained("r".into(), msg("r")),
                Op::PutSession(
                    "a".into(),
                    SessionRecord {
                        expiry_interval: 60,
                        subscriptions: vec![SubscriptionRecord {
                            filter: "x/#".into(),
                            qos: 1,
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                ),
                Op::PutQueued {
                    client: "a".into(),
                    seq: 2,
                    record: QueueRecord {
                        message: msg("x/1"),
                        qos: 1,
                        retain: false,
                        subscription_ids: vec![],
                        stage: QueueStage::Published(9),
                        packet_id: None,
                    },
                },
                Op::PutQueued {
                    client: "a".into(),
                    seq: 1,
                    record: QueueRecord {
                        message: msg("x/0"),
                        qos: 1,
                        retain: false,
                        subscription_ids: vec![],
                        stage: QueueStage::Queued,
                        packet_id: None,
                    },
                },
                Op::PutInbound {
                    client: "a".into(),
                    packet_id: 4,
                },
                Op::PutSession("ab".into(), SessionRecord::default()),
                Op::PutQueued {
                    client: "ab".into(),
                    seq: 1,
                    record: QueueRecord {
                        message: msg("y"),
                        qos: 2,
                        retain: false,
                        subscription_ids: vec![],
                        stage: QueueStage::Queued,
                        packet_id: None,
                    },
                },
            ])
            .await
            .expect("writes");
            s.flush().await.expect("flushes");
        }
        let s = SledStorage::open(&dir, OnCorrupt::Fail).expect("reopens");
        let snap = s.load().await.expect("loads");
        assert_eq!(snap.retained.len(), 1);
        let a = snap
            .sessions
            .iter()
            .find(|x| x.client_id == "a")
            .expect("session a");
        assert_eq!(
            a.queue.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            vec![1, 2],
            "in order"
        );
        assert_eq!(a.inbound, vec![4]);
        let ab = snap
            .sessions
            .iter()
            .find(|x| x.client_id == "ab")
            .expect("session ab");
        assert_eq!(ab.queue.len(), 1, "prefix scans do not mix 'a' and 'ab'");
        s.write(vec![Op::DeleteSession("a".into())])
            .await
            .expect("writes");
        let snap = s.load().await.expect("loads");
        assert_eq!(snap.sessions.len(), 1);
        assert_eq!(snap.sessions[0].queue.len(), 1);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn corrupt_directory_fails_or_is_quarantined() {
        let dir = temp_dir("corrupt");
        std::fs::create_dir_all(&dir).expect("dir");
        // Not a sled database.
        std::fs::write(dir.join("conf"), b"\xff\xfe garbage").expect("write");
        std::fs::write(dir.join("db"), vec![0xAB; 4096]).expect("write");
        let err = SledStorage::open(&dir, OnCorrupt::Fail).expect_err("refuses");
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err:?}");
        let s = SledStorage::open(&dir, OnCorrupt::Quarantine).expect("starts empty");
        assert!(s.load().await.expect("loads").sessions.is_empty());
        drop(s);
        let parent = dir.parent().expect("parent");
        let name = dir.file_name().expect("name").to_string_lossy().to_string();
        let moved: Vec<_> = std::fs::read_dir(parent)
            .expect("lists")
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{name}.corrupt-"))
            })
            .collect();
        assert_eq!(moved.len(), 1, "the damaged directory was kept aside");
        for m in moved {
            let _ = std::fs::remove_dir_all(m.path());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 12 §1.7: a store that a running broker holds is "in use", never "corrupt", and
    /// Quarantine leaves it where it is with its data.
    #[tokio::test]
    async fn a_store_in_use_is_never_quarantined() {
        let dir = temp_dir("in-use");
        let live = SledStorage::open(&dir, OnCorrupt::Fail).expect("opens");
        live.write(vec![Op::DeleteRetained("x".into())])
            .await
            .expect("writes");
        for policy in [OnCorrupt::Fail, OnCorrupt::Quarantine] {
            let err = SledStorage::open(&dir, policy).expect_err("held by the live store");
            assert!(
                matches!(err, StorageError::InUse { .. }),
                "{policy:?}: {err:?}"
            );
            assert!(err.to_string().contains("in use by another process"));
        }
        assert!(dir.exists(), "not moved aside");
        let parent = dir.parent().expect("parent");
        let name = dir.file_name().expect("name").to_string_lossy().to_string();
        let moved = std::fs::read_dir(parent)
            .expect("lists")
            .filter_map(Result::ok)
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{name}.corrupt-"))
            });
        assert!(!moved, "nothing quarantined");
        live.load().await.expect("the live store still reads");
        drop(live);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
