//! Sessions and subscriptions (3.1.1 §3.1.2.4, §3.8, §3.10, §4.1).

mod support;

use roost::codec::{
    Connect, Packet, ProtocolVersion, PublishQoS, ReasonCode, SubAck, Subscribe,
    SubscriptionOptions, Unsubscribe,
};
use roost::{Limits, QoS};
use support::*;

const V4: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn persistent(id: &str) -> Connect {
    persistent_at(V4, id)
}

/// A client that keeps its session: Clean Session 0 (3.1.1), or Clean Start 0 with a
/// Session Expiry Interval (v5).
fn persistent_at(v: ProtocolVersion, id: &str) -> Connect {
    let mut c = Connect::new(v, id);
    c.clean_start = false;
    if v.is_v5() {
        c.properties.session_expiry_interval = Some(3600);
    }
    c
}

#[tokio::test]
async fn persistent_subscriptions_survive_reconnect() {
    // MQTT-3.1.3-2 (both): the Client Identifier names the session that is resumed.
    // MQTT-3.1.2-4 (3.1.1), MQTT-3.1.2-5 (v5), MQTT-4.1.0-1 (both): the session (and its
    // subscriptions) outlives the connection when Clean Session / Clean Start is 0.
    for v in [V4, V5] {
        let broker = start_broker().await;
        let (mut sub, _) = Raw::connect_with(&broker, persistent_at(v, "keep")).await;
        sub.subscribe(1, "k/#", QoS::AtLeastOnce).await;
        drop(sub);
        let (mut sub, ack) = Raw::connect_with(&broker, persistent_at(v, "keep")).await;
        assert!(matches!(ack, Packet::ConnAck(a) if a.session_present));
        let mut publ = Raw::connect(&broker, v, "pub").await;
        publ.publish("k/1", b"v", PublishQoS::AtLeastOnce(pid(1)), false)
            .await;
        let p = sub.recv_publish().await;
        assert_eq!(&p.payload[..], b"v");
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn clean_session_discards_the_previous_session() {
    // MQTT-3.1.4-3 (3.1.1), MQTT-3.1.4-4 (v5): the server performs the Clean Session / Clean
    // Start processing; MQTT-3.1.2-6 (3.1.1), MQTT-3.1.2-4 (v5): 1 discards any previous session
    // and starts a new one; MQTT-3.2.2-1 (3.1.1), MQTT-3.2.2-2 (v5): Session Present 0.
    for v in [V4, V5] {
        let broker = start_broker().await;
        let (mut sub, _) = Raw::connect_with(&broker, persistent_at(v, "c")).await;
        sub.subscribe(1, "c/#", QoS::AtLeastOnce).await;
        sub.send(Packet::Disconnect(Default::default())).await;
        sub.closed_promptly().await;
        let (mut sub, ack) = Raw::connect_with(&broker, Connect::new(v, "c")).await;
        assert!(matches!(ack, Packet::ConnAck(a) if !a.session_present));
        let mut publ = Raw::connect(&broker, v, "pub").await;
        publ.publish("c/1", b"v", PublishQoS::AtLeastOnce(pid(1)), false)
            .await;
        publ.ping().await;
        assert!(sub.ping().await.is_empty(), "old subscription gone");
        assert_eq!(broker.metrics().subscriptions, 0);
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn clean_session_ends_when_the_connection_closes() {
    // MQTT-4.1.0-2 (3.1.1): the session lasts as long as the connection (its subscription is
    // there while connected).
    // MQTT-3.1.2-6: the session lasts as long as the network connection.
    let broker = start_broker().await;
    let mut sub = Raw::connect(&broker, V4, "short").await;
    sub.subscribe(1, "s", QoS::AtMostOnce).await;
    assert_eq!(broker.metrics().subscriptions, 1);
    sub.send(Packet::Disconnect(Default::default())).await;
    sub.closed_promptly().await;
    // A later client with the same id gets no session.
    let (_again, ack) = Raw::connect_with(&broker, persistent("short")).await;
    assert!(matches!(ack, Packet::ConnAck(a) if !a.session_present));
    assert_eq!(broker.metrics().subscriptions, 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn subscribe_replaces_an_identical_filter() {
    // MQTT-3.8.4-3 (both): a new subscription with an existing filter replaces it (new QoS),
    // and retained messages are re-sent (MQTT-3.8.4-4 (v5), Retain Handling 0).
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut publ = Raw::connect(&broker, v, "pub").await;
        publ.publish("r", b"ret", PublishQoS::AtMostOnce, true)
            .await;
        publ.ping().await;
        let mut sub = Raw::connect(&broker, v, "sub").await;
        sub.subscribe(1, "r", QoS::AtMostOnce).await;
        assert_eq!(sub.recv_publish().await.qos, PublishQoS::AtMostOnce);
        sub.subscribe(2, "r", QoS::AtLeastOnce).await;
        let again = sub.recv_publish().await;
        assert!(again.retain);
        assert_eq!(broker.metrics().subscriptions, 1);
        publ.publish("r", b"live", PublishQoS::AtLeastOnce(pid(1)), false)
            .await;
        let live = sub.recv_publish().await;
        assert!(
            matches!(live.qos, PublishQoS::AtLeastOnce(_)),
            "upgraded to QoS 1"
        );
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn suback_and_unsuback_carry_the_packet_id_and_one_code_per_filter() {
    // MQTT-3.8.4-1 / -2 (both): a SUBACK with the SUBSCRIBE's packet id
    // (MQTT-2.3.1-7, MQTT-2.2.1-6 (v5)); several filters are handled as a sequence of
    // SUBSCRIBEs with one SUBACK (MQTT-3.8.4-4 (3.1.1), MQTT-3.8.4-5 (v5)) holding a code per
    // filter (MQTT-3.8.4-5 (3.1.1), MQTT-3.8.4-6, -7 (v5)), in the filters' order
    // (MQTT-3.9.3-1 (both)); UNSUBACK with the same id, even when nothing was removed
    // (MQTT-3.10.4-4 / -5 (both)), one for several filters (MQTT-3.10.4-6 (both)).
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut c = Raw::connect(&broker, v, "c").await;
        c.send(Packet::Subscribe(Subscribe {
            packet_id: pid(42),
            properties: Default::default(),
            filters: vec![
                (filter("a"), SubscriptionOptions::new(QoS::AtMostOnce)),
                (filter("b/+"), SubscriptionOptions::new(QoS::AtLeastOnce)),
                (filter("c/#"), SubscriptionOptions::new(QoS::ExactlyOnce)),
            ],
        }))
        .await;
        match c.recv().await {
            Some(Packet::SubAck(SubAck {
                packet_id,
                reason_codes,
                ..
            })) => {
                assert_eq!(packet_id, pid(42));
                assert_eq!(
                    reason_codes,
                    vec![
                        ReasonCode::Success,
                        ReasonCode::GrantedQoS1,
                        ReasonCode::GrantedQoS2
                    ]
                );
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
        c.send(Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(43),
            properties: Default::default(),
            filters: vec![filter("a"), filter("never")],
        }))
        .await;
        assert!(matches!(c.recv().await, Some(Packet::UnsubAck(u)) if u.packet_id == pid(43)));
        assert_eq!(broker.metrics().subscriptions, 2);
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn unsubscribed_filters_receive_nothing() {
    // MQTT-3.10.4-2 (both): the server stops adding messages for the removed subscription;
    // MQTT-3.10.4-1 (both): filters are compared character by character ("w/+" removes
    // "w/+", not "w/b"); MQTT-3.11.3-1, -2 (v5): one UNSUBACK code per filter, in order.
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut c = Raw::connect(&broker, v, "c").await;
        c.subscribe(1, "u", QoS::AtMostOnce).await;
        c.subscribe(2, "w/+", QoS::AtMostOnce).await;
        c.subscribe(3, "w/b", QoS::AtMostOnce).await;
        c.send(Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(4),
            properties: Default::default(),
            filters: vec![filter("u"), filter("x"), filter("w/+")],
        }))
        .await;
        match c.recv().await {
            Some(Packet::UnsubAck(u)) if v == V5 => assert_eq!(
                u.reason_codes,
                vec![
                    ReasonCode::Success,
                    ReasonCode::NoSubscriptionExisted,
                    ReasonCode::Success
                ]
            ),
            Some(Packet::UnsubAck(u)) => assert_eq!(u.packet_id, pid(4)),
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
        let mut publ = Raw::connect(&broker, V4, "pub").await;
        publ.publish("u", b"x", PublishQoS::AtMostOnce, false).await;
        publ.publish("w/b", b"still", PublishQoS::AtMostOnce, false)
            .await;
        publ.ping().await;
        let got = c.recv_publish().await;
        assert_eq!(&got.payload[..], b"still", "{v:?}: w/b stays, u is gone");
        assert!(c.ping().await.is_empty(), "{v:?}: one copy, through w/b");
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn subscription_limit_refuses_extra_filters() {
    let broker = start_broker_with(Limits::default().with_max_subscriptions_per_client(2)).await;
    let mut c = Raw::connect(&broker, V4, "c").await;
    c.subscribe(1, "a", QoS::AtMostOnce).await;
    c.subscribe(2, "b", QoS::AtMostOnce).await;
    // 3.1.1 has one failure code: 0x80.
    match c.subscribe(3, "c", QoS::AtMostOnce).await {
        Packet::SubAck(a) => assert_eq!(a.reason_codes, vec![ReasonCode::UnspecifiedError]),
        other => panic!("{other:?}"),
    }
    // Re-subscribing to an existing filter is not a new subscription.
    match c.subscribe(4, "a", QoS::AtLeastOnce).await {
        Packet::SubAck(a) => assert_eq!(a.reason_codes, vec![ReasonCode::GrantedQoS1]),
        other => panic!("{other:?}"),
    }
    let mut c5 = Raw::connect(&broker, V5, "c5").await;
    c5.subscribe(1, "a", QoS::AtMostOnce).await;
    c5.subscribe(2, "b", QoS::AtMostOnce).await;
    match c5.subscribe(3, "c", QoS::AtMostOnce).await {
        Packet::SubAck(a) => assert_eq!(a.reason_codes, vec![ReasonCode::QuotaExceeded]),
        other => panic!("{other:?}"),
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn topic_limits_are_enforced() {
    let broker = start_broker_with(Limits::default().with_max_topic_levels(3)).await;
    let mut c = Raw::connect(&broker, V5, "c").await;
    match c.subscribe(1, "a/b/c/d", QoS::AtMostOnce).await {
        Packet::SubAck(a) => assert_eq!(a.reason_codes, vec![ReasonCode::TopicFilterInvalid]),
        other => panic!("{other:?}"),
    }
    c.publish("a/b/c/d", b"x", PublishQoS::AtMostOnce, false)
        .await;
    let seen = c.closed_promptly().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::TopicNameInvalid)
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn topic_length_limit_is_enforced() {
    // README: "max_topic_length": bytes in a topic name or filter, same policy as levels.
    let broker = start_broker_with(Limits::default().with_max_topic_length(10)).await;
    let mut c = Raw::connect(&broker, V5, "c").await;
    match c.subscribe(1, "abcde/fghij", QoS::AtMostOnce).await {
        Packet::SubAck(a) => assert_eq!(a.reason_codes, vec![ReasonCode::TopicFilterInvalid]),
        other => panic!("{other:?}"),
    }
    // Ten bytes are within the limit, as a filter and as a name.
    match c.subscribe(2, "abcd/fghij", QoS::AtMostOnce).await {
        Packet::SubAck(a) => assert_eq!(a.reason_codes, vec![ReasonCode::Success]),
        other => panic!("{other:?}"),
    }
    c.publish("abcd/fghij", b"ok", PublishQoS::AtMostOnce, false)
        .await;
    assert_eq!(&c.recv_publish().await.payload[..], b"ok");
    c.publish("abcde/fghij", b"x", PublishQoS::AtMostOnce, false)
        .await;
    let seen = c.closed_promptly().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::TopicNameInvalid),
        "{seen:?}"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn retained_messages_outlive_the_publishers_session() {
    // MQTT-3.1.2-7: retained messages are not part of the session state; they are not
    // deleted when the session ends.
    let broker = start_broker().await;
    let mut p = Raw::connect(&broker, V4, "short-lived").await;
    p.publish(
        "keep/me",
        b"still here",
        PublishQoS::AtLeastOnce(pid(1)),
        true,
    )
    .await;
    assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    p.send(Packet::Disconnect(Default::default())).await;
    p.closed_promptly().await;
    let mut s = Raw::connect(&broker, V4, "later").await;
    s.subscribe(1, "keep/me", QoS::AtMostOnce).await;
    assert_eq!(&s.recv_publish().await.payload[..], b"still here");
    broker.shutdown().await;
}

#[tokio::test]
async fn unsubscribe_completes_deliveries_already_started() {
    // MQTT-3.10.4-3 (both): QoS 1/2 messages already started for the removed subscription are
    // completed: here the unacknowledged one is re-sent when the session resumes.
    for v in [V4, V5] {
        let broker = start_broker().await;
        let (mut s, _) = Raw::connect_with(&broker, persistent_at(v, "u-sub")).await;
        s.subscribe(1, "u", QoS::AtLeastOnce).await;
        let mut p = Raw::connect(&broker, v, "p").await;
        p.publish("u", b"in flight", PublishQoS::AtLeastOnce(pid(1)), false)
            .await;
        let m = s.recv_publish().await;
        s.send(Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(2),
            properties: Default::default(),
            filters: vec![filter("u")],
        }))
        .await;
        assert!(matches!(s.recv().await, Some(Packet::UnsubAck(_))));
        p.publish("u", b"after", PublishQoS::AtLeastOnce(pid(2)), false)
            .await;
        p.ping().await;
        drop(s);
        let (mut s, _) = Raw::connect_with(&broker, persistent_at(v, "u-sub")).await;
        let again = s.recv_publish().await;
        assert_eq!(again.payload, m.payload);
        assert!(again.dup);
        s.ack(&again).await;
        assert!(
            s.ping().await.is_empty(),
            "nothing published after UNSUBACK"
        );
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn topics_match_character_for_character() {
    // MQTT-4.7.3-4 (both): no normalization when matching: "café" with a precomposed é
    // (U+00E9) is another topic than "café" spelt e + U+0301, and case counts.
    let broker = start_broker().await;
    for v in [V4, V5] {
        let mut c = Raw::connect(&broker, v, "matcher").await;
        c.subscribe(1, "menu/caf\u{e9}", QoS::AtMostOnce).await;
        for t in ["menu/cafe\u{301}", "menu/CAF\u{c9}", "menu/caf\u{e9}"] {
            c.send(Packet::Publish(roost::codec::Publish::new(
                topic(t),
                PublishQoS::AtMostOnce,
                t.as_bytes().to_vec(),
            )))
            .await;
        }
        let got = c.recv_publish().await;
        assert_eq!(got.topic.as_str(), "menu/caf\u{e9}", "{v:?}");
        assert!(
            c.ping().await.is_empty(),
            "{v:?}: only the exact spelling matches"
        );
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn without_wildcard_support_wildcard_filters_are_refused() {
    // MQTT-3.8.3-2 (3.1.1): a server that does not support wildcards refuses every filter
    // that has one (SUBACK 0x80); v5 gets 0xA2 (tests/v5_subscriptions.rs).
    let broker =
        start_broker_with_caps(roost::Capabilities::default().with_wildcard_subscriptions(false))
            .await;
    let mut c = Raw::connect(&broker, V4, "c").await;
    for (f, ok) in [("a/+", false), ("a/#", false), ("a/b", true)] {
        match c.subscribe(1, f, QoS::AtMostOnce).await {
            Packet::SubAck(a) => assert_eq!(a.reason_codes[0].is_success(), ok, "{f}"),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
    broker.shutdown().await;
}
