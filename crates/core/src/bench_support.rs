//! Entry points for the criterion benchmarks of internal hot paths: routing one PUBLISH to
//! many sessions, and a session's queue. Hidden from the documentation and not part of the
//! stable API; `benches/router.rs` is the only user.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use crate::codec::{QoS, SubscriptionOptions};
use crate::context::Context;
use crate::message::{Delivery, Message};
use crate::session::{Link, LinkSignals, Session, SubscriptionRecord};
use crate::topic::{TopicFilter, TopicName};

/// A session with a connection attached (so QoS 0 is queued, as for an online client).
fn online_session(ctx: &Context, id: String) -> Arc<Session> {
    let session = ctx.sessions.create(id.into(), 0);
    session.state.lock().link = Some(Link {
        id: 1,
        signals: LinkSignals::new(),
        outbox: VecDeque::new(),
        pending: None,
        window: 32,
        resend: false,
        since_ms: 0,
        keep_alive: 0,
    });
    session
}

/// A broker's router with `subscribers` online sessions, each subscribed to one filter.
pub struct RouteBench {
    ctx: Arc<Context>,
    sessions: Vec<Arc<Session>>,
    message: Arc<Message>,
    fanout: crate::session::Fanout,
}

impl RouteBench {
    /// `subscribers` sessions subscribed at `qos` to `filter(i)` for session `i`; the message
    /// routed is a 64-byte PUBLISH to `topic` at `qos`. `None` if a filter or the topic is
    /// invalid.
    pub fn new(
        subscribers: usize,
        filter: impl Fn(usize) -> String,
        topic: &str,
        qos: QoS,
    ) -> Option<Self> {
        let ctx = Arc::new(crate::Broker::builder().into_context());
        let mut sessions = Vec::with_capacity(subscribers);
        for i in 0..subscribers {
            let session = online_session(&ctx, format!("sub-{i}"));
            let filter = TopicFilter::new(filter(i)).ok()?;
            let record = SubscriptionRecord {
                options: SubscriptionOptions::new(qos),
                id: None,
            };
            ctx.router.subscribe(&session, &filter, record);
            sessions.push(session);
        }
        let message = Message::new(
            TopicName::new(topic).ok()?,
            Bytes::from(vec![0x5A; 64]),
            qos,
            false,
        );
        Some(RouteBench {
            ctx,
            sessions,
            message: Arc::new(message),
            fanout: Default::default(),
        })
    }

    /// Routes the message once (trie match, one shared copy queued per matching session),
    /// then takes every copy off the queues again, as the writers would. Returns how many
    /// sessions got it.
    pub fn route_and_take(&mut self) -> usize {
        let mut ops = Vec::new();
        let n = crate::pipeline::publish(&self.ctx, &self.message, &mut ops, &mut self.fanout);
        drop(self.fanout.take_congested());
        self.fanout.wake_all();
        for session in &self.sessions {
            let mut st = session.state.lock();
            while st.pop().is_some() {}
        }
        n.delivered
    }
}

/// One online session's queue.
pub struct QueueBench {
    ctx: Arc<Context>,
    session: Arc<Session>,
    message: Arc<Message>,
}

impl QueueBench {
    /// A session with an empty queue and a 64-byte message to queue.
    pub fn new() -> Option<Self> {
        let ctx = Arc::new(crate::Broker::builder().into_context());
        let session = online_session(&ctx, "queue".into());
        let message = Message::new(
            TopicName::new("bench/queue").ok()?,
            Bytes::from(vec![0x5A; 64]),
            QoS::AtLeastOnce,
            false,
        );
        Some(QueueBench {
            ctx,
            session,
            message: Arc::new(message),
        })
    }

    /// Queues `n` deliveries one by one (each under the session lock, as publishers do),
    /// then takes them off in one pass (as a writer does). Returns how many were taken.
    pub fn push_pop(&self, n: usize) -> usize {
        let mut fanout = crate::session::Fanout::default();
        for _ in 0..n {
            let delivery = Delivery::new(
                Arc::clone(&self.message),
                QoS::AtLeastOnce,
                false,
                Vec::new(),
            );
            let _ = self
                .session
                .enqueue(delivery, &self.ctx.settings.limits, None, &mut fanout);
        }
        fanout.wake_all();
        let mut st = self.session.state.lock();
        let mut taken = 0;
        while st.pop().is_some() {
            taken += 1;
        }
        taken
    }
}
