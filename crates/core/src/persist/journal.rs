//! The storage operations the rest of the broker asks for, by what happened ("a delivery
//! was queued", "an inbound QoS 2 exchange ended"), so that only `persist/` knows the
//! records and the operations that hold them.

use roost_storage::{Op, QueueStage};

use crate::message::{Delivery, Message};
use crate::session::SessionState;

/// A persistent session's record, as its state now says.
pub(crate) fn session_saved(client_id: &str, st: &SessionState) -> Op {
    Op::PutSession(client_id.to_string(), super::session_record(st))
}

/// A session that ended: its record and everything stored under it go.
pub(crate) fn session_ended(client_id: &str) -> Op {
    Op::DeleteSession(client_id.to_string())
}

/// A retained message set (or replaced) on its topic.
pub(crate) fn retained_set(message: &Message) -> Op {
    Op::PutRetained(message.topic.to_string(), super::message_record(message))
}

/// The retained message of a topic cleared (a zero-byte retained PUBLISH).
pub(crate) fn retained_cleared(topic: &str) -> Op {
    Op::DeleteRetained(topic.to_string())
}

/// A delivery queued for a persistent session, at position `seq`.
pub(crate) fn queued(client_id: &str, seq: u64, delivery: &Delivery) -> Op {
    Op::PutQueued {
        client: client_id.to_string(),
        seq,
        record: super::queue_record(delivery, QueueStage::Queued),
    }
}

/// A QoS 2 delivery whose PUBREC came: PUBREL `packet_id` is what is left to send.
pub(crate) fn released(client_id: &str, seq: u64, delivery: &Delivery, packet_id: u16) -> Op {
    Op::PutQueued {
        client: client_id.to_string(),
        seq,
        record: super::queue_record(delivery, QueueStage::Released(packet_id)),
    }
}

/// A delivery that is over (acknowledged, dropped or withdrawn).
pub(crate) fn delivery_done(client_id: &str, seq: u64) -> Op {
    Op::DeleteQueued {
        client: client_id.to_string(),
        seq,
    }
}

/// An inbound QoS 2 PUBLISH taken (its PUBREC sent or about to be): the id is in use.
pub(crate) fn inbound_started(client_id: &str, packet_id: u16) -> Op {
    Op::PutInbound {
        client: client_id.to_string(),
        packet_id,
    }
}

/// An inbound QoS 2 exchange ended with PUBREL: the id is free again.
pub(crate) fn inbound_done(client_id: &str, packet_id: u16) -> Op {
    Op::DeleteInbound {
        client: client_id.to_string(),
        packet_id,
    }
}
