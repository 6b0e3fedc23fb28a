//! MQTT 5.0 properties (section 2.2.2): one typed struct per packet kind, so a property that
//! the standard does not allow on a packet cannot be represented on it.
//!
//! Decoding rejects unknown identifiers (malformed), identifiers not allowed on the packet
//! (malformed, §2.2.2.2), a second copy of a single-valued property (protocol error) and
//! values outside their range (protocol error). User Properties keep their order.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;
use bytestring::ByteString;

use super::error::DecodeError;
use super::wire::{Counter, Reader, Sink};
use super::{PacketType, QoS};
use crate::topic::TopicName;

/// Property identifiers, named as in the standard's table 2-4.
pub(crate) mod id {
    pub(crate) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub(crate) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub(crate) const CONTENT_TYPE: u8 = 0x03;
    pub(crate) const RESPONSE_TOPIC: u8 = 0x08;
    pub(crate) const CORRELATION_DATA: u8 = 0x09;
    pub(crate) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub(crate) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub(crate) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub(crate) const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub(crate) const AUTHENTICATION_METHOD: u8 = 0x15;
    pub(crate) const AUTHENTICATION_DATA: u8 = 0x16;
    pub(crate) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub(crate) const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub(crate) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub(crate) const RESPONSE_INFORMATION: u8 = 0x1A;
    pub(crate) const SERVER_REFERENCE: u8 = 0x1C;
    pub(crate) const REASON_STRING: u8 = 0x1F;
    pub(crate) const RECEIVE_MAXIMUM: u8 = 0x21;
    pub(crate) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub(crate) const TOPIC_ALIAS: u8 = 0x23;
    pub(crate) const MAXIMUM_QOS: u8 = 0x24;
    pub(crate) const RETAIN_AVAILABLE: u8 = 0x25;
    pub(crate) const USER_PROPERTY: u8 = 0x26;
    pub(crate) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub(crate) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub(crate) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub(crate) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

    /// Every identifier the standard defines.
    pub(crate) const ALL: &[u8] = &[
        0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A,
        0x1C, 0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A,
    ];
}

/// A User Property: a name/value pair of UTF-8 strings. Names may repeat.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserProperty {
    /// The name.
    pub name: ByteString,
    /// The value.
    pub value: ByteString,
}

impl UserProperty {
    /// A pair from anything string-like.
    pub fn new(name: impl Into<ByteString>, value: impl Into<ByteString>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Payload Format Indicator values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadFormat {
    /// 0: unspecified bytes.
    Unspecified = 0,
    /// 1: UTF-8 encoded character data.
    Utf8 = 1,
}

/// Reads the property block of one packet.
pub(crate) struct PropReader {
    r: Reader,
    packet: PacketType,
}

impl PropReader {
    fn new(outer: &mut Reader, packet: PacketType) -> Result<Self, DecodeError> {
        let len = outer.varint()? as usize;
        if len > outer.remaining() {
            return Err(DecodeError::PropertyLengthOverflow);
        }
        Ok(Self {
            r: Reader::new(outer.take(len)?),
            packet,
        })
    }

    /// The next identifier, or `None` at the end of the block. Unknown identifiers fail here.
    fn next_id(&mut self) -> Result<Option<u8>, DecodeError> {
        if self.r.is_empty() {
            return Ok(None);
        }
        let raw = self.r.varint()?;
        match u8::try_from(raw) {
            Ok(id) if id::ALL.contains(&id) => Ok(Some(id)),
            _ => Err(DecodeError::UnknownProperty(raw)),
        }
    }

    fn not_allowed(&self, id: u8) -> DecodeError {
        DecodeError::PropertyNotAllowed {
            id,
            packet: self.packet,
        }
    }

    fn bool(&mut self, id: u8) -> Result<bool, DecodeError> {
        match self.r.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidPropertyValue(id)),
        }
    }

    fn payload_format(&mut self) -> Result<PayloadFormat, DecodeError> {
        match self.r.u8()? {
            0 => Ok(PayloadFormat::Unspecified),
            1 => Ok(PayloadFormat::Utf8),
            _ => Err(DecodeError::InvalidPropertyValue(
                id::PAYLOAD_FORMAT_INDICATOR,
            )),
        }
    }

    fn nonzero_u16(&mut self, id: u8) -> Result<NonZeroU16, DecodeError> {
        NonZeroU16::new(self.r.u16()?).ok_or(DecodeError::InvalidPropertyValue(id))
    }

    fn nonzero_u32(&mut self, id: u8) -> Result<NonZeroU32, DecodeError> {
        NonZeroU32::new(self.r.u32()?).ok_or(DecodeError::InvalidPropertyValue(id))
    }

    fn subscription_id(&mut self) -> Result<NonZeroU32, DecodeError> {
        NonZeroU32::new(self.r.varint()?).ok_or(DecodeError::InvalidPropertyValue(
            id::SUBSCRIPTION_IDENTIFIER,
        ))
    }

    fn topic(&mut self) -> Result<TopicName, DecodeError> {
        Ok(TopicName::new(self.r.string()?)?)
    }

    fn user(&mut self) -> Result<UserProperty, DecodeError> {
        Ok(UserProperty {
            name: self.r.string()?,
            value: self.r.string()?,
        })
    }
}

/// Writes the tail that v5 acknowledgements, DISCONNECT and AUTH share: nothing when the
/// reason is Success and there are no properties, else the reason code, then the property
/// block if there is one.
pub(crate) fn emit_reason_tail<S: Sink, P: PropertySet>(
    s: &mut S,
    reason: super::ReasonCode,
    props: &P,
) {
    let no_props = props.is_empty();
    if reason == super::ReasonCode::Success && no_props {
        return;
    }
    s.u8(reason.as_u8());
    if !no_props {
        props.emit(s);
    }
}

/// Stores a single-valued property, refusing a second copy.
fn once<T>(slot: &mut Option<T>, id: u8, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty(id));
    }
    *slot = Some(value);
    Ok(())
}

/// Property-writing helpers over any [`Sink`].
struct W<'a, S: Sink>(&'a mut S);

impl<S: Sink> W<'_, S> {
    fn u8(&mut self, id: u8, v: Option<u8>) {
        if let Some(v) = v {
            self.0.u8(id);
            self.0.u8(v);
        }
    }
    fn bool(&mut self, id: u8, v: Option<bool>) {
        self.u8(id, v.map(u8::from));
    }
    fn u16(&mut self, id: u8, v: Option<u16>) {
        if let Some(v) = v {
            self.0.u8(id);
            self.0.u16(v);
        }
    }
    fn u32(&mut self, id: u8, v: Option<u32>) {
        if let Some(v) = v {
            self.0.u8(id);
            self.0.u32(v);
        }
    }
    fn str(&mut self, id: u8, v: Option<&str>) {
        if let Some(v) = v {
            self.0.u8(id);
            self.0.string(v);
        }
    }
    fn bin(&mut self, id: u8, v: Option<&Bytes>) {
        if let Some(v) = v {
            self.0.u8(id);
            self.0.binary(v);
        }
    }
    fn varint(&mut self, id: u8, v: u32) {
        self.0.u8(id);
        self.0.varint(v);
    }
    fn users(&mut self, users: &[UserProperty]) {
        for u in users {
            self.0.u8(id::USER_PROPERTY);
            self.0.string(&u.name);
            self.0.string(&u.value);
        }
    }
}

/// A property set of one packet kind.
pub(crate) trait PropertySet: Default {
    /// The packet these properties belong to (for error reports).
    const PACKET: PacketType;
    /// Handles one property; `Ok(false)` means "not allowed on this packet".
    fn read_one(&mut self, id: u8, r: &mut PropReader) -> Result<bool, DecodeError>;
    /// Writes every present property, without the length prefix.
    fn emit_inner<S: Sink>(&self, s: &mut S);

    /// Reads a whole property block (length prefix included).
    fn decode(outer: &mut Reader) -> Result<Self, DecodeError> {
        let mut props = Self::default();
        let mut r = PropReader::new(outer, Self::PACKET)?;
        while let Some(id) = r.next_id()? {
            if !props.read_one(id, &mut r)? {
                return Err(r.not_allowed(id));
            }
        }
        Ok(props)
    }

    /// Writes the property block with its length prefix.
    fn emit<S: Sink>(&self, s: &mut S) {
        let mut counter = Counter::default();
        self.emit_inner(&mut counter);
        s.varint(u32::try_from(counter.len).unwrap_or(u32::MAX));
        self.emit_inner(s);
    }

    /// True when no property is present (an empty block is one zero byte).
    fn is_empty(&self) -> bool {
        let mut counter = Counter::default();
        self.emit_inner(&mut counter);
        counter.len == 0
    }
}

/// Properties of CONNECT (section 3.1.2.11).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectProperties {
    /// Session Expiry Interval in seconds (absent = 0).
    pub session_expiry_interval: Option<u32>,
    /// Receive Maximum (0 is a protocol error).
    pub receive_maximum: Option<NonZeroU16>,
    /// Maximum Packet Size the client accepts (0 is a protocol error).
    pub maximum_packet_size: Option<NonZeroU32>,
    /// Topic Alias Maximum the client accepts.
    pub topic_alias_maximum: Option<u16>,
    /// Request Response Information.
    pub request_response_information: Option<bool>,
    /// Request Problem Information.
    pub request_problem_information: Option<bool>,
    /// User Properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Authentication Method (enhanced authentication).
    pub authentication_method: Option<ByteString>,
    /// Authentication Data.
    pub authentication_data: Option<Bytes>,
}

impl PropertySet for ConnectProperties {
    const PACKET: PacketType = PacketType::Connect;
    fn read_one(&mut self, i: u8, r: &mut PropReader) -> Result<bool, DecodeError> {
        match i {
            id::SESSION_EXPIRY_INTERVAL => once(&mut self.session_expiry_interval, i, r.r.u32()?)?,
            id::RECEIVE_MAXIMUM => once(&mut self.receive_maximum, i, r.nonzero_u16(i)?)?,
            id::MAXIMUM_PACKET_SIZE => once(&mut self.maximum_packet_size, i, r.nonzero_u32(i)?)?,
            id::TOPIC_ALIAS_MAXIMUM => once(&mut self.topic_alias_maximum, i, r.r.u16()?)?,
            id::REQUEST_RESPONSE_INFORMATION => {
                once(&mut self.request_response_information, i, r.bool(i)?)?
            }
            id::REQUEST_PROBLEM_INFORMATION => {
                once(&mut self.request_problem_information, i, r.bool(i)?)?
            }
            id::USER_PROPERTY => self.user_properties.push(r.user()?),
            id::AUTHENTICATION_METHOD => once(&mut self.authentication_method, i, r.r.string()?)?,
            id::AUTHENTICATION_DATA => once(&mut self.authentication_data, i, r.r.binary()?)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
    fn emit_inner<S: Sink>(&self, s: &mut S) {
        let mut w = W(s);
        w.u32(id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        w.u16(
            id::RECEIVE_MAXIMUM,
            self.receive_maximum.map(NonZeroU16::get),
        );
        w.u32(
            id::MAXIMUM_PACKET_SIZE,
            self.maximum_packet_size.map(NonZeroU32::get),
        );
        w.u16(id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        w.bool(
            id::REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        w.bool(
            id::REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        w.users(&self.user_properties);
        w.str(
            id::AUTHENTICATION_METHOD,
            self.authentication_method.as_deref(),
        );
        w.bin(id::AUTHENTICATION_DATA, self.authentication_data.as_ref());
    }
}

/// Properties of a Will Message (section 3.1.3.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WillProperties {
    /// Will Delay Interval in seconds.
    pub will_delay_interval: Option<u32>,
    /// Payload Format Indicator.
    pub payload_format_indicator: Option<PayloadFormat>,
    /// Message Expiry Interval in seconds.
    pub message_expiry_interval: Option<u32>,
    /// Content Type.
    pub content_type: Option<ByteString>,
    /// Response Topic.
    pub response_topic: Option<TopicName>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// User Properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl PropertySet for WillProperties {
    const PACKET: PacketType = PacketType::Connect;
    fn read_one(&mut self, i: u8, r: &mut PropReader) -> Result<bool, DecodeError> {
        match i {
            id::WILL_DELAY_INTERVAL => once(&mut self.will_delay_interval, i, r.r.u32()?)?,
            id::PAYLOAD_FORMAT_INDICATOR => {
                once(&mut self.payload_format_indicator, i, r.payload_format()?)?
            }
            id::MESSAGE_EXPIRY_INTERVAL => once(&mut self.message_expiry_interval, i, r.r.u32()?)?,
            id::CONTENT_TYPE => once(&mut self.content_type, i, r.r.string()?)?,
            id::RESPONSE_TOPIC => once(&mut self.response_topic, i, r.topic()?)?,
            id::CORRELATION_DATA => once(&mut self.correlation_data, i, r.r.binary()?)?,
            id::USER_PROPERTY => self.user_properties.push(r.user()?),
            _ => return Ok(false),
        }
        Ok(true)
    }
    fn emit_inner<S: Sink>(&self, s: &mut S) {
        let mut w = W(s);
        w.u32(id::WILL_DELAY_INTERVAL, self.will_delay_interval);
        w.u8(
            id::PAYLOAD_FORMAT_INDICATOR,
            self.payload_format_indicator.map(|p| p as u8),
        );
        w.u32(id::MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        w.str(id::CONTENT_TYPE, self.content_type.as_deref());
        w.str(
            id::RESPONSE_TOPIC,
            self.response_topic.as_ref().map(TopicName::as_str),
        );
        w.bin(id::CORRELATION_DATA, self.correlation_data.as_ref());
        w.users(&self.user_properties);
    }
}

/// Properties of CONNACK (section 3.2.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAckProperties {
    /// Session Expiry Interval the server uses, when it differs from the client's.
    pub session_expiry_interval: Option<u32>,
    /// Receive Maximum of the server.
    pub receive_maximum: Option<NonZeroU16>,
    /// Maximum QoS the server supports (0 or 1; absent means 2).
    pub maximum_qos: Option<QoS>,
    /// Retain Available.
    pub retain_available: Option<bool>,
    /// Maximum Packet Size the server accepts.
    pub maximum_packet_size: Option<NonZeroU32>,
    /// Assigned Client Identifier, for a client that connected with an empty one.
    pub assigned_client_identifier: Option<ByteString>,
    /// Topic Alias Maximum the server accepts.
    pub topic_alias_maximum: Option<u16>,
    /// Reason String: human-readable diagnostics.
    pub reason_string: Option<ByteString>,
    /// User Properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Wildcard Subscription Available.
    pub wildcard_subscription_available: Option<bool>,
    /// Subscription Identifiers Available.
    pub subscription_identifiers_available: Option<bool>,
    /// Shared Subscription Available.
    pub shared_subscription_available: Option<bool>,
    /// Server Keep Alive, overriding the client's value.
    pub server_keep_alive: Option<u16>,
    /// Response Information.
    pub response_information: Option<ByteString>,
    /// Server Reference (another server to use).
    pub server_reference: Option<ByteString>,
    /// Authentication Method.
    pub authentication_method: Option<ByteString>,
    /// Authentication Data.
    pub authentication_data: Option<Bytes>,
}

impl PropertySet for ConnAckProperties {
    const PACKET: PacketType = PacketType::ConnAck;
    fn read_one(&mut self, i: u8, r: &mut PropReader) -> Result<bool, DecodeError> {
        match i {
            id::SESSION_EXPIRY_INTERVAL => once(&mut self.session_expiry_interval, i, r.r.u32()?)?,
            id::RECEIVE_MAXIMUM => once(&mut self.receive_maximum, i, r.nonzero_u16(i)?)?,
            id::MAXIMUM_QOS => {
                let qos = match r.r.u8()? {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => return Err(DecodeError::InvalidPropertyValue(i)),
                };
                once(&mut self.maximum_qos, i, qos)?
            }
            id::RETAIN_AVAILABLE => once(&mut self.retain_available, i, r.bool(i)?)?,
            id::MAXIMUM_PACKET_SIZE => once(&mut self.maximum_packet_size, i, r.nonzero_u32(i)?)?,
            id::ASSIGNED_CLIENT_IDENTIFIER => {
                once(&mut self.assigned_client_identifier, i, r.r.string()?)?
            }
            id::TOPIC_ALIAS_MAXIMUM => once(&mut self.topic_alias_maximum, i, r.r.u16()?)?,
            id::REASON_STRING => once(&mut self.reason_string, i, r.r.string()?)?,
            id::USER_PROPERTY => self.user_properties.push(r.user()?),
            id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
                once(&mut self.wildcard_subscription_available, i, r.bool(i)?)?
            }
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                once(&mut self.subscription_identifiers_available, i, r.bool(i)?)?
            }
            id::SHARED_SUBSCRIPTION_AVAILABLE => {
                once(&mut self.shared_subscription_available, i, r.bool(i)?)?
            }
            id::SERVER_KEEP_ALIVE => once(&mut self.server_keep_alive, i, r.r.u16()?)?,
            id::RESPONSE_INFORMATION => once(&mut self.response_information, i, r.r.string()?)?,
            id::SERVER_REFERENCE => once(&mut self.server_reference, i, r.r.string()?)?,
            id::AUTHENTICATION_METHOD => once(&mut self.authentication_method, i, r.r.string()?)?,
            id::AUTHENTICATION_DATA => once(&mut self.authentication_data, i, r.r.binary()?)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
    fn emit_inner<S: Sink>(&self, s: &mut S) {
        let mut w = W(s);
        w.u32(id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        w.u16(
            id::RECEIVE_MAXIMUM,
            self.receive_maximum.map(NonZeroU16::get),
        );
        w.u8(id::MAXIMUM_QOS, self.maximum_qos.map(QoS::as_u8));
        w.bool(id::RETAIN_AVAILABLE, self.retain_available);
        w.u32(
            id::MAXIMUM_PACKET_SIZE,
            self.maximum_packet_size.map(NonZeroU32::get),
        );
        w.str(
            id::ASSIGNED_CLIENT_IDENTIFIER,
            self.assigned_client_identifier.as_deref(),
        );
        w.u16(id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        w.str(id::REASON_STRING, self.reason_string.as_deref());
        w.users(&self.user_properties);
        w.bool(
            id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        w.bool(
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifiers_available,
        );
        w.bool(
            id::SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        w.u16(id::SERVER_KEEP_ALIVE, self.server_keep_alive);
        w.str(
            id::RESPONSE_INFORMATION,
            self.response_information.as_deref(),
        );
        w.str(id::SERVER_REFERENCE, self.server_reference.as_deref());
        w.str(
            id::AUTHENTICATION_METHOD,
            self.authentication_method.as_deref(),
        );
        w.bin(id::AUTHENTICATION_DATA, self.authentication_data.as_ref());
    }
}

/// Properties of PUBLISH (section 3.3.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// Payload Format Indicator.
    pub payload_format_indicator: Option<PayloadFormat>,
    /// Message Expiry Interval in seconds.
    pub message_expiry_interval: Option<u32>,
    /// Topic Alias (0 is invalid; the broker answers it with DISCONNECT 0x94).
    pub topic_alias: Option<u16>,
    /// Response Topic.
    pub response_topic: Option<TopicName>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// User Properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Subscription Identifiers of the matching subscriptions (server to client only).
    pub subscription_identifiers: Vec<NonZeroU32>,
    /// Content Type.
    pub content_type: Option<ByteString>,
}

impl PropertySet for PublishProperties {
    const PACKET: PacketType = PacketType::Publish;
    fn read_one(&mut self, i: u8, r: &mut PropReader) -> Result<bool, DecodeError> {
        match i {
            id::PAYLOAD_FORMAT_INDICATOR => {
                once(&mut self.payload_format_indicator, i, r.payload_format()?)?
            }
            id::MESSAGE_EXPIRY_INTERVAL => once(&mut self.message_expiry_interval, i, r.r.u32()?)?,
            id::TOPIC_ALIAS => once(&mut self.topic_alias, i, r.r.u16()?)?,
            id::RESPONSE_TOPIC => once(&mut self.response_topic, i, r.topic()?)?,
            id::CORRELATION_DATA => once(&mut self.correlation_data, i, r.r.binary()?)?,
            id::USER_PROPERTY => self.user_properties.push(r.user()?),
            id::SUBSCRIPTION_IDENTIFIER => self.subscription_identifiers.push(r.subscription_id()?),
            id::CONTENT_TYPE => once(&mut self.content_type, i, r.r.string()?)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
    fn emit_inner<S: Sink>(&self, s: &mut S) {
        let mut w = W(s);
        w.u8(
            id::PAYLOAD_FORMAT_INDICATOR,
            self.payload_format_indicator.map(|p| p as u8),
        );
        w.u32(id::MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        w.u16(id::TOPIC_ALIAS, self.topic_alias);
        w.str(
            id::RESPONSE_TOPIC,
            self.response_topic.as_ref().map(TopicName::as_str),
        );
        w.bin(id::CORRELATION_DATA, self.correlation_data.as_ref());
        w.users(&self.user_properties);
        for sid in &self.subscription_identifiers {
            w.varint(id::SUBSCRIPTION_IDENTIFIER, sid.get());
        }
        w.str(id::CONTENT_TYPE, self.content_type.as_deref());
    }
}

/// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK: a Reason String and
/// User Properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckProperties {
    /// Reason String: human-readable diagnostics.
    pub reason_string: Option<ByteString>,
    /// User Properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl AckProperties {
    fn read(&mut self, i: u8, r: &mut PropReader) -> Result<bool, DecodeError> {
        match i {
            id::REASON_STRING => once(&mut self.reason_string, i, r.r.string()?)?,
            id::USER_PROPERTY => self.user_properties.push(r.user()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn write<S: Sink>(&self, s: &mut S) {
        let mut w = W(s);
        w.str(id::REASON_STRING, self.reason_string.as_deref());
        w.users(&self.user_properties);
    }

    /// Reads the block for packet `packet` (the packet only matters for error reports).
    pub(crate) fn decode_for(outer: &mut Reader, packet: PacketType) -> Result<Self, DecodeError> {
        let mut props = Self::default();
        let mut r = PropReader::new(outer, packet)?;
        while let Some(id) = r.next_id()? {
            if !props.read(id, &mut r)? {
                return Err(r.not_allowed(id));
            }
        }
        Ok(props)
    }
}

impl PropertySet for AckProperties {
    const PACKET: PacketType = PacketType::PubAck;
    fn read_one(&mut self, i: u8, r: &mut PropReader) -> Result<bool, DecodeError> {
        self.read(i, r)
    }
    fn emit_inner<S: Sink>(&self, s: &mut S) {
        self.write(s)
    }
}

/// Properties of SUBSCRIBE (section 3.8.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeProperties {
    /// Subscription Identifier (1 to 268,435,455).
    pub subscription_identifier: Option<NonZeroU32>,
    /// User Properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl PropertySet for SubscribeProperties {
    const PACKET: PacketType = PacketType::Subscribe;
    fn read_one(&mut self, i: u8, r: &mut PropReader) -> Result<bool, DecodeError> {
        match i {
            id::SUBSCRIPTION_IDENTIFIER => {
                once(&mut self.subscription_identifier, i, r.subscription_id()?)?
            }
            id::USER_PROPERTY => self.user_properties.push(r.user()?),
            _ => return Ok(false),
        }
        Ok(true)
    }
    fn emit_inner<S: Sink>(&self, s: &mut S) {
        let mut w = W(s);
        if let Some(sid) = self.subscription_identifier {
            w.varint(id::SUBSCRIPTION_IDENTIFIER, sid.get());
        }
        w.users(&self.user_properties);
    }
}

/// Properties of UNSUBSCRIBE (section 3.10.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnsubscribeProperties {
    /// User Properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl PropertySet for UnsubscribeProperties {
    const PACKET: PacketType = PacketType::Unsubscribe;
    fn read_one(&mut self, i: u8, r: &mut PropReader) -> Result<bool, DecodeError> {
        match i {
            id::USER_PROPERTY => self.user_properties.push(r.user()?),
            _ => return Ok(false),
        }
        Ok(true)
    }
    fn emit_inner<S: Sink>(&self, s: &mut S) {
        W(s).users(&self.user_properties);
    }
}

/// Properties of DISCONNECT (section 3.14.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisconnectProperties {
    /// Session Expiry Interval (client to server only).
    pub session_expiry_interval: Option<u32>,
    /// Reason String: human-readable diagnostics.
    pub reason_string: Option<ByteString>,
    /// User Properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Server Reference (server to client only).
    pub server_reference: Option<ByteString>,
}

impl PropertySet for DisconnectProperties {
    const PACKET: PacketType = PacketType::Disconnect;
    fn read_one(&mut self, i: u8, r: &mut PropReader) -> Result<bool, DecodeError> {
        match i {
            id::SESSION_EXPIRY_INTERVAL => once(&mut self.session_expiry_interval, i, r.r.u32()?)?,
            id::REASON_STRING => once(&mut self.reason_string, i, r.r.string()?)?,
            id::USER_PROPERTY => self.user_properties.push(r.user()?),
            id::SERVER_REFERENCE => once(&mut self.server_reference, i, r.r.string()?)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
    fn emit_inner<S: Sink>(&self, s: &mut S) {
        let mut w = W(s);
        w.u32(id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        w.str(id::REASON_STRING, self.reason_string.as_deref());
        w.users(&self.user_properties);
        w.str(id::SERVER_REFERENCE, self.server_reference.as_deref());
    }
}

/// Properties of AUTH (section 3.15.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthProperties {
    /// Authentication Method.
    pub authentication_method: Option<ByteString>,
    /// Authentication Data.
    pub authentication_data: Option<Bytes>,
    /// Reason String: human-readable diagnostics.
    pub reason_string: Option<ByteString>,
    /// User Properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl PropertySet for AuthProperties {
    const PACKET: PacketType = PacketType::Auth;
    fn read_one(&mut self, i: u8, r: &mut PropReader) -> Result<bool, DecodeError> {
        match i {
            id::AUTHENTICATION_METHOD => once(&mut self.authentication_method, i, r.r.string()?)?,
            id::AUTHENTICATION_DATA => once(&mut self.authentication_data, i, r.r.binary()?)?,
            id::REASON_STRING => once(&mut self.reason_string, i, r.r.string()?)?,
            id::USER_PROPERTY => self.user_properties.push(r.user()?),
            _ => return Ok(false),
        }
        Ok(true)
    }
    fn emit_inner<S: Sink>(&self, s: &mut S) {
        let mut w = W(s);
        w.str(
            id::AUTHENTICATION_METHOD,
            self.authentication_method.as_deref(),
        );
        w.bin(id::AUTHENTICATION_DATA, self.authentication_data.as_ref());
        w.str(id::REASON_STRING, self.reason_string.as_deref());
        w.users(&self.user_properties);
    }
}
