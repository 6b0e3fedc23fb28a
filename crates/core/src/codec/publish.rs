//! PUBLISH (section 3.3 of both standards) and its encode-once form for fan-out.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::properties::{PropertySet, PublishProperties};
use super::wire::{varint_len, Counter, Reader, Sink};
use super::{PacketId, PacketType, ProtocolVersion, QoS, MAX_VARINT};
use crate::topic::TopicName;

/// A PUBLISH's QoS together with its Packet Identifier: QoS 0 has none, QoS 1 and 2 always
/// have one (MQTT-2.3.1-1, MQTT-2.3.1-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublishQoS {
    /// QoS 0, no packet identifier.
    AtMostOnce,
    /// QoS 1 with its packet identifier.
    AtLeastOnce(PacketId),
    /// QoS 2 with its packet identifier.
    ExactlyOnce(PacketId),
}

impl PublishQoS {
    /// The QoS level.
    pub fn qos(self) -> QoS {
        match self {
            PublishQoS::AtMostOnce => QoS::AtMostOnce,
            PublishQoS::AtLeastOnce(_) => QoS::AtLeastOnce,
            PublishQoS::ExactlyOnce(_) => QoS::ExactlyOnce,
        }
    }

    /// The packet identifier, absent for QoS 0.
    pub fn packet_id(self) -> Option<PacketId> {
        match self {
            PublishQoS::AtMostOnce => None,
            PublishQoS::AtLeastOnce(id) | PublishQoS::ExactlyOnce(id) => Some(id),
        }
    }

    /// `qos` with `id`; `id` is ignored for QoS 0.
    pub fn new(qos: QoS, id: PacketId) -> Self {
        match qos {
            QoS::AtMostOnce => PublishQoS::AtMostOnce,
            QoS::AtLeastOnce => PublishQoS::AtLeastOnce(id),
            QoS::ExactlyOnce => PublishQoS::ExactlyOnce(id),
        }
    }
}

/// A PUBLISH packet. The payload is a zero-copy slice of the buffer it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP: this is a re-delivery. Always false at QoS 0 (MQTT-3.3.1-2); the encoder writes
    /// 0 for QoS 0 whatever this says.
    pub dup: bool,
    /// QoS and packet identifier.
    pub qos: PublishQoS,
    /// RETAIN.
    pub retain: bool,
    /// Topic Name; empty only in a v5 PUBLISH that carries a Topic Alias.
    pub topic: TopicName,
    /// PUBLISH properties (v5 only).
    pub properties: PublishProperties,
    /// Application Message.
    pub payload: Bytes,
}

impl Publish {
    /// A non-retained, non-duplicate PUBLISH with no properties.
    pub fn new(topic: TopicName, qos: PublishQoS, payload: impl Into<Bytes>) -> Self {
        Self {
            dup: false,
            qos,
            retain: false,
            topic,
            properties: PublishProperties::default(),
            payload: payload.into(),
        }
    }

    pub(crate) fn header_flags(&self) -> u8 {
        flags(self.dup, self.qos.qos(), self.retain)
    }

    pub(crate) fn decode(
        r: &mut Reader,
        flags: u8,
        v: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let retain = flags & 1 != 0;
        let qos = QoS::from_u8((flags >> 1) & 0b11)?; // MQTT-3.3.1-4
        let dup = flags & 0b1000 != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::DupOnQoS0); // MQTT-3.3.1-2
        }
        let topic = TopicName::from_wire(r.string()?)?; // MQTT-3.3.2-2
        let qos = match qos {
            QoS::AtMostOnce => PublishQoS::AtMostOnce,
            QoS::AtLeastOnce => PublishQoS::AtLeastOnce(PacketId::read(r, PacketType::Publish)?),
            QoS::ExactlyOnce => PublishQoS::ExactlyOnce(PacketId::read(r, PacketType::Publish)?),
        };
        let properties = if v.is_v5() {
            PublishProperties::decode(r)?
        } else {
            PublishProperties::default()
        };
        if topic.is_empty() && properties.topic_alias.is_none() {
            return Err(DecodeError::EmptyTopicWithoutAlias);
        }
        Ok(Self {
            dup,
            qos,
            retain,
            topic,
            properties,
            payload: r.rest(),
        })
    }

    /// Everything up to the payload.
    fn emit_variable_header<S: Sink>(&self, v: ProtocolVersion, s: &mut S) {
        let properties = v.is_v5().then_some(&self.properties);
        emit_head(&self.topic, self.qos, properties, s);
    }

    pub(crate) fn emit_body<S: Sink>(&self, v: ProtocolVersion, s: &mut S) {
        self.emit_variable_header(v, s);
        s.raw(&self.payload);
    }
}

/// A PUBLISH's variable header: the Topic Name, the packet identifier, and (v5) the
/// properties.
fn emit_head<S: Sink>(
    topic: &TopicName,
    qos: PublishQoS,
    properties: Option<&PublishProperties>,
    s: &mut S,
) {
    s.string(topic.as_str());
    if let Some(id) = qos.packet_id() {
        s.u16(id.get());
    }
    if let Some(properties) = properties {
        properties.emit(s);
    }
}

/// Appends the fixed and variable headers of one PUBLISH (everything before a payload of
/// `payload_len` bytes) to `out`, from its parts: for a copy encoded once, where building
/// a [`Publish`] or an [`EncodedPublish`] first would only add copies. `properties` is
/// `Some` for MQTT 5.0.
pub(crate) fn write_head(
    out: &mut BytesMut,
    flags: (bool, PublishQoS, bool),
    topic: &TopicName,
    properties: Option<&PublishProperties>,
    payload_len: usize,
) -> Result<(), EncodeError> {
    let (dup, qos, retain) = flags;
    let mut counter = Counter::default();
    emit_head(topic, qos, properties, &mut counter);
    if counter.field_too_long {
        return Err(EncodeError::FieldTooLong);
    }
    let body = counter.len + payload_len;
    if body > MAX_VARINT as usize {
        return Err(EncodeError::PacketTooLarge(body));
    }
    out.reserve(5 + counter.len);
    out.put_u8(((PacketType::Publish as u8) << 4) | self::flags(dup, qos.qos(), retain));
    out.varint(body as u32);
    emit_head(topic, qos, properties, out);
    Ok(())
}

fn flags(dup: bool, qos: QoS, retain: bool) -> u8 {
    let dup = dup && qos != QoS::AtMostOnce;
    (u8::from(dup) << 3) | (qos.as_u8() << 1) | u8::from(retain)
}

/// A PUBLISH encoded once, to be written to many subscribers.
///
/// The fixed and variable headers are encoded once into a small shared buffer; each copy
/// patches the flags (DUP, QoS, RETAIN) and the packet identifier while copying the header
/// into the connection's write buffer. The payload is never copied by this type:
/// [`EncodedPublish::write_head`] hands it back as a shared [`Bytes`] for a vectored write,
/// and [`EncodedPublish::write`] appends it for callers that batch small packets.
///
/// A form encoded from a QoS 0 PUBLISH has no packet identifier and serves QoS 0 copies only;
/// a form encoded at QoS 1 or 2 serves both QoS 1 and QoS 2 copies. Properties (which in v5
/// include the Subscription Identifiers and Topic Alias) are part of the form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPublish {
    head: Bytes,
    packet_id_at: Option<usize>,
    /// Where the Topic Name's length field starts (after the fixed header).
    topic_at: usize,
    /// Where the Property Length starts, and its value (v5 forms only).
    properties: Option<(usize, u32)>,
    payload: Bytes,
}

/// How a v5 PUBLISH sent by the broker uses a Topic Alias (§3.3.2.3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicAliasUse {
    /// Sends the Topic Name and the alias, which the receiver maps to it from now on.
    Set(u16),
    /// Sends an empty Topic Name and the alias the receiver already maps.
    Use(u16),
}

impl TopicAliasUse {
    /// The alias number.
    pub fn alias(self) -> u16 {
        match self {
            TopicAliasUse::Set(a) | TopicAliasUse::Use(a) => a,
        }
    }
}

impl EncodedPublish {
    /// Encodes `publish` at protocol level `version`.
    pub fn new(publish: &Publish, version: ProtocolVersion) -> Result<Self, EncodeError> {
        let mut counter = Counter::default();
        publish.emit_variable_header(version, &mut counter);
        if counter.field_too_long {
            return Err(EncodeError::FieldTooLong);
        }
        let body = counter.len + publish.payload.len();
        if body > MAX_VARINT as usize {
            return Err(EncodeError::PacketTooLarge(body));
        }
        let header_len = 1 + varint_len(body as u32);
        let mut head = BytesMut::with_capacity(header_len + counter.len);
        head.put_u8(((PacketType::Publish as u8) << 4) | publish.header_flags());
        head.varint(body as u32);
        publish.emit_variable_header(version, &mut head);
        let after_topic = header_len + 2 + publish.topic.as_str().len();
        let packet_id_at = publish.qos.packet_id().map(|_| after_topic);
        let properties = if version.is_v5() {
            let at = after_topic + packet_id_at.map_or(0, |_| 2);
            // Written just above: it reads back, or the form is unusable for aliases.
            match super::wire::peek_varint(&head[at..]) {
                Ok(super::wire::VarIntPeek::Complete(len, _)) => Some((at, len)),
                _ => None,
            }
        } else {
            None
        };
        Ok(Self {
            head: head.freeze(),
            packet_id_at,
            topic_at: header_len,
            properties,
            payload: publish.payload.clone(),
        })
    }

    /// Like [`EncodedPublish::write_head`], with a Topic Alias added to the properties and,
    /// for [`TopicAliasUse::Use`], the Topic Name left empty. The shared form is not
    /// changed: only the copy written to `out` carries the alias.
    ///
    /// Fails with [`EncodeError::WireFormMismatch`] for a form that is not MQTT 5.0 (only
    /// v5 has topic aliases) or whose packet identifier does not match `qos`.
    pub fn write_head_aliased(
        &self,
        out: &mut BytesMut,
        dup: bool,
        qos: PublishQoS,
        retain: bool,
        alias: TopicAliasUse,
    ) -> Result<&Bytes, EncodeError> {
        let Some((properties_at, properties_len)) = self.properties else {
            return Err(EncodeError::WireFormMismatch);
        };
        if self.packet_id_at.is_some() != qos.packet_id().is_some() {
            return Err(EncodeError::WireFormMismatch);
        }
        let properties_start = properties_at + varint_len(properties_len);
        // The alias property: its identifier and a two-byte integer.
        let aliased_len = properties_len + 3;
        let topic_len = properties_at - self.topic_at - 2 - self.packet_id_at.map_or(0, |_| 2);
        let old_body = self.len() - self.topic_at;
        let mut body = old_body + 3 + varint_len(aliased_len) - varint_len(properties_len);
        if matches!(alias, TopicAliasUse::Use(_)) {
            body -= topic_len;
        }
        if body > MAX_VARINT as usize {
            return Err(EncodeError::PacketTooLarge(body));
        }
        out.reserve(1 + 4 + body - self.payload.len());
        out.put_u8(((PacketType::Publish as u8) << 4) | flags(dup, qos.qos(), retain));
        out.varint(body as u32);
        match alias {
            TopicAliasUse::Set(_) => {
                out.extend_from_slice(&self.head[self.topic_at..properties_at])
            }
            TopicAliasUse::Use(_) => {
                out.put_u16(0);
                out.extend_from_slice(&self.head[self.topic_at + 2 + topic_len..properties_at]);
            }
        }
        if let Some(id) = qos.packet_id() {
            let at = out.len() - 2;
            out[at..].copy_from_slice(&id.get().to_be_bytes());
        }
        out.varint(aliased_len);
        out.put_u8(super::properties::id::TOPIC_ALIAS);
        out.put_u16(alias.alias());
        out.extend_from_slice(&self.head[properties_start..]);
        Ok(&self.payload)
    }

    /// The encoded size of one copy.
    pub fn len(&self) -> usize {
        self.head.len() + self.payload.len()
    }

    /// Never true: a PUBLISH has at least a fixed header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends a copy's headers to `out`, with `dup`, `qos` and `retain` patched in, and
    /// returns the payload to write after them.
    ///
    /// Fails with [`EncodeError::WireFormMismatch`] if `qos` needs a packet identifier and
    /// this form has none, or the other way round.
    pub fn write_head(
        &self,
        out: &mut BytesMut,
        dup: bool,
        qos: PublishQoS,
        retain: bool,
    ) -> Result<&Bytes, EncodeError> {
        match (self.packet_id_at, qos.packet_id()) {
            (None, None) => out.extend_from_slice(&self.head),
            (Some(at), Some(id)) => {
                let start = out.len();
                out.extend_from_slice(&self.head);
                out[start + at..start + at + 2].copy_from_slice(&id.get().to_be_bytes());
            }
            _ => return Err(EncodeError::WireFormMismatch),
        }
        let start = out.len() - self.head.len();
        out[start] = ((PacketType::Publish as u8) << 4) | flags(dup, qos.qos(), retain);
        Ok(&self.payload)
    }

    /// Appends a whole copy (headers and payload) to `out`.
    pub fn write(
        &self,
        out: &mut BytesMut,
        dup: bool,
        qos: PublishQoS,
        retain: bool,
    ) -> Result<(), EncodeError> {
        out.reserve(self.len());
        let payload = self.write_head(out, dup, qos, retain)?;
        out.extend_from_slice(payload);
        Ok(())
    }
}
