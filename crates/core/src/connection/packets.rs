//! What the broker does with each packet a client sends once connected.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::auth::{self, Step};
use super::{Connection, Exit, Violation};
use crate::codec::{
    Auth, AuthProperties, Disconnect, Packet, PayloadFormat, PubResponse, Publish, PublishQoS, QoS,
    ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::gate::Gate;
use crate::message::Hold;
use crate::metrics::Metrics;
use crate::pipeline;
use crate::plugin::PublishedMessage;
use crate::router::RouteOutcome;
use crate::session::{RetainedBatch, SessionState, SubscriptionRecord};
use crate::topic::{is_sys_topic, TopicFilter};
use hashbrown::HashMap;

/// The rest of a packet's handling that has to wait (for a plugin, storage, or an
/// authentication exchange): boxed, so the connection's own future stays small while it
/// waits for the next packet, and only the packets that need it pay for an allocation.
pub(super) type Later<'a> = Pin<Box<dyn Future<Output = Result<(), Exit>> + Send + 'a>>;

impl Connection {
    /// Applies one packet. `Err` ends the connection; `Ok(Some(later))` must be awaited to
    /// finish it. The hot path (PUBLISH without plugins or storage, acknowledgements, PING)
    /// completes here, without awaiting or allocating.
    pub(super) fn handle(&mut self, packet: Packet) -> Result<Option<Later<'_>>, Exit> {
        let done = match packet {
            Packet::Publish(p) => return self.on_publish(p),
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
            // make every idle connection's task larger.
            Packet::Subscribe(s) => return Ok(Some(Box::pin(self.on_subscribe(s)))),
            Packet::Unsubscribe(u) => {
                return Ok(Some(Box::pin(async move {
                    self.on_unsubscribe(u).await;
                    Ok(())
                })))
            }
            Packet::PingReq => {
                // MQTT-3.12.4-1
                self.control(Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => self.on_disconnect(d),
            Packet::Auth(a) if self.version.is_v5() => return Ok(Some(Box::pin(self.on_auth(a)))),
            // MQTT-3.1.0-2: a second CONNECT is a protocol violation; so are packets only a
            // server sends.
            Packet::Connect(_) => Err(Exit::Violation(Violation::SecondConnect)),
            Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp
            | Packet::Auth(_) => {
                tracing::info!(packet = ?packet.packet_type(), "unexpected packet from client");
                Err(Exit::Violation(Violation::ServerPacketFromClient))
            }
        };
        done.map(|()| None)
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
                    &self.client_id,
                    seq.get(),
                )]);
        }
    }

    /// Submits storage operations (waiting for room) and returns the sequence number an
    /// acknowledgement must wait for (0: none).
    async fn store(&self, ops: Vec<roost_storage::Op>) -> Gate {
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
                h.message_acknowledged(&self.client_id, &entry.delivery.message)
            });
        }
    }

    /// Applies an acknowledgement to the session and wakes the writer (a window slot may
    /// have opened).
    pub(super) fn ack<T>(&self, f: impl FnOnce(&mut SessionState) -> T) -> T {
        let mut st = self.session.state.lock();
        let outcome = f(&mut st);
        if let Some(link) = &st.link {
            link.signals.wake.notify_one();
        }
        outcome
    }

    /// Resolves a v5 Topic Alias (§3.3.2.3.4) into the PUBLISH's topic.
    fn resolve_alias(&mut self, publish: &mut Publish) -> Result<(), Exit> {
        let Some(alias) = publish.properties.topic_alias else {
            return Ok(());
        };
        // MQTT-3.3.2-8 / MQTT-3.3.2-9 / MQTT-3.3.2-12: 0 or above our maximum → 0x94.
        if alias == 0 {
            return Err(Exit::Violation(Violation::TopicAliasZero));
        }
        if alias > self.ctx.settings.capabilities.topic_alias_maximum {
            return Err(Exit::Violation(Violation::TopicAliasAboveMaximum));
        }
        if publish.topic.is_empty() {
            match self.aliases.get(&alias) {
                Some(topic) => publish.topic = topic.clone(),
                // An alias never set on this connection: a protocol error (v5 §3.3.4).
                None => return Err(Exit::Violation(Violation::TopicAliasUnknown)),
            }
        } else {
            // Kept for the connection's life: its own copy, not a slice of the read buffer.
            self.aliases.insert(alias, publish.topic.owned());
        }
        Ok(())
    }

    fn on_publish(&mut self, mut publish: Publish) -> Result<Option<Later<'_>>, Exit> {
        Metrics::inc(&self.ctx.metrics.messages_received);
        self.check_publish(&mut publish)?;
        let qos = publish.qos;
        if !self
            .ctx
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
        if self.ctx.policy.open_access() && is_sys_topic(publish.topic.as_str()) {
            // The broker's own topics: only an authorizer that says so lets a client
            // publish there (with authorizers, the chain below decides; all deferring is no).
            Metrics::inc(&self.ctx.metrics.sys_publishes_denied);
            self.refuse_publish(&publish, ReasonCode::NotAuthorized);
            return Ok(None);
        }
        if !self.ctx.policy.open_access() {
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
                match self.route_publish(publish, ops) {
                    Some(later) => later.await,
                    None => Ok(()),
                }
            })));
        }
        Ok(self.route_publish(publish, ops))
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
        if !self.ctx.settings.limits.topic_ok(publish.topic.as_str()) {
            return Err(Exit::Violation(Violation::TopicOverLimits));
        }
        let caps = &self.ctx.settings.capabilities;
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
            PublishQoS::AtLeastOnce(id) => self.control(Packet::PubAck(self.response(id, code))),
            PublishQoS::ExactlyOnce(id) => self.control(Packet::PubRec(self.response(id, code))),
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
                    self.control(Packet::PubRec(PubResponse::new(id)));
                    return Ok(None);
                }
                if bad_utf8 {
                    drop(st);
                    self.answer_publish(publish.qos, ReasonCode::PayloadFormatInvalid);
                    return Ok(None);
                }
                // MQTT-3.3.4-7: no more unacknowledged QoS 2 PUBLISHes than our Receive
                // Maximum; one more → 0x93.
                if st.inbound_qos2.len()
                    >= usize::from(self.ctx.settings.capabilities.receive_maximum)
                {
                    return Err(Exit::Violation(Violation::ReceiveMaximumExceeded));
                }
                st.inbound_qos2.insert(id.get());
                if st.expiry_interval > 0 && self.ctx.journal.is_on() {
                    ops.push(crate::persist::journal::inbound_started(
                        &self.client_id,
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
        match publish.qos {
            PublishQoS::AtMostOnce => {}
            PublishQoS::AtLeastOnce(id) => self.control(Packet::PubAck(self.response(id, code))),
            PublishQoS::ExactlyOnce(id) => {
                if self.version.is_v5() {
                    self.session.state.lock().inbound_qos2.remove(&id.get());
                }
                self.control(Packet::PubRec(self.response(id, code)));
            }
        }
    }

    /// Routes an accepted PUBLISH and acknowledges it: at once, or, when storage writes
    /// must be submitted first, in the returned continuation.
    fn route_publish(
        &mut self,
        publish: Publish,
        mut ops: Vec<roost_storage::Op>,
    ) -> Option<Later<'_>> {
        let qos = publish.qos;
        let mut properties = publish.properties;
        properties.topic_alias = None;
        let published = PublishedMessage {
            topic: publish.topic,
            payload: publish.payload,
            qos: qos.qos(),
            retain: publish.retain,
            properties,
        };
        // Acked durability: no copy leaves before the acknowledgement could (see `Hold`).
        let acked = self.ctx.journal.acked();
        let hold = (acked && qos != PublishQoS::AtMostOnce).then(Hold::pending);
        let outcome = pipeline::publish_message(
            &self.ctx,
            Some(&self.info),
            Some(self.client_id.clone()),
            published,
            &mut ops,
            &mut self.congested,
            hold.clone(),
        )
        .unwrap_or_default();
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
            PublishQoS::AtLeastOnce(id) => {
                self.control_after(Packet::PubAck(self.response(id, code)), gate);
            }
            PublishQoS::ExactlyOnce(id) => {
                if !code.is_success() && self.version.is_v5() {
                    // A refusing PUBREC ends the exchange (MQTT-4.3.3: no PUBREL follows).
                    self.session.state.lock().inbound_qos2.remove(&id.get());
                }
                self.control_after(Packet::PubRec(self.response(id, code)), gate);
            }
        }
    }

    /// The reason code refusing one filter, if the broker does not accept it.
    fn refuse_filter(
        &self,
        subscribe: &Subscribe,
        filter: &crate::topic::TopicFilter,
    ) -> Option<ReasonCode> {
        let caps = &self.ctx.settings.capabilities;
        if !self.ctx.settings.limits.topic_ok(filter.as_str()) {
            return Some(ReasonCode::TopicFilterInvalid);
        }
        let ctx = match filter.shared() {
            Ok(s) => s,
            Err(_) => return Some(ReasonCode::TopicFilterInvalid),
        };
        if ctx.is_some() && !caps.shared_subscriptions {
            return Some(ReasonCode::SharedSubscriptionsNotSupported);
        }
        if filter.has_wildcards() && !caps.wildcard_subscriptions {
            return Some(ReasonCode::WildcardSubscriptionsNotSupported);
        }
        if subscribe.properties.subscription_identifier.is_some() && !caps.subscription_identifiers
        {
            return Some(ReasonCode::SubscriptionIdentifiersNotSupported);
        }
        None
    }

    /// Applies one filter of a SUBSCRIBE; returns its SUBACK code. Retained messages it
    /// releases are appended to `retained`.
    async fn subscribe_one(
        &mut self,
        subscribe: &Subscribe,
        filter: &TopicFilter,
        mut options: crate::codec::SubscriptionOptions,
        retained: &mut Vec<RetainedBatch>,
    ) -> Result<ReasonCode, Exit> {
        if let Some(code) = self.refuse_filter(subscribe, filter) {
            return Ok(code);
        }
        // Kept for the subscription's life: its own copy, not a slice of the read buffer.
        let filter = filter.owned();
        let is_shared = matches!(filter.shared(), Ok(Some(_)));
        // MQTT-3.8.3-4 (v5): No Local on a shared subscription is a protocol error.
        if is_shared && options.no_local {
            return Err(Exit::Violation(Violation::NoLocalOnSharedSubscription));
        }
        // Granted QoS never exceeds what the broker offers (MQTT-3.2.2-10 still accepts
        // the request).
        options.qos = options.qos.min(self.ctx.settings.capabilities.maximum_qos);
        if !self.ctx.policy.open_access() {
            match self
                .ctx
                .policy
                .authorize_subscribe(&self.info, &filter, options.qos)
                .await
            {
                Ok(granted) => options.qos = granted,
                Err(code) => {
                    Metrics::inc(&self.ctx.metrics.messages_denied);
                    return Ok(code);
                }
            }
        }
        let record = SubscriptionRecord {
            options,
            id: subscribe.properties.subscription_identifier,
        };
        let Some(is_new) = self.record_subscription(&filter, record) else {
            return Ok(ReasonCode::QuotaExceeded);
        };
        // MQTT-3.8.4-3: a subscription to an existing filter replaces it.
        if self.ctx.router.subscribe(&self.session, &filter, record) {
            Metrics::inc(&self.ctx.metrics.subscriptions);
        }
        // Retain Handling (v5 §3.8.3.1); never for shared subscriptions (v5 §4.8.2).
        let send_retained = !is_shared
            && match options.retain_handling {
                RetainHandling::SendOnSubscribe => true,
                RetainHandling::SendIfNew => is_new,
                RetainHandling::DoNotSend => false,
            };
        if send_retained {
            // Sent as the writer has room, each checked against the authorizers then.
            let messages = self.ctx.router.retained_for(&filter);
            if !messages.is_empty() {
                retained.push(RetainedBatch {
                    messages: messages.into(),
                    qos: options.qos,
                    subscription_id: record.id,
                });
            }
        }
        let granted = options.qos;
        self.ctx.policy.hooks.each(&self.ctx.metrics, |h| {
            h.subscribed(&self.info, &filter, granted)
        });
        Ok(match options.qos {
            QoS::AtMostOnce => ReasonCode::Success,
            QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
            QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
        })
    }

    /// Adds (or replaces) the subscription in the session, within the per-client limits:
    /// whether it is new, or `None` if the limits refuse it (a replacement always fits).
    fn record_subscription(
        &self,
        filter: &TopicFilter,
        record: SubscriptionRecord,
    ) -> Option<bool> {
        let limits = &self.ctx.settings.limits;
        let mut st = self.session.state.lock();
        let exists = st.subscriptions.contains_key(filter);
        if !exists
            && (st.subscriptions.len() >= limits.max_subscriptions_per_client
                || st.subscription_bytes + crate::session::subscription_cost(filter)
                    > limits.max_subscription_bytes_per_client)
        {
            return None;
        }
        st.add_subscription(filter.clone(), record);
        Some(!exists)
    }

    async fn on_subscribe(&mut self, subscribe: Subscribe) -> Result<(), Exit> {
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        // A filter repeated in one SUBSCRIBE: the last one wins, as if each had been sent on
        // its own (MQTT-3.8.4-3), and it is applied once; every repeat gets its code.
        let mut last: HashMap<&TopicFilter, usize> =
            HashMap::with_capacity(subscribe.filters.len());
        for (i, (filter, _)) in subscribe.filters.iter().enumerate() {
            last.insert(filter, i);
        }
        let mut unique = 0usize;
        for (i, (filter, options)) in subscribe.filters.iter().enumerate() {
            if last.get(filter) != Some(&i) {
                // MQTT-3.8.3-4 holds for every repeat, applied or not.
                if options.no_local && matches!(filter.shared(), Ok(Some(_))) {
                    return Err(Exit::Violation(Violation::NoLocalOnSharedSubscription));
                }
                codes.push(ReasonCode::UnspecifiedError); // set below from its last repeat
                continue;
            }
            unique += 1;
            if unique > self.ctx.settings.limits.max_filters_per_subscribe {
                codes.push(ReasonCode::QuotaExceeded);
                continue;
            }
            let code = self
                .subscribe_one(&subscribe, filter, *options, &mut retained)
                .await?;
            codes.push(code);
        }
        for (i, (filter, _)) in subscribe.filters.iter().enumerate() {
            if let Some(&j) = last.get(filter) {
                if j != i {
                    codes[i] = codes[j];
                }
            }
        }
        // MQTT-3.8.4-1/-2: SUBACK with the same Packet Identifier, one code per filter in
        // order (MQTT-3.8.4-5, MQTT-3.9.3-1), before the retained messages it releases.
        // Acked durability: a persistent session's SUBACK waits for its stored record.
        let record = {
            let st = self.session.state.lock();
            self.ctx.journal.session_record(&self.client_id, &st)
        };
        let gate = self.store(record.into_iter().collect()).await;
        self.control_after(
            Packet::SubAck(SubAck {
                packet_id: subscribe.packet_id,
                properties: Default::default(),
                reason_codes: codes,
            }),
            gate,
        );
        for batch in retained {
            let cut = self
                .session
                .queue_retained(batch, &self.ctx.settings.limits);
            if cut > 0 {
                Metrics::add(&self.ctx.metrics.retained_not_sent, cut as u64);
                tracing::debug!(
                    cut,
                    "too many retained messages waiting for this session: not sent"
                );
            }
        }
        Ok(())
    }

    async fn on_unsubscribe(&self, unsubscribe: Unsubscribe) {
        let mut codes = Vec::with_capacity(unsubscribe.filters.len());
        for filter in &unsubscribe.filters {
            // MQTT-3.10.4-1: compared character by character with the session's filters.
            let removed = self
                .session
                .state
                .lock()
                .remove_subscription(filter)
                .is_some();
            if removed && self.ctx.router.unsubscribe(&self.session, filter) {
                Metrics::dec(&self.ctx.metrics.subscriptions);
            }
            if removed {
                self.ctx
                    .policy
                    .hooks
                    .each(&self.ctx.metrics, |h| h.unsubscribed(&self.info, filter));
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
        let record = {
            let st = self.session.state.lock();
            self.ctx.journal.session_record(&self.client_id, &st)
        };
        let gate = self.store(record.into_iter().collect()).await;
        // MQTT-3.10.4-4, -5: UNSUBACK with the same Packet Identifier, even if nothing was
        // removed.
        self.control_after(
            Packet::UnsubAck(UnsubAck {
                packet_id: unsubscribe.packet_id,
                properties: Default::default(),
                reason_codes,
            }),
            gate,
        );
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
                expiry.min(self.ctx.settings.capabilities.max_session_expiry_interval);
        }
        Err(Exit::Disconnected {
            // v5 0x04: Disconnect with Will Message.
            keep_will: d.reason_code == ReasonCode::DisconnectWithWillMessage,
        })
    }

    /// Re-authentication (v5 §4.12.1): AUTH 0x19 starts it, AUTH 0x18 continues it.
    async fn on_auth(&mut self, a: Auth) -> Result<(), Exit> {
        let (Some(mut exchange), Some(client)) = (self.enhanced.take(), self.client.take()) else {
            // Enhanced authentication was not used at CONNECT.
            return Err(Exit::Violation(Violation::AuthWithoutMethod));
        };
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
            &mut exchange,
            &client,
            a.properties.authentication_data,
            true,
        )
        .await;
        let method = exchange.method.clone();
        self.enhanced = Some(exchange);
        self.client = Some(client);
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
