//! Outbound QoS 1/2 messages awaiting acknowledgement, and Packet Identifier allocation.
//!
//! Entries are kept in the order they were first sent, so that a resumed session re-sends
//! them in that order (MQTT-4.4.0-1, MQTT-4.6.0-1). Acknowledgements mostly come in that
//! order too, so finding the entry an acknowledgement ends is a scan from the front that
//! stops at once. Whether an id is in use is a scan while the window is short and a set of
//! the ids in use while it is long (a scan per new id over a window of a hundred entries
//! was 2% of the broker's CPU under QoS 1 load, issue 19).

use std::collections::VecDeque;

use super::IdSet;
use crate::codec::{PacketId, QoS};
use crate::message::Delivery;

/// Where an outbound QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// PUBLISH sent; awaiting PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREC received and PUBREL sent; awaiting PUBCOMP.
    Released,
}

/// One unacknowledged message.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) id: PacketId,
    pub(crate) delivery: Delivery,
    pub(crate) stage: Stage,
}

/// Past this many entries, the ids in use are also kept in a set.
const SCAN_MAX: usize = 16;

/// The outbound inflight window of one session.
#[derive(Debug, Default)]
pub(crate) struct Inflight {
    entries: VecDeque<Entry>,
    /// The ids of `entries` from the moment there are more than [`SCAN_MAX`] of them until
    /// the window empties (the set then frees itself); empty otherwise, when ids are found
    /// by a scan.
    in_use: IdSet,
    last_id: u16,
}

impl Inflight {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry sent last.
    pub(crate) fn last(&self) -> Option<&Entry> {
        self.entries.back()
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// The next free Packet Identifier, skipping ids in use here or `reserved` by queued
    /// messages (MQTT-2.3.1-2). `None` only when all 65,535 ids are taken.
    pub(crate) fn alloc_id(&mut self, reserved: &IdSet) -> Option<PacketId> {
        for _ in 0..u16::MAX {
            self.last_id = self.last_id.wrapping_add(1);
            let Some(id) = PacketId::new(self.last_id) else {
                continue;
            };
            if !reserved.contains(&id.get()) && !self.in_use(id) {
                return Some(id);
            }
        }
        None
    }

    fn in_use(&self, id: PacketId) -> bool {
        if self.in_use.len() == 0 {
            self.entries.iter().any(|e| e.id == id)
        } else {
            self.in_use.contains(&id.get())
        }
    }

    /// Appends an entry, keeping the set of ids in use once the window is long.
    fn append(&mut self, entry: Entry) {
        if self.in_use.len() == 0 && self.entries.len() >= SCAN_MAX {
            self.in_use.extend(self.entries.iter().map(|e| e.id.get()));
        }
        if self.in_use.len() > 0 {
            self.in_use.insert(entry.id.get());
        }
        self.entries.push_back(entry);
    }

    /// Records `delivery` (QoS 1 or 2) as sent, with the packet id it reserved or a new one,
    /// and returns the entry (`None`, with the delivery dropped, when every id is taken).
    pub(crate) fn push(&mut self, delivery: Delivery, reserved: &IdSet) -> Option<&Entry> {
        let id = match delivery.packet_id {
            Some(id) => id,
            None => self.alloc_id(reserved)?,
        };
        self.append(Entry {
            id,
            delivery,
            stage: Stage::Published,
        });
        self.last()
    }

    /// Puts back an entry recovered from storage, with its packet id and stage.
    pub(crate) fn restore(&mut self, id: PacketId, delivery: Delivery, stage: Stage) {
        self.append(Entry {
            id,
            delivery,
            stage,
        });
    }

    /// PUBACK: removes and returns the QoS 1 entry `id`.
    pub(crate) fn puback(&mut self, id: PacketId) -> Option<Entry> {
        self.remove_if(id, |e| {
            e.stage == Stage::Published && e.delivery.qos == QoS::AtLeastOnce
        })
    }

    /// PUBREC: moves the QoS 2 entry `id` to [`Stage::Released`]. The PUBLISH is then
    /// acknowledged and must not be sent again (MQTT-4.3.3-1).
    pub(crate) fn pubrec(&mut self, id: PacketId) -> Option<&Entry> {
        let e = self
            .entries
            .iter_mut()
            .find(|e| e.id == id && e.delivery.qos == QoS::ExactlyOnce)?;
        e.stage = Stage::Released;
        Some(e)
    }

    /// PUBCOMP: removes and returns the released QoS 2 entry `id`.
    pub(crate) fn pubcomp(&mut self, id: PacketId) -> Option<Entry> {
        self.remove_if(id, |e| e.stage == Stage::Released)
    }

    /// Removes a QoS 1/2 entry whatever its stage (used when a v5 PUBREC carries an error
    /// code: the message is then finished).
    pub(crate) fn forget(&mut self, id: PacketId) -> Option<Entry> {
        self.remove_if(id, |_| true)
    }

    fn remove_if(&mut self, id: PacketId, ok: impl Fn(&Entry) -> bool) -> Option<Entry> {
        let i = self.entries.iter().position(|e| e.id == id && ok(e))?;
        self.in_use.remove(&id.get());
        self.entries.remove(i)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::message::Message;
    use crate::topic::TopicName;

    fn delivery(qos: QoS) -> Delivery {
        let message = Message::new(
            TopicName::new("t").expect("valid"),
            Bytes::new(),
            qos,
            false,
        );
        Delivery::new(Arc::new(message), qos, false, Vec::new())
    }

    #[test]
    fn ids_skip_those_in_use_and_wrap() {
        // MQTT-2.3.1-4 (3.1.1), MQTT-2.2.1-4 (v5), MQTT-4.3.2-1 (v5), MQTT-4.3.3-1 (v5): a new
        // message from the server gets an id not in use.
        let mut w = Inflight::default();
        let a = w
            .push(delivery(QoS::AtLeastOnce), &IdSet::default())
            .expect("id")
            .id;
        assert_eq!(a.get(), 1);
        w.last_id = u16::MAX - 1;
        let b = w
            .push(delivery(QoS::AtLeastOnce), &IdSet::default())
            .expect("id")
            .id;
        assert_eq!(b.get(), u16::MAX);
        // Wraps past 0 and skips 1, which is still in use.
        let c = w
            .push(delivery(QoS::AtLeastOnce), &IdSet::default())
            .expect("id")
            .id;
        assert_eq!(c.get(), 2);
    }

    #[test]
    fn a_long_window_skips_the_ids_it_holds_and_frees_its_set_when_empty() {
        // MQTT-2.3.1-2 (3.1.1), MQTT-2.2.1-3 (v5): an id in use is not given to another
        // message, past the length at which the window keeps its ids in a set.
        let mut w = Inflight::default();
        let none = IdSet::default();
        let n = u16::try_from(SCAN_MAX * 3).expect("small");
        for expected in 1..=n {
            let e = w.push(delivery(QoS::AtLeastOnce), &none).expect("id");
            assert_eq!(e.id.get(), expected);
        }
        assert!(w.in_use.allocated());
        // Acknowledged out of order: 5 is free again, the others are still held.
        assert!(w.puback(PacketId::new(5).expect("id")).is_some());
        w.last_id = 0;
        let reused = w.push(delivery(QoS::AtLeastOnce), &none).expect("id").id;
        assert_eq!(reused.get(), 5);
        let next = w.push(delivery(QoS::AtLeastOnce), &none).expect("id").id;
        assert_eq!(next.get(), n + 1, "every id up to {n} is still in use");
        // Restored entries count as in use too.
        w.restore(
            PacketId::new(n + 2).expect("id"),
            delivery(QoS::AtLeastOnce),
            Stage::Published,
        );
        let after = w.push(delivery(QoS::AtLeastOnce), &none).expect("id").id;
        assert_eq!(after.get(), n + 3);
        let ids: Vec<PacketId> = w.entries().map(|e| e.id).collect();
        for id in ids {
            assert!(w.forget(id).is_some());
        }
        assert_eq!(w.len(), 0);
        assert!(!w.in_use.allocated(), "an empty window holds no set");
    }

    #[test]
    fn qos2_flow_and_wrong_acks() {
        let mut w = Inflight::default();
        let id = w
            .push(delivery(QoS::ExactlyOnce), &IdSet::default())
            .expect("id")
            .id;
        assert!(w.puback(id).is_none(), "PUBACK for a QoS 2 message");
        assert!(w.pubcomp(id).is_none(), "PUBCOMP before PUBREC");
        assert!(w.pubrec(id).is_some());
        assert_eq!(w.entries().next().map(|e| e.stage), Some(Stage::Released));
        assert!(w.pubcomp(id).is_some());
        assert_eq!(w.len(), 0);
    }
}
