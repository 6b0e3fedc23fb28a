//! Errors of the codec layer.
//!
//! Every malformed-packet rule of MQTT 3.1.1 and 5.0 that the decoder checks has its own
//! [`DecodeError`] variant. Each variant knows the reason code a v5 peer must be sent before
//! the connection closes ([`DecodeError::reason_code`]) and the normative statement it
//! enforces ([`DecodeError::spec_id`]). A 3.1.1 peer gets no reason code: the connection is
//! simply closed (section 4.8 of 3.1.1), except for CONNECT refusals, which have a CONNACK
//! return code (see [`ReasonCode::to_v3_connack`]).

use thiserror::Error;

use super::{PacketType, ReasonCode};
use crate::topic::TopicError;

/// Why bytes from a peer are not a valid MQTT packet.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The Remaining Length (or another Variable Byte Integer) uses more than four bytes.
    #[error("variable byte integer longer than four bytes")]
    MalformedVariableByteInteger,
    /// A Variable Byte Integer uses more bytes than its value needs (a last byte of zero
    /// after a continuation byte): MQTT-1.5.5-1.
    #[error("variable byte integer not in its shortest form")]
    NonMinimalVariableByteInteger,
    /// The whole packet would exceed the connection's maximum packet size. Detected from the
    /// fixed header alone, before the body is buffered.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max}")]
    PacketTooLarge {
        /// The packet size the peer declared (fixed header included).
        size: usize,
        /// The limit in force.
        max: u32,
    },
    /// Packet type 0, or 15 before MQTT 5.0.
    #[error("reserved packet type {0}")]
    ReservedPacketType(u8),
    /// The fixed header's flag bits are not the ones the packet type requires.
    #[error("invalid fixed header flags 0x{flags:X} for {packet:?}")]
    InvalidHeaderFlags {
        /// The packet whose flags are wrong.
        packet: PacketType,
        /// The four low bits of the first byte.
        flags: u8,
    },
    /// A QoS value of 3 (PUBLISH, Will QoS or a subscription's maximum QoS).
    #[error("QoS 3 is not a valid QoS")]
    InvalidQoS,
    /// DUP set on a QoS 0 PUBLISH.
    #[error("DUP flag set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    /// A field extends past the end of the packet body.
    #[error("packet body ends inside a field")]
    Truncated,
    /// Bytes remain after the last field of the packet.
    #[error("{0} unexpected bytes after the end of the packet")]
    TrailingBytes(usize),
    /// A UTF-8 Encoded String is not well-formed UTF-8 (this includes encoded surrogates).
    #[error("string is not well-formed UTF-8")]
    InvalidUtf8,
    /// A UTF-8 Encoded String contains U+0000.
    #[error("string contains the null character U+0000")]
    NullCharacter,
    /// A topic name that is not valid (for example it holds a wildcard).
    #[error("invalid topic name: {0}")]
    InvalidTopicName(#[source] TopicError),
    /// A topic filter that is not valid (for example `a/#/b`).
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(#[source] TopicError),
    /// A PUBLISH with a zero-length topic name and no Topic Alias.
    #[error("empty topic name without a topic alias")]
    EmptyTopicWithoutAlias,
    /// Packet Identifier 0 where a packet identifier is required.
    #[error("packet identifier 0 in {0:?}")]
    ZeroPacketId(PacketType),
    /// SUBSCRIBE or UNSUBSCRIBE with no topic filter.
    #[error("{0:?} without any topic filter")]
    NoTopicFilters(PacketType),
    /// Reserved bits of a subscription options byte are set.
    #[error("reserved bits set in subscription options 0x{0:02X}")]
    InvalidSubscriptionOptions(u8),
    /// Retain Handling value 3.
    #[error("retain handling 3 is reserved")]
    InvalidRetainHandling,
    /// The CONNECT protocol name is neither `MQTT` nor `MQIsdp`.
    #[error("unknown protocol name")]
    InvalidProtocolName,
    /// A protocol level this broker does not speak, or one that does not match the name.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// The reserved bit of the CONNECT flags is set.
    #[error("reserved CONNECT flag bit set")]
    ConnectReservedFlag,
    /// Will QoS or Will Retain set while the Will Flag is 0.
    #[error("will QoS or will retain set without the will flag")]
    WillFlagsWithoutWill,
    /// The Password Flag set while the User Name Flag is 0 (3.1 and 3.1.1 only).
    #[error("password flag set without the user name flag")]
    PasswordWithoutUsername,
    /// A v5 property that appears more than once where the standard allows one.
    #[error("property 0x{0:02X} included more than once")]
    DuplicateProperty(u8),
    /// A v5 property identifier that the standard does not define.
    #[error("unknown property identifier 0x{0:X}")]
    UnknownProperty(u32),
    /// A v5 property that is defined but not allowed on this packet.
    #[error("property 0x{id:02X} is not allowed on {packet:?}")]
    PropertyNotAllowed {
        /// The property identifier.
        id: u8,
        /// The packet it appeared on.
        packet: PacketType,
    },
    /// A v5 property with a value outside its allowed range (for example Receive Maximum 0).
    #[error("invalid value for property 0x{0:02X}")]
    InvalidPropertyValue(u8),
    /// The property block's length runs past the end of the packet.
    #[error("property length exceeds the packet")]
    PropertyLengthOverflow,
    /// Authentication Data without an Authentication Method.
    #[error("authentication data without an authentication method")]
    AuthDataWithoutMethod,
    /// An AUTH packet with properties or a non-success reason but no Authentication Method.
    #[error("AUTH without an authentication method")]
    MissingAuthenticationMethod,
    /// A reason code that is not defined, or not allowed on this packet.
    #[error("reason code 0x{code:02X} is not valid on {packet:?}")]
    InvalidReasonCode {
        /// The packet carrying it.
        packet: PacketType,
        /// The wire value.
        code: u8,
    },
    /// Reserved bits of the CONNACK acknowledge flags are set.
    #[error("reserved CONNACK acknowledge flags set")]
    ConnAckReservedFlags,
}

impl DecodeError {
    /// The v5 reason code to put in the DISCONNECT (or CONNACK, while connecting) that
    /// precedes closing the connection.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            InvalidTopicName(_) => ReasonCode::TopicNameInvalid,
            InvalidTopicFilter(_) => ReasonCode::TopicFilterInvalid,
            InvalidProtocolName | UnsupportedProtocolLevel(_) => {
                ReasonCode::UnsupportedProtocolVersion
            }
            EmptyTopicWithoutAlias
            | ZeroPacketId(_)
            | NoTopicFilters(_)
            | InvalidRetainHandling
            | DuplicateProperty(_)
            | InvalidPropertyValue(_)
            | AuthDataWithoutMethod
            | MissingAuthenticationMethod => ReasonCode::ProtocolError,
            MalformedVariableByteInteger
            | NonMinimalVariableByteInteger
            | ReservedPacketType(_)
            | InvalidHeaderFlags { .. }
            | InvalidQoS
            | DupOnQoS0
            | Truncated
            | TrailingBytes(_)
            | InvalidUtf8
            | NullCharacter
            | InvalidSubscriptionOptions(_)
            | ConnectReservedFlag
            | WillFlagsWithoutWill
            | PasswordWithoutUsername
            | UnknownProperty(_)
            | PropertyNotAllowed { .. }
            | PropertyLengthOverflow
            | InvalidReasonCode { .. }
            | ConnAckReservedFlags => ReasonCode::MalformedPacket,
        }
    }

    /// The normative statement (3.1.1 numbering unless marked v5) or section this check
    /// enforces.
    pub fn spec_id(&self) -> &'static str {
        use DecodeError::*;
        match self {
            MalformedVariableByteInteger => "MQTT 3.1.1 §2.2.3 / MQTT-1.5.5-1 (v5)",
            NonMinimalVariableByteInteger => "MQTT-1.5.5-1 (v5; 3.1.1 §2.2.3 encodes the same way)",
            PacketTooLarge { .. } => "MQTT-3.2.2-15 (v5, server side)",
            ReservedPacketType(_) => "MQTT 3.1.1 §2.2.1 / MQTT 5.0 §2.1.2",
            InvalidHeaderFlags { .. } => "MQTT-2.2.2-1, MQTT-2.2.2-2",
            InvalidQoS => "MQTT-3.3.1-4",
            DupOnQoS0 => "MQTT-3.3.1-2",
            Truncated | TrailingBytes(_) => "MQTT 3.1.1 §2.2.3 / MQTT 5.0 §1.5.5",
            InvalidUtf8 => "MQTT-1.5.3-1",
            NullCharacter => "MQTT-1.5.3-2",
            InvalidTopicName(_) => "MQTT-3.3.2-2",
            InvalidTopicFilter(_) => "MQTT-4.7.1-2, MQTT-4.7.1-3",
            EmptyTopicWithoutAlias => "MQTT-4.7.3-1 / MQTT-3.3.2-8 (v5)",
            ZeroPacketId(_) => "MQTT-2.3.1-1",
            NoTopicFilters(PacketType::Unsubscribe) => "MQTT-3.10.3-2",
            NoTopicFilters(_) => "MQTT-3.8.3-3",
            InvalidSubscriptionOptions(_) => "MQTT-3.8.3-4 / MQTT-3.8.3-5 (v5)",
            InvalidRetainHandling => "MQTT 5.0 §3.8.3.1",
            InvalidProtocolName => "MQTT-3.1.2-1",
            UnsupportedProtocolLevel(_) => "MQTT-3.1.2-2",
            ConnectReservedFlag => "MQTT-3.1.2-3",
            WillFlagsWithoutWill => "MQTT-3.1.2-11, MQTT-3.1.2-13, MQTT-3.1.2-15",
            PasswordWithoutUsername => "MQTT-3.1.2-22",
            DuplicateProperty(_) | UnknownProperty(_) | PropertyNotAllowed { .. } => {
                "MQTT 5.0 §2.2.2.2"
            }
            InvalidPropertyValue(_) | PropertyLengthOverflow => "MQTT 5.0 §2.2.2",
            AuthDataWithoutMethod => "MQTT 5.0 §3.1.2.11.10",
            MissingAuthenticationMethod => "MQTT 5.0 §3.15.2.2.2",
            InvalidReasonCode { .. } => "MQTT 5.0 §2.4",
            ConnAckReservedFlags => "MQTT-3.2.2-1",
        }
    }
}

impl From<TopicError> for DecodeError {
    fn from(e: TopicError) -> Self {
        DecodeError::InvalidTopicName(e)
    }
}

/// Why a packet cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string or binary field is longer than 65,535 bytes.
    #[error("a string or binary field is longer than 65,535 bytes")]
    FieldTooLong,
    /// The Remaining Length would exceed 268,435,455 bytes.
    #[error("packet body of {0} bytes exceeds the largest Remaining Length")]
    PacketTooLarge(usize),
    /// The packet type does not exist at the connection's protocol level (AUTH before 5.0).
    #[error("{0:?} does not exist before MQTT 5.0")]
    NotInProtocolLevel(PacketType),
    /// An [`EncodedPublish`](super::EncodedPublish) encoded without a packet identifier
    /// asked for a QoS 1/2 copy, or one encoded with an identifier for a QoS 0 copy.
    #[error("QoS does not match the encoded PUBLISH form")]
    WireFormMismatch,
}
