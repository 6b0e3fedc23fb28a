//! Acknowledgements from the client: PUBACK and PUBCOMP end a delivery the broker sent,
//! PUBREC moves a QoS 2 delivery to "released", and PUBREL ends an inbound QoS 2 exchange.
//! A PUBREL or PUBCOMP the broker answers with leaves only once the state it reports is
//! durable (acked durability).

use crate::codec::{Packet, PubResponse, ReasonCode};
use crate::persist::{journal, Gate};

use super::Connection;

impl Connection {
    pub(super) fn on_puback(&mut self, a: PubResponse) {
        let done = self.ack(|st| st.end_inflight(|i| i.puback(a.packet_id)));
        self.forget_stored(done.as_ref());
        self.acknowledged(done);
    }

    pub(super) fn on_pubcomp(&mut self, a: PubResponse) {
        let done = self.ack(|st| st.end_inflight(|i| i.pubcomp(a.packet_id)));
        self.forget_stored(done.as_ref());
        self.acknowledged(done);
    }

    pub(super) fn on_pubrec(&mut self, a: PubResponse) {
        let failed = !a.reason_code.is_success();
        let mut rel_gate = Gate::NONE;
        let found = if failed {
            // v5 §4.3.3: a PUBREC with an error code ends the exchange.
            let done = self.ack(|st| st.end_inflight(|i| i.forget(a.packet_id)));
            self.forget_stored(done.as_ref());
            done.is_some()
        } else {
            // The delivery is copied out only when its stored record must be updated.
            let released = self.ack(|st| {
                st.inflight
                    .pubrec(a.packet_id)
                    .map(|e| e.delivery.storage_seq.map(|seq| (seq, e.delivery.clone())))
            });
            if let Some(Some((seq, d))) = &released {
                // The PUBREL leaves only once "released" is durable: a restart must
                // not re-send a PUBLISH the receiver has completed.
                rel_gate = self.ctx.journal.store_gated(vec![journal::released(
                    &self.session.client_id,
                    seq.get(),
                    d,
                    a.packet_id.get(),
                )]);
            }
            released.is_some()
        };
        if !failed {
            let code = if found {
                ReasonCode::Success
            } else {
                ReasonCode::PacketIdentifierNotFound
            };
            self.control_after(
                Packet::PubRel(PubResponse::with_reason(a.packet_id, self.v5_code(code))),
                rel_gate,
            );
        }
    }

    pub(super) fn on_pubrel(&mut self, a: PubResponse) {
        let (known, persistent) = {
            let mut st = self.session.state.lock();
            (
                st.inbound_qos2.remove(&a.packet_id.get()),
                st.expiry_interval > 0,
            )
        };
        // The PUBCOMP leaves only once the id is forgotten durably: after a restart
        // the publisher may reuse it for a new message.
        let mut comp_gate = Gate::NONE;
        if known && persistent && self.ctx.journal.is_on() {
            comp_gate = self.ctx.journal.store_gated(vec![journal::inbound_done(
                &self.session.client_id,
                a.packet_id.get(),
            )]);
        }
        let code = if known {
            ReasonCode::Success
        } else {
            ReasonCode::PacketIdentifierNotFound
        };
        self.control_after(
            Packet::PubComp(PubResponse::with_reason(a.packet_id, self.v5_code(code))),
            comp_gate,
        );
    }
}
