//! SUBSCRIBE and UNSUBSCRIBE: the filters' checks and authorization, the session's
//! subscriptions and the router's, the retained messages a subscription releases, and the
//! SUBACK / UNSUBACK once a persistent session's record is durable.

use super::{Connection, Exit, Violation};
use crate::codec::{
    Packet, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::metrics::Metrics;
use crate::session::{RetainedBatch, SubscriptionRecord};
use crate::topic::TopicFilter;
use hashbrown::HashMap;

impl Connection {
    /// Sends `ack` (SUBACK, UNSUBACK) once the session's changed record is stored: under
    /// acked durability a persistent session's acknowledgement waits for it.
    async fn ack_after_session_record(&self, ack: Packet) {
        let record = {
            let st = self.session.state.lock();
            self.ctx
                .journal
                .session_record(&self.session.client_id, &st)
        };
        let gate = self.store(record.into_iter().collect()).await;
        self.control_after(ack, gate);
    }

    /// The reason code refusing one filter, if the broker does not accept it.
    fn refuse_filter(
        &self,
        subscribe: &Subscribe,
        filter: &crate::topic::TopicFilter,
    ) -> Option<ReasonCode> {
        let caps = &self.settings.capabilities;
        if !self.settings.limits.topic_ok(filter.as_str()) {
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
        if self.bridge && !is_shared {
            // Bridge semantics: what the bridge sent is not sent back to it (else two
            // brokers bridged both ways echo forever), and retained messages stay retained
            // on the other broker.
            options.no_local = true;
            options.retain_as_published = true;
        }
        // Granted QoS never exceeds what the broker offers (MQTT-3.2.2-10 still accepts
        // the request).
        options.qos = options.qos.min(self.settings.capabilities.maximum_qos);
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
        let limits = &self.settings.limits;
        let mut st = self.session.state.lock();
        let exists = st.subscriptions.contains_key(filter);
        if !exists
            && (st.subscriptions.len() >= limits.max_subscriptions_per_client
                || st.subscription_bytes as usize
                    + crate::session::subscription_cost(filter) as usize
                    > limits.max_subscription_bytes_per_client)
        {
            return None;
        }
        st.add_subscription(filter.clone(), record);
        Some(!exists)
    }

    pub(super) async fn on_subscribe(&mut self, subscribe: Subscribe) -> Result<(), Exit> {
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
            if unique > self.settings.limits.max_filters_per_subscribe {
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
        self.ack_after_session_record(Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            properties: Default::default(),
            reason_codes: codes,
        }))
        .await;
        for batch in retained {
            let cut = self.session.queue_retained(batch, &self.settings.limits);
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

    pub(super) async fn on_unsubscribe(&self, unsubscribe: Unsubscribe) {
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
        // MQTT-3.10.4-4, -5: UNSUBACK with the same Packet Identifier, even if nothing was
        // removed.
        self.ack_after_session_record(Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            properties: Default::default(),
            reason_codes,
        }))
        .await;
    }
}
