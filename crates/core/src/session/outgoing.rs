//! A control packet on its way to a connection's writer, kept small: nearly every one is
//! an acknowledgement with no properties (a PUBACK per QoS 1 PUBLISH, three per QoS 2
//! exchange), which is kept as its type, id and reason code (a few bytes) and encoded
//! straight from them; anything else is boxed. An outbox entry is 16 bytes instead of a
//! whole [`Packet`] (256), so a busy publisher's acknowledgements are not each moved and
//! copied as a packet-sized value into an outbox that regrows on every fill (issue 19).

use crate::codec::{Packet, PacketId, PubResponse, ReasonCode};

/// Which acknowledgement an [`Outgoing::Ack`] is (named as the packet types are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)]
pub(crate) enum AckKind {
    PubAck,
    PubRec,
    PubRel,
    PubComp,
}

/// A control packet queued for a writer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outgoing {
    /// An acknowledgement without properties.
    Ack(AckKind, PacketId, ReasonCode),
    /// Any other packet.
    Packet(Box<Packet>),
}

impl Outgoing {
    /// The packet this stands for.
    pub(crate) fn into_packet(self) -> Packet {
        match self {
            Outgoing::Ack(kind, id, code) => {
                let r = PubResponse::with_reason(id, code);
                match kind {
                    AckKind::PubAck => Packet::PubAck(r),
                    AckKind::PubRec => Packet::PubRec(r),
                    AckKind::PubRel => Packet::PubRel(r),
                    AckKind::PubComp => Packet::PubComp(r),
                }
            }
            Outgoing::Packet(p) => *p,
        }
    }
}

impl From<Packet> for Outgoing {
    fn from(packet: Packet) -> Self {
        let (kind, r) = match &packet {
            Packet::PubAck(r) => (AckKind::PubAck, r),
            Packet::PubRec(r) => (AckKind::PubRec, r),
            Packet::PubRel(r) => (AckKind::PubRel, r),
            Packet::PubComp(r) => (AckKind::PubComp, r),
            _ => return Outgoing::Packet(Box::new(packet)),
        };
        if r.properties == Default::default() {
            Outgoing::Ack(kind, r.packet_id, r.reason_code)
        } else {
            Outgoing::Packet(Box::new(packet))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ProtocolVersion;

    #[test]
    fn acknowledgements_stay_small_and_come_back_the_same() {
        assert_eq!(std::mem::size_of::<Outgoing>(), 16);
        let id = PacketId::new(513).expect("id");
        let mut with_reason = PubResponse::with_reason(id, ReasonCode::QuotaExceeded);
        with_reason.properties.reason_string = Some("quota".into());
        for (packet, compact) in [
            (Packet::PubAck(PubResponse::new(id)), true),
            (
                Packet::PubRec(PubResponse::with_reason(
                    id,
                    ReasonCode::NoMatchingSubscribers,
                )),
                true,
            ),
            (Packet::PubRel(PubResponse::new(id)), true),
            (
                Packet::PubComp(PubResponse::with_reason(
                    id,
                    ReasonCode::PacketIdentifierNotFound,
                )),
                true,
            ),
            // A Reason String is a property: the whole packet is kept.
            (Packet::PubAck(with_reason), false),
            (Packet::PingResp, false),
        ] {
            let out = Outgoing::from(packet.clone());
            assert_eq!(matches!(out, Outgoing::Ack(..)), compact, "{packet:?}");
            if compact {
                // What the writer's check of the client's Maximum Packet Size assumes.
                let len = packet.encoded_len(ProtocolVersion::V5).expect("encodes");
                assert!(len <= 5, "{packet:?} takes {len} bytes");
            }
            assert_eq!(out.into_packet(), packet);
        }
    }
}
