//! What the broker does with each packet a client sends once connected: the dispatch, the
//! helpers every flow uses, DISCONNECT and AUTH. PUBLISH is `publish.rs`, SUBSCRIBE and
//! UNSUBSCRIBE `subscribe.rs`, the acknowledgements `acks.rs`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::auth::{self, Step};
use super::{Connection, Exit, Violation};
use crate::codec::{
    Auth, AuthProperties, Disconnect, Packet, PacketId, PacketType, PubResponse, ReasonCode,
};
use crate::gate::Gate;
use crate::session::{AckKind, Outgoing, SessionState};
use crate::shown::{Shown, Text};

/// The rest of a packet's handling that has to wait (for a plugin, storage, or an
/// authentication exchange): boxed, so the connection's own future stays small while it
/// waits for the next packet, and only the packets that need it pay for an allocation.
pub(super) type Later<'a> = Pin<Box<dyn Future<Output = Result<(), Exit>> + Send + 'a>>;

impl Connection {
    /// Applies one packet. `Err` ends the connection; `Ok(Some(later))` must be awaited to
    /// finish it. The hot path (PUBLISH without plugins or storage, acknowledgements, PING)
    /// completes here, without awaiting or allocating. `read_at`: when the packet was read,
    /// if the reader knows.
    pub(super) fn handle(
        &mut self,
        packet: Packet,
        read_at: Option<tokio::time::Instant>,
    ) -> Result<Option<Later<'_>>, Exit> {
        let done = match packet {
            Packet::Publish(p) => return self.on_publish(p, read_at),
            Packet::PubAck(a) => {
                self.on_puback(a);
                Ok(())
            }
            Packet::PubRec(a) => {
                self.on_pubrec(a);
                Ok(())
            }
            Packet::PubRel(a) => {
                self.on_pubrel(a);
                Ok(())
            }
            Packet::PubComp(a) => {
                self.on_pubcomp(a);
                Ok(())
            }
            // Boxed (as AUTH below): rare next to PUBLISH, and inline their futures would
            // make every idle connection's task larger. Each may wait (for plugins or
            // storage), so what the run routed so far is queued and woken first.
            Packet::Subscribe(s) => {
                self.end_run();
                return Ok(Some(Box::pin(self.on_subscribe(s))));
            }
            Packet::Unsubscribe(u) => {
                self.end_run();
                return Ok(Some(Box::pin(async move {
                    self.on_unsubscribe(u).await;
                    Ok(())
                })));
            }
            Packet::PingReq => {
                // MQTT-3.12.4-1
                self.control(Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => self.on_disconnect(d),
            Packet::Auth(a) if self.version.is_v5() => {
                self.end_run();
                return Ok(Some(Box::pin(self.on_auth(a))));
            }
            // MQTT-3.1.0-2: a second CONNECT is a protocol violation; so are packets only a
            // server sends.
            Packet::Connect(_) => Err(Exit::Violation(Violation::SecondConnect)),
            Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp
            | Packet::Auth(_) => {
                tracing::info!(peer = %Shown(self.info.peer), client_id = %Text(&self.session.client_id), packet = ?packet.packet_type(), "unexpected packet from client");
                Err(Exit::Violation(Violation::ServerPacketFromClient))
            }
        };
        done.map(|()| None)
    }

    /// Takes a PUBACK, PUBREC, PUBREL or PUBCOMP of only a Packet Identifier (Success) from
    /// the reader without a [`Packet`] (see `PacketReader::take_short_ack`), if one is next,
    /// and handles it as [`Connection::handle`] would handle the packet (PUBACKs together
    /// with those behind it). False if the next packet is not one.
    pub(super) fn on_short_ack<R: crate::transport::PacketReader>(
        &mut self,
        reader: &mut R,
    ) -> bool {
        let Some((kind, id)) = reader.take_short_ack(None) else {
            return false;
        };
        let a = PubResponse::new(id);
        match kind {
            PacketType::PubAck => self.on_pubacks(id, reader),
            PacketType::PubRec => self.on_pubrec(a),
            PacketType::PubRel => self.on_pubrel(a),
            PacketType::PubComp => self.on_pubcomp(a),
            _ => debug_assert!(false, "not a short acknowledgement: {kind:?}"),
        }
        true
    }

    /// Before 5.0 every response code is Success on the wire; keep that explicit.
    pub(super) fn v5_code(&self, code: ReasonCode) -> ReasonCode {
        if self.version.is_v5() {
            code
        } else {
            ReasonCode::Success
        }
    }

    pub(super) fn control(&self, packet: Packet) {
        self.session.send_control(self.link_id, packet);
    }

    /// Queues a control packet that leaves once the writes of `gate` are durable.
    pub(super) fn control_after(&self, packet: Packet, gate: Gate) {
        self.session.send_control_gated(self.link_id, packet, gate);
    }

    /// Queues a PUBACK or PUBREC answering a PUBLISH with `code` (see
    /// [`Connection::response`]), to leave once the writes of `gate` are durable.
    pub(super) fn answer(&self, kind: AckKind, id: PacketId, code: ReasonCode, gate: Gate) {
        let out = if self.version.is_v5() && !code.is_success() {
            let r = self.response(id, code);
            Outgoing::from(match kind {
                AckKind::PubRec => Packet::PubRec(r),
                _ => Packet::PubAck(r),
            })
        } else {
            Outgoing::Ack(kind, id, self.v5_code(code))
        };
        self.session.send_control_gated(self.link_id, out, gate);
    }

    /// A PUBACK or PUBREC body, with a Reason String for failure codes (v5; the writer drops
    /// it for clients that asked for no problem information).
    pub(super) fn response(&self, id: crate::codec::PacketId, code: ReasonCode) -> PubResponse {
        let mut r = PubResponse::with_reason(id, self.v5_code(code));
        if self.version.is_v5() && !code.is_success() {
            r.properties.reason_string = Some(code.description().into());
        }
        r
    }

    /// Removes a completed delivery from storage.
    pub(super) fn forget_stored(&self, done: Option<&crate::session::Entry>) {
        if let Some(seq) = done.and_then(|e| e.delivery.storage_seq) {
            self.ctx
                .journal
                .store_now(vec![crate::persist::journal::delivery_done(
                    &self.session.client_id,
                    seq.get(),
                )]);
        }
    }

    /// Submits storage operations (waiting for room) and returns the sequence number an
    /// acknowledgement must wait for (0: none).
    pub(super) async fn store(&self, ops: Vec<roost_storage::Op>) -> Gate {
        match self.ctx.journal.persistence() {
            Some(p) if !ops.is_empty() => Gate::seq(p.gate(p.submit(ops).await)),
            _ => Gate::NONE,
        }
    }

    /// Tells the hooks a delivery completed.
    pub(super) fn acknowledged(&self, done: Option<crate::session::Entry>) {
        if let Some(entry) = done {
            let ctx = &self.ctx;
            ctx.policy.hooks.each(&ctx.metrics, |h| {
                h.message_acknowledged(&self.session.client_id, &entry.delivery.message)
            });
        }
    }

    /// Applies an acknowledgement to the session and wakes the writer (a window slot may
    /// have opened).
    pub(super) fn ack<T>(&self, f: impl FnOnce(&mut SessionState) -> T) -> T {
        let mut st = self.session.state.lock();
        let outcome = f(&mut st);
        if let Some(link) = &st.link {
            link.signals.wake();
        }
        outcome
    }

    fn on_disconnect(&mut self, d: Disconnect) -> Result<(), Exit> {
        if let Some(expiry) = d
            .properties
            .session_expiry_interval
            .filter(|_| self.version.is_v5())
        {
            // v5 §3.14.2.2.2: raising the interval from a CONNECT value of 0 is a protocol
            // error.
            if self.connect_expiry_zero && expiry != 0 {
                return Err(Exit::Violation(Violation::SessionExpiryRaisedFromZero));
            }
            self.session.state.lock().expiry_interval =
                expiry.min(self.settings.capabilities.max_session_expiry_interval);
        }
        Err(Exit::Disconnected {
            // v5 0x04: Disconnect with Will Message.
            keep_will: d.reason_code == ReasonCode::DisconnectWithWillMessage,
        })
    }

    /// Re-authentication (v5 §4.12.1): AUTH 0x19 starts it, AUTH 0x18 continues it.
    async fn on_auth(&mut self, a: Auth) -> Result<(), Exit> {
        let Some(mut reauth) = self.extras.as_mut().and_then(|e| e.reauth.take()) else {
            // Enhanced authentication was not used at CONNECT.
            return Err(Exit::Violation(Violation::AuthWithoutMethod));
        };
        let exchange = &mut reauth.exchange;
        if a.properties.authentication_method.as_ref() != Some(&exchange.method)
            || a.reason_code == ReasonCode::Success
        {
            return Err(Exit::Violation(Violation::AuthOutOfSequence));
        }
        if a.reason_code == ReasonCode::ReAuthenticate {
            exchange.restart();
        }
        let step = auth::enhanced(
            &self.ctx,
            exchange,
            &reauth.client,
            a.properties.authentication_data,
            true,
        )
        .await;
        let method = reauth.exchange.method.clone();
        self.extras.get_or_insert_with(Box::default).reauth = Some(reauth);
        let (code, data) = match step {
            Step::Continue(data) => (ReasonCode::ContinueAuthentication, data),
            Step::Allow(identity, data) => {
                let mut info = (*self.info).clone();
                info.identity = identity;
                self.info = Arc::new(info);
                self.session.state.lock().client = Some(Arc::clone(&self.info));
                (ReasonCode::Success, data)
            }
            Step::Deny(code) => {
                return Err(Exit::Violation(Violation::ReauthenticationRefused(code)))
            }
        };
        self.control(Packet::Auth(Auth {
            reason_code: code,
            properties: AuthProperties {
                authentication_method: Some(method),
                authentication_data: data,
                ..AuthProperties::default()
            },
        }));
        Ok(())
    }
}
