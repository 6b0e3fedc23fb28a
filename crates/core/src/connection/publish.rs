//! An inbound PUBLISH: topic alias, checks, authorization, the inbound QoS 2 id, routing,
//! and the acknowledgement once its writes are durable.

use super::packets::Later;
use super::{Connection, Exit, Violation};
use crate::codec::{PayloadFormat, Publish, PublishQoS, ReasonCode};
use crate::gate::Gate;
use crate::message::{Arrival, Hold};
use crate::metrics::Metrics;
use crate::pipeline;
use crate::plugin::PublishedMessage;
use crate::router::RouteOutcome;
use crate::session::AckKind;
use crate::topic::{is_bridge_state_topic, is_sys_topic};
use tokio::time::Instant;

impl Connection {
    /// Resolves a v5 Topic Alias (§3.3.2.3.4) into the PUBLISH's topic.
    fn resolve_alias(&mut self, publish: &mut Publish) -> Result<(), Exit> {
        let Some(alias) = publish.properties.topic_alias else {
            return Ok(());
        };
        // MQTT-3.3.2-8 / MQTT-3.3.2-9 / MQTT-3.3.2-12: 0 or above our maximum → 0x94.
        if alias == 0 {
            return Err(Exit::Violation(Violation::TopicAliasZero));
        }
        if alias > self.settings.capabilities.topic_alias_maximum {
            return Err(Exit::Violation(Violation::TopicAliasAboveMaximum));
        }
        if publish.topic.is_empty() {
            match self.extras.as_ref().and_then(|e| e.aliases.get(&alias)) {
                Some(topic) => publish.topic = topic.clone(),
                // An alias never set on this connection: a protocol error (v5 §3.3.4).
                None => return Err(Exit::Violation(Violation::TopicAliasUnknown)),
            }
        } else {
            // Kept for the connection's life: its own copy, not a slice of the read buffer.
            self.extras
                .get_or_insert_with(Box::default)
                .aliases
                .insert(alias, publish.topic.owned());
        }
        Ok(())
    }

    /// `at`: when the PUBLISH was read, if the reader knows.
    pub(super) fn on_publish(
        &mut self,
        mut publish: Publish,
        at: Option<Instant>,
    ) -> Result<Option<Later<'_>>, Exit> {
        self.received += 1;
        self.check_publish(&mut publish)?;
        let qos = publish.qos;
        if !self
            .settings
            .limits
            .user_properties_ok(&publish.properties.user_properties)
        {
            // Over the user-property limits: not routed, and the publisher is told.
            Metrics::inc(&self.ctx.metrics.messages_refused_properties);
            self.answer_publish(qos, ReasonCode::QuotaExceeded);
            return Ok(None);
        }
        let Some(ops) = self.take_inbound(&publish)? else {
            return Ok(None);
        };
        let topic = publish.topic.as_str();
        let bridge_state = self.bridge && is_bridge_state_topic(topic, &self.session.client_id);
        if self.ctx.policy.open_access() && is_sys_topic(topic) && !bridge_state {
            // The broker's own topics: only an authorizer that says so lets a client
            // publish there (with authorizers, the chain below decides; all deferring is no).
            Metrics::inc(&self.ctx.metrics.sys_publishes_denied);
            self.refuse_publish(&publish, ReasonCode::NotAuthorized);
            return Ok(None);
        }
        if !self.ctx.policy.open_access() {
            // The authorizers may take their time: copies routed so far do not wait.
            self.end_run();
            return Ok(Some(Box::pin(async move {
                let verdict = self
                    .ctx
                    .policy
                    .authorize_publish(&self.info, &publish.topic, qos.qos(), publish.retain)
                    .await;
                if let Err(code) = verdict {
                    self.refuse_publish(&publish, code);
                    return Ok(());
                }
                // Read before the authorizers' wait.
                match self.route_publish(publish, ops, at) {
                    Some(later) => later.await,
                    None => Ok(()),
                }
            })));
        }
        Ok(self.route_publish(publish, ops, at))
    }

    /// The rules a PUBLISH must keep to be taken at all; a topic given by alias is resolved.
    fn check_publish(&mut self, publish: &mut Publish) -> Result<(), Exit> {
        if self.version.is_v5() {
            // MQTT-3.3.4-6: a client never sends Subscription Identifiers.
            if !publish.properties.subscription_identifiers.is_empty() {
                return Err(Exit::Violation(Violation::SubscriptionIdentifierFromClient));
            }
            self.resolve_alias(publish)?;
        }
        if publish.topic.is_empty() {
            // A 3.1.1 PUBLISH cannot get here (the decoder refuses an empty topic).
            return Err(Exit::Violation(Violation::Malformed(
                crate::codec::DecodeError::EmptyTopicWithoutAlias,
            )));
        }
        if !self.settings.limits.topic_ok(publish.topic.as_str()) {
            return Err(Exit::Violation(Violation::TopicOverLimits));
        }
        let caps = &self.settings.capabilities;
        // The broker enforces what it advertised (v5 §3.2.2.3.4, §3.2.2.3.5).
        if publish.qos.qos() > caps.maximum_qos {
            return Err(Exit::Violation(Violation::QoSNotSupported));
        }
        if publish.retain && !caps.retain_available {
            return Err(Exit::Violation(Violation::RetainNotSupported));
        }
        Ok(())
    }

    /// Answers a QoS 1/2 PUBLISH with `code` (PUBACK or PUBREC); nothing for QoS 0.
    fn answer_publish(&self, qos: PublishQoS, code: ReasonCode) {
        match qos {
            PublishQoS::AtMostOnce => {}
            PublishQoS::AtLeastOnce(id) => self.answer(AckKind::PubAck, id, code, Gate::NONE),
            PublishQoS::ExactlyOnce(id) => self.answer(AckKind::PubRec, id, code, Gate::NONE),
        }
    }

    /// Takes the PUBLISH into the inbound QoS 2 state, answering what needs no routing: a
    /// QoS 2 duplicate (MQTT-4.3.3-2) and a payload that is not the UTF-8 it claims to be.
    /// `None` when answered here; else the storage operations routing adds to.
    fn take_inbound(&mut self, publish: &Publish) -> Result<Option<Vec<roost_storage::Op>>, Exit> {
        let mut ops = Vec::new();
        let bad_utf8 = self.version.is_v5()
            && publish.properties.payload_format_indicator == Some(PayloadFormat::Utf8)
            && std::str::from_utf8(&publish.payload).is_err();
        match publish.qos {
            PublishQoS::AtMostOnce if bad_utf8 => {
                return Err(Exit::Violation(Violation::PayloadFormatInvalid));
            }
            PublishQoS::AtLeastOnce(_) if bad_utf8 => {
                self.answer_publish(publish.qos, ReasonCode::PayloadFormatInvalid);
                return Ok(None);
            }
            PublishQoS::ExactlyOnce(id) => {
                let mut st = self.session.state.lock();
                // MQTT-4.3.3-2: a re-sent PUBLISH before PUBREL is acknowledged, not routed.
                if st.inbound_qos2.contains(&id.get()) {
                    drop(st);
                    self.answer(AckKind::PubRec, id, ReasonCode::Success, Gate::NONE);
                    return Ok(None);
                }
                if bad_utf8 {
                    drop(st);
                    self.answer_publish(publish.qos, ReasonCode::PayloadFormatInvalid);
                    return Ok(None);
                }
                // MQTT-3.3.4-7: no more unacknowledged QoS 2 PUBLISHes than our Receive
                // Maximum; one more → 0x93.
                if st.inbound_qos2.len() >= usize::from(self.settings.capabilities.receive_maximum)
                {
                    return Err(Exit::Violation(Violation::ReceiveMaximumExceeded));
                }
                st.inbound_qos2.insert(id.get());
                if st.expiry_interval > 0 && self.ctx.journal.is_on() {
                    ops.push(crate::persist::journal::inbound_started(
                        &self.session.client_id,
                        id.get(),
                    ));
                }
            }
            _ => {}
        }
        Ok(Some(ops))
    }

    /// Answers a PUBLISH an authorizer refused: v5 gets the refusal code, 3.1.1 a normal
    /// acknowledgement (MQTT-3.3.5-2).
    fn refuse_publish(&self, publish: &Publish, code: ReasonCode) {
        Metrics::inc(&self.ctx.metrics.messages_denied);
        tracing::debug!(topic = %publish.topic, "publish not authorized");
        self.refuse_qos(publish.qos, code);
    }

    /// Answers a refused PUBLISH (`code` for v5; 3.1.1 gets a normal acknowledgement): a
    /// refusing v5 PUBREC ends the QoS 2 exchange.
    fn refuse_qos(&self, qos: PublishQoS, code: ReasonCode) {
        match qos {
            PublishQoS::AtMostOnce => {}
            PublishQoS::AtLeastOnce(id) => self.answer(AckKind::PubAck, id, code, Gate::NONE),
            PublishQoS::ExactlyOnce(id) => {
                if self.version.is_v5() {
                    self.session.state.lock().inbound_qos2.remove(&id.get());
                }
                self.answer(AckKind::PubRec, id, code, Gate::NONE);
            }
        }
    }

    /// Routes an accepted PUBLISH and acknowledges it: at once, or, when storage writes
    /// must be submitted first, in the returned continuation.
    fn route_publish(
        &mut self,
        publish: Publish,
        mut ops: Vec<roost_storage::Op>,
        at: Option<Instant>,
    ) -> Option<Later<'_>> {
        let qos = publish.qos;
        let mut properties = publish.properties;
        properties.topic_alias = None;
        let mut published =
            PublishedMessage::new(publish.topic, publish.payload, qos.qos(), publish.retain);
        published.properties = properties;
        // Acked durability: no copy leaves before the acknowledgement could (see `Hold`).
        let acked = self.ctx.journal.acked();
        let hold = (acked && qos != PublishQoS::AtMostOnce).then(Hold::pending);
        let outcome = match pipeline::publish_message(
            &self.ctx,
            Some(&self.info),
            Some(self.session.client_id.clone()),
            published,
            &mut ops,
            &mut self.fanout,
            Arrival {
                hold: hold.clone(),
                at,
            },
        ) {
            Ok(outcome) => outcome,
            Err(pipeline::Stopped::Dropped) => RouteOutcome::default(),
            Err(pipeline::Stopped::Refused(code)) => {
                // Not routed, nothing stored: refused like an authorization refusal.
                self.refuse_qos(qos, code);
                return None;
            }
        };
        if ops.is_empty() {
            if !self.ctx.journal.is_on() && qos == PublishQoS::AtMostOnce {
                return None; // no storage, no acknowledgement: nothing more to do
            }
            let gate = self.routed_gate(&outcome, Gate::NONE);
            self.release(hold.as_deref(), gate);
            self.ack_publish(qos, outcome, gate);
            return None;
        }
        Some(Box::pin(async move {
            // Copies that need not wait for storage leave now (see `session::Fanout`).
            self.end_run();
            let stored = self.store(ops).await;
            let gate = self.routed_gate(&outcome, stored);
            self.release(hold.as_deref(), gate);
            self.ack_publish(qos, outcome, gate);
            Ok(())
        }))
    }

    /// Lets the copies of a held message go once `gate` is settled (or be withdrawn if it
    /// failed), and wakes the writers that may be waiting for it.
    fn release(&self, hold: Option<&Hold>, gate: Gate) {
        if let (Some(hold), Some(p)) = (hold, self.ctx.journal.persistence()) {
            if hold.release(gate) && p.settled(gate) {
                // A writer waits and nothing more becomes durable to wake it otherwise.
                p.poke();
            }
        }
    }

    /// Acked durability: the acknowledgement of a PUBLISH waits for its own writes
    /// (`stored`: the retained message, the inbound QoS 2 id) and for the copies routing
    /// queued for persistent sessions (`outcome.gate`), the writes this PUBLISH made and no
    /// others (see [`Gate::join`] for what lies between them). A failure of any refuses it.
    fn routed_gate(&self, outcome: &RouteOutcome, stored: Gate) -> Gate {
        if self.ctx.journal.acked() {
            stored.join(outcome.gate)
        } else {
            Gate::NONE
        }
    }

    /// PUBACK / PUBREC for a routed PUBLISH, once the writes of `gate` are durable. A
    /// message that matched subscribers but was dropped for every one of them for want of
    /// room is answered 0x97 Quota exceeded, never 0x10 No matching subscribers; one that
    /// some got and others not is a success (the drops are counted).
    fn ack_publish(&self, qos: PublishQoS, outcome: RouteOutcome, gate: Gate) {
        let code = if outcome.delivered > 0 {
            ReasonCode::Success
        } else if outcome.dropped_full > 0 {
            ReasonCode::QuotaExceeded
        } else {
            ReasonCode::NoMatchingSubscribers
        };
        match qos {
            PublishQoS::AtMostOnce => {}
            PublishQoS::AtLeastOnce(id) => self.answer(AckKind::PubAck, id, code, gate),
            PublishQoS::ExactlyOnce(id) => {
                if !code.is_success() && self.version.is_v5() {
                    // A refusing PUBREC ends the exchange (MQTT-4.3.3: no PUBREL follows).
                    self.session.state.lock().inbound_qos2.remove(&id.get());
                }
                self.answer(AckKind::PubRec, id, code, gate);
            }
        }
    }
}
