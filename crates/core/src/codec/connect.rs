//! CONNECT (section 3.1 of both standards; MQTT 3.1's `MQIsdp` variant at level 3).
//!
//! CONNECT names its own protocol level, so it decodes the same whatever level the
//! connection assumed before it arrived.

use bytes::Bytes;
use bytestring::ByteString;

use super::error::DecodeError;
use super::properties::{ConnectProperties, PropertySet, WillProperties};
use super::wire::{Reader, Sink};
use super::{ProtocolVersion, QoS};
use crate::topic::TopicName;

/// The Will Message a client leaves with the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Will Topic.
    pub topic: TopicName,
    /// Will Payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// Will Properties (v5; empty otherwise).
    pub properties: WillProperties,
}

/// A CONNECT packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol level the client asks for; later packets use it.
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1.1) or Clean Start (5.0).
    pub clean_start: bool,
    /// Keep Alive in seconds (0 disables it).
    pub keep_alive: u16,
    /// Client Identifier; may be empty.
    pub client_id: ByteString,
    /// The Will Message, if the Will Flag is set.
    pub will: Option<LastWill>,
    /// User Name.
    pub username: Option<ByteString>,
    /// Password. Before 5.0 a password requires a user name (MQTT-3.1.2-22); encoding does
    /// not check that, decoding does.
    pub password: Option<Bytes>,
    /// CONNECT properties (v5; empty otherwise).
    pub properties: ConnectProperties,
    /// Sent by another broker's bridge: the protocol level carried the 0x80 bit (3.1 and
    /// 3.1.1 only: 0x83, 0x84), as Mosquitto's bridges do with `try_private true`. Not part
    /// of either standard; a broker that knows it gives the bridge bridge semantics.
    pub bridge: bool,
}

/// The protocol level bit of a bridge (see [`Connect::bridge`]).
const BRIDGE_BIT: u8 = 0x80;

const FLAG_USERNAME: u8 = 0x80;
const FLAG_PASSWORD: u8 = 0x40;
const FLAG_WILL_RETAIN: u8 = 0x20;
const FLAG_WILL: u8 = 0x04;
const FLAG_CLEAN: u8 = 0x02;
const FLAG_RESERVED: u8 = 0x01;

impl Connect {
    /// A clean-start CONNECT with no will, credentials or properties.
    pub fn new(protocol: ProtocolVersion, client_id: impl Into<ByteString>) -> Self {
        Self {
            protocol,
            clean_start: true,
            keep_alive: 60,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
            bridge: false,
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let name = r.binary()?;
        let raw_level = r.u8()?;
        // A bridge marks 3.1 and 3.1.1 with the high bit; 5.0 has no such variant.
        let bridge = raw_level & BRIDGE_BIT != 0 && matches!(raw_level & !BRIDGE_BIT, 3 | 4);
        let level = if bridge {
            raw_level & !BRIDGE_BIT
        } else {
            raw_level
        };
        let protocol = match (&name[..], level) {
            (b"MQTT", 4) => ProtocolVersion::V311,
            (b"MQTT", 5) => ProtocolVersion::V5,
            (b"MQIsdp", 3) => ProtocolVersion::V31,
            (b"MQTT" | b"MQIsdp", _) => {
                return Err(DecodeError::UnsupportedProtocolLevel(raw_level))
            }
            _ => return Err(DecodeError::InvalidProtocolName),
        };
        let flags = r.u8()?;
        // MQTT-3.1.2-3: the reserved flag must be zero.
        if flags & FLAG_RESERVED != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let will_flag = flags & FLAG_WILL != 0;
        let will_qos = QoS::from_u8((flags >> 3) & 0b11)?; // MQTT-3.1.2-14
        let will_retain = flags & FLAG_WILL_RETAIN != 0;
        // MQTT-3.1.2-11, -13, -15.
        if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(DecodeError::WillFlagsWithoutWill);
        }
        let has_username = flags & FLAG_USERNAME != 0;
        let has_password = flags & FLAG_PASSWORD != 0;
        // MQTT-3.1.2-22 (3.1.1 only; 5.0 allows a password alone).
        if has_password && !has_username && !protocol.is_v5() {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16()?;
        let properties = if protocol.is_v5() {
            let p = ConnectProperties::decode(r)?;
            if p.authentication_data.is_some() && p.authentication_method.is_none() {
                return Err(DecodeError::AuthDataWithoutMethod);
            }
            p
        } else {
            ConnectProperties::default()
        };
        let client_id = r.string()?;
        let will = if will_flag {
            let properties = if protocol.is_v5() {
                WillProperties::decode(r)?
            } else {
                WillProperties::default()
            };
            let topic = TopicName::new(r.string()?)?;
            let payload = r.binary()?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(r.string()?)
        } else {
            None
        };
        let password = if has_password {
            Some(r.binary()?)
        } else {
            None
        };
        Ok(Self {
            protocol,
            clean_start: flags & FLAG_CLEAN != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
            bridge,
        })
    }

    pub(crate) fn emit<S: Sink>(&self, s: &mut S) {
        let name: &[u8] = if self.protocol == ProtocolVersion::V31 {
            b"MQIsdp"
        } else {
            b"MQTT"
        };
        s.binary(name);
        let bridge = if self.bridge && !self.protocol.is_v5() {
            BRIDGE_BIT
        } else {
            0
        };
        s.u8(self.protocol.level() | bridge);
        let mut flags = 0;
        if self.clean_start {
            flags |= FLAG_CLEAN;
        }
        if let Some(will) = &self.will {
            flags |= FLAG_WILL | (will.qos.as_u8() << 3);
            if will.retain {
                flags |= FLAG_WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= FLAG_USERNAME;
        }
        if self.password.is_some() {
            flags |= FLAG_PASSWORD;
        }
        s.u8(flags);
        s.u16(self.keep_alive);
        let v5 = self.protocol.is_v5();
        if v5 {
            self.properties.emit(s);
        }
        s.string(&self.client_id);
        if let Some(will) = &self.will {
            if v5 {
                will.properties.emit(s);
            }
            s.string(will.topic.as_str());
            s.binary(&will.payload);
        }
        if let Some(username) = &self.username {
            s.string(username);
        }
        if let Some(password) = &self.password {
            s.binary(password);
        }
    }
}
