//! PUBACK, PUBREC, PUBREL and PUBCOMP (sections 3.4 to 3.7): one shape, four packets.
//!
//! In v5 the Reason Code and the properties may be left out when the code is Success and
//! there are no properties (remaining length 2), and the properties alone may be left out
//! (remaining length 3). The encoder uses the shortest form.

use super::error::DecodeError;
use super::properties::{emit_reason_tail, AckProperties};
use super::reason::{allowed, check};
use super::wire::{Reader, Sink};
use super::{PacketId, PacketType, ProtocolVersion, ReasonCode};

/// The body of PUBACK, PUBREC, PUBREL or PUBCOMP; [`Packet`](super::Packet) says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResponse {
    /// The Packet Identifier of the PUBLISH (or PUBREC/PUBREL) this answers.
    pub packet_id: PacketId,
    /// Reason code (always Success before 5.0).
    pub reason_code: ReasonCode,
    /// Properties (v5 only).
    pub properties: AckProperties,
}

impl PubResponse {
    /// A successful response for `packet_id`.
    pub fn new(packet_id: PacketId) -> Self {
        Self::with_reason(packet_id, ReasonCode::Success)
    }

    /// A response for `packet_id` with `reason_code` and no properties.
    pub fn with_reason(packet_id: PacketId, reason_code: ReasonCode) -> Self {
        Self {
            packet_id,
            reason_code,
            properties: AckProperties::default(),
        }
    }

    pub(crate) fn decode(
        r: &mut Reader,
        packet: PacketType,
        v: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = PacketId::read(r, packet)?;
        let mut response = Self::new(packet_id);
        if v.is_v5() && !r.is_empty() {
            let table = match packet {
                PacketType::PubAck => allowed::PUBACK,
                PacketType::PubRec => allowed::PUBREC,
                PacketType::PubRel => allowed::PUBREL,
                _ => allowed::PUBCOMP,
            };
            response.reason_code = check(r.u8()?, packet, table)?;
            if !r.is_empty() {
                response.properties = AckProperties::decode_for(r, packet)?;
            }
        }
        Ok(response)
    }

    pub(crate) fn emit<S: Sink>(&self, v: ProtocolVersion, s: &mut S) {
        s.u16(self.packet_id.get());
        if !v.is_v5() {
            return;
        }
        emit_reason_tail(s, self.reason_code, &self.properties);
    }
}
