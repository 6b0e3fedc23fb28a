//! Memory bounded by configuration whatever a client sends (issue 12 §2): retained messages
//! sent at the connection's pace, repeated filters applied once, user-property and
//! client-id limits, queue bytes that count what a message really holds.

mod support;

use roost::codec::{
    Connect, Packet, ProtocolVersion, PublishQoS, ReasonCode, Subscribe, SubscriptionOptions,
    UserProperty,
};
use roost::{Limits, QoS};
use support::*;

const V4: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// Counts the PUBLISHes that arrive until a ping comes back with none, acknowledging the
/// QoS 1 ones as a client would (what is unacknowledged stays held, and counted).
async fn count_messages(c: &mut Raw) -> usize {
    let mut n = 0;
    loop {
        let got = c.ping().await;
        let mut here = 0;
        for packet in got {
            if let Packet::Publish(p) = packet {
                here += 1;
                if let PublishQoS::AtLeastOnce(id) = p.qos {
                    c.send(Packet::PubAck(roost::codec::PubResponse::new(id)))
                        .await;
                }
            }
        }
        if here == 0 {
            return n;
        }
        n += here;
    }
}

/// Issue 12 §2: a `#` subscriber gets every retained match, at the connection's pace, even
/// when there are far more than a session queue holds (MQTT-3.3.1-6: the retained messages
/// matching a new subscription are sent).
#[tokio::test]
async fn every_retained_match_is_sent_whatever_the_queue_bound() {
    let broker = start_broker_with(Limits::default().with_max_queued_messages(100)).await;
    let mut p = Raw::connect(&broker, V4, "p").await;
    for i in 0..1500 {
        let topic = format!("r/{i}");
        let mut publish =
            roost::codec::Publish::new(support::topic(&topic), PublishQoS::AtMostOnce, &b"v"[..]);
        publish.retain = true;
        p.send(Packet::Publish(publish)).await;
    }
    p.ping().await;
    assert_eq!(broker.metrics().retained, 1500);
    let mut s = Raw::connect(&broker, V4, "s").await;
    s.send(Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![(filter("#"), SubscriptionOptions::new(QoS::AtMostOnce))],
    }))
    .await;
    let mut got = 0;
    let mut suback = false;
    while got < 1500 {
        match s.recv().await {
            Some(Packet::SubAck(_)) => {
                assert_eq!(got, 0, "SUBACK comes before the retained messages");
                suback = true;
            }
            Some(Packet::Publish(m)) => {
                assert!(m.retain);
                got += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(suback);
    assert_eq!(count_messages(&mut s).await, 0, "each exactly once");
    assert_eq!(broker.metrics().messages_dropped, 0);
    broker.shutdown().await;
}

/// Issue 12 §2: one SUBSCRIBE repeating a filter is applied once (the last repeat wins, as
/// if each had been sent on its own, MQTT-3.8.4-3), each repeat gets its SUBACK code
/// (MQTT-3.8.4-5), and the retained messages go out once, not once per repeat; filters past
/// `max_filters_per_subscribe` get 0x97.
#[tokio::test]
async fn repeated_filters_are_applied_once() {
    let broker = start_broker_with(Limits::default().with_max_filters_per_subscribe(3)).await;
    let mut p = Raw::connect(&broker, V4, "p").await;
    for i in 0..50 {
        let mut publish = roost::codec::Publish::new(
            support::topic(&format!("d/{i}")),
            PublishQoS::AtMostOnce,
            &b"v"[..],
        );
        publish.retain = true;
        p.send(Packet::Publish(publish)).await;
    }
    p.ping().await;
    let mut s = Raw::connect(&broker, V5, "s").await;
    let mut filters = vec![(filter("d/#"), SubscriptionOptions::new(QoS::AtMostOnce)); 500];
    // The last repeat wins: QoS 1.
    filters.push((filter("d/#"), SubscriptionOptions::new(QoS::AtLeastOnce)));
    filters.push((filter("x/1"), SubscriptionOptions::new(QoS::AtMostOnce)));
    filters.push((filter("x/2"), SubscriptionOptions::new(QoS::AtMostOnce)));
    filters.push((filter("x/3"), SubscriptionOptions::new(QoS::AtMostOnce)));
    s.send(Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters,
    }))
    .await;
    let codes = match s.recv().await {
        Some(Packet::SubAck(a)) => a.reason_codes,
        other => panic!("expected SUBACK, got {other:?}"),
    };
    assert_eq!(codes.len(), 504);
    assert!(codes[..501].iter().all(|c| *c == ReasonCode::GrantedQoS1));
    assert_eq!(
        codes[501..],
        [
            ReasonCode::Success,
            ReasonCode::Success,
            ReasonCode::QuotaExceeded
        ]
    );
    let mut n = 0;
    loop {
        let got = s.ping().await;
        if got.is_empty() {
            break;
        }
        for packet in got {
            if let Packet::Publish(m) = packet {
                n += 1;
                s.ack(&m).await;
            }
        }
    }
    assert_eq!(n, 50, "retained messages sent once");
    assert_eq!(broker.metrics().subscriptions, 3);
    broker.shutdown().await;
}

/// Issue 12 §2: user properties are bounded per PUBLISH (count and bytes), and client ids
/// in length.
#[tokio::test]
async fn user_properties_and_client_ids_are_bounded() {
    let broker = start_broker_with(
        Limits::default()
            .with_max_user_properties(4)
            .with_max_user_property_bytes(100)
            .with_max_client_id_length(64),
    )
    .await;
    let mut c = Raw::connect(&broker, V5, "c").await;
    let publish = |id: u16, props: Vec<UserProperty>| {
        let mut p =
            roost::codec::Publish::new(topic("t"), PublishQoS::AtLeastOnce(pid(id)), &b"v"[..]);
        p.properties.user_properties = props;
        Packet::Publish(p)
    };
    let code = |p: Option<Packet>| match p {
        Some(Packet::PubAck(a)) => a.reason_code,
        other => panic!("expected PUBACK, got {other:?}"),
    };
    c.send(publish(1, vec![UserProperty::new("k", "v"); 4]))
        .await;
    assert!(code(c.recv().await).is_success());
    c.send(publish(2, vec![UserProperty::new("k", "v"); 5]))
        .await;
    assert_eq!(code(c.recv().await), ReasonCode::QuotaExceeded, "count");
    c.send(publish(3, vec![UserProperty::new("k", "v".repeat(200))]))
        .await;
    assert_eq!(code(c.recv().await), ReasonCode::QuotaExceeded, "bytes");
    assert_eq!(broker.metrics().messages_refused_properties, 2);
    // MQTT-3.1.3-8 (v5): a refused identifier gets CONNACK 0x85; MQTT-3.1.3-9 (3.1.1): 0x02.
    for v in [V5, ProtocolVersion::V311] {
        let (_c, ack) = Raw::connect_with(&broker, Connect::new(v, "x".repeat(65).as_str())).await;
        assert_eq!(
            connack(ack).reason_code,
            ReasonCode::ClientIdentifierNotValid,
            "{v:?}"
        );
    }
    Raw::connect(&broker, V5, &"x".repeat(64)).await;
    broker.shutdown().await;
}

/// Issue 15 §8: a user-property bound changed by `reconfigure` holds for connections made
/// afterwards; a connection made before keeps the bound it started with.
#[tokio::test]
async fn reconfigured_user_property_bounds_hold_for_new_connections() {
    let broker = start_broker_with(Limits::default()).await;
    let mut before = Raw::connect(&broker, V5, "before").await;
    let done = broker
        .reconfigure(
            Limits::default().with_max_user_properties(2),
            roost::Capabilities::default(),
        )
        .expect("valid");
    assert_eq!(done.applied, vec!["max_user_properties"]);
    let mut after = Raw::connect(&broker, V5, "after").await;
    let publish = |props: usize| {
        let mut p =
            roost::codec::Publish::new(topic("t"), PublishQoS::AtLeastOnce(pid(1)), &b"v"[..]);
        p.properties.user_properties = vec![UserProperty::new("k", "v"); props];
        Packet::Publish(p)
    };
    let code = |p: Option<Packet>| match p {
        Some(Packet::PubAck(a)) => a.reason_code,
        other => panic!("expected PUBACK, got {other:?}"),
    };
    after.send(publish(3)).await;
    assert_eq!(
        code(after.recv().await),
        ReasonCode::QuotaExceeded,
        "new bound"
    );
    before.send(publish(3)).await;
    assert!(code(before.recv().await).is_success(), "its own bound");
    broker.shutdown().await;
}

/// Issue 12 §2: `max_queued_bytes` counts what a queued message holds, user properties
/// included: a queue of 900 bytes of topic and payload cannot hold megabytes of properties.
#[tokio::test]
async fn queue_bytes_count_user_properties() {
    let broker = start_broker_with(Limits::default().with_max_queued_bytes(16 * 1024)).await;
    let mut persistent = Connect::new(V5, "away");
    persistent.clean_start = false;
    persistent.properties.session_expiry_interval = Some(600);
    let (mut away, _) = Raw::connect_with(&broker, persistent.clone()).await;
    away.subscribe(1, "t", QoS::AtLeastOnce).await;
    drop(away);
    let mut p = Raw::connect(&broker, V5, "p").await;
    for i in 1..=10u16 {
        let mut publish =
            roost::codec::Publish::new(topic("t"), PublishQoS::AtLeastOnce(pid(i)), &b"v"[..]);
        // 2 KiB of user properties on a one-byte payload: counted twice, as the message
        // holds them and as a cached wire form copies them.
        publish.properties.user_properties = vec![UserProperty::new("k", "v".repeat(2048))];
        p.send(Packet::Publish(publish)).await;
        assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    }
    // About 4.7 KiB each against 16 KiB: three fit, the rest are dropped and counted.
    assert_eq!(broker.metrics().messages_dropped, 7);
    let (mut away, _) = Raw::connect_with(&broker, persistent).await;
    assert_eq!(count_messages(&mut away).await, 3);
    broker.shutdown().await;
}

/// Issue 19 (with issue 12 §2's rule that a limit counts what is really held): the messages
/// a session has sent and not had acknowledged are held as surely as the queued ones, so
/// `max_queued_bytes` counts both. A subscriber that never acknowledges holds at most that
/// many bytes whatever its inflight window; acknowledging makes room again.
#[tokio::test]
async fn queue_bytes_count_unacknowledged_messages() {
    let broker = start_broker_with(
        Limits::default()
            .with_max_queued_bytes(16 * 1024)
            .with_max_inflight(100),
    )
    .await;
    let mut s = Raw::connect(&broker, V5, "s").await;
    s.subscribe(1, "t", QoS::AtLeastOnce).await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    static PAYLOAD: [u8; 4096] = [7; 4096];
    let publish = |i: u16| {
        roost::codec::Publish::new(topic("t"), PublishQoS::AtLeastOnce(pid(i)), &PAYLOAD[..])
    };
    for i in 1..=10u16 {
        p.send(Packet::Publish(publish(i))).await;
        assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    }
    // About 4 KiB each against 16 KiB: three are held (sent, unacknowledged), the rest
    // dropped and counted, although the window had room for all ten.
    let mut held = Vec::new();
    for packet in s.ping().await {
        if let Packet::Publish(m) = packet {
            held.push(m);
        }
    }
    assert_eq!(held.len(), 3, "sent without acknowledgement");
    assert_eq!(broker.metrics().messages_dropped, 7);
    // Acknowledged, they make room: the next message is delivered.
    for m in &held {
        s.ack(m).await;
    }
    p.send(Packet::Publish(publish(11))).await;
    assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    assert_eq!(s.recv_publish().await.payload.len(), 4096);
    assert_eq!(broker.metrics().messages_dropped, 7);
    broker.shutdown().await;
}

/// With unacknowledged messages counted (above), a QoS 1 subscriber's retained matches
/// that together pass `max_queued_bytes` wait for its acknowledgements instead of being
/// dropped (MQTT-3.3.1-6: they are all sent).
#[tokio::test]
async fn retained_matches_wait_for_room_held_by_unacknowledged_ones() {
    let broker = start_broker_with(Limits::default().with_max_queued_bytes(16 * 1024)).await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    static PAYLOAD: [u8; 4096] = [7; 4096];
    for i in 0..20 {
        let mut publish = roost::codec::Publish::new(
            topic(&format!("r/{i}")),
            PublishQoS::AtMostOnce,
            &PAYLOAD[..],
        );
        publish.retain = true;
        p.send(Packet::Publish(publish)).await;
    }
    p.ping().await;
    assert_eq!(broker.metrics().retained, 20);
    let mut s = Raw::connect(&broker, V5, "s").await;
    s.subscribe(1, "r/#", QoS::AtLeastOnce).await;
    for _ in 0..20 {
        // Acknowledged one by one: each makes room for the next.
        assert!(s.next_message().await.retain);
    }
    assert_eq!(count_messages(&mut s).await, 0, "each exactly once");
    assert_eq!(broker.metrics().messages_dropped, 0);
    broker.shutdown().await;
}

/// Issue 12 §2: broker-wide bounds — sessions, retained bytes, queued bytes across all
/// sessions — each refusing what would pass it, and counted.
#[tokio::test]
async fn broker_wide_bounds_hold() {
    let broker = start_broker_with(
        Limits::default()
            .with_max_sessions(3)
            .with_max_retained_bytes(2 * 1024)
            .with_max_total_queued_bytes(4 * 1024),
    )
    .await;
    // Sessions: two persistent ones away, one connection; a fourth is refused (v5 0x97;
    // 3.1.1 0x03), resuming an existing one is not.
    let persistent = |id: &str| {
        let mut c = Connect::new(V5, id);
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(600);
        c
    };
    for id in ["a1", "a2"] {
        let (mut c, _) = Raw::connect_with(&broker, persistent(id)).await;
        c.subscribe(1, "q/#", QoS::AtLeastOnce).await;
    }
    let mut p = Raw::connect(&broker, V5, "p").await;
    let (_c, ack) = Raw::connect_with(&broker, Connect::new(V5, "fourth")).await;
    assert_eq!(connack(ack).reason_code, ReasonCode::QuotaExceeded);
    let (_c, ack) = Raw::connect_with(&broker, Connect::new(V4, "fourth")).await;
    assert_eq!(connack(ack).reason_code, ReasonCode::ServerUnavailable);
    // Retained bytes: 1 KiB messages, the store takes 2 KiB (sizes include the topic and a
    // fixed overhead, so one fits).
    for (i, topic) in ["r/1", "r/2", "r/3"].into_iter().enumerate() {
        let mut publish = roost::codec::Publish::new(
            support::topic(topic),
            PublishQoS::AtLeastOnce(pid(i as u16 + 1)),
            vec![b'x'; 1024],
        );
        publish.retain = true;
        p.send(Packet::Publish(publish)).await;
        assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    }
    let m = broker.metrics();
    assert!(m.retained_bytes <= 2 * 1024, "{}", m.retained_bytes);
    assert!(m.retained_refused >= 1);
    // Queued bytes across sessions: each 1 KiB message is queued for both away sessions;
    // the broker-wide 4 KiB budget holds about three copies in all.
    for i in 10..16u16 {
        let publish = roost::codec::Publish::new(
            support::topic("q/x"),
            PublishQoS::AtLeastOnce(pid(i)),
            vec![b'x'; 1024],
        );
        p.send(Packet::Publish(publish)).await;
        assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    }
    let m = broker.metrics();
    assert!(m.queued_bytes <= 4 * 1024, "{}", m.queued_bytes);
    assert!(m.messages_dropped >= 8, "{m:?}");
    // Draining gives the budget back.
    drop(p);
    let (mut a1, ack) = Raw::connect_with(&broker, persistent("a1")).await;
    assert!(connack(ack).session_present, "resuming is never refused");
    assert!(count_messages(&mut a1).await > 0);
    let (mut a2, _) = Raw::connect_with(&broker, persistent("a2")).await;
    count_messages(&mut a2).await;
    // Sent: nothing is queued any more but the one 1 KiB step each session keeps.
    let mut tries = 0;
    while broker.metrics().queued_bytes > 2 * 1024 && tries < 100 {
        a1.ping().await;
        tries += 1;
    }
    assert!(broker.metrics().queued_bytes <= 2 * 1024);
    broker.shutdown().await;
}

/// Issue 12 §2: what one client's subscriptions hold is bounded
/// (`max_subscription_bytes_per_client`): a deep filter that would pass it is refused
/// (v5 0x97), shorter ones still fit, and unsubscribing gives the room back.
#[tokio::test]
async fn subscription_bytes_are_bounded_per_client() {
    let broker =
        start_broker_with(Limits::default().with_max_subscription_bytes_per_client(2000)).await;
    let mut c = Raw::connect(&broker, V5, "c").await;
    let deep = vec!["level"; 32].join("/");
    let code = |p: Packet| match p {
        Packet::SubAck(a) => a.reason_codes[0],
        other => panic!("expected SUBACK, got {other:?}"),
    };
    assert_eq!(
        code(c.subscribe(1, &deep, QoS::AtMostOnce).await),
        ReasonCode::QuotaExceeded
    );
    for i in 0..3 {
        assert_eq!(
            code(c.subscribe(2, &format!("a/b/{i}"), QoS::AtMostOnce).await),
            ReasonCode::Success
        );
    }
    // 96 + 5 + 3 × 160 = 581 each: a fourth would pass 2,000.
    assert_eq!(
        code(c.subscribe(3, "a/b/3", QoS::AtMostOnce).await),
        ReasonCode::QuotaExceeded
    );
    c.send(Packet::Unsubscribe(roost::codec::Unsubscribe {
        packet_id: pid(4),
        properties: Default::default(),
        filters: vec![filter("a/b/0")],
    }))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::UnsubAck(_))));
    assert_eq!(
        code(c.subscribe(5, "a/b/3", QoS::AtMostOnce).await),
        ReasonCode::Success
    );
    broker.shutdown().await;
}
