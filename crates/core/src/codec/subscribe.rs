//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK (sections 3.8 to 3.11).

use super::error::DecodeError;
use super::properties::{AckProperties, PropertySet, SubscribeProperties, UnsubscribeProperties};
use super::reason::{allowed, check};
use super::wire::{Reader, Sink};
use super::{PacketId, PacketType, ProtocolVersion, QoS, ReasonCode};
use crate::topic::TopicFilter;

/// Retain Handling subscription option (v5 §3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendOnSubscribe = 0,
    /// 1: send them only if the subscription does not already exist.
    SendIfNew = 1,
    /// 2: do not send retained messages on subscribe.
    DoNotSend = 2,
}

/// The options of one subscription. Before 5.0 only `qos` is on the wire; the other fields
/// decode as their defaults and are not encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local: do not deliver the client's own messages back to it.
    pub no_local: bool,
    /// Retain As Published: keep the RETAIN flag of forwarded messages.
    pub retain_as_published: bool,
    /// Retain Handling.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with maximum QoS `qos` and defaults otherwise.
    pub fn new(qos: QoS) -> Self {
        Self {
            qos,
            ..Self::default()
        }
    }

    fn decode(byte: u8, v: ProtocolVersion) -> Result<Self, DecodeError> {
        // MQTT-3.8.3-4 (3.1.1: bits 7-2 reserved) / MQTT-3.8.3-5 (v5: bits 7-6 reserved).
        let reserved = if v.is_v5() { 0xC0 } else { 0xFC };
        if byte & reserved != 0 {
            return Err(DecodeError::InvalidSubscriptionOptions(byte));
        }
        let retain_handling = match (byte >> 4) & 0b11 {
            0 => RetainHandling::SendOnSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::InvalidRetainHandling),
        };
        Ok(Self {
            qos: QoS::from_u8(byte & 0b11)?,
            no_local: byte & 0b0100 != 0,
            retain_as_published: byte & 0b1000 != 0,
            retain_handling,
        })
    }

    fn encode(self, v: ProtocolVersion) -> u8 {
        let mut byte = self.qos.as_u8();
        if v.is_v5() {
            byte |= u8::from(self.no_local) << 2;
            byte |= u8::from(self.retain_as_published) << 3;
            byte |= (self.retain_handling as u8) << 4;
        }
        byte
    }
}

fn filter(r: &mut Reader) -> Result<TopicFilter, DecodeError> {
    TopicFilter::new(r.string()?).map_err(DecodeError::InvalidTopicFilter)
}

/// A SUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// Properties (v5 only).
    pub properties: SubscribeProperties,
    /// The topic filters with their options, in order; never empty (MQTT-3.8.3-3).
    pub filters: Vec<(TopicFilter, SubscriptionOptions)>,
}

impl Subscribe {
    pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = PacketId::read(r, PacketType::Subscribe)?;
        let properties = if v.is_v5() {
            SubscribeProperties::decode(r)?
        } else {
            SubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let f = filter(r)?;
            let options = SubscriptionOptions::decode(r.u8()?, v)?;
            filters.push((f, options));
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters(PacketType::Subscribe));
        }
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn emit<S: Sink>(&self, v: ProtocolVersion, s: &mut S) {
        s.u16(self.packet_id.get());
        if v.is_v5() {
            self.properties.emit(s);
        }
        for (f, options) in &self.filters {
            s.string(f.as_str());
            s.u8(options.encode(v));
        }
    }
}

/// A SUBACK packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet Identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// Properties (v5 only).
    pub properties: AckProperties,
    /// One code per topic filter, in order. Before 5.0 every failure is written as 0x80.
    pub reason_codes: Vec<ReasonCode>,
}

impl SubAck {
    pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = PacketId::read(r, PacketType::SubAck)?;
        let properties = if v.is_v5() {
            AckProperties::decode_for(r, PacketType::SubAck)?
        } else {
            AckProperties::default()
        };
        let table: &[ReasonCode] = if v.is_v5() {
            allowed::SUBACK
        } else {
            &[
                ReasonCode::Success,
                ReasonCode::GrantedQoS1,
                ReasonCode::GrantedQoS2,
                ReasonCode::UnspecifiedError,
            ]
        };
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            reason_codes.push(check(r.u8()?, PacketType::SubAck, table)?);
        }
        Ok(Self {
            packet_id,
            properties,
            reason_codes,
        })
    }

    pub(crate) fn emit<S: Sink>(&self, v: ProtocolVersion, s: &mut S) {
        s.u16(self.packet_id.get());
        if v.is_v5() {
            self.properties.emit(s);
            for code in &self.reason_codes {
                s.u8(code.as_u8());
            }
        } else {
            for code in &self.reason_codes {
                s.u8(code.to_v3_suback());
            }
        }
    }
}

/// An UNSUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// Properties (v5 only).
    pub properties: UnsubscribeProperties,
    /// The topic filters, in order; never empty (MQTT-3.10.3-2).
    pub filters: Vec<TopicFilter>,
}

impl Unsubscribe {
    pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = PacketId::read(r, PacketType::Unsubscribe)?;
        let properties = if v.is_v5() {
            UnsubscribeProperties::decode(r)?
        } else {
            UnsubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(filter(r)?);
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters(PacketType::Unsubscribe));
        }
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn emit<S: Sink>(&self, v: ProtocolVersion, s: &mut S) {
        s.u16(self.packet_id.get());
        if v.is_v5() {
            self.properties.emit(s);
        }
        for f in &self.filters {
            s.string(f.as_str());
        }
    }
}

/// An UNSUBACK packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet Identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// Properties (v5 only).
    pub properties: AckProperties,
    /// One code per topic filter (v5 only; 3.1.1 UNSUBACK has no payload).
    pub reason_codes: Vec<ReasonCode>,
}

impl UnsubAck {
    pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = PacketId::read(r, PacketType::UnsubAck)?;
        let mut ack = Self {
            packet_id,
            properties: AckProperties::default(),
            reason_codes: Vec::new(),
        };
        if v.is_v5() {
            ack.properties = AckProperties::decode_for(r, PacketType::UnsubAck)?;
            while !r.is_empty() {
                let code = check(r.u8()?, PacketType::UnsubAck, allowed::UNSUBACK)?;
                ack.reason_codes.push(code);
            }
        }
        Ok(ack)
    }

    pub(crate) fn emit<S: Sink>(&self, v: ProtocolVersion, s: &mut S) {
        s.u16(self.packet_id.get());
        if v.is_v5() {
            self.properties.emit(s);
            for code in &self.reason_codes {
                s.u8(code.as_u8());
            }
        }
    }
}
