//! The MQTT wire format: every control packet of MQTT 3.1 (CONNECT at level 3), 3.1.1
//! (level 4) and 5.0 (level 5).
//!
//! # Decoding
//! [`decode`] reads from the connection's `BytesMut` read buffer. It peeks at the fixed
//! header, checks the declared size against [`DecodeLimits::max_packet_size`] *before* any
//! of the body is buffered, and returns `Ok(None)` until the whole packet has arrived, without
//! copying or allocating. A complete packet is split off the buffer and frozen; strings,
//! binary fields and payloads in the returned [`Packet`] are slices of that one allocation.
//! Every malformed-packet rule yields a [`DecodeError`] that names its reason code.
//!
//! # Encoding
//! [`Packet::encode`] appends a packet to a `BytesMut`. Each packet describes its body once
//! (see `wire::Sink`); the description is run over a counter for the exact Remaining Length,
//! then over the buffer. [`EncodedPublish`] encodes a PUBLISH once for many subscribers: only
//! the flags and packet identifier are patched per copy, and the payload is never copied.
//!
//! The protocol level is an input to both directions: the connection learns it from CONNECT
//! (which is self-describing) and passes it to every later call.

mod ack;
mod auth;
mod connack;
mod connect;
mod disconnect;
mod error;
mod properties;
mod publish;
mod reason;
mod subscribe;
mod wire;

use std::num::NonZeroU16;

use bytes::{Buf, BufMut, BytesMut};

pub use ack::PubResponse;
pub use auth::Auth;
pub use connack::ConnAck;
pub use connect::{Connect, LastWill};
pub use disconnect::Disconnect;
pub use error::{DecodeError, EncodeError};
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PayloadFormat, PublishProperties, SubscribeProperties, UnsubscribeProperties, UserProperty,
    WillProperties,
};
pub(crate) use publish::write_head as write_publish_head;
pub use publish::{EncodedPublish, Publish, PublishQoS, TopicAliasUse};
pub use reason::ReasonCode;
pub use subscribe::{
    RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
pub use wire::MAX_VARINT;

use wire::{peek_varint, varint_len, Counter, Reader, Sink, VarIntPeek};

/// The protocol level a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1, protocol name `MQIsdp`, level 3. Encoded like 3.1.1 after CONNECT.
    V31,
    /// MQTT 3.1.1, level 4.
    V311,
    /// MQTT 5.0, level 5.
    V5,
}

impl ProtocolVersion {
    /// The Protocol Level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// True for MQTT 5.0, whose packets carry properties and reason codes.
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// Quality of Service level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum QoS {
    /// QoS 0: at most once.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: at least once.
    AtLeastOnce = 1,
    /// QoS 2: exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for a two-bit value; 3 is invalid (MQTT-3.3.1-4).
    pub fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            _ => Err(DecodeError::InvalidQoS),
        }
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A QoS is its number, 0, 1 or 2, in configuration files.
#[cfg(feature = "serde")]
impl serde::Serialize for QoS {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.as_u8())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for QoS {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = u8::deserialize(deserializer)?;
        QoS::from_u8(value).map_err(|_| {
            serde::de::Error::invalid_value(
                serde::de::Unexpected::Unsigned(value.into()),
                &"a QoS of 0, 1 or 2",
            )
        })
    }
}

/// A non-zero Packet Identifier (MQTT-2.3.1-1: zero is never valid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketId(NonZeroU16);

impl PacketId {
    /// Identifier 1, the smallest.
    pub const MIN: PacketId = match NonZeroU16::new(1) {
        Some(v) => PacketId(v),
        None => panic!("1 is not zero"),
    };

    /// The identifier for `value`, or `None` for 0.
    pub const fn new(value: u16) -> Option<Self> {
        match NonZeroU16::new(value) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }

    /// The wire value.
    pub fn get(self) -> u16 {
        self.0.get()
    }

    fn read(r: &mut Reader, packet: PacketType) -> Result<Self, DecodeError> {
        Self::new(r.u16()?).ok_or(DecodeError::ZeroPacketId(packet))
    }
}

/// The type of a control packet: the high four bits of its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // the variants are the standard's packet names
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketType {
    fn from_header(byte: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        use PacketType::*;
        Ok(match byte >> 4 {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 if version.is_v5() => Auth,
            other => return Err(DecodeError::ReservedPacketType(other)),
        })
    }

    /// The fixed header flags this type requires (PUBLISH excepted): MQTT-2.2.2-1/2.
    fn required_flags(self) -> u8 {
        match self {
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
            _ => 0,
        }
    }
}

/// An MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (boxed: it is large and rare).
    Connect(Box<Connect>),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK: QoS 1 acknowledgement.
    PubAck(PubResponse),
    /// PUBREC: QoS 2 delivery, part 1.
    PubRec(PubResponse),
    /// PUBREL: QoS 2 delivery, part 2.
    PubRel(PubResponse),
    /// PUBCOMP: QoS 2 delivery, part 3.
    PubComp(PubResponse),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (MQTT 5.0 only).
    Auth(Auth),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// The low four bits of the first byte.
    fn header_flags(&self) -> u8 {
        match self {
            Packet::Publish(p) => p.header_flags(),
            other => other.packet_type().required_flags(),
        }
    }

    /// Describes the body into `s`. CONNECT writes its own protocol level and ignores
    /// `version`.
    fn emit_body<S: Sink>(&self, v: ProtocolVersion, s: &mut S) {
        match self {
            Packet::Connect(c) => c.emit(s),
            Packet::ConnAck(c) => c.emit(v, s),
            Packet::Publish(p) => p.emit_body(v, s),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                a.emit(v, s)
            }
            Packet::Subscribe(p) => p.emit(v, s),
            Packet::SubAck(p) => p.emit(v, s),
            Packet::Unsubscribe(p) => p.emit(v, s),
            Packet::UnsubAck(p) => p.emit(v, s),
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(d) => d.emit(v, s),
            Packet::Auth(a) => a.emit(s),
        }
    }

    /// The whole encoded size (fixed header included) at protocol level `version`.
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let body = self.body_len(version)?;
        Ok(1 + varint_len(body as u32) + body)
    }

    fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        if matches!(self, Packet::Auth(_)) && !version.is_v5() {
            return Err(EncodeError::NotInProtocolLevel(PacketType::Auth));
        }
        let mut counter = Counter::default();
        self.emit_body(version, &mut counter);
        if counter.field_too_long {
            return Err(EncodeError::FieldTooLong);
        }
        if counter.len > MAX_VARINT as usize {
            return Err(EncodeError::PacketTooLarge(counter.len));
        }
        Ok(counter.len)
    }

    /// Appends the packet, encoded at protocol level `version`, to `out`. Nothing is written
    /// when an error is returned.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let body = self.body_len(version)?;
        out.reserve(1 + varint_len(body as u32) + body);
        out.put_u8(((self.packet_type() as u8) << 4) | self.header_flags());
        out.varint(body as u32);
        let start = out.len();
        self.emit_body(version, out);
        debug_assert_eq!(out.len() - start, body, "counter and writer disagree");
        Ok(())
    }
}

/// What the decoder needs to know about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The protocol level agreed in CONNECT (ignored when decoding CONNECT itself).
    pub version: ProtocolVersion,
    /// The largest whole packet accepted, fixed header included. A larger declared size is
    /// refused as soon as the fixed header is readable.
    pub max_packet_size: u32,
}

impl DecodeLimits {
    /// Limits for `version` with the largest packet size MQTT can express (fixed header of
    /// five bytes plus 268,435,455).
    pub fn new(version: ProtocolVersion) -> Self {
        Self {
            version,
            max_packet_size: MAX_VARINT + 5,
        }
    }

    /// The same limits with another maximum packet size.
    pub fn with_max_packet_size(mut self, max: u32) -> Self {
        self.max_packet_size = max;
        self
    }
}

/// Whether `buf` starts with a whole packet (by its fixed header; nothing is checked
/// further). False for a malformed length, which [`decode`] reports.
pub(crate) fn holds_packet(buf: &[u8]) -> bool {
    let Some(rest) = buf.get(1..) else {
        return false;
    };
    match peek_varint(rest) {
        Ok(VarIntPeek::Complete(remaining, len)) => rest.len() - len >= remaining as usize,
        _ => false,
    }
}

/// Decodes one packet from the front of `buf`.
///
/// Returns `Ok(None)` while the packet is incomplete; nothing is consumed, copied or
/// allocated then. On success the packet's bytes are removed from `buf`. On error the
/// connection must be closed (after sending [`DecodeError::reason_code`] to a v5 peer); the
/// state of `buf` is then unspecified.
///
/// Cancel safety: the function is synchronous; a caller that reads more bytes and calls again
/// loses nothing.
pub fn decode(buf: &mut BytesMut, limits: &DecodeLimits) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    // Check the type and flags as soon as the first byte is here, so garbage is refused
    // without waiting for more of it.
    let packet_type = PacketType::from_header(first, limits.version)?;
    let flags = first & 0x0F;
    if packet_type != PacketType::Publish && flags != packet_type.required_flags() {
        return Err(DecodeError::InvalidHeaderFlags {
            packet: packet_type,
            flags,
        });
    }
    let (remaining, len_bytes) = match peek_varint(&buf[1..])? {
        VarIntPeek::Complete(value, len) => (value as usize, len),
        VarIntPeek::Incomplete => return Ok(None),
    };
    let total = 1 + len_bytes + remaining;
    if total > limits.max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            size: total,
            max: limits.max_packet_size,
        });
    }
    if buf.len() < total {
        return Ok(None);
    }
    if let Some((kind, id)) = peek_short_ack(buf) {
        // Nothing of the buffer outlives the packet: no share of it is taken.
        buf.advance(4);
        let r = PubResponse::new(id);
        return Ok(Some(match kind {
            PacketType::PubAck => Packet::PubAck(r),
            PacketType::PubRec => Packet::PubRec(r),
            PacketType::PubRel => Packet::PubRel(r),
            _ => Packet::PubComp(r),
        }));
    }
    buf.advance(1 + len_bytes);
    let mut r = Reader::new(buf.split_to(remaining).freeze());
    let v = limits.version;
    let packet = match packet_type {
        PacketType::Connect => Packet::Connect(Box::new(Connect::decode(&mut r)?)),
        PacketType::ConnAck => Packet::ConnAck(ConnAck::decode(&mut r, v)?),
        PacketType::Publish => Packet::Publish(Publish::decode(&mut r, flags, v)?),
        PacketType::PubAck => Packet::PubAck(PubResponse::decode(&mut r, packet_type, v)?),
        PacketType::PubRec => Packet::PubRec(PubResponse::decode(&mut r, packet_type, v)?),
        PacketType::PubRel => Packet::PubRel(PubResponse::decode(&mut r, packet_type, v)?),
        PacketType::PubComp => Packet::PubComp(PubResponse::decode(&mut r, packet_type, v)?),
        PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(&mut r, v)?),
        PacketType::SubAck => Packet::SubAck(SubAck::decode(&mut r, v)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::decode(&mut r, v)?),
        PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(&mut r, v)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => Packet::Disconnect(Disconnect::decode(&mut r, v)?),
        PacketType::Auth => Packet::Auth(Auth::decode(&mut r)?),
    };
    r.finish()?;
    Ok(Some(packet))
}

/// The type and Packet Identifier of a well-formed PUBACK, PUBREC, PUBREL or PUBCOMP of only
/// a Packet Identifier (4 bytes; any protocol level, in v5 the reason code is then Success,
/// §3.4.2.1) at the front of `buf`, read without building a [`Packet`]: a reader hands
/// these on as they are, and a `Packet` (256 bytes, moved several times on its way to the
/// connection) was 10% of the broker's CPU in QoS 2 fan-in, where three of every four
/// packets are these. [`decode`] reads them with it too. `None` for anything else, a
/// malformed ack included (a zero id is then refused by the full decoding).
pub(crate) fn peek_short_ack(buf: &[u8]) -> Option<(PacketType, PacketId)> {
    let [first, 2, hi, lo, ..] = *buf else {
        return None;
    };
    let kind = match first {
        0x40 => PacketType::PubAck,
        0x50 => PacketType::PubRec,
        0x62 => PacketType::PubRel,
        0x70 => PacketType::PubComp,
        _ => return None,
    };
    Some((kind, PacketId::new(u16::from_be_bytes([hi, lo]))?))
}

#[cfg(test)]
mod tests;
