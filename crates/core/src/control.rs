//! The control API of an embedded broker: list and inspect sessions, disconnect clients,
//! discard sessions, subscribe and unsubscribe on a client's behalf, publish as the broker,
//! and list, read and clear retained messages — all on [`BrokerHandle`].
//!
//! These calls are the embedding application's own: nothing authorizes them (it runs the
//! broker). Listings are paged, in client identifier or topic order, so no call holds more
//! than a page however many sessions or retained messages there are.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use roost_storage::Op;

use crate::codec::{QoS, ReasonCode, RetainHandling, SubscriptionOptions};
use crate::context::Context;
use crate::gate::Gate;
use crate::handle::BrokerHandle;
use crate::message::Message;
use crate::metrics::Metrics;
use crate::pipeline;
use crate::plugin::{ClientInfo, PublishedMessage};
use crate::session::{RetainedBatch, Session, SubscriptionRecord};
use crate::topic::{TopicError, TopicFilter, TopicName};

/// Why a control call could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No session has this client identifier.
    #[error("no session for this client identifier")]
    NoSuchSession,
    /// A topic name or filter is not valid.
    #[error("invalid topic: {0}")]
    InvalidTopic(#[from] TopicError),
    /// The session holds as many subscriptions (or subscription bytes) as the limits allow.
    #[error("the session's subscription limits are reached")]
    QuotaExceeded,
    /// The broker is shutting down.
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// The store failed to write what the call changed.
    #[error("the change could not be stored")]
    Storage,
    /// A publish hook refused the message ([`HookAction::Refuse`](crate::plugin::HookAction::Refuse)).
    #[error("a hook refused the message: {0}")]
    Refused(crate::codec::ReasonCode),
}

impl From<std::convert::Infallible> for ControlError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

/// One session as the control API shows it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionInfo {
    /// Client identifier.
    pub client_id: String,
    /// The client as of its latest connection: identity, protocol level, listener, peer
    /// (`None` for a session restored from storage whose client has not come back).
    pub client: Option<Arc<ClientInfo>>,
    /// A connection is attached now.
    pub connected: bool,
    /// When the current connection attached.
    pub connected_since: Option<SystemTime>,
    /// The current connection's Keep Alive (`None`: none, or not connected).
    pub keep_alive: Option<Duration>,
    /// Session Expiry Interval in seconds (`u32::MAX`: never).
    pub expiry_interval: u32,
    /// Messages waiting to be sent.
    pub queued: usize,
    /// Bytes those hold.
    pub queued_bytes: usize,
    /// Messages sent and not yet acknowledged.
    pub inflight: usize,
    /// Bytes those hold.
    pub inflight_bytes: usize,
    /// Subscriptions with their options (filled by [`BrokerHandle::session`]; a listing
    /// gives only [`SessionInfo::subscription_count`]).
    pub subscriptions: Vec<(TopicFilter, SubscriptionOptions)>,
    /// How many subscriptions it has.
    pub subscription_count: usize,
}

impl SessionInfo {
    fn of(session: &Session, with_subscriptions: bool) -> Self {
        let st = session.state.lock();
        let link = st.link.as_ref();
        let inflight_bytes = st
            .inflight
            .entries()
            .map(|e| e.delivery.message.size())
            .sum();
        SessionInfo {
            client_id: session.client_id.to_string(),
            client: st.client.clone(),
            connected: link.is_some(),
            connected_since: link
                .map(|l| std::time::UNIX_EPOCH + std::time::Duration::from_millis(l.since_ms)),
            keep_alive: link
                .filter(|l| l.keep_alive > 0)
                .map(|l| Duration::from_secs(u64::from(l.keep_alive))),
            expiry_interval: st.expiry_interval,
            queued: st.queue.len(),
            // `SessionState::queued_bytes` counts both (the limit holds them together).
            queued_bytes: st.queued_bytes.saturating_sub(inflight_bytes),
            inflight: st.inflight.len(),
            inflight_bytes,
            subscriptions: if with_subscriptions {
                let mut subs: Vec<_> = st
                    .subscriptions
                    .iter()
                    .map(|(f, r)| (f.clone(), r.options))
                    .collect();
                subs.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
                subs
            } else {
                Vec::new()
            },
            subscription_count: st.subscriptions.len(),
        }
    }
}

/// One page of retained messages ([`BrokerHandle::retained`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RetainedPage {
    /// The messages, in topic order.
    pub messages: Vec<Arc<Message>>,
    /// Pass this as `after` for the next page; `None` when this was the last.
    pub next: Option<TopicName>,
}

/// Waits until `gate`'s writes are durable; `Err` if one failed.
async fn durable(ctx: &Context, gate: Gate) -> Result<(), ControlError> {
    let Some(p) = ctx.journal.persistence() else {
        return Ok(());
    };
    let mut watch = p.watch();
    while !p.settled(gate) {
        if watch.changed().await.is_err() {
            return Err(ControlError::ShuttingDown);
        }
    }
    if p.failed(gate) {
        return Err(ControlError::Storage);
    }
    Ok(())
}

impl BrokerHandle {
    fn live(&self) -> Result<&Arc<Context>, ControlError> {
        if self.is_shutting_down() {
            return Err(ControlError::ShuttingDown);
        }
        Ok(&self.ctx)
    }

    /// Up to `limit` sessions whose client identifiers come after `after`, in client
    /// identifier order (subscriptions counted, not listed).
    pub fn sessions(&self, after: Option<&str>, limit: usize) -> Vec<SessionInfo> {
        self.ctx
            .sessions
            .page(after, limit)
            .iter()
            .map(|s| SessionInfo::of(s, false))
            .collect()
    }

    /// The session of `client_id`, with its subscriptions.
    pub fn session(&self, client_id: &str) -> Option<SessionInfo> {
        self.ctx
            .sessions
            .get(client_id)
            .map(|s| SessionInfo::of(&s, true))
    }

    /// Disconnects `client_id`'s connection: a v5 client gets DISCONNECT 0x98
    /// Administrative action. Its will is published as for any connection the server
    /// closes (MQTT-3.1.2-8), and its session stays (or ends) as its expiry says. `false`
    /// if it is not connected.
    pub fn disconnect_client(&self, client_id: &str) -> bool {
        let Some(session) = self.ctx.sessions.get(client_id) else {
            return false;
        };
        match session.link_signals() {
            Some(signals) => {
                signals.close(crate::session::CloseReason::Disconnect(
                    ReasonCode::AdministrativeAction,
                ));
                true
            }
            None => false,
        }
    }

    /// Ends `client_id`'s session now, as if it had expired: its queue and subscriptions
    /// go; a connected client is disconnected (0x98) and its will published; a will
    /// waiting out its delay is published now. `false` if there is no such session.
    pub fn discard_session(&self, client_id: &str) -> bool {
        let ctx = &self.ctx;
        let Some((will, link)) = ctx
            .sessions
            .discard_now(client_id, &ctx.router, &ctx.journal)
        else {
            return false;
        };
        if let Some(signals) = link {
            signals.close(crate::session::CloseReason::Disconnect(
                ReasonCode::AdministrativeAction,
            ));
        }
        if let Some(will) = will {
            pipeline::publish_will(ctx, will);
        }
        ctx.policy
            .hooks
            .each(&ctx.metrics, |h| h.session_expired(client_id));
        true
    }

    /// Subscribes `client_id`'s session to `filter` as if the client had (authorizers are
    /// not asked: this is the application's call); retained messages follow its Retain
    /// Handling. Returns the QoS granted (capped by the broker's Maximum QoS). Under acked
    /// durability a persistent session's record is stored before this returns.
    pub async fn subscribe_for(
        &self,
        client_id: &str,
        filter: impl TryInto<TopicFilter, Error = impl Into<ControlError>>,
        mut options: SubscriptionOptions,
    ) -> Result<QoS, ControlError> {
        let ctx = self.live()?;
        let filter = filter.try_into().map_err(Into::into)?.owned();
        let session = ctx
            .sessions
            .get(client_id)
            .ok_or(ControlError::NoSuchSession)?;
        let settings = ctx.connection_settings();
        options.qos = options.qos.min(settings.capabilities.maximum_qos);
        let record = SubscriptionRecord { options, id: None };
        let (is_new, stored, client) = {
            let mut st = session.state.lock();
            if st.ended {
                return Err(ControlError::NoSuchSession);
            }
            let limits = &settings.limits;
            let exists = st.subscriptions.contains_key(&filter);
            if !exists
                && (st.subscriptions.len() >= limits.max_subscriptions_per_client
                    || st.subscription_bytes as usize
                        + crate::session::subscription_cost(&filter) as usize
                        > limits.max_subscription_bytes_per_client)
            {
                return Err(ControlError::QuotaExceeded);
            }
            st.add_subscription(filter.clone(), record);
            let stored = ctx.journal.session_record(client_id, &st);
            (!exists, stored, st.client.clone())
        };
        if ctx.router.subscribe(&session, &filter, record) {
            Metrics::inc(&ctx.metrics.subscriptions);
        }
        let gate = ctx.journal.store_gated(stored.into_iter().collect());
        let shared = matches!(filter.shared(), Ok(Some(_)));
        let send_retained = !shared
            && match options.retain_handling {
                RetainHandling::SendOnSubscribe => true,
                RetainHandling::SendIfNew => is_new,
                RetainHandling::DoNotSend => false,
            };
        if send_retained {
            let messages = ctx.router.retained_for(&filter);
            if !messages.is_empty() {
                let batch = RetainedBatch {
                    messages: messages.into(),
                    qos: options.qos,
                    subscription_id: None,
                };
                let cut = session.queue_retained(batch, &settings.limits);
                Metrics::add(&ctx.metrics.retained_not_sent, cut as u64);
            }
        }
        if let Some(client) = client {
            let granted = options.qos;
            ctx.policy
                .hooks
                .each(&ctx.metrics, |h| h.subscribed(&client, &filter, granted));
        }
        durable(ctx, gate).await?;
        Ok(options.qos)
    }

    /// Removes `client_id`'s subscription to `filter`; `Ok(false)` if it had none. Under
    /// acked durability a persistent session's record is stored before this returns.
    pub async fn unsubscribe_for(
        &self,
        client_id: &str,
        filter: impl TryInto<TopicFilter, Error = impl Into<ControlError>>,
    ) -> Result<bool, ControlError> {
        let ctx = self.live()?;
        let filter = filter.try_into().map_err(Into::into)?;
        let session = ctx
            .sessions
            .get(client_id)
            .ok_or(ControlError::NoSuchSession)?;
        let (removed, stored, client) = {
            let mut st = session.state.lock();
            let removed = st.remove_subscription(&filter).is_some();
            let stored = ctx.journal.session_record(client_id, &st);
            (removed, stored, st.client.clone())
        };
        if !removed {
            return Ok(false);
        }
        if ctx.router.unsubscribe(&session, &filter) {
            Metrics::dec(&ctx.metrics.subscriptions);
        }
        if let Some(client) = client {
            ctx.policy
                .hooks
                .each(&ctx.metrics, |h| h.unsubscribed(&client, &filter));
        }
        durable(ctx, ctx.journal.store_gated(stored.into_iter().collect())).await?;
        Ok(true)
    }

    /// Publishes `message` as the broker (no client: the publish hooks see it with
    /// `client` `None`, authorizers are not asked). A retained one is retained. Returns
    /// once it is routed and, under acked durability, once what it changed in storage
    /// (retained message, persistent sessions' queues) is durable.
    pub async fn publish(&self, message: Message) -> Result<(), ControlError> {
        let ctx = self.live()?;
        let mut published =
            PublishedMessage::new(message.topic, message.payload, message.qos, message.retain);
        published.properties = message.properties;
        let mut ops: Vec<Op> = Vec::new();
        let mut fanout = crate::session::Fanout::default();
        let routed = pipeline::publish_message(
            ctx,
            None,
            None,
            published,
            &mut ops,
            &mut fanout,
            crate::message::Arrival::default(),
        );
        fanout.wake_all();
        // Queued copies of persistent sessions were stored by the queues themselves.
        let queued = match routed {
            Ok(outcome) => outcome.gate,
            Err(pipeline::Stopped::Refused(code)) => return Err(ControlError::Refused(code)),
            Err(pipeline::Stopped::Dropped) => Gate::NONE,
        };
        durable(ctx, ctx.journal.store_gated(ops).join(queued)).await
    }

    /// One page of the retained messages matching `filter`: up to `limit` whose topics
    /// come after `after`, in topic order. Start with `after` `None`, then pass
    /// [`RetainedPage::next`].
    pub fn retained(
        &self,
        filter: impl TryInto<TopicFilter, Error = impl Into<ControlError>>,
        after: Option<&TopicName>,
        limit: usize,
    ) -> Result<RetainedPage, ControlError> {
        let filter = filter.try_into().map_err(Into::into)?;
        let (messages, next) =
            self.ctx
                .router
                .retained_page(&filter, after.map(TopicName::as_str), limit);
        Ok(RetainedPage { messages, next })
    }

    /// The retained message of `topic`, if it has one.
    pub fn retained_message(
        &self,
        topic: impl TryInto<TopicName, Error = impl Into<ControlError>>,
    ) -> Result<Option<Arc<Message>>, ControlError> {
        let topic = topic.try_into().map_err(Into::into)?;
        let filter = TopicFilter::new(topic.as_str())?;
        Ok(self.ctx.router.retained_page(&filter, None, 1).0.pop())
    }

    /// Clears every retained message matching `filter` (a page at a time, as a zero-byte
    /// retained PUBLISH would, but sending nothing to subscribers); returns how many.
    pub async fn clear_retained(
        &self,
        filter: impl TryInto<TopicFilter, Error = impl Into<ControlError>>,
    ) -> Result<usize, ControlError> {
        let ctx = self.live()?;
        let filter = filter.try_into().map_err(Into::into)?;
        let mut cleared = 0;
        let mut gate = Gate::NONE;
        let mut after: Option<TopicName> = None;
        loop {
            let page =
                ctx.router
                    .retained_page(&filter, after.as_ref().map(TopicName::as_str), 1000);
            let (messages, next) = page;
            for m in &messages {
                let empty = Arc::new(Message::new(
                    m.topic.clone(),
                    bytes::Bytes::new(),
                    QoS::AtMostOnce,
                    true,
                ));
                let mut ops = Vec::new();
                pipeline::retain(ctx, &empty, &mut ops);
                gate = gate.join(ctx.journal.store_gated(ops));
                cleared += 1;
            }
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        durable(ctx, gate).await?;
        Ok(cleared)
    }
}
