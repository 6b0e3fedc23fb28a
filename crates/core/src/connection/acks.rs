//! Acknowledgements from the client: PUBACK and PUBCOMP end a delivery the broker sent,
//! PUBREC moves a QoS 2 delivery to "released", and PUBREL ends an inbound QoS 2 exchange.
//! A PUBREL or PUBCOMP the broker answers with leaves only once the state it reports is
//! durable (acked durability).

use crate::codec::{PacketId, PacketType, PubResponse, ReasonCode};
use crate::persist::{journal, Gate};
use crate::session::{AckKind, Outgoing};

use super::Connection;

/// The most PUBACKs applied under one lock of the session (see `Connection::on_pubacks`):
/// publishers queueing to the session wait no longer than that.
const PUBACK_RUN: usize = 256;

impl Connection {
    pub(super) fn on_puback(&mut self, a: PubResponse) {
        let done = self.ack(|st| st.end_inflight(|i| i.puback(a.packet_id)));
        self.forget_stored(done.as_ref());
        self.acknowledged(done);
    }

    /// PUBACK `first` and the PUBACKs buffered right behind it (at most [`PUBACK_RUN`]),
    /// under one lock of the session: a subscriber acknowledges a whole read at a time,
    /// and a lock per PUBACK was taken in turn with the publishers queueing to it.
    pub(super) fn on_pubacks<R: crate::transport::PacketReader>(
        &mut self,
        first: PacketId,
        reader: &mut R,
    ) {
        let hooks = !self.ctx.policy.hooks.is_empty();
        // Entries that need more than the lock (a stored record to forget, the hooks to
        // tell): rare, so the list is made only for them.
        let mut after: Vec<crate::session::Entry> = Vec::new();
        self.ack(|st| {
            let mut id = Some(first);
            let mut n = 0;
            while let Some(pid) = id {
                if let Some(e) = st.end_inflight(|i| i.puback(pid)) {
                    if hooks || e.delivery.storage_seq.is_some() {
                        after.push(e);
                    }
                }
                n += 1;
                id = (n < PUBACK_RUN)
                    .then(|| reader.take_short_ack(Some(PacketType::PubAck)))
                    .flatten()
                    .map(|(_, id)| id);
            }
        });
        for done in after {
            self.forget_stored(Some(&done));
            self.acknowledged(Some(done));
        }
    }

    pub(super) fn on_pubcomp(&mut self, a: PubResponse) {
        let link_id = self.link_id;
        let done = self.ack(|st| st.end_inflight(|i| i.pubcomp(a.packet_id, link_id)));
        self.forget_stored(done.as_ref());
        self.acknowledged(done);
    }

    pub(super) fn on_pubrec(&mut self, a: PubResponse) {
        let id = a.packet_id;
        if !a.reason_code.is_success() {
            // v5 §4.3.3: a PUBREC with an error code ends the exchange.
            let done = self.ack(|st| st.end_inflight(|i| i.forget(id)));
            self.forget_stored(done.as_ref());
            return;
        }
        let link_id = self.link_id;
        let pubrel = |code| Outgoing::Ack(AckKind::PubRel, id, code);
        let unknown = self.v5_code(ReasonCode::PacketIdentifierNotFound);
        // One lock: the delivery moves to "released" and its PUBREL is queued, unless its
        // stored record must be updated first. The delivery is copied out only then.
        let stored = self.ack(|st| {
            let code = match st.inflight.pubrec(id) {
                None => unknown,
                Some(e) => match e.delivery.storage_seq {
                    Some(seq) => return Some((seq, e.delivery.clone())),
                    None => ReasonCode::Success,
                },
            };
            st.send_control(link_id, pubrel(code), Gate::NONE);
            None
        });
        if let Some((seq, d)) = stored {
            // The PUBREL leaves only once "released" is durable: a restart must not
            // re-send a PUBLISH the receiver has completed.
            let rel_gate = self.ctx.journal.store_gated(vec![journal::released(
                &self.session.client_id,
                seq.get(),
                &d,
                id.get(),
            )]);
            let released = pubrel(ReasonCode::Success);
            self.session.send_control_gated(link_id, released, rel_gate);
        }
    }

    pub(super) fn on_pubrel(&mut self, a: PubResponse) {
        let id = a.packet_id;
        let link_id = self.link_id;
        let journal = self.ctx.journal.is_on();
        let unknown = self.v5_code(ReasonCode::PacketIdentifierNotFound);
        // One lock: the id is forgotten and the PUBCOMP queued, unless forgetting it must
        // be durable first.
        let store = {
            let mut st = self.session.state.lock();
            let known = st.inbound_qos2.remove(&id.get());
            if known && st.expiry_interval > 0 && journal {
                true
            } else {
                let code = if known { ReasonCode::Success } else { unknown };
                st.send_control(
                    link_id,
                    Outgoing::Ack(AckKind::PubComp, id, code),
                    Gate::NONE,
                );
                false
            }
        };
        if store {
            // The PUBCOMP leaves only once the id is forgotten durably: after a restart
            // the publisher may reuse it for a new message.
            let comp_gate = self.ctx.journal.store_gated(vec![journal::inbound_done(
                &self.session.client_id,
                id.get(),
            )]);
            let comp = Outgoing::Ack(AckKind::PubComp, id, ReasonCode::Success);
            self.session.send_control_gated(link_id, comp, comp_gate);
        }
    }
}
