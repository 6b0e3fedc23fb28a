//! The router: matches each PUBLISH once against the subscription trie, then hands one
//! shared message to every matching session's queue.
//!
//! The trie lock is held only while collecting targets; fan-out happens after it is
//! released, and each session's own lock is held only to push one queue entry. A session
//! with several matching subscriptions gets one copy at the highest granted QoS, carrying
//! every matching Subscription Identifier (MQTT-3.3.5-1 for 3.1.1; MQTT-3.3.4-2/-3 for v5).

mod retained;

use std::sync::Arc;

use parking_lot::RwLock;

pub(crate) use retained::RetainChange;
use retained::RetainedStore;

use crate::codec::QoS;
use crate::config::Limits;
use crate::message::{Delivery, Message};
use crate::metrics::Metrics;
use crate::session::{EnqueueError, Session, SubscriptionRecord};
use crate::topic::{SubscriptionTrie, TopicFilter};

/// One subscription in the trie.
#[derive(Debug, Clone)]
pub(crate) struct SubEntry {
    pub(crate) session: Arc<Session>,
    pub(crate) record: SubscriptionRecord,
}

/// Subscriptions and retained messages of one broker.
#[derive(Debug, Default)]
pub(crate) struct Router {
    subs: RwLock<SubscriptionTrie<u64, SubEntry>>,
    retained: RwLock<RetainedStore>,
}

impl Router {
    /// Adds or replaces `session`'s subscription to `filter`. True if it is new.
    pub(crate) fn subscribe(
        &self,
        session: &Arc<Session>,
        filter: &TopicFilter,
        record: SubscriptionRecord,
    ) -> bool {
        let entry = SubEntry {
            session: Arc::clone(session),
            record,
        };
        self.subs
            .write()
            .insert(filter, session.uid, entry)
            .is_none()
    }

    /// Removes `session`'s subscription to `filter`. True if there was one.
    pub(crate) fn unsubscribe(&self, session: &Session, filter: &TopicFilter) -> bool {
        self.subs.write().remove(filter, &session.uid).is_some()
    }

    /// Stores or clears a retained message.
    pub(crate) fn retain(&self, message: Arc<Message>, limits: &Limits) -> RetainChange {
        self.retained.write().apply(message, limits.max_retained)
    }

    /// Number of retained topics.
    pub(crate) fn retained_len(&self) -> usize {
        self.retained.read().len()
    }

    /// The retained messages matching `filter`.
    pub(crate) fn retained_for(&self, filter: &TopicFilter) -> Vec<Arc<Message>> {
        let mut out = Vec::new();
        self.retained.read().matches(filter, &mut out);
        out
    }

    /// Delivers `message` to every matching session; returns how many sessions got it.
    pub(crate) fn route(
        &self,
        message: &Arc<Message>,
        limits: &Limits,
        metrics: &Metrics,
    ) -> usize {
        let mut targets: Vec<SubEntry> = Vec::new();
        self.subs.read().for_each_match(&message.topic, |_, entry| {
            // No Local (v5 §3.8.3.1): not back to the publisher itself.
            let own = entry.record.options.no_local
                && message.publisher.as_ref() == Some(&entry.session.client_id);
            if !own {
                targets.push(entry.clone());
            }
        });
        if targets.len() > 1 {
            targets.sort_by_key(|t| Arc::as_ptr(&t.session));
        }
        let mut delivered = 0;
        let mut rest = &targets[..];
        while let Some(first) = rest.first() {
            let n = rest
                .iter()
                .take_while(|t| Arc::ptr_eq(&t.session, &first.session))
                .count();
            let (group, tail) = rest.split_at(n);
            rest = tail;
            let granted = group
                .iter()
                .map(|t| t.record.options.qos)
                .max()
                .unwrap_or(QoS::AtMostOnce);
            let delivery = Delivery {
                message: Arc::clone(message),
                qos: message.qos.min(granted),
                // MQTT-3.3.1-9: 0 for established subscriptions, unless Retain As Published.
                retain: message.retain
                    && group.iter().any(|t| t.record.options.retain_as_published),
                subscription_ids: group.iter().filter_map(|t| t.record.id).collect(),
            };
            match first.session.enqueue(delivery, limits) {
                Ok(()) => delivered += 1,
                Err(EnqueueError::QueueFull) => {
                    Metrics::inc(&metrics.messages_dropped);
                    tracing::debug!(client_id = %first.session.client_id, topic = %message.topic, "queue full: message dropped");
                }
                Err(EnqueueError::Offline) => Metrics::inc(&metrics.messages_dropped_offline),
                Err(EnqueueError::Ended) => {}
            }
        }
        delivered
    }
}
