//! Stored records and their binary format.
//!
//! Each value is `[FORMAT_VERSION][fields...]`. Integers are big-endian; byte strings and
//! strings are a u32 length and the bytes; `Option` is a 0/1 byte then the value; lists are
//! a u32 count then the items. Lengths are checked against the bytes that are there before
//! anything is allocated.

use crate::StorageError;

/// The format version written by this crate.
pub const FORMAT_VERSION: u8 = 1;

/// The v5 properties of a stored message that are forwarded to subscribers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertiesRecord {
    /// Payload Format Indicator.
    pub payload_format: Option<u8>,
    /// Content Type.
    pub content_type: Option<String>,
    /// Response Topic.
    pub response_topic: Option<String>,
    /// Correlation Data.
    pub correlation_data: Option<Vec<u8>>,
    /// User Properties, in order.
    pub user_properties: Vec<(String, String)>,
}

/// An application message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageRecord {
    /// Topic Name.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS it was published with.
    pub qos: u8,
    /// RETAIN flag it was published with.
    pub retain: bool,
    /// Forwarded properties.
    pub properties: PropertiesRecord,
    /// Client that published it.
    pub publisher: Option<String>,
    /// When it expires, in milliseconds since the Unix epoch.
    pub expires_at_ms: Option<u64>,
}

/// One subscription of a session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// Topic filter (including `$share/{group}/` for shared subscriptions).
    pub filter: String,
    /// Maximum QoS.
    pub qos: u8,
    /// No Local.
    pub no_local: bool,
    /// Retain As Published.
    pub retain_as_published: bool,
    /// Retain Handling (0..=2).
    pub retain_handling: u8,
    /// Subscription Identifier.
    pub id: Option<u32>,
}

/// A will waiting out its delay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WillRecord {
    /// The will message.
    pub message: MessageRecord,
    /// When to publish it, in milliseconds since the Unix epoch.
    pub publish_at_ms: u64,
    /// The will's Message Expiry Interval in seconds (it starts when the will is published).
    pub message_expiry_interval: Option<u32>,
}

/// Who a session belongs to: the authorization context of the connection that made or last
/// resumed it, so that a restarted broker authorizes deliveries to the session as it did
/// before the restart, and resumes it only for the same identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerRecord {
    /// User Name the client sent in CONNECT (as claimed, not verified).
    pub connect_username: Option<String>,
    /// The authenticated identity's user name.
    pub identity_username: Option<String>,
    /// The authenticated identity's roles.
    pub roles: Vec<String>,
    /// Protocol level (3, 4 or 5).
    pub protocol: u8,
    /// Peer address, as text (`None` for in-process clients).
    pub peer: Option<String>,
    /// Name of the listener the client came through.
    pub listener: String,
}

/// A persistent session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session Expiry Interval in seconds (`u32::MAX`: never).
    pub expiry_interval: u32,
    /// Subscriptions.
    pub subscriptions: Vec<SubscriptionRecord>,
    /// When its client went away (ms since the epoch); `None` while connected.
    pub disconnected_at_ms: Option<u64>,
    /// A will waiting out its Will Delay Interval.
    pub will: Option<WillRecord>,
    /// Who the session belongs to. `None` for records written before owners were stored:
    /// a broker with authorizers then refuses deliveries to the session (fail closed) until
    /// its client connects again.
    pub owner: Option<OwnerRecord>,
}

/// Where a queued message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueStage {
    /// Not sent yet.
    Queued,
    /// Sent with this packet id; awaiting PUBACK or PUBREC.
    Published(u16),
    /// PUBREC received and PUBREL sent for this packet id; awaiting PUBCOMP.
    Released(u16),
}

/// A QoS 1/2 message in a session's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRecord {
    /// The message.
    pub message: MessageRecord,
    /// Delivery QoS.
    pub qos: u8,
    /// RETAIN flag to deliver with.
    pub retain: bool,
    /// Subscription Identifiers to deliver with.
    pub subscription_ids: Vec<u32>,
    /// Stage.
    pub stage: QueueStage,
    /// Packet identifier reserved for it while queued (stable across restarts, so a
    /// receiver's QoS 2 state stays valid).
    pub packet_id: Option<u16>,
}

/// One change to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Store the retained message of a topic.
    PutRetained(String, MessageRecord),
    /// Remove the retained message of a topic.
    DeleteRetained(String),
    /// Store a session (replacing it).
    PutSession(String, SessionRecord),
    /// Remove a session with its queue and inbound packet ids.
    DeleteSession(String),
    /// Store entry `seq` of a session's queue (replacing it).
    PutQueued {
        /// Client identifier.
        client: String,
        /// Position in the session's queue.
        seq: u64,
        /// The entry.
        record: QueueRecord,
    },
    /// Remove entry `seq` of a session's queue.
    DeleteQueued {
        /// Client identifier.
        client: String,
        /// Position in the session's queue.
        seq: u64,
    },
    /// Remember an inbound QoS 2 packet id awaiting PUBREL.
    PutInbound {
        /// Client identifier.
        client: String,
        /// Packet Identifier.
        packet_id: u16,
    },
    /// Forget an inbound QoS 2 packet id.
    DeleteInbound {
        /// Client identifier.
        client: String,
        /// Packet Identifier.
        packet_id: u16,
    },
    /// Store a plugin's value under `key` (replacing it).
    PutPluginState(PluginEntry),
    /// Remove a plugin's value.
    DeletePluginState {
        /// The plugin's name (no U+0000).
        plugin: String,
        /// The key within the plugin's namespace.
        key: Vec<u8>,
    },
}

/// A value a plugin keeps under the broker's storage (the payload-protection plugin's
/// replay high-water marks, say): opaque bytes under a key, in the plugin's own namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginEntry {
    /// The plugin's name (no U+0000).
    pub plugin: String,
    /// The key within the plugin's namespace.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

impl PluginEntry {
    /// The stored form: the format version, then the value.
    pub(crate) fn encode_value(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + self.value.len());
        v.push(FORMAT_VERSION);
        v.extend_from_slice(&self.value);
        v
    }

    /// Reads a stored value back.
    pub(crate) fn decode(
        plugin: String,
        key: Vec<u8>,
        stored: &[u8],
    ) -> Result<Self, StorageError> {
        match stored.split_first() {
            Some((&FORMAT_VERSION, value)) => Ok(Self {
                plugin,
                key,
                value: value.to_vec(),
            }),
            Some((&v, _)) => Err(StorageError::UnsupportedVersion(v)),
            None => Err(StorageError::InvalidRecord),
        }
    }
}

/// A stored session with everything that belongs to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSnapshot {
    /// Client identifier.
    pub client_id: String,
    /// The session.
    pub session: SessionRecord,
    /// Its queue, in order.
    pub queue: Vec<(u64, QueueRecord)>,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub inbound: Vec<u16>,
}

/// Everything stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Retained messages by topic.
    pub retained: Vec<(String, MessageRecord)>,
    /// Sessions.
    pub sessions: Vec<SessionSnapshot>,
    /// Plugins' values, by plugin then key.
    pub plugin_state: Vec<PluginEntry>,
}

// ----------------------------------------------------------------------------------------
// Encoding.

pub(crate) struct Enc(pub(crate) Vec<u8>);

impl Enc {
    pub(crate) fn new() -> Self {
        Enc(vec![FORMAT_VERSION])
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    fn opt<T>(&mut self, v: &Option<T>, f: impl FnOnce(&mut Self, &T)) {
        match v {
            Some(x) => {
                self.u8(1);
                f(self, x);
            }
            None => self.u8(0),
        }
    }
    fn list<T>(&mut self, v: &[T], mut f: impl FnMut(&mut Self, &T)) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        for x in v {
            f(self, x);
        }
    }
}

pub(crate) struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    /// Checks the version byte.
    pub(crate) fn new(buf: &'a [u8]) -> Result<Self, StorageError> {
        match buf.split_first() {
            Some((&FORMAT_VERSION, rest)) => Ok(Dec(rest)),
            Some((&v, _)) => Err(StorageError::UnsupportedVersion(v)),
            None => Err(StorageError::InvalidRecord),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], StorageError> {
        if self.0.len() < n {
            return Err(StorageError::InvalidRecord);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, StorageError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, StorageError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, StorageError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, StorageError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn bool(&mut self) -> Result<bool, StorageError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(StorageError::InvalidRecord),
        }
    }
    fn bytes(&mut self) -> Result<Vec<u8>, StorageError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn str(&mut self) -> Result<String, StorageError> {
        String::from_utf8(self.bytes()?).map_err(|_| StorageError::InvalidRecord)
    }
    fn opt<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, StorageError>,
    ) -> Result<Option<T>, StorageError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(f(self)?)),
            _ => Err(StorageError::InvalidRecord),
        }
    }
    fn list<T>(
        &mut self,
        mut f: impl FnMut(&mut Self) -> Result<T, StorageError>,
    ) -> Result<Vec<T>, StorageError> {
        let n = self.u32()? as usize;
        // Every item takes at least one byte: never reserve more than is there.
        let mut out = Vec::with_capacity(n.min(self.0.len()));
        for _ in 0..n {
            out.push(f(self)?);
        }
        Ok(out)
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub(crate) fn finish(&self) -> Result<(), StorageError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(StorageError::InvalidRecord)
        }
    }
}

fn enc_message(e: &mut Enc, m: &MessageRecord) {
    e.str(&m.topic);
    e.bytes(&m.payload);
    e.u8(m.qos);
    e.bool(m.retain);
    let p = &m.properties;
    e.opt(&p.payload_format, |e, v| e.u8(*v));
    e.opt(&p.content_type, |e, v| e.str(v));
    e.opt(&p.response_topic, |e, v| e.str(v));
    e.opt(&p.correlation_data, |e, v| e.bytes(v));
    e.list(&p.user_properties, |e, (k, v)| {
        e.str(k);
        e.str(v);
    });
    e.opt(&m.publisher, |e, v| e.str(v));
    e.opt(&m.expires_at_ms, |e, v| e.u64(*v));
}

fn dec_message(d: &mut Dec<'_>) -> Result<MessageRecord, StorageError> {
    Ok(MessageRecord {
        topic: d.str()?,
        payload: d.bytes()?,
        qos: d.u8()?,
        retain: d.bool()?,
        properties: PropertiesRecord {
            payload_format: d.opt(|d| d.u8())?,
            content_type: d.opt(|d| d.str())?,
            response_topic: d.opt(|d| d.str())?,
            correlation_data: d.opt(|d| d.bytes())?,
            user_properties: d.list(|d| Ok((d.str()?, d.str()?)))?,
        },
        publisher: d.opt(|d| d.str())?,
        expires_at_ms: d.opt(|d| d.u64())?,
    })
}

impl MessageRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        enc_message(&mut e, self);
        e.0
    }

    pub(crate) fn decode(buf: &[u8]) -> Result<Self, StorageError> {
        let mut d = Dec::new(buf)?;
        let m = dec_message(&mut d)?;
        d.finish()?;
        Ok(m)
    }
}

impl SessionRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u32(self.expiry_interval);
        e.list(&self.subscriptions, |e, s| {
            e.str(&s.filter);
            e.u8(s.qos);
            e.bool(s.no_local);
            e.bool(s.retain_as_published);
            e.u8(s.retain_handling);
            e.opt(&s.id, |e, v| e.u32(*v));
        });
        e.opt(&self.disconnected_at_ms, |e, v| e.u64(*v));
        e.opt(&self.will, |e, w| {
            enc_message(e, &w.message);
            e.u64(w.publish_at_ms);
            e.opt(&w.message_expiry_interval, |e, v| e.u32(*v));
        });
        // Appended last: a record of the first layout simply ends before it.
        e.opt(&self.owner, |e, o| {
            e.opt(&o.connect_username, |e, v| e.str(v));
            e.opt(&o.identity_username, |e, v| e.str(v));
            e.list(&o.roles, |e, v| e.str(v));
            e.u8(o.protocol);
            e.opt(&o.peer, |e, v| e.str(v));
            e.str(&o.listener);
        });
        e.0
    }

    pub(crate) fn decode(buf: &[u8]) -> Result<Self, StorageError> {
        let mut d = Dec::new(buf)?;
        let s = SessionRecord {
            expiry_interval: d.u32()?,
            subscriptions: d.list(|d| {
                Ok(SubscriptionRecord {
                    filter: d.str()?,
                    qos: d.u8()?,
                    no_local: d.bool()?,
                    retain_as_published: d.bool()?,
                    retain_handling: d.u8()?,
                    id: d.opt(|d| d.u32())?,
                })
            })?,
            disconnected_at_ms: d.opt(|d| d.u64())?,
            will: d.opt(|d| {
                Ok(WillRecord {
                    message: dec_message(d)?,
                    publish_at_ms: d.u64()?,
                    message_expiry_interval: d.opt(|d| d.u32())?,
                })
            })?,
            owner: None,
        };
        let s = SessionRecord {
            owner: if d.is_empty() {
                None // written before owners were stored
            } else {
                d.opt(|d| {
                    Ok(OwnerRecord {
                        connect_username: d.opt(|d| d.str())?,
                        identity_username: d.opt(|d| d.str())?,
                        roles: d.list(|d| d.str())?,
                        protocol: d.u8()?,
                        peer: d.opt(|d| d.str())?,
                        listener: d.str()?,
                    })
                })?
            },
            ..s
        };
        d.finish()?;
        Ok(s)
    }
}

impl QueueRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        enc_message(&mut e, &self.message);
        e.u8(self.qos);
        e.bool(self.retain);
        e.list(&self.subscription_ids, |e, v| e.u32(*v));
        match self.stage {
            QueueStage::Queued => e.u8(0),
            QueueStage::Published(id) => {
                e.u8(1);
                e.u16(id);
            }
            QueueStage::Released(id) => {
                e.u8(2);
                e.u16(id);
            }
        }
        e.opt(&self.packet_id, |e, v| e.u16(*v));
        e.0
    }

    pub(crate) fn decode(buf: &[u8]) -> Result<Self, StorageError> {
        let mut d = Dec::new(buf)?;
        let r = QueueRecord {
            message: dec_message(&mut d)?,
            qos: d.u8()?,
            retain: d.bool()?,
            subscription_ids: d.list(|d| d.u32())?,
            stage: match d.u8()? {
                0 => QueueStage::Queued,
                1 => QueueStage::Published(d.u16()?),
                2 => QueueStage::Released(d.u16()?),
                _ => return Err(StorageError::InvalidRecord),
            },
            packet_id: d.opt(|d| d.u16())?,
        };
        d.finish()?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> MessageRecord {
        MessageRecord {
            topic: "a/b".into(),
            payload: vec![1, 2, 3],
            qos: 2,
            retain: true,
            properties: PropertiesRecord {
                payload_format: Some(1),
                content_type: Some("text/plain".into()),
                response_topic: Some("r".into()),
                correlation_data: Some(vec![9]),
                user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
            },
            publisher: Some("pub".into()),
            expires_at_ms: Some(1_700_000_000_000),
        }
    }

    #[test]
    fn records_round_trip() {
        let m = message();
        assert_eq!(MessageRecord::decode(&m.encode()).expect("decodes"), m);
        let s = SessionRecord {
            expiry_interval: 3600,
            subscriptions: vec![SubscriptionRecord {
                filter: "$share/g/a/#".into(),
                qos: 1,
                no_local: false,
                retain_as_published: true,
                retain_handling: 2,
                id: Some(7),
            }],
            disconnected_at_ms: Some(5),
            will: Some(WillRecord {
                message: m.clone(),
                publish_at_ms: 99,
                message_expiry_interval: Some(30),
            }),
            owner: Some(OwnerRecord {
                connect_username: Some("claimed".into()),
                identity_username: Some("alice".into()),
                roles: vec!["ops".into()],
                protocol: 5,
                peer: Some("127.0.0.1:4000".into()),
                listener: "tcp:127.0.0.1:1883".into(),
            }),
        };
        assert_eq!(SessionRecord::decode(&s.encode()).expect("decodes"), s);
        // A record of the first layout (no owner) still reads, as owner unknown.
        let legacy = SessionRecord {
            owner: None,
            ..s.clone()
        };
        let mut bytes = legacy.encode();
        assert_eq!(bytes.pop(), Some(0), "the absent owner is one 0 byte");
        assert_eq!(SessionRecord::decode(&bytes).expect("decodes"), legacy);
        for stage in [
            QueueStage::Queued,
            QueueStage::Published(3),
            QueueStage::Released(65535),
        ] {
            let q = QueueRecord {
                message: m.clone(),
                qos: 1,
                retain: false,
                subscription_ids: vec![1, 2],
                stage,
                packet_id: Some(5),
            };
            assert_eq!(QueueRecord::decode(&q.encode()).expect("decodes"), q);
        }
    }

    #[test]
    fn unknown_versions_and_damage_are_errors() {
        let mut bytes = message().encode();
        bytes[0] = 9;
        assert!(matches!(
            MessageRecord::decode(&bytes),
            Err(StorageError::UnsupportedVersion(9))
        ));
        let bytes = message().encode();
        for end in 0..bytes.len() {
            assert!(
                MessageRecord::decode(&bytes[..end]).is_err(),
                "prefix {end}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(MessageRecord::decode(&long).is_err(), "trailing byte");
    }

    proptest::proptest! {
        /// Random bytes never panic the decoders.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let mut v = bytes.clone();
            if let Some(first) = v.first_mut() { *first = FORMAT_VERSION; }
            let _ = MessageRecord::decode(&v);
            let _ = SessionRecord::decode(&v);
            let _ = QueueRecord::decode(&v);
        }
    }
}
