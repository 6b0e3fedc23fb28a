//! The key-value layout every ordered-key backend shares.
//!
//! Five tables: `retained` (topic → message), `sessions` (client id → session), `queue`
//! (client id, 0x00, sequence number big-endian → entry), `inbound` (client id, 0x00,
//! packet id big-endian → empty), `plugin` (plugin name, 0x00, key → value). Client identifiers cannot contain U+0000, so the 0x00
//! separator makes prefix scans exact, and big-endian numbers sort in order.

use crate::record::{MessageRecord, QueueRecord, SessionRecord};
use crate::{Op, SessionSnapshot, Snapshot, StorageError};

/// One of the five tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Retained,
    Sessions,
    Queue,
    Inbound,
    Plugin,
}

/// The writes a backend offers; [`apply`] turns [`Op`]s into them. Each returns by how
/// much the bytes held (keys plus values) changed.
pub(crate) trait Tables {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<i64, StorageError>;
    fn remove(&mut self, table: Table, key: &[u8]) -> Result<i64, StorageError>;
    /// Removes every key that starts with `prefix`.
    fn remove_prefix(&mut self, table: Table, prefix: &[u8]) -> Result<i64, StorageError>;
}

/// Bytes the rows of a store hold (keys plus values), kept up to date by its writes: what
/// [`crate::Storage::size_on_disk`] reports. The files can be larger (the backend's own
/// overhead, and space freed by deletes that it reuses rather than gives back), but unlike
/// their length this goes down when records are deleted, so a size budget recovers.
#[derive(Debug, Default)]
pub(crate) struct Held(std::sync::atomic::AtomicI64);

impl Held {
    pub(crate) fn add(&self, delta: i64) {
        self.0
            .fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn set(&self, bytes: u64) {
        let v = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.0.store(v, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        u64::try_from(self.0.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(0)
    }
}

/// Checks the format version a store recorded (`None`: a new store). `Ok(true)` if it has
/// none yet and this build's must be written, `Ok(false)` if it matches, else what is wrong.
pub(crate) fn check_format(found: Option<&[u8]>) -> Result<bool, String> {
    match found {
        None => Ok(true),
        Some(v) if v == [crate::FORMAT_VERSION] => Ok(false),
        Some(v) => Err(format!(
            "format version {v:?}, this build reads {}",
            crate::FORMAT_VERSION
        )),
    }
}

/// Bytes a row holds.
pub(crate) fn row_bytes(key: &[u8], value: usize) -> i64 {
    i64::try_from(key.len() + value).unwrap_or(i64::MAX)
}

/// The change in bytes held when `key` gets `value` in place of `old` (a value length).
pub(crate) fn put_delta(key: &[u8], value: &[u8], old: Option<usize>) -> i64 {
    row_bytes(key, value.len()) - old.map_or(0, |o| row_bytes(key, o))
}

pub(crate) fn key(client: &str, suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(client.len() + 1 + suffix.len());
    k.extend_from_slice(client.as_bytes());
    k.push(0);
    k.extend_from_slice(suffix);
    k
}

pub(crate) fn prefix(client: &str) -> Vec<u8> {
    key(client, &[])
}

/// The first key after every key that starts with `prefix` (which ends in 0x00).
#[cfg(feature = "redb")]
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Applies `ops` in order; returns by how much the bytes held changed.
pub(crate) fn apply(t: &mut impl Tables, ops: Vec<Op>) -> Result<i64, StorageError> {
    let mut delta = 0;
    for op in ops {
        delta += match op {
            Op::PutRetained(topic, m) => t.put(Table::Retained, topic.as_bytes(), &m.encode())?,
            Op::DeleteRetained(topic) => t.remove(Table::Retained, topic.as_bytes())?,
            Op::PutSession(client, s) => t.put(Table::Sessions, client.as_bytes(), &s.encode())?,
            Op::DeleteSession(client) => {
                let p = prefix(&client);
                t.remove(Table::Sessions, client.as_bytes())?
                    + t.remove_prefix(Table::Queue, &p)?
                    + t.remove_prefix(Table::Inbound, &p)?
            }
            Op::PutQueued {
                client,
                seq,
                record,
            } => t.put(
                Table::Queue,
                &key(&client, &seq.to_be_bytes()),
                &record.encode(),
            )?,
            Op::DeleteQueued { client, seq } => {
                t.remove(Table::Queue, &key(&client, &seq.to_be_bytes()))?
            }
            Op::PutInbound { client, packet_id } => {
                t.put(Table::Inbound, &key(&client, &packet_id.to_be_bytes()), &[])?
            }
            Op::DeleteInbound { client, packet_id } => {
                t.remove(Table::Inbound, &key(&client, &packet_id.to_be_bytes()))?
            }
            Op::PutPluginState(entry) => t.put(
                Table::Plugin,
                &key(&entry.plugin, &entry.key),
                &entry.encode_value(),
            )?,
            Op::DeletePluginState { plugin, key: k } => {
                t.remove(Table::Plugin, &key(&plugin, &k))?
            }
        };
    }
    Ok(delta)
}

/// A table's contents in key order.
pub(crate) type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// The rows of `rows` (sorted) whose key starts with `prefix`, with the prefix cut off.
fn with_prefix<'a>(
    rows: &'a Rows,
    prefix: &'a [u8],
) -> impl Iterator<Item = &'a (Vec<u8>, Vec<u8>)> {
    let from = rows.partition_point(|(k, _)| k.as_slice() < prefix);
    rows[from..]
        .iter()
        .take_while(move |(k, _)| k.starts_with(prefix))
}

/// Decodes the five tables (each in key order) into a [`Snapshot`], with the bytes their
/// rows hold.
pub(crate) fn snapshot(
    retained: Rows,
    sessions: Rows,
    queue: Rows,
    inbound: Rows,
    plugin: Rows,
) -> Result<(Snapshot, u64), StorageError> {
    let held = [&retained, &sessions, &queue, &inbound, &plugin]
        .iter()
        .flat_map(|rows| rows.iter())
        .map(|(k, v)| (k.len() + v.len()) as u64)
        .sum();
    let mut out = Snapshot::default();
    for (k, v) in plugin {
        let split = k
            .iter()
            .position(|&b| b == 0)
            .ok_or(StorageError::InvalidRecord)?;
        let name =
            String::from_utf8(k[..split].to_vec()).map_err(|_| StorageError::InvalidRecord)?;
        let key = k[split + 1..].to_vec();
        out.plugin_state
            .push(crate::PluginEntry::decode(name, key, &v)?);
    }
    for (k, v) in retained {
        let topic = String::from_utf8(k).map_err(|_| StorageError::InvalidRecord)?;
        out.retained.push((topic, MessageRecord::decode(&v)?));
    }
    for (k, v) in sessions {
        let client = String::from_utf8(k).map_err(|_| StorageError::InvalidRecord)?;
        let p = prefix(&client);
        let mut q = Vec::new();
        for (k, v) in with_prefix(&queue, &p) {
            let seq: [u8; 8] = k[p.len()..]
                .try_into()
                .map_err(|_| StorageError::InvalidRecord)?;
            q.push((u64::from_be_bytes(seq), QueueRecord::decode(v)?));
        }
        let mut ids = Vec::new();
        for (k, _) in with_prefix(&inbound, &p) {
            let id: [u8; 2] = k[p.len()..]
                .try_into()
                .map_err(|_| StorageError::InvalidRecord)?;
            ids.push(u16::from_be_bytes(id));
        }
        out.sessions.push(SessionSnapshot {
            client_id: client,
            session: SessionRecord::decode(&v)?,
            queue: q,
            inbound: ids,
        });
    }
    Ok((out, held))
}
