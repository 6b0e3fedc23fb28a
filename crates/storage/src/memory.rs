//! The in-memory backend: the same records and format as on disk, kept in maps. Nothing
//! survives the process, but it survives a broker restart within one process (share the
//! `Arc`), which is what tests and memory-only deployments need.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::record::{MessageRecord, QueueRecord, SessionRecord};
use crate::{Op, SessionSnapshot, Snapshot, Storage, StorageError};

#[derive(Debug, Default)]
struct State {
    retained: BTreeMap<String, Vec<u8>>,
    sessions: BTreeMap<String, Vec<u8>>,
    queue: BTreeMap<(String, u64), Vec<u8>>,
    inbound: BTreeSet<(String, u16)>,
    plugin: BTreeMap<(String, Vec<u8>), Vec<u8>>,
}

/// Keeps everything in memory, encoded exactly as [`SledStorage`](crate::SledStorage)
/// would write it.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    state: Mutex<State>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn load(&self) -> Result<Snapshot, StorageError> {
        let st = self.state.lock();
        let retained = st
            .retained
            .iter()
            .map(|(t, v)| Ok((t.clone(), MessageRecord::decode(v)?)))
            .collect::<Result<_, StorageError>>()?;
        let mut sessions = Vec::new();
        for (client, bytes) in &st.sessions {
            let queue = st
                .queue
                .range((client.clone(), 0)..=(client.clone(), u64::MAX))
                .map(|((_, seq), v)| Ok((*seq, QueueRecord::decode(v)?)))
                .collect::<Result<_, StorageError>>()?;
            let inbound = st
                .inbound
                .range((client.clone(), 0)..=(client.clone(), u16::MAX))
                .map(|(_, id)| *id)
                .collect();
            sessions.push(SessionSnapshot {
                client_id: client.clone(),
                session: SessionRecord::decode(bytes)?,
                queue,
                inbound,
            });
        }
        let plugin_state = st
            .plugin
            .iter()
            .map(|((p, k), v)| crate::PluginEntry::decode(p.clone(), k.clone(), v))
            .collect::<Result<_, StorageError>>()?;
        Ok(Snapshot {
            retained,
            sessions,
            plugin_state,
        })
    }

    async fn write(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        let mut st = self.state.lock();
        for op in ops {
            match op {
                Op::PutRetained(topic, m) => {
                    st.retained.insert(topic, m.encode());
                }
                Op::DeleteRetained(topic) => {
                    st.retained.remove(&topic);
                }
                Op::PutSession(client, s) => {
                    st.sessions.insert(client, s.encode());
                }
                Op::DeleteSession(client) => {
                    st.sessions.remove(&client);
                    st.queue.retain(|(c, _), _| *c != client);
                    st.inbound.retain(|(c, _)| *c != client);
                }
                Op::PutQueued {
                    client,
                    seq,
                    record,
                } => {
                    st.queue.insert((client, seq), record.encode());
                }
                Op::DeleteQueued { client, seq } => {
                    st.queue.remove(&(client, seq));
                }
                Op::PutInbound { client, packet_id } => {
                    st.inbound.insert((client, packet_id));
                }
                Op::DeleteInbound { client, packet_id } => {
                    st.inbound.remove(&(client, packet_id));
                }
                Op::PutPluginState(entry) => {
                    let value = entry.encode_value();
                    st.plugin.insert((entry.plugin, entry.key), value);
                }
                Op::DeletePluginState { plugin, key } => {
                    st.plugin.remove(&(plugin, key));
                }
            }
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StorageError> {
        Ok(0)
    }
}
