//! MQTT 5.0 messages: Message Expiry, Topic Aliases, Payload Format, property forwarding,
//! Receive Maximum and Maximum Packet Size both ways, Request Problem Information.

mod support;

use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;

use bytes::Bytes;
use roost::codec::{
    Connect, Packet, PayloadFormat, ProtocolVersion, Publish, PublishProperties, PublishQoS,
    ReasonCode, UserProperty,
};
use roost::{Capabilities, QoS};
use support::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn publish(t: &str, payload: &'static [u8], qos: PublishQoS) -> Publish {
    Publish::new(topic(t), qos, payload)
}

fn disconnect_code(seen: &[Packet]) -> Option<ReasonCode> {
    match seen {
        [.., Packet::Disconnect(d)] => Some(d.reason_code),
        _ => None,
    }
}

#[tokio::test]
async fn properties_are_forwarded_unchanged_and_in_order() {
    // MQTT-3.3.2-4 (payload format), -16 (correlation data), -17/-18 (user properties,
    // order), -20 (content type); v5 §3.3.2.3.5 (response topic).
    let broker = start_broker().await;
    let mut sub = Raw::connect(&broker, V5, "sub").await;
    sub.subscribe(1, "req", QoS::AtLeastOnce).await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    let mut m = publish("req", b"{}", PublishQoS::AtLeastOnce(pid(1)));
    m.properties = PublishProperties {
        payload_format_indicator: Some(PayloadFormat::Utf8),
        content_type: Some("application/json".into()),
        response_topic: Some(topic("resp/1")),
        correlation_data: Some(Bytes::from_static(&[1, 2, 3])),
        user_properties: vec![
            UserProperty::new("z", "1"),
            UserProperty::new("a", "2"),
            UserProperty::new("z", "3"),
        ],
        ..PublishProperties::default()
    };
    p.send(Packet::Publish(m.clone())).await;
    let got = sub.next_message().await;
    assert_eq!(
        got.properties.payload_format_indicator,
        m.properties.payload_format_indicator
    );
    assert_eq!(got.properties.content_type, m.properties.content_type);
    assert_eq!(got.properties.response_topic, m.properties.response_topic);
    assert_eq!(
        got.properties.correlation_data,
        m.properties.correlation_data
    );
    assert_eq!(got.properties.user_properties, m.properties.user_properties);
    broker.shutdown().await;
}

#[tokio::test]
async fn expired_messages_are_not_delivered_and_remaining_time_is_forwarded() {
    // MQTT-3.3.2-5: expired before onward delivery started → deleted; MQTT-3.3.2-6: the
    // interval sent is what is left.
    let broker = start_broker().await;
    let mut c = Connect::new(V5, "away");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(600);
    let (mut sub, _) = Raw::connect_with(&broker, c.clone()).await;
    sub.subscribe(1, "e/#", QoS::AtLeastOnce).await;
    sub.send(Packet::Disconnect(Default::default())).await;
    sub.closed_promptly().await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    let mut short = publish("e/short", b"short", PublishQoS::AtLeastOnce(pid(1)));
    short.properties.message_expiry_interval = Some(1);
    let mut long = publish("e/long", b"long", PublishQoS::AtLeastOnce(pid(2)));
    long.properties.message_expiry_interval = Some(100);
    p.send(Packet::Publish(short)).await;
    p.send(Packet::Publish(long)).await;
    p.ping().await;
    tokio::time::sleep(Duration::from_millis(1300)).await; // let the short one expire
    let (mut sub, _) = Raw::connect_with(&broker, c).await;
    let got = sub.next_message().await;
    assert_eq!(&got.payload[..], b"long");
    let left = got.properties.message_expiry_interval.expect("forwarded");
    assert!((98..=99).contains(&left), "remaining interval {left}");
    assert!(sub.ping().await.is_empty());
    assert_eq!(broker.metrics().messages_expired, 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn expired_retained_messages_are_not_sent() {
    let broker = start_broker().await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    let mut m = publish("ret/e", b"soon gone", PublishQoS::AtMostOnce);
    m.retain = true;
    m.properties.message_expiry_interval = Some(1);
    p.send(Packet::Publish(m)).await;
    p.ping().await;
    let mut early = Raw::connect(&broker, V5, "early").await;
    early.subscribe(1, "ret/e", QoS::AtMostOnce).await;
    assert!(early.next_message().await.retain);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let mut late = Raw::connect(&broker, V5, "late").await;
    late.subscribe(1, "ret/e", QoS::AtMostOnce).await;
    assert!(late.ping().await.is_empty());
    broker.shutdown().await;
}

#[tokio::test]
async fn inbound_topic_aliases_map_per_connection() {
    // v5 §3.3.2.3.4; MQTT-3.3.2-12: the server accepts aliases 1..=its maximum.
    let broker = start_broker().await;
    let mut sub = Raw::connect(&broker, V5, "sub").await;
    sub.subscribe(1, "long/topic/name", QoS::AtMostOnce).await;
    // A session that outlives the connection: the aliases still must not.
    let mut persistent = Connect::new(V5, "p");
    persistent.clean_start = false;
    persistent.properties.session_expiry_interval = Some(60);
    let (mut p, _) = Raw::connect_with(&broker, persistent.clone()).await;
    let mut first = publish("long/topic/name", b"1", PublishQoS::AtMostOnce);
    first.properties.topic_alias = Some(3);
    p.send(Packet::Publish(first)).await;
    let mut second = Publish::new(roost::TopicName::empty(), PublishQoS::AtMostOnce, &b"2"[..]);
    second.properties.topic_alias = Some(3);
    p.send(Packet::Publish(second)).await;
    for want in [b"1", b"2"] {
        let got = sub.next_message().await;
        assert_eq!(got.topic, topic("long/topic/name"));
        assert_eq!(&got.payload[..], want);
        assert_eq!(
            got.properties.topic_alias, None,
            "aliases are not forwarded"
        );
    }
    // MQTT-3.3.2-7: a new connection of the same client and session starts without
    // mappings.
    p.send(Packet::Disconnect(Default::default())).await;
    assert!(p.closed_promptly().await.is_empty());
    let (mut p2, connack) = Raw::connect_with(&broker, persistent).await;
    assert!(
        support::connack(connack).session_present,
        "the same session"
    );
    let mut orphan = Publish::new(roost::TopicName::empty(), PublishQoS::AtMostOnce, &b"3"[..]);
    orphan.properties.topic_alias = Some(3);
    p2.send(Packet::Publish(orphan)).await;
    assert_eq!(
        disconnect_code(&p2.closed_promptly().await),
        Some(ReasonCode::ProtocolError)
    );
    broker.shutdown().await;
}

/// Receives `n` messages, the topic each names (by alias or in full) resolved the way a
/// client must (§3.3.2.3.4), and checks every alias is within `max` (MQTT-3.1.2-26).
async fn aliased_topics(sub: &mut Raw, n: usize, max: u16) -> Vec<(String, Option<u16>)> {
    let mut known = std::collections::HashMap::new();
    let mut out = Vec::new();
    for _ in 0..n {
        let got = sub.next_message().await;
        let alias = got.properties.topic_alias;
        let name = match alias {
            Some(a) => {
                assert!((1..=max).contains(&a), "alias {a} over the maximum {max}");
                if got.topic.is_empty() {
                    known
                        .get(&a)
                        .cloned()
                        .expect("an alias the broker set before")
                } else {
                    known.insert(a, got.topic.as_str().to_owned());
                    got.topic.as_str().to_owned()
                }
            }
            None => got.topic.as_str().to_owned(),
        };
        out.push((name, alias.filter(|_| got.topic.is_empty())));
    }
    out
}

#[tokio::test]
async fn outbound_topic_aliases_within_the_clients_maximum() {
    // MQTT-3.3.2-11: never an alias above the client's Topic Alias Maximum; MQTT-3.3.2-3: the
    // topic a copy names matches the subscription.
    // v5 §3.3.2.3.4; MQTT-3.1.2-26: never above the client's Topic Alias Maximum (2 here);
    // the least recently used alias is replaced.
    let broker = start_broker().await;
    let mut c = Connect::new(V5, "sub");
    c.properties.topic_alias_maximum = Some(2);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(60);
    let (mut sub, _) = Raw::connect_with(&broker, c.clone()).await;
    sub.subscribe(1, "plant/#", QoS::AtLeastOnce).await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    let order = [
        "plant/a", "plant/b", "plant/a", "plant/c", "plant/a", "plant/b",
    ];
    for (i, t) in order.iter().enumerate() {
        let qos = if i % 2 == 0 {
            PublishQoS::AtMostOnce
        } else {
            PublishQoS::AtLeastOnce(pid(i as u16 + 1))
        };
        p.publish(t, b"x", qos, false).await;
    }
    // One more with a Message Expiry Interval: a copy with a wire form of its own.
    let mut expiring = publish("plant/b", b"e", PublishQoS::AtMostOnce);
    expiring.properties.message_expiry_interval = Some(600);
    p.send(Packet::Publish(expiring)).await;
    let got = aliased_topics(&mut sub, order.len() + 1, 2).await;
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..order.len()],
        order,
        "every topic resolves to what was published"
    );
    assert_eq!(names[order.len()], "plant/b");
    // Sent by alias only: the 3rd ("plant/a" again), the 5th ("plant/a", kept as the most
    // recently used when "plant/c" replaced "plant/b") and the expiring "plant/b".
    let by_alias: Vec<bool> = got.iter().map(|(_, a)| a.is_some()).collect();
    assert_eq!(by_alias, [false, false, true, false, true, false, true]);

    // MQTT-3.3.2-7 (v5 §3.3.2.3.4): a new connection starts with no aliases, so the first
    // message on it names its topic again.
    sub.send(Packet::Disconnect(Default::default())).await;
    assert!(sub.closed_promptly().await.is_empty());
    let (mut sub, connack) = Raw::connect_with(&broker, c).await;
    assert!(
        support::connack(connack).session_present,
        "the same session"
    );
    p.publish("plant/a", b"y", PublishQoS::AtMostOnce, false)
        .await;
    let again = sub.next_message().await;
    assert_eq!(again.topic, topic("plant/a"));
    broker.shutdown().await;
}

#[tokio::test]
async fn no_outbound_topic_aliases_without_the_clients_consent_or_when_off() {
    // MQTT-3.1.2-27: absent (or 0) Topic Alias Maximum → no Topic Alias is sent. And the
    // broker's own switch: Capabilities::outbound_topic_aliases = 0.
    for (caps_aliases, client_max) in [(32, None), (32, Some(0)), (0, Some(10))] {
        let broker = start_broker_with_caps(
            Capabilities::default().with_outbound_topic_aliases(caps_aliases),
        )
        .await;
        let mut c = Connect::new(V5, "sub");
        c.properties.topic_alias_maximum = client_max;
        let (mut sub, _) = Raw::connect_with(&broker, c).await;
        sub.subscribe(1, "room/+", QoS::AtMostOnce).await;
        let mut p = Raw::connect(&broker, V5, "p").await;
        for _ in 0..3 {
            p.publish("room/1", b"x", PublishQoS::AtMostOnce, false)
                .await;
        }
        for _ in 0..3 {
            let got = sub.next_message().await;
            assert_eq!(got.topic, topic("room/1"));
            assert_eq!(
                got.properties.topic_alias, None,
                "{caps_aliases} {client_max:?}"
            );
        }
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn topic_alias_zero_or_over_the_maximum_is_0x94() {
    // MQTT-3.3.2-8 (alias 0) and MQTT-3.3.2-9 (above Topic Alias Maximum).
    let broker = start_broker_with_caps(Capabilities::default().with_topic_alias_maximum(5)).await;
    for alias in [0u16, 6] {
        let mut p = Raw::connect(&broker, V5, "p").await;
        let mut m = publish("t", b"x", PublishQoS::AtMostOnce);
        m.properties.topic_alias = Some(alias);
        p.send(Packet::Publish(m)).await;
        assert_eq!(
            disconnect_code(&p.closed_promptly().await),
            Some(ReasonCode::TopicAliasInvalid),
            "alias {alias}"
        );
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn invalid_utf8_with_payload_format_1_is_refused_with_0x99() {
    // v5 §3.3.2.3.2: PUBACK/PUBREC 0x99, or DISCONNECT 0x99 for QoS 0.
    let broker = start_broker().await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    let mut m = publish("pf", &[0xFF, 0xFE], PublishQoS::AtLeastOnce(pid(1)));
    m.properties.payload_format_indicator = Some(PayloadFormat::Utf8);
    p.send(Packet::Publish(m.clone())).await;
    match p.recv().await {
        Some(Packet::PubAck(a)) => {
            assert_eq!(a.reason_code, ReasonCode::PayloadFormatInvalid);
            assert!(
                a.properties.reason_string.is_some(),
                "problem information by default"
            );
        }
        other => panic!("{other:?}"),
    }
    m.qos = PublishQoS::ExactlyOnce(pid(2));
    p.send(Packet::Publish(m.clone())).await;
    assert!(
        matches!(p.recv().await, Some(Packet::PubRec(a)) if a.reason_code == ReasonCode::PayloadFormatInvalid)
    );
    m.qos = PublishQoS::AtMostOnce;
    p.send(Packet::Publish(m)).await;
    assert_eq!(
        disconnect_code(&p.closed_promptly().await),
        Some(ReasonCode::PayloadFormatInvalid)
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn request_problem_information_0_strips_reason_strings_from_acks() {
    // MQTT-3.1.2-29
    let broker = start_broker().await;
    let mut c = Connect::new(V5, "quiet");
    c.properties.request_problem_information = Some(false);
    let (mut p, _) = Raw::connect_with(&broker, c).await;
    let mut m = publish("pf", &[0xFF], PublishQoS::AtLeastOnce(pid(1)));
    m.properties.payload_format_indicator = Some(PayloadFormat::Utf8);
    p.send(Packet::Publish(m)).await;
    match p.recv().await {
        Some(Packet::PubAck(a)) => {
            assert_eq!(a.reason_code, ReasonCode::PayloadFormatInvalid);
            assert_eq!(a.properties.reason_string, None);
        }
        other => panic!("{other:?}"),
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn client_exceeding_our_receive_maximum_gets_0x93() {
    // MQTT-3.3.4-7: at most Receive Maximum unacknowledged QoS 2 PUBLISHes.
    let broker = start_broker_with_caps(Capabilities::default().with_receive_maximum(2)).await;
    let (mut p, ack) = Raw::connect_with(&broker, Connect::new(V5, "flood")).await;
    assert!(
        matches!(ack, Packet::ConnAck(a) if a.properties.receive_maximum == NonZeroU16::new(2))
    );
    for i in 1..=3u16 {
        p.publish("q2", b"x", PublishQoS::ExactlyOnce(pid(i)), false)
            .await;
    }
    let seen = p.closed_promptly().await;
    assert_eq!(
        disconnect_code(&seen),
        Some(ReasonCode::ReceiveMaximumExceeded)
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn server_respects_the_clients_receive_maximum() {
    // MQTT-4.9.0-1 / -2: the send quota starts at the client's Receive Maximum and each QoS 1/2
    // PUBLISH uses one; MQTT-3.3.4-10, MQTT-4.9.0-3: with the quota at zero, other packets
    // (PINGRESP) are not held back.
    // MQTT-3.3.4-9: never more unacknowledged QoS 1/2 PUBLISHes than the client's maximum.
    let broker = start_broker().await;
    let mut c = Connect::new(V5, "slow");
    c.properties.receive_maximum = NonZeroU16::new(2);
    let (mut sub, _) = Raw::connect_with(&broker, c).await;
    sub.subscribe(1, "rm", QoS::AtLeastOnce).await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    for i in 1..=4u16 {
        p.publish("rm", b"m", PublishQoS::AtLeastOnce(pid(i)), false)
            .await;
    }
    p.ping().await;
    let a = sub.recv_publish().await;
    let b = sub.recv_publish().await;
    assert!(sub.ping().await.is_empty(), "held back at two");
    sub.ack(&a).await;
    sub.ack(&b).await;
    let c3 = sub.recv_publish().await;
    let c4 = sub.recv_publish().await;
    sub.ack(&c3).await;
    sub.ack(&c4).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn packets_over_the_clients_maximum_size_are_not_sent() {
    // MQTT-3.1.2-24 / -25: discarded as if sent, and counted.
    let broker = start_broker().await;
    let mut c = Connect::new(V5, "small");
    c.properties.maximum_packet_size = NonZeroU32::new(64);
    let (mut sub, _) = Raw::connect_with(&broker, c).await;
    sub.subscribe(1, "sz", QoS::AtLeastOnce).await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    p.publish("sz", &[0u8; 100], PublishQoS::AtLeastOnce(pid(1)), false)
        .await;
    p.publish("sz", b"fits", PublishQoS::AtLeastOnce(pid(2)), false)
        .await;
    let got = sub.next_message().await;
    assert_eq!(&got.payload[..], b"fits");
    assert_eq!(broker.metrics().messages_dropped_too_large, 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn subscription_identifier_from_a_client_is_a_protocol_error() {
    // MQTT-3.3.4-6
    let broker = start_broker().await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    let mut m = publish("t", b"x", PublishQoS::AtMostOnce);
    m.properties.subscription_identifiers = vec![NonZeroU32::new(1).expect("non-zero")];
    p.send(Packet::Publish(m)).await;
    assert_eq!(
        disconnect_code(&p.closed_promptly().await),
        Some(ReasonCode::ProtocolError)
    );
    broker.shutdown().await;
}

/// The Reason String of a refusal, and what is left of the packet without it, for a client
/// whose Maximum Packet Size is `max`.
async fn refusals(max: Option<u32>) -> Vec<(&'static str, Packet)> {
    let broker = start_broker_with_caps(Capabilities::default().with_retain_available(false)).await;
    let connect = |id: &str| {
        let mut c = Connect::new(V5, id);
        c.properties.maximum_packet_size = max.and_then(NonZeroU32::new);
        c
    };
    let mut out = Vec::new();
    // CONNACK 0x9A: a retained will where retained messages are not available.
    let mut c = connect("will-r");
    c.will = Some(roost::codec::LastWill {
        topic: topic("w"),
        payload: Bytes::from_static(b"x"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Default::default(),
    });
    let (_r, ack) = Raw::connect_with(&broker, c).await;
    out.push(("CONNACK", ack));
    // PUBACK 0x87: a client may not publish to $SYS.
    let (mut p, _) = Raw::connect_with(&broker, connect("p")).await;
    p.publish("$SYS/x", b"x", PublishQoS::AtLeastOnce(pid(1)), false)
        .await;
    out.push(("PUBACK", p.recv().await.expect("PUBACK")));
    // PUBREC 0x87 likewise.
    p.publish("$SYS/y", b"x", PublishQoS::ExactlyOnce(pid(2)), false)
        .await;
    out.push(("PUBREC", p.recv().await.expect("PUBREC")));
    // DISCONNECT 0x94: Topic Alias 0.
    let mut bad = publish("t", b"x", PublishQoS::AtMostOnce);
    bad.properties.topic_alias = Some(0);
    p.send(Packet::Publish(bad)).await;
    let seen = p.closed_promptly().await;
    out.push(("DISCONNECT", seen.into_iter().last().expect("DISCONNECT")));
    broker.shutdown().await;
    out
}

#[tokio::test]
async fn reason_strings_never_push_a_packet_over_the_clients_maximum_size() {
    // MQTT-3.2.2-19, -20 (CONNACK), MQTT-3.4.2-2, -3 (PUBACK), MQTT-3.5.2-2, -3 (PUBREC),
    // MQTT-3.14.2-3, -4 (DISCONNECT):
    // a Reason String (or User Property) that would make the packet larger than the client's
    // Maximum Packet Size is left out; the packet itself still goes, with its reason code.
    // (The same rule for PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK and AUTH runs through the
    // same writer: connection::writer::Writer::send_control.)
    // Room for the broker's CONNACK of success and a bare refusal, not for a Reason String.
    const MAX: u32 = 22;
    let roomy = refusals(None).await;
    let tight = refusals(Some(MAX)).await;
    let reason = |p: &Packet| match p {
        Packet::ConnAck(a) => (a.reason_code, a.properties.reason_string.is_some()),
        Packet::PubAck(a) | Packet::PubRec(a) => {
            (a.reason_code, a.properties.reason_string.is_some())
        }
        Packet::Disconnect(d) => (d.reason_code, d.properties.reason_string.is_some()),
        other => panic!("unexpected {other:?}"),
    };
    for ((what, a), (_, b)) in roomy.iter().zip(&tight) {
        let (code_a, with_a) = reason(a);
        let (code_b, with_b) = reason(b);
        assert_eq!(code_a, code_b, "{what}: the same refusal");
        assert!(with_a, "{what}: a Reason String when there is room");
        assert!(!with_b, "{what}: none when it would not fit");
        assert!(
            b.encoded_len(V5).expect("encodes") <= MAX as usize,
            "{what}: within the maximum"
        );
    }
    let codes: Vec<_> = tight.iter().map(|(_, p)| reason(p).0).collect();
    assert_eq!(
        codes,
        [
            ReasonCode::RetainNotSupported,
            ReasonCode::NotAuthorized,
            ReasonCode::NotAuthorized,
            ReasonCode::TopicAliasInvalid
        ]
    );
}

#[tokio::test]
async fn message_expiry_does_not_cut_a_started_qos2_exchange() {
    // MQTT-4.3.3-7: once the broker has sent a QoS 2 PUBLISH it does not apply message
    // expiry to it: the copy still unacknowledged when the session resumes is sent again,
    // expired or not. MQTT-4.3.3-13: as receiver the broker finishes the exchange (PUBCOMP)
    // even when the message has expired meanwhile.
    let broker = start_broker().await;
    let mut c = Connect::new(V5, "slowpoke");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(600);
    let (mut sub, _) = Raw::connect_with(&broker, c.clone()).await;
    sub.subscribe(1, "exp", QoS::ExactlyOnce).await;
    let mut p = Raw::connect(&broker, V5, "p").await;
    let mut m = publish("exp", b"soon gone", PublishQoS::ExactlyOnce(pid(1)));
    m.properties.message_expiry_interval = Some(1);
    p.send(Packet::Publish(m)).await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(_))));
    let first = sub.recv_publish().await;
    assert_eq!(&first.payload[..], b"soon gone");
    drop(sub);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The publisher's exchange: PUBREL after the expiry still gets PUBCOMP 0x00.
    p.send(Packet::PubRel(roost::codec::PubResponse::new(pid(1))))
        .await;
    match p.recv().await {
        Some(Packet::PubComp(c)) => assert_eq!(c.reason_code, ReasonCode::Success),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    let (mut sub, _) = Raw::connect_with(&broker, c).await;
    let again = sub.recv_publish().await;
    assert_eq!(&again.payload[..], b"soon gone");
    assert!(again.dup, "the same PUBLISH, sent again");
    broker.shutdown().await;
}
