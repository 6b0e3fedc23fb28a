//! Application messages as the broker holds them: decoded once, shared by every subscriber.
//!
//! A [`Message`] is built from an incoming PUBLISH and wrapped in an `Arc`; each queue entry
//! is a small [`Delivery`] pointing at it. The payload is the `Bytes` slice of the read
//! buffer it arrived in, never copied. The encoded wire forms are cached on the message, so a
//! PUBLISH is encoded once per distinct form (protocol level × with/without packet id), not
//! once per subscriber.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;
use once_cell::race::OnceBox;

use crate::codec::{
    EncodeError, EncodedPublish, PacketId, ProtocolVersion, Publish, PublishProperties, PublishQoS,
    QoS, UserProperty,
};
use crate::gate::Gate;
use crate::topic::TopicName;

/// A message in the broker, shared between all the queues it sits in.
#[derive(Debug)]
pub struct Message {
    /// Topic Name.
    pub topic: TopicName,
    /// Application payload.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The RETAIN flag it was published with.
    pub retain: bool,
    /// v5 properties to forward (never a Topic Alias or Subscription Identifiers: those are
    /// per connection and per subscription).
    pub properties: PublishProperties,
    /// The client that published it (`None` for wills of vanished sessions and `$SYS`).
    pub publisher: Option<ByteString>,
    /// When it was received.
    pub received_at: Instant,
    /// When it expires (v5 Message Expiry Interval), if it does.
    pub expires_at: Option<Instant>,
    /// The cached wire forms, boxed: a form is 120 bytes and most messages (fan-in, one
    /// subscriber each) never cache one, so unboxed they made every message 800 bytes.
    /// (Two threads encoding the same form at once both encode it; one copy is kept.)
    forms: [OnceBox<Result<EncodedPublish, EncodeError>>; 4],
    /// The copy made for keeping (see [`Message::for_keeping`]), shared by every session
    /// that keeps this message.
    kept: OnceLock<std::sync::Arc<Message>>,
    /// With acked durability, the storage writes every copy waits for (shared with the kept
    /// copy): a message whose acknowledgement refuses it reaches no subscriber.
    hold: Option<Arc<Hold>>,
    /// What the properties hold ([`properties_size`]), computed once.
    properties_bytes: usize,
}

/// The storage writes of the PUBLISH a message came from, which every copy waits for before
/// it is sent (acked durability). Pending while the PUBLISH is being routed; then the gate
/// of its acknowledgement. If one of those writes failed, the publisher is refused and
/// every copy is withdrawn.
#[derive(Debug)]
pub(crate) struct Hold {
    after: AtomicU64,
    through: AtomicU64,
    /// A writer found the hold pending and waits for storage to move: the release must
    /// wake it. Most holds are released before any writer looks, and then nothing is woken.
    watched: AtomicBool,
}

/// Bytes counted for a message beyond its variable-length parts: its struct with its `Arc`
/// counts, the queue entry that holds it, and one cached wire form (a message sent to
/// several subscribers caches one per protocol level and packet id use; shared, it is
/// counted by every queue that holds it, so one per queue bounds what is held).
pub(crate) const MESSAGE_OVERHEAD: usize = std::mem::size_of::<Message>()
    + 2 * std::mem::size_of::<usize>()
    + std::mem::size_of::<Delivery>()
    + std::mem::size_of::<Result<EncodedPublish, EncodeError>>();

/// Bytes a message's forwarded properties hold (each user property also counts the two
/// strings' headers).
pub(crate) fn properties_size(p: &PublishProperties) -> usize {
    p.content_type.as_ref().map_or(0, |s| s.len())
        + p.response_topic.as_ref().map_or(0, |t| t.as_str().len())
        + p.correlation_data.as_ref().map_or(0, |b| b.len())
        + p.user_properties
            .iter()
            .map(|u| u.name.len() + u.value.len() + 2 * std::mem::size_of::<ByteString>())
            .sum::<usize>()
}

/// The properties with buffers of their own (see [`Message::detached`]).
pub(crate) fn owned_properties(p: &PublishProperties) -> PublishProperties {
    PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        topic_alias: None,
        response_topic: p.response_topic.as_ref().map(TopicName::owned),
        correlation_data: p
            .correlation_data
            .as_ref()
            .map(|b| Bytes::copy_from_slice(b)),
        user_properties: p
            .user_properties
            .iter()
            .map(|u| UserProperty {
                name: crate::topic::own(&u.name),
                value: crate::topic::own(&u.value),
            })
            .collect(),
        subscription_identifiers: Vec::new(),
        content_type: p.content_type.as_ref().map(crate::topic::own),
    }
}

/// How a message came in: the hold its copies wait behind (acked durability), and when it
/// was read, if the reader knows (a network reader reads the clock once per read, not per
/// message: a clock reading per PUBLISH was 1.4% of the broker's CPU in QoS 1 fan-in).
#[derive(Debug, Default)]
pub(crate) struct Arrival {
    pub(crate) hold: Option<Arc<Hold>>,
    pub(crate) at: Option<Instant>,
}

/// Which of a message's cached forms serves `version` with or without a packet id.
fn form_slot(version: ProtocolVersion, with_id: bool) -> usize {
    usize::from(version.is_v5()) * 2 + usize::from(with_id)
}

/// `Hold::through` while routing is in progress.
const PENDING: u64 = u64::MAX;

impl Hold {
    /// A hold that keeps copies back until [`Hold::release`].
    pub(crate) fn pending() -> Arc<Hold> {
        Arc::new(Hold {
            after: AtomicU64::new(0),
            through: AtomicU64::new(PENDING),
            watched: AtomicBool::new(false),
        })
    }

    /// Sets the writes the copies wait for (the acknowledgement's gate). True if a writer
    /// is waiting for the release and must be woken. (Sequentially consistent with
    /// [`Hold::gate_or_watch`]: either the writer sees the release, or the release sees
    /// the writer.)
    pub(crate) fn release(&self, gate: Gate) -> bool {
        self.after.store(gate.after, Ordering::Relaxed);
        self.through.store(gate.through, Ordering::SeqCst);
        self.watched.load(Ordering::SeqCst)
    }

    fn gate(&self) -> Option<Gate> {
        let through = self.through.load(Ordering::SeqCst);
        (through != PENDING).then(|| Gate {
            after: self.after.load(Ordering::Relaxed),
            through,
        })
    }

    /// What copies wait for; `None` while routing is still in progress, in which case the
    /// caller is recorded as waiting (see [`Hold::release`]).
    pub(crate) fn gate_or_watch(&self) -> Option<Gate> {
        if let Some(gate) = self.gate() {
            return Some(gate);
        }
        self.watched.store(true, Ordering::SeqCst);
        self.gate()
    }
}

impl Message {
    /// A message with the given fields and no properties.
    pub fn new(topic: TopicName, payload: Bytes, qos: QoS, retain: bool) -> Self {
        Self {
            topic,
            payload,
            qos,
            retain,
            properties: PublishProperties::default(),
            publisher: None,
            received_at: Instant::now(),
            expires_at: None,
            forms: Default::default(),
            kept: OnceLock::new(),
            hold: None,
            properties_bytes: 0,
        }
    }

    /// Sets the v5 properties, starting the Message Expiry clock if they carry one.
    pub fn with_properties(mut self, properties: PublishProperties) -> Self {
        self.expires_at = properties
            .message_expiry_interval
            .map(|secs| self.received_at + Duration::from_secs(u64::from(secs)));
        self.properties_bytes = properties_size(&properties);
        self.properties = properties;
        self
    }

    /// A shared message with these fields, built in place (a message is a few hundred
    /// bytes; building it and then moving it into an `Arc` costs copies on the hot path).
    pub(crate) fn shared(
        topic: TopicName,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        properties: PublishProperties,
        publisher: Option<ByteString>,
        arrival: Arrival,
    ) -> std::sync::Arc<Self> {
        let Arrival { hold, at } = arrival;
        let received_at = at.unwrap_or_else(Instant::now);
        let expires_at = properties
            .message_expiry_interval
            .map(|secs| received_at + Duration::from_secs(u64::from(secs)));
        std::sync::Arc::new(Self {
            topic,
            payload,
            qos,
            retain,
            properties_bytes: properties_size(&properties),
            properties,
            publisher,
            received_at,
            expires_at,
            forms: Default::default(),
            kept: OnceLock::new(),
            hold,
        })
    }

    /// A copy whose topic and payload have buffers of their own, for keeping: a decoded
    /// message's are slices of the read buffer it arrived in (up to 8 KiB for a message of
    /// a few bytes), which a long-lived reference would keep allocated.
    pub(crate) fn detached(&self) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            topic: self.topic.owned(),
            payload: Bytes::copy_from_slice(&self.payload),
            qos: self.qos,
            retain: self.retain,
            properties: owned_properties(&self.properties),
            publisher: self.publisher.clone(),
            received_at: self.received_at,
            expires_at: self.expires_at,
            forms: Default::default(),
            kept: OnceLock::new(),
            hold: self.hold.clone(),
            properties_bytes: self.properties_bytes,
        })
    }

    /// The same message with another payload and properties (a per-subscriber form made
    /// by a [`DeliveryTransform`](crate::plugin::DeliveryTransform)): same topic, QoS,
    /// RETAIN, publisher, receipt and expiry time; encoded on its own.
    pub(crate) fn with_payload(
        &self,
        payload: Bytes,
        properties: PublishProperties,
    ) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            topic: self.topic.clone(),
            payload,
            qos: self.qos,
            retain: self.retain,
            properties_bytes: properties_size(&properties),
            properties,
            publisher: self.publisher.clone(),
            received_at: self.received_at,
            expires_at: self.expires_at,
            forms: Default::default(),
            kept: OnceLock::new(),
            hold: None,
        })
    }

    /// The message as kept for a long time (queued for an offline session): a copy that
    /// owns its bytes (see [`Message::detached`]), made once and shared by every session
    /// that keeps it.
    pub(crate) fn for_keeping(&self) -> std::sync::Arc<Self> {
        std::sync::Arc::clone(self.kept.get_or_init(|| self.detached()))
    }

    /// Builds a message from a PUBLISH received from `publisher`, dropping the per-hop
    /// properties (Topic Alias, Subscription Identifiers).
    pub fn from_publish(publish: Publish, publisher: Option<ByteString>) -> Self {
        let mut properties = publish.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        let mut message = Self::new(
            publish.topic,
            publish.payload,
            publish.qos.qos(),
            publish.retain,
        )
        .with_properties(properties);
        message.publisher = publisher;
        message
    }

    /// True when every copy has the same wire form at a protocol level (no expiry
    /// countdown) and waits for no storage write: what a shared run of copies
    /// (`session::Run`) may hold.
    pub(crate) fn is_plain(&self) -> bool {
        self.expires_at.is_none() && self.hold.is_none()
    }

    /// The storage writes copies wait for: `None` if they wait for nothing, `Some(None)`
    /// while routing is in progress.
    pub(crate) fn hold(&self) -> Option<Option<Gate>> {
        self.hold.as_ref().map(|h| h.gate_or_watch())
    }

    /// True once the Message Expiry Interval has passed (MQTT-3.3.2-5: the copy for a
    /// subscriber it has not started onward delivery to is then deleted).
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The Message Expiry Interval to forward: the received value minus the time spent
    /// waiting in the broker, rounded up (MQTT-3.3.2-6).
    fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }

    /// Size counted against queue byte budgets: what the message holds — topic, payload and
    /// the properties it forwards (user properties, content type, response topic,
    /// correlation data), the message itself, its queue entry, and one cached wire form
    /// (whose head copies the topic and properties).
    pub fn size(&self) -> usize {
        MESSAGE_OVERHEAD
            + 2 * (self.topic.as_str().len() + self.properties_bytes)
            + self.payload.len()
    }

    /// The PUBLISH for one delivery (payload shared, not copied).
    pub fn to_publish(
        &self,
        qos: PublishQoS,
        retain: bool,
        dup: bool,
        sids: &[NonZeroU32],
    ) -> Publish {
        Publish {
            dup,
            qos,
            retain,
            topic: self.topic.clone(),
            properties: self.properties_for(sids),
            payload: self.payload.clone(),
        }
    }

    /// Topic, payload and the properties of one copy (see [`Message::properties_for`]),
    /// moved out when this is the last reference (no reference counting or cloning), cloned
    /// otherwise.
    pub(crate) fn into_copy(
        message: std::sync::Arc<Self>,
        sids: Vec<NonZeroU32>,
    ) -> (TopicName, Bytes, PublishProperties) {
        match std::sync::Arc::try_unwrap(message) {
            Ok(mut m) => {
                if m.expires_at.is_some() {
                    m.properties.message_expiry_interval = m.remaining_expiry(Instant::now());
                }
                m.properties.subscription_identifiers = sids;
                (m.topic, m.payload, m.properties)
            }
            Err(shared) => (
                shared.topic.clone(),
                shared.payload.clone(),
                shared.properties_for(&sids),
            ),
        }
    }

    /// The properties one copy carries: these Subscription Identifiers, and the expiry
    /// interval that remains now.
    pub(crate) fn properties_for(&self, sids: &[NonZeroU32]) -> PublishProperties {
        let mut properties = self.properties.clone();
        properties.subscription_identifiers = sids.to_vec();
        if self.expires_at.is_some() {
            properties.message_expiry_interval = self.remaining_expiry(Instant::now());
        }
        properties
    }

    /// True when every copy of this message has the same wire form at a protocol level (no
    /// per-subscriber Subscription Identifiers, no per-send expiry countdown), so the cached
    /// form can be used.
    pub(crate) fn shares_form(
        &self,
        delivery_sids: &[NonZeroU32],
        version: ProtocolVersion,
    ) -> bool {
        !version.is_v5() || (delivery_sids.is_empty() && self.expires_at.is_none())
    }

    /// The encoded size of one copy.
    pub(crate) fn wire_len(
        &self,
        version: ProtocolVersion,
        qos: PublishQoS,
        sids: &[NonZeroU32],
    ) -> usize {
        if self.shares_form(sids, version) {
            if let Ok(form) = self.encoded(version, qos.packet_id().is_some()) {
                return form.len();
            }
        }
        crate::codec::Packet::Publish(self.to_publish(qos, false, false, sids))
            .encoded_len(version)
            .unwrap_or(usize::MAX)
    }

    /// True when `message` is best encoded straight into the one connection buffer it goes
    /// to: its form is shared (see [`Message::shares_form`]) but not cached yet, and the
    /// copy asking holds the only reference, so no other copy will ever use a cached form
    /// (fan-in: one subscriber per message). Encoding the form first would add an
    /// allocation and a copy of the headers for nothing. (A reference taken later, such as
    /// the inflight window's for a re-send, encodes again.)
    pub(crate) fn encodes_alone(
        message: &Arc<Message>,
        version: ProtocolVersion,
        with_id: bool,
    ) -> bool {
        Arc::strong_count(message) == 1
            && message.forms[form_slot(version, with_id)].get().is_none()
            && message.properties.subscription_identifiers.is_empty()
            && message.properties.topic_alias.is_none()
    }

    /// The cached encoded form for `version`, with or without a packet identifier. Only for
    /// deliveries for which [`Message::shares_form`] holds.
    pub(crate) fn encoded(
        &self,
        version: ProtocolVersion,
        with_id: bool,
    ) -> Result<&EncodedPublish, EncodeError> {
        let form = self.forms[form_slot(version, with_id)].get_or_init(|| {
            let qos = if with_id {
                PublishQoS::AtLeastOnce(PacketId::MIN)
            } else {
                PublishQoS::AtMostOnce
            };
            Box::new(EncodedPublish::new(
                &self.to_publish(qos, false, false, &[]),
                version,
            ))
        });
        form.as_ref().map_err(Clone::clone)
    }
}

/// One entry of a session's queue: a shared message and how to deliver it to this session.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The shared message.
    pub message: Arc<Message>,
    /// QoS for this subscriber: the message's QoS capped by the granted QoS.
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription Identifiers of the matching subscriptions (v5).
    pub subscription_ids: Vec<NonZeroU32>,
    /// Position in the session's stored queue, when the delivery is persisted.
    pub storage_seq: Option<std::num::NonZeroU64>,
    /// Packet identifier reserved while queued (persistent sessions), so that it is the same
    /// before and after a restart.
    pub packet_id: Option<crate::codec::PacketId>,
    /// Storage sequence number that must be durable before this delivery is sent (0: none).
    pub gate: u64,
    /// It may have been sent before a restart: send it with DUP set (MQTT-3.3.1-1).
    pub maybe_sent: bool,
    /// The authorizers' epoch in which the receive check passed (0: never checked in this
    /// process, as for a delivery restored from storage). A delivery whose epoch is not the
    /// current one is checked again when it is sent. (32 bits: a delivery stays within one
    /// cache line's worth of bytes; after 2³² authorizer changes an old epoch could match
    /// again, which would take decades of reloads.)
    pub authorized_epoch: u32,
}

impl Delivery {
    /// A delivery not yet stored, numbered or sent.
    pub(crate) fn new(
        message: Arc<Message>,
        qos: QoS,
        retain: bool,
        subscription_ids: Vec<NonZeroU32>,
    ) -> Self {
        Self {
            message,
            qos,
            retain,
            subscription_ids,
            storage_seq: None,
            packet_id: None,
            gate: 0,
            maybe_sent: false,
            authorized_epoch: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message routed is one allocation of this size (issue 19): the wire forms
    /// are boxed so that it stays within 384 bytes (it was 808 with them inline).
    #[test]
    fn a_message_stays_small() {
        let size = std::mem::size_of::<Message>() + 2 * std::mem::size_of::<usize>();
        assert!(
            size <= 384,
            "a message takes {size} bytes with its Arc counts"
        );
    }

    /// Issue 12 §2: a queued message counts what it really holds, its struct, queue
    /// entry and a cached form included, not only its topic and payload.
    #[test]
    fn a_message_counts_its_struct_its_queue_entry_and_a_form() {
        let topic = TopicName::new("a/b").expect("valid");
        let m = Message::new(
            topic,
            Bytes::from_static(b"12345678"),
            QoS::AtLeastOnce,
            false,
        );
        let held = std::mem::size_of::<Message>()
            + std::mem::size_of::<Delivery>()
            + std::mem::size_of::<Result<EncodedPublish, EncodeError>>();
        assert!(m.size() >= held + 8 + 2 * 3, "{} < {held}", m.size());
    }

    #[test]
    fn a_detached_copy_owns_its_bytes_and_keeps_the_rest() {
        // A payload sliced out of a larger buffer, as the decoder hands it out.
        let buffer = Bytes::from(vec![7u8; 8192]);
        let payload = buffer.slice(100..110);
        let topic = TopicName::new("a/b").expect("valid");
        let properties = PublishProperties {
            message_expiry_interval: Some(60),
            ..PublishProperties::default()
        };
        let message = Message::shared(
            topic.clone(),
            payload.clone(),
            QoS::AtLeastOnce,
            true,
            properties.clone(),
            Some("pub".into()),
            Arrival::default(),
        );
        let copy = message.detached();
        assert_eq!(copy.payload, payload);
        assert_ne!(copy.payload.as_ptr(), payload.as_ptr(), "payload copied");
        assert_eq!(copy.topic, topic);
        assert_eq!(copy.properties, properties);
        assert_eq!(copy.expires_at, message.expires_at);
        assert_eq!(copy.received_at, message.received_at);
        assert_eq!(copy.publisher.as_deref(), Some("pub"));
        assert!(copy.retain && copy.qos == QoS::AtLeastOnce);
    }
}
