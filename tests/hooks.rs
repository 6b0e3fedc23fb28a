//! Hooks: events are observed, messages can be changed or dropped before routing, and a
//! hook that panics takes nothing down.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use roost::codec::{Connect, Packet, ProtocolVersion, PublishQoS};
use roost::plugin::{
    ClientInfo, DisconnectReason, DropReason, HookAction, Hooks, PublishedMessage,
};
use roost::{Broker, BrokerHandle, Limits, QoS, TopicFilter, TopicName};
use support::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
}

impl Recorder {
    fn push(&self, e: String) {
        self.events.lock().push(e);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.events.lock())
    }
}

impl Hooks for Recorder {
    fn client_connected(&self, c: &ClientInfo) {
        self.push(format!("connected {}", c.client_id));
    }
    fn client_disconnected(&self, c: &ClientInfo, reason: DisconnectReason) {
        self.push(format!("disconnected {} {reason:?}", c.client_id));
    }
    fn subscribed(&self, c: &ClientInfo, f: &TopicFilter, q: QoS) {
        self.push(format!("subscribed {} {f} {}", c.client_id, q.as_u8()));
    }
    fn unsubscribed(&self, c: &ClientInfo, f: &TopicFilter) {
        self.push(format!("unsubscribed {} {f}", c.client_id));
    }
    fn message_delivered(&self, id: &str, m: &roost::Message, q: QoS) {
        self.push(format!("delivered {id} {} {}", m.topic, q.as_u8()));
    }
    fn message_acknowledged(&self, id: &str, m: &roost::Message) {
        self.push(format!("acknowledged {id} {}", m.topic));
    }
    fn message_dropped(&self, id: &str, m: &roost::Message, r: DropReason) {
        self.push(format!("dropped {id} {} {r:?}", m.topic));
    }
    fn session_created(&self, id: &str) {
        self.push(format!("session created {id}"));
    }
    fn session_resumed(&self, id: &str) {
        self.push(format!("session resumed {id}"));
    }
    fn retained_set(&self, m: &roost::Message) {
        self.push(format!("retained {}", m.topic));
    }
    fn retained_cleared(&self, t: &TopicName) {
        self.push(format!("retained cleared {t}"));
    }
}

/// Rewrites `raw/...` to `clean/...` with an upper-cased payload, drops `spam/...`.
struct Rewriter;

impl Hooks for Rewriter {
    fn message_published(&self, _c: Option<&ClientInfo>, m: &mut PublishedMessage) -> HookAction {
        if m.topic.as_str().starts_with("spam/") {
            return HookAction::Drop;
        }
        if let Some(rest) = m.topic.as_str().strip_prefix("raw/") {
            if let Ok(t) = TopicName::new(format!("clean/{rest}")) {
                m.topic = t;
            }
            m.payload = Bytes::from(m.payload.to_ascii_uppercase());
        }
        HookAction::Continue
    }
}

/// Panics on every event.
struct Broken;

impl Hooks for Broken {
    fn client_connected(&self, _: &ClientInfo) {
        panic!("hook bug");
    }
    fn message_published(&self, _: Option<&ClientInfo>, _: &mut PublishedMessage) -> HookAction {
        panic!("hook bug");
    }
    fn message_delivered(&self, _: &str, _: &roost::Message, _: QoS) {
        panic!("hook bug");
    }
}

async fn broker(hooks: Vec<Arc<dyn Hooks>>, limits: Limits) -> BrokerHandle {
    let mut b = Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .limits(limits)
        .sys_interval(None);
    for h in hooks {
        b = b.hooks(h);
    }
    b.build().start().await.expect("starts")
}

#[tokio::test]
async fn lifecycle_and_message_events_are_observed() {
    let rec = Arc::new(Recorder::default());
    let broker = broker(vec![rec.clone()], Limits::default()).await;
    let mut sub = Raw::connect(&broker, V5, "s").await;
    sub.subscribe(1, "t/#", QoS::AtLeastOnce).await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    p.publish("t/1", b"x", PublishQoS::AtLeastOnce(pid(1)), true)
        .await;
    let m = sub.recv_publish().await;
    sub.ack(&m).await;
    sub.ping().await;
    sub.send(Packet::Unsubscribe(roost::codec::Unsubscribe {
        packet_id: pid(2),
        properties: Default::default(),
        filters: vec![filter("t/#")],
    }))
    .await;
    sub.recv().await;
    sub.send(Packet::Disconnect(Default::default())).await;
    sub.closed_promptly().await;
    let events = rec.take();
    for want in [
        "session created s",
        "connected s",
        "subscribed s t/# 1",
        "retained t/1",
        "delivered s t/1 1",
        "acknowledged s t/1",
        "unsubscribed s t/#",
        "disconnected s Client(Success)",
    ] {
        assert!(
            events.iter().any(|e| e == want),
            "missing {want:?} in {events:#?}"
        );
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn drops_are_reported_with_their_reason() {
    let rec = Arc::new(Recorder::default());
    let broker = broker(
        vec![rec.clone()],
        Limits::default().with_max_queued_messages(1),
    )
    .await;
    let mut c = Connect::new(V5, "away");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(60);
    let (mut sub, _) = Raw::connect_with(&broker, c).await;
    sub.subscribe(1, "q", QoS::AtLeastOnce).await;
    sub.send(Packet::Disconnect(Default::default())).await;
    sub.closed_promptly().await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    p.publish("q", b"1", PublishQoS::AtLeastOnce(pid(1)), false)
        .await;
    p.publish("q", b"2", PublishQoS::AtLeastOnce(pid(2)), false)
        .await;
    p.publish("q", b"3", PublishQoS::AtMostOnce, false).await;
    p.ping().await;
    let events = rec.take();
    assert!(
        events.contains(&"dropped away q QueueFull".to_string()),
        "{events:#?}"
    );
    assert!(
        events.contains(&"dropped away q Offline".to_string()),
        "{events:#?}"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn publish_hooks_rewrite_and_drop_messages() {
    let broker = broker(vec![Arc::new(Rewriter)], Limits::default()).await;
    let mut sub = Raw::connect(&broker, V5, "s").await;
    sub.subscribe(1, "#", QoS::AtMostOnce).await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    p.publish("spam/x", b"buy now", PublishQoS::AtLeastOnce(pid(1)), false)
        .await;
    // The publisher is still acknowledged.
    assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    p.publish("raw/temp", b"hot", PublishQoS::AtMostOnce, false)
        .await;
    let got = sub.recv_publish().await;
    assert_eq!(got.topic, topic("clean/temp"));
    assert_eq!(&got.payload[..], b"HOT");
    assert!(sub.ping().await.is_empty(), "spam was dropped");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_panicking_hook_takes_nothing_down() {
    let rec = Arc::new(Recorder::default());
    let broker = broker(vec![Arc::new(Broken), rec.clone()], Limits::default()).await;
    let mut sub = Raw::connect(&broker, V5, "s").await;
    sub.subscribe(1, "t", QoS::AtMostOnce).await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    p.publish("t", b"still delivered", PublishQoS::AtMostOnce, false)
        .await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"still delivered");
    assert!(broker.metrics().plugin_failures >= 3);
    // Later hooks still ran.
    assert!(rec.take().iter().any(|e| e == "connected s"));
    broker.shutdown().await;
}
