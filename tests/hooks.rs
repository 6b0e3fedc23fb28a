//! Hooks: events are observed, messages can be changed or dropped before routing, and a
//! hook that panics takes nothing down.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use roost::codec::{Connect, Packet, ProtocolVersion, PublishQoS};
use roost::plugin::{
    ClientInfo, DeliveryTransform, DisconnectReason, DropReason, HookAction, Hooks, PluginState,
    PublishedMessage, Transformed,
};
use roost::{Broker, BrokerHandle, Limits, QoS, ReasonCode, TopicFilter, TopicName};
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

/// Refuses `deny/...` with 0x97 Quota exceeded and `bad/...` with a success code (sent as
/// 0x80); drops the will of client `no-will`; refuses the will of `bad-will` with 0x99.
struct Refuser;

impl Hooks for Refuser {
    fn message_published(&self, _c: Option<&ClientInfo>, m: &mut PublishedMessage) -> HookAction {
        if m.topic.as_str().starts_with("deny/") {
            HookAction::Refuse(ReasonCode::QuotaExceeded)
        } else if m.topic.as_str().starts_with("bad/") {
            HookAction::Refuse(ReasonCode::Success)
        } else {
            HookAction::Continue
        }
    }
    fn will_received(&self, c: &ClientInfo, w: &mut PublishedMessage) -> HookAction {
        match &*c.client_id {
            "no-will" => HookAction::Drop,
            "bad-will" => HookAction::Refuse(ReasonCode::PayloadFormatInvalid),
            _ => {
                w.payload = Bytes::from_static(b"rewritten will");
                HookAction::Continue
            }
        }
    }
}

/// `HookAction::Refuse`: v5 publishers get the code on PUBACK/PUBREC (an error code; a
/// success code becomes 0x80), 3.1.1 publishers a plain acknowledgement (MQTT-3.3.5-2),
/// and nothing is routed; the control API's publish reports the refusal.
#[tokio::test]
async fn refusing_hooks_answer_with_their_code_and_route_nothing() {
    let broker = broker(vec![Arc::new(Refuser)], Limits::default()).await;
    let mut sub = Raw::connect(&broker, V5, "s").await;
    sub.subscribe(1, "#", QoS::AtMostOnce).await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    p.publish("deny/a", b"x", PublishQoS::AtLeastOnce(pid(1)), false)
        .await;
    match p.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason_code, ReasonCode::QuotaExceeded),
        other => panic!("{other:?}"),
    }
    p.publish("bad/a", b"x", PublishQoS::ExactlyOnce(pid(2)), false)
        .await;
    match p.recv().await {
        Some(Packet::PubRec(r)) => assert_eq!(r.reason_code, ReasonCode::UnspecifiedError),
        other => panic!("{other:?}"),
    }
    // The refusing PUBREC ended the exchange: the id is free for a new message.
    p.publish("ok/a", b"fine", PublishQoS::ExactlyOnce(pid(2)), false)
        .await;
    match p.recv().await {
        Some(Packet::PubRec(r)) => assert!(r.reason_code.is_success()),
        other => panic!("{other:?}"),
    }
    let mut old = Raw::connect(&broker, ProtocolVersion::V311, "old").await;
    old.publish("deny/b", b"x", PublishQoS::AtLeastOnce(pid(1)), false)
        .await;
    match old.recv().await {
        Some(Packet::PubAck(a)) => assert!(a.reason_code.is_success()),
        other => panic!("{other:?}"),
    }
    let err = broker
        .publish(roost::Message::new(
            topic("deny/c"),
            Bytes::from_static(b"x"),
            QoS::AtMostOnce,
            false,
        ))
        .await
        .expect_err("refused");
    assert!(matches!(
        err,
        roost::ControlError::Refused(ReasonCode::QuotaExceeded)
    ));
    assert_eq!(sub.recv_publish().await.topic, topic("ok/a"));
    assert!(sub.ping().await.is_empty(), "nothing refused was routed");
    assert_eq!(broker.metrics().messages_refused_by_hooks, 4);
    broker.shutdown().await;
}

/// `Hooks::will_received`: a will can be changed (and is published as changed), dropped,
/// or refused with CONNACK.
#[tokio::test]
async fn will_hooks_change_drop_or_refuse_wills() {
    let broker = broker(vec![Arc::new(Refuser)], Limits::default()).await;
    let mut sub = Raw::connect(&broker, V5, "s").await;
    sub.subscribe(1, "w/#", QoS::AtMostOnce).await;
    let with_will = |id: &str| {
        let mut c = Connect::new(V5, id);
        c.will = Some(roost::codec::LastWill {
            topic: topic(&format!("w/{id}")),
            payload: Bytes::from_static(b"original"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Default::default(),
        });
        c
    };
    let (_r, ack) = Raw::connect_with(&broker, with_will("bad-will")).await;
    assert_eq!(connack(ack).reason_code, ReasonCode::PayloadFormatInvalid);
    let (r, ack) = Raw::connect_with(&broker, with_will("no-will")).await;
    assert!(connack(ack).reason_code.is_success());
    drop(r);
    let (r, ack) = Raw::connect_with(&broker, with_will("kept")).await;
    assert!(connack(ack).reason_code.is_success());
    drop(r);
    let got = sub.recv_publish().await;
    assert_eq!(
        got.topic,
        topic("w/kept"),
        "the dropped will was not published"
    );
    assert_eq!(&got.payload[..], b"rewritten will");
    broker.shutdown().await;
}

/// Reverses the payload for `rev`, withholds everything from `none`, doubles the payload
/// for `small` (whose Maximum Packet Size, 20, fits the 18-byte PUBLISH of `abcdefghij` at
/// QoS 1 but not the 28 bytes of its doubled form).
struct PerClient;

impl DeliveryTransform for PerClient {
    fn transform(&self, c: &ClientInfo, m: &roost::Message) -> Transformed {
        let mut payload = m.payload.to_vec();
        match &*c.client_id {
            "rev" => payload.reverse(),
            "none" => return Transformed::Withheld,
            "small" => payload.extend_from_slice(&m.payload),
            _ => return Transformed::Unchanged,
        }
        Transformed::Replaced {
            payload: Bytes::from(payload),
            properties: m.properties.clone(),
        }
    }
}

/// `DeliveryTransform`: one subscriber's copy changes, the others' do not; a withheld
/// delivery is dropped and counted, and a form over the client's Maximum Packet Size too.
#[tokio::test]
async fn delivery_transforms_change_one_subscribers_copy() {
    let broker = Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .sys_interval(None)
        .delivery_transform(Arc::new(PerClient))
        .build()
        .start()
        .await
        .expect("starts");
    let mut rev = Raw::connect(&broker, V5, "rev").await;
    let mut plain = Raw::connect(&broker, V5, "plain").await;
    let mut none = Raw::connect(&broker, V5, "none").await;
    let mut c = Connect::new(V5, "small");
    c.properties.maximum_packet_size = std::num::NonZeroU32::new(20);
    let (mut small, _) = Raw::connect_with(&broker, c).await;
    for s in [&mut rev, &mut plain, &mut none, &mut small] {
        s.subscribe(1, "t", QoS::AtLeastOnce).await;
    }
    let mut p = Raw::connect(&broker, V5, "p").await;
    p.publish("t", b"abcdefghij", PublishQoS::AtLeastOnce(pid(1)), false)
        .await;
    assert_eq!(&rev.next_message().await.payload[..], b"jihgfedcba");
    assert_eq!(&plain.next_message().await.payload[..], b"abcdefghij");
    p.publish("t", b"short", PublishQoS::AtMostOnce, false)
        .await;
    assert_eq!(&small.next_message().await.payload[..], b"shortshort");
    assert!(none.ping().await.is_empty(), "withheld");
    let m = broker.metrics();
    assert_eq!(m.messages_withheld, 2);
    assert_eq!(
        m.messages_dropped_too_large, 1,
        "abcdefghij twice is a 28-byte PUBLISH, over 20"
    );
    broker.shutdown().await;
}

/// `PluginState`: values put while one broker runs are in its store when the next one
/// starts on it; a state of its own name only.
#[tokio::test]
async fn plugin_state_lives_in_the_brokers_store() {
    let store: Arc<dyn roost::storage::Storage> = Arc::new(roost::storage::MemoryStorage::new());
    let start = |state: PluginState| {
        Broker::builder()
            .storage(Arc::clone(&store), roost::Durability::Acked)
            .plugin_state(state)
            .sys_interval(None)
            .build()
            .start()
    };
    let a = PluginState::new("a").expect("name");
    let broker = start(a.clone()).await.expect("starts");
    assert!(a.is_stored());
    a.put(b"k", b"v1");
    a.put(b"gone", b"x");
    a.remove(b"gone");
    broker.shutdown().await;
    let again = PluginState::new("a").expect("name");
    let other = PluginState::new("b").expect("name");
    let broker = Broker::builder()
        .storage(Arc::clone(&store), roost::Durability::Acked)
        .plugin_state(again.clone())
        .plugin_state(other.clone())
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    assert_eq!(again.get(b"k"), Some(b"v1".to_vec()));
    assert_eq!(again.get(b"gone"), None);
    assert_eq!(other.keys(), Vec::<Vec<u8>>::new());
    broker.shutdown().await;
    let dup = Broker::builder()
        .plugin_state(PluginState::new("x").expect("name"))
        .plugin_state(PluginState::new("x").expect("name"))
        .build()
        .start()
        .await;
    assert!(dup.is_err(), "two states of one name");
}
