//! DISCONNECT (section 3.14). Before 5.0 it has no body; in 5.0 the Reason Code and
//! properties may be left out when the code is Normal disconnection (0x00) and there are no
//! properties.

use super::error::DecodeError;
use super::properties::{emit_reason_tail, DisconnectProperties, PropertySet};
use super::reason::{allowed, check};
use super::wire::{Reader, Sink};
use super::{PacketType, ProtocolVersion, ReasonCode};

/// A DISCONNECT packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Disconnect Reason Code (v5; always Success before).
    pub reason_code: ReasonCode,
    /// Properties (v5 only).
    pub properties: DisconnectProperties,
}

impl Disconnect {
    /// A DISCONNECT with `reason_code` and no properties.
    pub fn new(reason_code: ReasonCode) -> Self {
        Self {
            reason_code,
            properties: DisconnectProperties::default(),
        }
    }

    pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let mut d = Self::default();
        if v.is_v5() && !r.is_empty() {
            d.reason_code = check(r.u8()?, PacketType::Disconnect, allowed::DISCONNECT)?;
            if !r.is_empty() {
                d.properties = DisconnectProperties::decode(r)?;
            }
        }
        Ok(d)
    }

    pub(crate) fn emit<S: Sink>(&self, v: ProtocolVersion, s: &mut S) {
        if !v.is_v5() {
            return;
        }
        emit_reason_tail(s, self.reason_code, &self.properties);
    }
}
