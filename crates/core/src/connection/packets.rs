//! What the broker does with each packet a client sends once connected.

use std::sync::Arc;

use super::{Connection, Exit};
use crate::codec::{
    Packet, PubResponse, Publish, PublishQoS, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    UnsubAck, Unsubscribe,
};
use crate::message::{Delivery, Message};
use crate::metrics::Metrics;
use crate::session::{AckOutcome, SubscriptionRecord};

impl Connection {
    /// Applies one packet. `Err` ends the connection.
    pub(super) fn handle(&self, packet: Packet) -> Result<(), Exit> {
        match packet {
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck(a) => {
                self.ack(|st| st.inflight.puback(a.packet_id));
                Ok(())
            }
            Packet::PubRec(a) => {
                let failed = !a.reason_code.is_success();
                let outcome = self.ack(|st| {
                    if failed {
                        // v5 §4.3.3: a PUBREC with an error code ends the exchange.
                        st.inflight.forget(a.packet_id)
                    } else {
                        st.inflight.pubrec(a.packet_id)
                    }
                });
                if !failed {
                    let code = match outcome {
                        AckOutcome::Done => ReasonCode::Success,
                        AckOutcome::NotFound => ReasonCode::PacketIdentifierNotFound,
                    };
                    self.control(Packet::PubRel(PubResponse::with_reason(
                        a.packet_id,
                        self.v5_code(code),
                    )));
                }
                Ok(())
            }
            Packet::PubRel(a) => {
                let known = self
                    .session
                    .state
                    .lock()
                    .inbound_qos2
                    .remove(&a.packet_id.get());
                let code = if known {
                    ReasonCode::Success
                } else {
                    ReasonCode::PacketIdentifierNotFound
                };
                self.control(Packet::PubComp(PubResponse::with_reason(
                    a.packet_id,
                    self.v5_code(code),
                )));
                Ok(())
            }
            Packet::PubComp(a) => {
                self.ack(|st| st.inflight.pubcomp(a.packet_id));
                Ok(())
            }
            Packet::Subscribe(s) => {
                self.on_subscribe(s);
                Ok(())
            }
            Packet::Unsubscribe(u) => {
                self.on_unsubscribe(u);
                Ok(())
            }
            Packet::PingReq => {
                self.control(Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => Err(Exit::Disconnected {
                keep_will: d.reason_code == ReasonCode::DisconnectWithWillMessage,
            }),
            // MQTT-3.1.0-2: a second CONNECT is a protocol violation; so are packets only a
            // server sends.
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp
            | Packet::Auth(_) => {
                tracing::info!(packet = ?packet.packet_type(), "unexpected packet from client");
                Err(Exit::Violation(ReasonCode::ProtocolError))
            }
        }
    }

    /// Before 5.0 every response code is Success on the wire; keep that explicit.
    fn v5_code(&self, code: ReasonCode) -> ReasonCode {
        if self.version.is_v5() {
            code
        } else {
            ReasonCode::Success
        }
    }

    fn control(&self, packet: Packet) {
        self.session.send_control(self.link_id, packet);
    }

    /// Applies an acknowledgement to the session and wakes the writer (a window slot may
    /// have opened).
    fn ack(&self, f: impl FnOnce(&mut crate::session::SessionState) -> AckOutcome) -> AckOutcome {
        let mut st = self.session.state.lock();
        let outcome = f(&mut st);
        if let Some(link) = &st.link {
            link.signals.wake.notify_one();
        }
        outcome
    }

    fn on_publish(&self, publish: Publish) -> Result<(), Exit> {
        Metrics::inc(&self.shared.metrics.messages_received);
        if publish.topic.is_empty() {
            // Topic aliases arrive with the MQTT 5 work; until then an alias-only PUBLISH
            // names nothing we know.
            return Err(Exit::Violation(ReasonCode::TopicAliasInvalid));
        }
        if !self.shared.limits.topic_ok(publish.topic.as_str()) {
            return Err(Exit::Violation(ReasonCode::TopicNameInvalid));
        }
        let qos = publish.qos;
        if let PublishQoS::ExactlyOnce(id) = qos {
            // MQTT-4.3.3-2: a re-sent PUBLISH before PUBREL is acknowledged, not routed again.
            if self.session.state.lock().inbound_qos2.contains(&id.get()) {
                self.control(Packet::PubRec(PubResponse::new(id)));
                return Ok(());
            }
        }
        let message = Arc::new(Message::from_publish(publish, Some(self.client_id.clone())));
        let matched = self.shared.publish(&message);
        let code = if matched == 0 {
            ReasonCode::NoMatchingSubscribers
        } else {
            ReasonCode::Success
        };
        match qos {
            PublishQoS::AtMostOnce => {}
            PublishQoS::AtLeastOnce(id) => {
                self.control(Packet::PubAck(PubResponse::with_reason(
                    id,
                    self.v5_code(code),
                )));
            }
            PublishQoS::ExactlyOnce(id) => {
                self.session.state.lock().inbound_qos2.insert(id.get());
                self.control(Packet::PubRec(PubResponse::with_reason(
                    id,
                    self.v5_code(code),
                )));
            }
        }
        Ok(())
    }

    fn on_subscribe(&self, subscribe: Subscribe) {
        let limits = &self.shared.limits;
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        for (filter, options) in subscribe.filters {
            if !limits.topic_ok(filter.as_str()) {
                codes.push(ReasonCode::TopicFilterInvalid);
                continue;
            }
            let record = SubscriptionRecord {
                options,
                id: subscribe.properties.subscription_identifier,
            };
            let is_new = {
                let mut st = self.session.state.lock();
                let exists = st.subscriptions.contains_key(&filter);
                if !exists && st.subscriptions.len() >= limits.max_subscriptions_per_client {
                    codes.push(ReasonCode::QuotaExceeded);
                    continue;
                }
                st.subscriptions.insert(filter.clone(), record);
                !exists
            };
            // MQTT-3.8.4-3: a subscription to an existing filter replaces it.
            if self.shared.router.subscribe(&self.session, &filter, record) {
                Metrics::inc(&self.shared.metrics.subscriptions);
            }
            let send_retained = match options.retain_handling {
                RetainHandling::SendOnSubscribe => true,
                RetainHandling::SendIfNew => is_new,
                RetainHandling::DoNotSend => false,
            };
            if send_retained {
                for message in self.shared.router.retained_for(&filter) {
                    retained.push(Delivery {
                        qos: message.qos.min(options.qos),
                        // MQTT-3.3.1-8: retained messages sent on subscribe keep RETAIN 1.
                        retain: true,
                        subscription_ids: record.id.into_iter().collect(),
                        message,
                    });
                }
            }
            codes.push(match options.qos {
                QoS::AtMostOnce => ReasonCode::Success,
                QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
            });
        }
        // MQTT-3.8.4-1: SUBACK with the same Packet Identifier, one code per filter
        // (MQTT-3.8.4-5), before the retained messages it releases.
        self.control(Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            properties: Default::default(),
            reason_codes: codes,
        }));
        for delivery in retained {
            if self.session.enqueue(delivery, limits).is_err() {
                Metrics::inc(&self.shared.metrics.messages_dropped);
            }
        }
    }

    fn on_unsubscribe(&self, unsubscribe: Unsubscribe) {
        let mut codes = Vec::with_capacity(unsubscribe.filters.len());
        for filter in &unsubscribe.filters {
            let removed = self
                .session
                .state
                .lock()
                .subscriptions
                .remove(filter)
                .is_some();
            if removed && self.shared.router.unsubscribe(&self.session, filter) {
                Metrics::dec(&self.shared.metrics.subscriptions);
            }
            codes.push(if removed {
                ReasonCode::Success
            } else {
                ReasonCode::NoSubscriptionExisted
            });
        }
        let reason_codes = if self.version.is_v5() {
            codes
        } else {
            Vec::new()
        };
        // MQTT-3.10.4-4: UNSUBACK with the same Packet Identifier.
        self.control(Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            properties: Default::default(),
            reason_codes,
        }));
    }
}
