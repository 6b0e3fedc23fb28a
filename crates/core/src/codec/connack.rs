//! CONNACK (section 3.2 of both standards).

use super::error::DecodeError;
use super::properties::{ConnAckProperties, PropertySet};
use super::reason::{allowed, check};
use super::wire::{Reader, Sink};
use super::{PacketType, ProtocolVersion, ReasonCode};

/// A CONNACK packet.
///
/// At 3.1 and 3.1.1 the return code travels as the v5 reason code with the same meaning
/// (see [`ReasonCode::to_v3_connack`]) and the properties are not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present.
    pub session_present: bool,
    /// Connect Reason Code (v5) or return code (3.1.1).
    pub reason_code: ReasonCode,
    /// CONNACK properties (v5 only).
    pub properties: ConnAckProperties,
}

impl ConnAck {
    /// A CONNACK with `reason_code` and no properties.
    pub fn new(session_present: bool, reason_code: ReasonCode) -> Self {
        Self {
            session_present,
            reason_code,
            properties: ConnAckProperties::default(),
        }
    }

    pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let flags = r.u8()?;
        // MQTT-3.2.2-1 (3.1.1) / §3.2.2.1 (v5): bits 7-1 are reserved.
        if flags & 0xFE != 0 {
            return Err(DecodeError::ConnAckReservedFlags);
        }
        let code = r.u8()?;
        let (reason_code, properties) = if v.is_v5() {
            let reason = check(code, PacketType::ConnAck, allowed::CONNACK)?;
            (reason, ConnAckProperties::decode(r)?)
        } else {
            let reason =
                ReasonCode::from_v3_connack(code).ok_or(DecodeError::InvalidReasonCode {
                    packet: PacketType::ConnAck,
                    code,
                })?;
            (reason, ConnAckProperties::default())
        };
        Ok(Self {
            session_present: flags & 1 != 0,
            reason_code,
            properties,
        })
    }

    pub(crate) fn emit<S: Sink>(&self, v: ProtocolVersion, s: &mut S) {
        s.u8(u8::from(self.session_present));
        if v.is_v5() {
            s.u8(self.reason_code.as_u8());
            self.properties.emit(s);
        } else {
            s.u8(self.reason_code.to_v3_connack());
        }
    }
}
