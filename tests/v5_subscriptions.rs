//! MQTT 5.0 subscriptions: Subscription Identifiers, No Local, Retain As Published, Retain
//! Handling, shared subscriptions and SUBACK reason codes (v5 §3.8, §4.8.2).

mod support;

use std::num::NonZeroU32;

use roost::codec::{
    Packet, ProtocolVersion, PublishQoS, ReasonCode, RetainHandling, Subscribe,
    SubscribeProperties, SubscriptionOptions,
};
use roost::{Capabilities, QoS};
use support::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

async fn subscribe_with(
    c: &mut Raw,
    id: u16,
    f: &str,
    options: SubscriptionOptions,
    sid: Option<u32>,
) -> Vec<ReasonCode> {
    c.send(Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        properties: SubscribeProperties {
            subscription_identifier: sid.and_then(NonZeroU32::new),
            user_properties: Vec::new(),
        },
        filters: vec![(filter(f), options)],
    }))
    .await;
    loop {
        match c.recv().await {
            Some(Packet::SubAck(a)) => return a.reason_codes,
            Some(_) => continue,
            None => panic!("closed while waiting for SUBACK"),
        }
    }
}

fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions::new(qos)
}

#[tokio::test]
async fn one_copy_carries_every_matching_subscription_identifier() {
    // MQTT-3.3.4-3 / MQTT-3.3.4-4: a single copy includes all matching identifiers.
    let broker = start_broker().await;
    let mut c = Raw::connect(&broker, V5, "sids").await;
    subscribe_with(&mut c, 1, "a/+", opts(QoS::AtMostOnce), Some(5)).await;
    subscribe_with(&mut c, 2, "a/b", opts(QoS::AtLeastOnce), Some(7)).await;
    subscribe_with(&mut c, 3, "a/#", opts(QoS::AtMostOnce), None).await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    p.publish("a/b", b"x", PublishQoS::AtLeastOnce(pid(1)), false)
        .await;
    let got = c.next_message().await;
    let mut sids: Vec<u32> = got
        .properties
        .subscription_identifiers
        .iter()
        .map(|s| s.get())
        .collect();
    sids.sort_unstable();
    assert_eq!(sids, vec![5, 7]);
    assert!(
        matches!(got.qos, PublishQoS::AtLeastOnce(_)),
        "highest granted QoS"
    );
    assert!(c.ping().await.is_empty(), "one copy");
    broker.shutdown().await;
}

#[tokio::test]
async fn no_local_suppresses_own_messages() {
    // MQTT-3.8.3-3
    let broker = start_broker().await;
    let mut c = Raw::connect(&broker, V5, "self").await;
    let mut o = opts(QoS::AtMostOnce);
    o.no_local = true;
    subscribe_with(&mut c, 1, "chat", o, None).await;
    c.publish("chat", b"mine", PublishQoS::AtMostOnce, false)
        .await;
    let mut other = Raw::connect(&broker, V5, "other").await;
    other
        .publish("chat", b"theirs", PublishQoS::AtMostOnce, false)
        .await;
    assert_eq!(&c.next_message().await.payload[..], b"theirs");
    broker.shutdown().await;
}

#[tokio::test]
async fn retain_as_published_keeps_the_flag() {
    // MQTT-3.3.1-12 / -13: Retain As Published 0 clears RETAIN, 1 keeps it.
    // v5 §3.8.3.1: Retain As Published 1 keeps RETAIN on forwarded messages; 0 clears it.
    let broker = start_broker().await;
    let mut keep = Raw::connect(&broker, V5, "keep").await;
    let mut o = opts(QoS::AtMostOnce);
    o.retain_as_published = true;
    subscribe_with(&mut keep, 1, "r", o, None).await;
    let mut plain = Raw::connect(&broker, V5, "plain").await;
    subscribe_with(&mut plain, 1, "r", opts(QoS::AtMostOnce), None).await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    p.publish("r", b"v", PublishQoS::AtMostOnce, true).await;
    assert!(keep.next_message().await.retain);
    assert!(!plain.next_message().await.retain);
    broker.shutdown().await;
}

#[tokio::test]
async fn retain_handling_controls_retained_messages_on_subscribe() {
    // MQTT-3.3.1-9 / -10 / -11: Retain Handling 0 sends retained messages on every subscribe,
    // 1 only for a new subscription, 2 never.
    // v5 §3.8.3.1 Retain Handling 0 / 1 / 2; MQTT-3.8.4-4 for 0 on a repeated subscribe.
    let broker = start_broker().await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    p.publish("rh", b"kept", PublishQoS::AtMostOnce, true).await;
    p.ping().await;
    let mut c = Raw::connect(&broker, V5, "c").await;
    let mut if_new = opts(QoS::AtMostOnce);
    if_new.retain_handling = RetainHandling::SendIfNew;
    subscribe_with(&mut c, 1, "rh", if_new, None).await;
    assert!(c.next_message().await.retain, "new subscription: sent");
    subscribe_with(&mut c, 2, "rh", if_new, None).await;
    assert!(
        c.ping().await.is_empty(),
        "existing subscription: not sent again"
    );
    let mut never = opts(QoS::AtMostOnce);
    never.retain_handling = RetainHandling::DoNotSend;
    let mut d = Raw::connect(&broker, V5, "d").await;
    subscribe_with(&mut d, 1, "rh", never, None).await;
    assert!(d.ping().await.is_empty(), "Retain Handling 2: never sent");
    subscribe_with(&mut d, 2, "rh", opts(QoS::AtMostOnce), None).await;
    assert!(
        d.next_message().await.retain,
        "Retain Handling 0: sent on every subscribe"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn shared_subscription_delivers_each_message_to_one_member() {
    // v5 §4.8.2: each message to one member of the group; ordinary subscribers still get
    // every message.
    let broker = start_broker().await;
    let mut a = Raw::connect(&broker, V5, "a").await;
    let mut b = Raw::connect(&broker, V5, "b").await;
    let mut all = Raw::connect(&broker, V5, "all").await;
    assert_eq!(
        subscribe_with(&mut a, 1, "$share/g/jobs/+", opts(QoS::AtLeastOnce), None).await,
        vec![ReasonCode::GrantedQoS1]
    );
    subscribe_with(&mut b, 1, "$share/g/jobs/+", opts(QoS::AtLeastOnce), None).await;
    subscribe_with(&mut all, 1, "jobs/#", opts(QoS::AtMostOnce), None).await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    for i in 0..10u16 {
        let payload: &'static [u8] = Box::leak(i.to_be_bytes().to_vec().into_boxed_slice());
        p.publish(
            "jobs/x",
            payload,
            PublishQoS::AtLeastOnce(pid(i + 1)),
            false,
        )
        .await;
    }
    p.ping().await;
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(all.next_message().await.payload);
    }
    let from_a = a.ping().await;
    let from_b = b.ping().await;
    assert_eq!(
        from_a.len() + from_b.len(),
        10,
        "every message to exactly one member"
    );
    assert!(
        !from_a.is_empty() && !from_b.is_empty(),
        "both members used"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn shared_subscription_skips_disconnected_members() {
    let broker = start_broker().await;
    let mut a = Raw::connect(&broker, V5, "a").await;
    subscribe_with(&mut a, 1, "$share/g/t", opts(QoS::AtMostOnce), None).await;
    // A persistent member that goes away.
    let mut c = roost::codec::Connect::new(V5, "b");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(60);
    let (mut b, _) = Raw::connect_with(&broker, c.clone()).await;
    subscribe_with(&mut b, 1, "$share/g/t", opts(QoS::AtLeastOnce), None).await;
    b.send(Packet::Disconnect(Default::default())).await;
    b.closed_promptly().await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    for i in 1..=4u16 {
        p.publish("t", b"m", PublishQoS::AtLeastOnce(pid(i)), false)
            .await;
    }
    p.ping().await;
    for _ in 0..4 {
        a.next_message().await;
    }
    // None of them was queued for the member that was away: back, it finds nothing.
    let (mut b, connack) = Raw::connect_with(&broker, c).await;
    assert!(
        support::connack(connack).session_present,
        "its session was kept"
    );
    assert!(b.ping().await.is_empty(), "nothing queued for b");
    broker.shutdown().await;
}

#[tokio::test]
async fn shared_subscriptions_get_no_retained_messages() {
    let broker = start_broker().await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    p.publish("s/r", b"kept", PublishQoS::AtMostOnce, true)
        .await;
    p.ping().await;
    let mut a = Raw::connect(&broker, V5, "a").await;
    subscribe_with(&mut a, 1, "$share/g/s/#", opts(QoS::AtMostOnce), None).await;
    assert!(a.ping().await.is_empty());
    broker.shutdown().await;
}

#[tokio::test]
async fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    // MQTT-3.8.3-4 (v5)
    let broker = start_broker().await;
    let mut a = Raw::connect(&broker, V5, "a").await;
    let mut o = opts(QoS::AtMostOnce);
    o.no_local = true;
    a.send(Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![(filter("$share/g/t"), o)],
    }))
    .await;
    let seen = a.closed_promptly().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ProtocolError)
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn suback_reason_codes_for_refused_filters() {
    // v5 §3.9.3: 0x8F, 0x9E, 0xA1, 0xA2.
    let broker = start_broker_with_caps(
        Capabilities::default()
            .with_wildcard_subscriptions(false)
            .with_shared_subscriptions(false)
            .with_subscription_identifiers(false),
    )
    .await;
    let mut c = Raw::connect(&broker, V5, "c").await;
    assert_eq!(
        subscribe_with(&mut c, 1, "a/+", opts(QoS::AtMostOnce), None).await,
        vec![ReasonCode::WildcardSubscriptionsNotSupported]
    );
    assert_eq!(
        subscribe_with(&mut c, 2, "$share/g/a", opts(QoS::AtMostOnce), None).await,
        vec![ReasonCode::SharedSubscriptionsNotSupported]
    );
    assert_eq!(
        subscribe_with(&mut c, 3, "a", opts(QoS::AtMostOnce), Some(4)).await,
        vec![ReasonCode::SubscriptionIdentifiersNotSupported]
    );
    assert_eq!(
        subscribe_with(&mut c, 4, "a", opts(QoS::AtMostOnce), None).await,
        vec![ReasonCode::Success]
    );
    let open = start_broker().await;
    let mut d = Raw::connect(&open, V5, "d").await;
    assert_eq!(
        subscribe_with(&mut d, 1, "$share//a", opts(QoS::AtMostOnce), None).await,
        vec![ReasonCode::TopicFilterInvalid]
    );
    assert_eq!(
        subscribe_with(&mut d, 2, "$share/g", opts(QoS::AtMostOnce), None).await,
        vec![ReasonCode::TopicFilterInvalid]
    );
    broker.shutdown().await;
    open.shutdown().await;
}

#[tokio::test]
async fn granted_qos_is_capped_by_maximum_qos() {
    // MQTT-3.2.2-10 (v5): a server with Maximum QoS 1 still accepts a QoS 2 request.
    let broker =
        start_broker_with_caps(Capabilities::default().with_maximum_qos(QoS::AtLeastOnce)).await;
    let mut c = Raw::connect(&broker, V5, "c").await;
    assert_eq!(
        subscribe_with(&mut c, 1, "q", opts(QoS::ExactlyOnce), None).await,
        vec![ReasonCode::GrantedQoS1]
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn shared_delivery_respects_the_granted_qos_and_finishes_qos2_with_the_chosen_member() {
    // MQTT-4.8.2-3: a copy to a group member is at most the QoS granted to that member.
    let broker = start_broker().await;
    let mut low = Raw::connect(&broker, V5, "low").await;
    subscribe_with(&mut low, 1, "$share/h/t", opts(QoS::AtMostOnce), None).await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    p.publish("t", b"q1", PublishQoS::AtLeastOnce(pid(1)), false)
        .await;
    assert_eq!(low.next_message().await.qos, PublishQoS::AtMostOnce);

    // MQTT-4.8.2-4: a QoS 2 copy whose member lost its connection mid-exchange is completed
    // with that member when it returns, not handed to another.
    let mut c = roost::codec::Connect::new(V5, "x");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(60);
    let (mut x, _) = Raw::connect_with(&broker, c.clone()).await;
    subscribe_with(&mut x, 1, "$share/q/job", opts(QoS::ExactlyOnce), None).await;
    p.publish("job", b"exactly", PublishQoS::ExactlyOnce(pid(2)), false)
        .await;
    let first = x.recv_publish().await; // no PUBREC: the connection breaks
    drop(x);
    let mut y = Raw::connect(&broker, V5, "y").await;
    subscribe_with(&mut y, 1, "$share/q/job", opts(QoS::ExactlyOnce), None).await;
    let (mut x, ack) = Raw::connect_with(&broker, c).await;
    assert!(support::connack(ack).session_present);
    let again = x.recv_publish().await;
    assert_eq!(again.payload, first.payload);
    assert!(again.dup);
    x.ack(&again).await;
    assert!(y.ping().await.is_empty(), "not handed to another member");

    // MQTT-4.8.2-5: and if that member's session ends before it returns, no other member
    // gets the message.
    let mut c = roost::codec::Connect::new(V5, "z");
    c.properties.session_expiry_interval = Some(1);
    let (mut z, _) = Raw::connect_with(&broker, c).await;
    subscribe_with(&mut z, 1, "$share/r/job2", opts(QoS::ExactlyOnce), None).await;
    p.publish("job2", b"once", PublishQoS::ExactlyOnce(pid(3)), false)
        .await;
    z.recv_publish().await; // no PUBREC
    drop(z);
    let mut w = Raw::connect(&broker, V5, "w").await;
    subscribe_with(&mut w, 1, "$share/r/job2", opts(QoS::ExactlyOnce), None).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        w.ping().await.is_empty(),
        "the ended session's message went to nobody"
    );
    broker.shutdown().await;
}
