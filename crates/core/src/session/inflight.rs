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

/// An empty window keeps its list up to this many entries' room (a busy subscriber's
/// window empties and fills again all the time); a larger one, grown by a burst, is freed.
const KEEP_CAPACITY: usize = 128;

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
    /// Where the next PUBREC's entry probably is: just past the last one's. A QoS 2 window
    /// holds, in front, the released entries awaiting PUBCOMP, and a scan from the front
    /// for each PUBREC went over all of them (10% of the broker's CPU in QoS 2 fan-in with
    /// a window of 1,024). A hint only: a miss scans the rest.
    pubrec_hint: u16,
    /// PUBRELs still owed to a client whose session was restored after a crash that may
    /// have lost packet ids it holds (see [`Sweep`]). Boxed: almost always absent.
    sweep: Option<Box<Sweep>>,
}

/// A PUBREL for every packet id the client may still hold from before a crash, sent before
/// anything else new once a session restored under periodic durability resumes.
///
/// Under `Durability::Periodic` a QoS 2 PUBLISH goes out before its record (and packet id)
/// is durable. A crash can then lose the record while the client keeps the id, awaiting a
/// PUBREL that never comes; the restarted broker would give that id to a new message, which
/// the client must take for a duplicate and not deliver (MQTT-4.3.3-2 in 3.1.1, MQTT-4.3.3-10
/// in v5): an acknowledged message lost long after the crash window. A PUBREL for an id
/// frees it at the client, which answers PUBCOMP whether it knew the id or not (MQTT-4.3.3-2,
/// MQTT-4.3.3-11), and a PUBLISH after it is new (MQTT-4.3.3-12). The ids of restored
/// deliveries are left out: those are re-sent as they were. Nothing new is sent until the
/// PUBCOMP for the last PUBREL arrives, since a connection lost before the client read the
/// PUBRELs sends them all again on the next one, and a PUBREL must never release a message
/// sent after the sweep.
#[derive(Debug)]
pub(crate) struct Sweep {
    /// Ids not swept (restored deliveries keep theirs), sorted.
    keep: Box<[u16]>,
    /// The link the sweep is being written on: another one starts it again.
    link: u64,
    /// The next id to release (past `u16::MAX` once all are written).
    next: u32,
    /// The last id released, once all are written: its PUBCOMP ends the sweep.
    last: Option<u16>,
}

impl Sweep {
    /// The next id to release on `link`, starting again on a new link.
    fn next_on(&mut self, link: u64) -> Option<PacketId> {
        if self.link != link {
            self.link = link;
            self.next = 1;
            self.last = None;
        }
        while self.next <= u32::from(u16::MAX) {
            let id = self.next as u16;
            self.next += 1;
            if self.keep.binary_search(&id).is_err() {
                self.last = Some(id);
                return PacketId::new(id);
            }
        }
        None
    }
}

impl Inflight {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Starts a sweep (see [`Sweep`]): every id but those of restored entries and the
    /// `reserved` ones of restored queued deliveries. None if they hold every id: no PUBREL
    /// would be written, so none could end it.
    pub(crate) fn sweep_after_crash(&mut self, reserved: &IdSet) {
        let mut keep: Vec<u16> = self.entries.iter().map(|e| e.id.get()).collect();
        keep.extend(reserved.iter());
        keep.sort_unstable();
        keep.dedup();
        if keep.len() >= usize::from(u16::MAX) {
            self.sweep = None;
            return;
        }
        self.sweep = Some(Box::new(Sweep {
            keep: keep.into_boxed_slice(),
            link: 0,
            next: 1,
            last: None,
        }));
    }

    /// True while a sweep is under way: nothing new may be sent.
    pub(crate) fn sweeping(&self) -> bool {
        self.sweep.is_some()
    }

    /// The next id the sweep releases on `link` (`None` once all are written, or with no
    /// sweep).
    pub(crate) fn next_swept(&mut self, link: u64) -> Option<PacketId> {
        self.sweep.as_mut()?.next_on(link)
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
        let is = |e: &Entry| e.id == id && e.delivery.qos == QoS::ExactlyOnce;
        let start = usize::from(self.pubrec_hint).min(self.entries.len());
        let i = match self.entries.range(start..).position(is) {
            Some(i) => start + i,
            None => self.entries.range(..start).position(is)?,
        };
        self.pubrec_hint = u16::try_from(i + 1).unwrap_or(u16::MAX);
        let e = &mut self.entries[i];
        e.stage = Stage::Released;
        Some(e)
    }

    /// PUBCOMP on `link`: removes and returns the released QoS 2 entry `id`. The PUBCOMP
    /// for a sweep's last PUBREL, written whole on `link`, ends the sweep.
    pub(crate) fn pubcomp(&mut self, id: PacketId, link: u64) -> Option<Entry> {
        let done = self.remove_if(id, |e| e.stage == Stage::Released);
        if done.is_none()
            && self.sweep.as_ref().is_some_and(|s| {
                s.link == link && s.next > u32::from(u16::MAX) && s.last == Some(id.get())
            })
        {
            self.sweep = None;
        }
        done
    }

    /// Removes a QoS 1/2 entry whatever its stage (used when a v5 PUBREC carries an error
    /// code: the message is then finished).
    pub(crate) fn forget(&mut self, id: PacketId) -> Option<Entry> {
        self.remove_if(id, |_| true)
    }

    fn remove_if(&mut self, id: PacketId, ok: impl Fn(&Entry) -> bool) -> Option<Entry> {
        let i = self.entries.iter().position(|e| e.id == id && ok(e))?;
        self.in_use.remove(&id.get());
        if i < usize::from(self.pubrec_hint) {
            self.pubrec_hint -= 1;
        }
        let entry = self.entries.remove(i);
        if self.entries.is_empty() && self.entries.capacity() > KEEP_CAPACITY {
            // What a burst grew is not kept while nothing is in flight: limits count the
            // entries, not the list's spare room.
            self.entries = VecDeque::new();
        }
        entry
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
        // A burst's list is freed once the window empties; a small one is kept.
        let mut ids = Vec::new();
        for _ in 0..KEEP_CAPACITY * 4 {
            ids.push(w.push(delivery(QoS::AtLeastOnce), &none).expect("id").id);
        }
        assert!(w.entries.capacity() > KEEP_CAPACITY);
        for id in ids {
            assert!(w.puback(id).is_some());
        }
        assert_eq!(w.entries.capacity(), 0, "the burst's room is given back");
    }

    #[test]
    fn a_sweep_releases_every_id_but_the_restored_ones_and_ends_on_its_last_pubcomp() {
        // MQTT-4.3.3-2 (3.1.1), MQTT-4.3.3-11/-12 (v5): a PUBREL frees an id at the client.
        let mut w = Inflight::default();
        w.restore(
            PacketId::new(3).expect("id"),
            delivery(QoS::ExactlyOnce),
            Stage::Released,
        );
        let mut reserved = IdSet::default();
        reserved.insert(u16::MAX);
        w.sweep_after_crash(&reserved);
        assert!(w.sweeping());
        let first: Vec<u16> = (0..3)
            .filter_map(|_| w.next_swept(7))
            .map(|i| i.get())
            .collect();
        assert_eq!(
            first,
            [1, 2, 4],
            "3 is restored: re-sent as it was, not released"
        );
        // The connection is lost: the next one starts again from 1.
        assert_eq!(w.next_swept(8).map(PacketId::get), Some(1));
        let mut count = 1;
        while w.next_swept(8).is_some() {
            count += 1;
        }
        assert_eq!(count, usize::from(u16::MAX) - 2, "all ids but 3 and 65,535");
        let last = PacketId::new(u16::MAX - 1).expect("id");
        assert!(w.pubcomp(PacketId::new(1).expect("id"), 8).is_none());
        assert!(w.pubcomp(last, 7).is_none());
        assert!(
            w.sweeping(),
            "only the last PUBCOMP, on the link that wrote it, ends it"
        );
        assert!(w.pubcomp(last, 8).is_none(), "no entry ends with it");
        assert!(!w.sweeping());
        assert_eq!(w.next_swept(8), None);
        assert_eq!(w.len(), 1, "the restored entry stays");
    }

    #[test]
    fn a_sweep_with_every_id_restored_is_no_sweep() {
        // A persistent session restored with 65,535 queued QoS 1/2 messages holds every id:
        // nothing to release, so nothing may wait for the PUBCOMP of a last PUBREL (the
        // session sent nothing ever again).
        let mut w = Inflight::default();
        w.restore(
            PacketId::new(9).expect("id"),
            delivery(QoS::ExactlyOnce),
            Stage::Published,
        );
        let mut reserved = IdSet::default();
        for id in (1..=u16::MAX).filter(|&id| id != 9) {
            reserved.insert(id);
        }
        w.sweep_after_crash(&reserved);
        assert!(!w.sweeping(), "nothing to release: new messages may go");
        assert_eq!(w.next_swept(1), None);
        reserved.remove(&700);
        w.sweep_after_crash(&reserved);
        assert!(w.sweeping(), "one id to release");
        assert_eq!(w.next_swept(1).map(PacketId::get), Some(700));
    }

    #[test]
    fn qos2_flow_and_wrong_acks() {
        let mut w = Inflight::default();
        let id = w
            .push(delivery(QoS::ExactlyOnce), &IdSet::default())
            .expect("id")
            .id;
        assert!(w.puback(id).is_none(), "PUBACK for a QoS 2 message");
        assert!(w.pubcomp(id, 1).is_none(), "PUBCOMP before PUBREC");
        assert!(w.pubrec(id).is_some());
        assert_eq!(w.entries().next().map(|e| e.stage), Some(Stage::Released));
        assert!(w.pubcomp(id, 1).is_some());
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn pubrecs_find_their_entry_in_or_out_of_order() {
        // MQTT-4.3.3-4 (v5): each PUBREC moves its own message to "released".
        let mut w = Inflight::default();
        let none = IdSet::default();
        let ids: Vec<PacketId> = (0..6)
            .map(|_| w.push(delivery(QoS::ExactlyOnce), &none).expect("id").id)
            .collect();
        let stage = |w: &Inflight, id: PacketId| w.entries().find(|e| e.id == id).map(|e| e.stage);
        for &i in &[0, 1, 4, 2, 5, 3] {
            assert_eq!(w.pubrec(ids[i]).map(|e| e.id), Some(ids[i]));
            assert_eq!(stage(&w, ids[i]), Some(Stage::Released));
        }
        assert!(w.pubrec(PacketId::new(999).expect("id")).is_none());
        // Completed from the front while later ones are acknowledged: the hint follows.
        assert!(w.pubcomp(ids[0], 1).is_some() && w.pubcomp(ids[1], 1).is_some());
        let more = w.push(delivery(QoS::ExactlyOnce), &none).expect("id").id;
        assert_eq!(w.pubrec(more).map(|e| e.id), Some(more));
        assert!(w.entries().all(|e| e.stage == Stage::Released));
    }
}
