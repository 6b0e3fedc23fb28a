//! AUTH (MQTT 5.0 section 3.15): the enhanced-authentication exchange. The packet type does
//! not exist before 5.0; the decoder refuses it there as a reserved type.

use super::error::DecodeError;
use super::properties::{emit_reason_tail, AuthProperties, PropertySet};
use super::reason::{allowed, check};
use super::wire::{Reader, Sink};
use super::{PacketType, ReasonCode};

/// An AUTH packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Success (0x00), Continue authentication (0x18) or Re-authenticate (0x19).
    pub reason_code: ReasonCode,
    /// Properties; the Authentication Method is required unless the packet is an empty
    /// Success.
    pub properties: AuthProperties,
}

impl Auth {
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        if r.is_empty() {
            return Ok(Self {
                reason_code: ReasonCode::Success,
                properties: AuthProperties::default(),
            });
        }
        let reason_code = check(r.u8()?, PacketType::Auth, allowed::AUTH)?;
        let properties = if r.is_empty() {
            AuthProperties::default()
        } else {
            AuthProperties::decode(r)?
        };
        if properties.authentication_method.is_none() {
            return Err(DecodeError::MissingAuthenticationMethod);
        }
        Ok(Self {
            reason_code,
            properties,
        })
    }

    pub(crate) fn emit<S: Sink>(&self, s: &mut S) {
        emit_reason_tail(s, self.reason_code, &self.properties);
    }
}
