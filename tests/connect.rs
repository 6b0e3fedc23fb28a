//! CONNECT and CONNACK (3.1.1 sections 3.1, 3.2; MQTT 3.1): client identifiers, protocol
//! levels, session present, takeover, timeouts and limits.

mod support;

use std::time::Duration;

use roost::codec::{Connect, Packet, ProtocolVersion, PublishQoS, ReasonCode};
use roost::{Limits, QoS};
use support::*;

const V4: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

#[tokio::test]
async fn clean_session_connack_has_session_present_0() {
    // MQTT-3.2.2-1 (3.1.1), MQTT-3.2.2-2 (v5): Clean Session / Clean Start 1 → Session Present 0;
    // MQTT-3.1.4-4 (3.1.1), MQTT-3.1.4-5 (v5): an accepted CONNECT gets CONNACK 0x00, the first
    // packet the server sends (MQTT-3.2.0-1 (both)).
    for v in [V4, V5] {
        let broker = start_broker().await;
        let (_raw, ack) = Raw::connect_with(&broker, Connect::new(v, "c1")).await;
        let ack = connack(ack);
        assert_eq!(ack.reason_code, ReasonCode::Success);
        assert!(!ack.session_present);
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn persistent_session_resumes_with_session_present_1() {
    // MQTT-3.2.2-2 (present) and MQTT-3.2.2-3 (absent the first time).
    let broker = start_broker().await;
    let mut c = Connect::new(V4, "p1");
    c.clean_start = false;
    let (mut raw, ack) = Raw::connect_with(&broker, c.clone()).await;
    assert!(!connack(ack).session_present);
    raw.send(Packet::Disconnect(Default::default())).await;
    assert!(raw.closed_promptly().await.is_empty());
    let (_raw, ack) = Raw::connect_with(&broker, c).await;
    assert!(connack(ack).session_present);
    broker.shutdown().await;
}

#[tokio::test]
async fn empty_client_id_with_clean_session_gets_assigned_id() {
    // MQTT-3.1.3-6 / -7 (v5), MQTT-3.2.2-16 (v5): a zero-length Client Identifier gets a unique
    // one, returned as Assigned Client Identifier.
    // MQTT-3.1.3-6 (3.1.1) and v5 §3.2.2.3.7 Assigned Client Identifier.
    let broker = start_broker().await;
    let (_raw, ack) = Raw::connect_with(&broker, Connect::new(V4, "")).await;
    assert_eq!(connack(ack).reason_code, ReasonCode::Success);
    let (_raw5, ack) = Raw::connect_with(&broker, Connect::new(V5, "")).await;
    let ack = connack(ack);
    let assigned = ack.properties.assigned_client_identifier.expect("assigned");
    assert!(!assigned.is_empty());
    // Unique: a second client gets another one, and both stay connected side by side.
    let (mut again, ack) = Raw::connect_with(&broker, Connect::new(V5, "")).await;
    let other = connack(ack)
        .properties
        .assigned_client_identifier
        .expect("assigned");
    assert_ne!(assigned, other);
    assert!(again.ping().await.is_empty(), "both connected");
    broker.shutdown().await;
}

#[tokio::test]
async fn empty_client_id_with_persistent_session_is_refused() {
    // MQTT-3.1.3-8: CONNACK 0x02, then close (MQTT-3.2.2-5).
    let broker = start_broker().await;
    let mut c = Connect::new(V4, "");
    c.clean_start = false;
    let (mut raw, ack) = Raw::connect_with(&broker, c).await;
    let ack = connack(ack);
    assert_eq!(ack.reason_code, ReasonCode::ClientIdentifierNotValid);
    assert!(!ack.session_present, "MQTT-3.2.2-4");
    assert!(raw.closed_promptly().await.is_empty());
    broker.shutdown().await;
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_0x01() {
    // MQTT-3.1.2-2
    let broker = start_broker().await;
    let mut raw = Raw::open(&broker, V4).await;
    raw.send_bytes(&[
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3C, 0x00, 0x00,
    ])
    .await;
    let seen = raw.closed_promptly().await;
    assert_eq!(seen.len(), 1);
    assert_eq!(
        connack(seen[0].clone()).reason_code,
        ReasonCode::UnsupportedProtocolVersion
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn mqtt_3_1_clients_are_accepted() {
    // MQTT 3.1 (MQIsdp, level 3); its client identifiers are 1 to 23 characters.
    let broker = start_broker().await;
    let (_raw, ack) = Raw::connect_with(&broker, Connect::new(ProtocolVersion::V31, "old")).await;
    assert_eq!(connack(ack).reason_code, ReasonCode::Success);
    let long = "a".repeat(24);
    let (_raw, ack) =
        Raw::connect_with(&broker, Connect::new(ProtocolVersion::V31, long.as_str())).await;
    assert_eq!(
        connack(ack).reason_code,
        ReasonCode::ClientIdentifierNotValid
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn first_packet_must_be_connect() {
    // MQTT-3.1.0-1 (both): the first packet must be CONNECT, or the connection is closed.
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut raw = Raw::open(&broker, v).await;
        raw.send(Packet::PingReq).await;
        assert!(raw.closed_promptly().await.is_empty());
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn second_connect_is_a_protocol_violation() {
    // MQTT-3.1.0-2 (both); MQTT-4.8.0-1 (3.1.1): a protocol violation closes the connection;
    // MQTT-4.13.1-1 (v5): with DISCONNECT and the reason code first; MQTT-3.2.0-2 (v5): not
    // with a second CONNACK.
    let broker = start_broker().await;
    let mut raw = Raw::connect(&broker, V4, "twice").await;
    raw.send(Packet::Connect(Box::new(Connect::new(V4, "twice"))))
        .await;
    assert!(raw.closed_promptly().await.is_empty());
    // v5: DISCONNECT 0x82 first.
    let mut raw = Raw::connect(&broker, V5, "twice5").await;
    raw.send(Packet::Connect(Box::new(Connect::new(V5, "twice5"))))
        .await;
    let seen = raw.closed_promptly().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ProtocolError)
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn reserved_connect_flag_closes_without_connack() {
    // MQTT-3.1.2-3 (both): the reserved flag must be 0. MQTT-3.1.4-1 (both) and MQTT-3.2.2-6
    // (3.1.1): a CONNECT that does not conform, for which no return code applies, is closed
    // without a CONNACK.
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut raw = Raw::open(&broker, v).await;
        let connect: &[u8] = if v == V5 {
            &[
                0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x03, 0x00, 0x3C, 0x00, 0x00,
                0x00,
            ]
        } else {
            &[
                0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x03, 0x00, 0x3C, 0x00, 0x00,
            ]
        };
        raw.send_bytes(connect).await;
        let seen = raw.closed_promptly().await;
        assert!(
            seen.iter().all(
                |p| matches!(p, Packet::ConnAck(a) if a.reason_code == ReasonCode::MalformedPacket)
            ),
            "{v:?}: closed, at most with CONNACK 0x81: {seen:?}"
        );
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn silent_connection_is_closed_after_connect_timeout() {
    let broker =
        start_broker_with(Limits::default().with_connect_timeout(Duration::from_millis(200))).await;
    let mut raw = Raw::open(&broker, V4).await;
    assert!(raw.closed_promptly().await.is_empty());
    broker.shutdown().await;
}

#[tokio::test]
async fn takeover_closes_the_existing_connection() {
    // MQTT-3.1.4-2 (3.1.1) and MQTT-3.1.4-3 (v5: DISCONNECT 0x8E to the old client).
    let broker = start_broker().await;
    let mut old = Raw::connect(&broker, V4, "same").await;
    let _new = Raw::connect(&broker, V4, "same").await;
    assert!(old.closed_promptly().await.is_empty());
    let mut old5 = Raw::connect(&broker, V5, "same5").await;
    let _new5 = Raw::connect(&broker, V5, "same5").await;
    let seen = old5.closed_promptly().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::SessionTakenOver),
        "{seen:?}"
    );
    broker.shutdown().await;
}

/// MQTT-3.1.2-24 (3.1.1) and MQTT-3.1.2-22 (v5): Keep Alive is about control packets. A client
/// that drips the bytes of a packet it never finishes is closed 1.5 × Keep Alive after its
/// last complete packet, however often bytes arrive (a slowloris defence as well).
#[tokio::test]
async fn keep_alive_counts_packets_not_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = start_broker().await;
    for version in [V4, V5] {
        let mut c = Connect::new(version, "drip");
        c.keep_alive = 1;
        let (mut raw, _) = Raw::connect_with(&broker, c).await;
        let started = tokio::time::Instant::now();
        // A PUBLISH declaring 100 bytes, sent a byte every 100 ms: never complete in time.
        raw.send_bytes(&[0x30, 0x64]).await;
        let mut closed_after = None;
        let mut byte = [0u8; 64];
        while started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if raw.stream.write_all(&[0x00]).await.is_err() {
                closed_after = Some(started.elapsed());
                break;
            }
            // The broker's side closed (v5: after a DISCONNECT 0x8D, read below).
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(1), raw.stream.peek(&mut byte)).await
            {
                closed_after = Some(started.elapsed());
                break;
            }
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), raw.stream.read(&mut byte)).await
            {
                if n > 0 && version == V5 {
                    // DISCONNECT 0x8D Keep Alive timeout.
                    assert_eq!(&byte[..1], &[0xE0], "{:x?}", &byte[..n]);
                    assert!(byte[..n].contains(&0x8D), "{:x?}", &byte[..n]);
                }
                closed_after = Some(started.elapsed());
                break;
            }
        }
        let closed_after = closed_after.expect("still open after 5 s of dripped bytes");
        assert!(
            closed_after >= Duration::from_millis(1400) && closed_after < Duration::from_secs(3),
            "{version:?}: closed after {closed_after:?}"
        );
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn keep_alive_is_enforced_at_one_and_a_half_times() {
    // MQTT-3.1.2-24: no packet within 1.5 × Keep Alive → the server closes the connection.
    let broker = start_broker().await;
    let mut c = Connect::new(V5, "sleepy");
    c.keep_alive = 1;
    let (mut raw, _) = Raw::connect_with(&broker, c).await;
    let started = tokio::time::Instant::now();
    let seen = raw.closed_promptly().await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "closed after {waited:?}"
    );
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::KeepAliveTimeout),
        "{seen:?}"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn malformed_packet_gets_v5_disconnect_0x81() {
    // MQTT-4.13.1-1 (v5): DISCONNECT with the reason code, then close; MQTT-3.14.4-1 / -2 (v5):
    // nothing after the DISCONNECT, and the connection closes.
    // v5 §4.13: DISCONNECT with the reason code, then close. A PUBLISH with QoS 3.
    let broker = start_broker().await;
    let mut raw = Raw::connect(&broker, V5, "bad").await;
    raw.send_bytes(&[0x36, 0x06, 0x00, 0x01, b't', 0x00, 0x01, 0x00])
        .await;
    let seen = raw.closed_promptly().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::MalformedPacket)
    );
    assert_eq!(broker.metrics().protocol_errors, 1);
    broker.shutdown().await;
}

/// MQTT-1.5.5-1 (v5): a Variable Byte Integer longer than it needs to be is malformed. A v5
/// CONNECT whose Properties Length is 0 written in two bytes is closed (MQTT-3.1.4-1; a
/// CONNACK, if any, is 0x81, never a success); a PUBLISH
/// with such a Properties Length gets DISCONNECT 0x81; a SUBSCRIBE whose Subscription
/// Identifier is written that way too.
#[tokio::test]
async fn non_minimal_variable_byte_integers_are_malformed() {
    let broker = start_broker().await;
    let mut raw = Raw::open(&broker, V5).await;
    raw.send_bytes(&[
        0x10, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x80, 0x00, 0x00,
        0x01, b'a',
    ])
    .await;
    let seen = raw.closed_promptly().await;
    assert!(matches!(&seen[..], [] | [Packet::ConnAck(_)]), "{seen:?}");
    if let [Packet::ConnAck(a)] = &seen[..] {
        assert_eq!(a.reason_code, ReasonCode::MalformedPacket);
    }
    let frames: [&[u8]; 2] = [
        &[0x30, 0x06, 0x00, 0x01, b't', 0x80, 0x00, b'x'],
        &[
            0x82, 0x0A, 0x00, 0x01, 0x03, 0x0B, 0x81, 0x00, 0x00, 0x01, b't', 0x01,
        ],
    ];
    for frame in frames {
        let mut raw = Raw::connect(&broker, V5, "nonminimal").await;
        raw.send_bytes(frame).await;
        let seen = raw.closed_promptly().await;
        assert!(
            matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::MalformedPacket),
            "{frame:x?}: {seen:?}"
        );
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn packet_over_max_size_gets_v5_disconnect_0x95() {
    let broker = start_broker_with(Limits::default().with_max_packet_size(64)).await;
    let mut raw = Raw::connect(&broker, V5, "big").await;
    // Declares 256 MiB; refused from the header alone.
    raw.send_bytes(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]).await;
    let seen = raw.closed_promptly().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PacketTooLarge)
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_as_server_busy() {
    let broker = start_broker_with(Limits::default().with_max_connections(2)).await;
    let _a = Raw::connect(&broker, V4, "a").await;
    let _b = Raw::connect(&broker, V5, "b").await;
    // 3.1.1: return code 0x03 Server unavailable; v5: 0x89 Server busy. Then closed.
    for (v, code) in [
        (V4, ReasonCode::ServerUnavailable),
        (V5, ReasonCode::ServerBusy),
    ] {
        let (mut c, ack) = Raw::connect_with(&broker, Connect::new(v, "c")).await;
        assert_eq!(connack(ack).reason_code, code, "{v:?}");
        assert!(c.closed_promptly().await.is_empty());
    }
    assert_eq!(broker.metrics().connections_refused, 2);
    broker.shutdown().await;
}

/// Issue 12 §3: sockets that never send CONNECT cannot lock real clients out. They hold no
/// place in `max_connections`, and when the pending connections are full the oldest is
/// dropped for a newcomer, so a real client is served at once.
#[tokio::test]
async fn silent_sockets_cannot_starve_real_clients() {
    let broker = start_broker_with(
        Limits::default()
            .with_max_connections(20)
            .with_max_pending_connections(20),
    )
    .await;
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(Raw::open(&broker, V4).await);
    }
    for i in 0..20 {
        let started = std::time::Instant::now();
        let c = Raw::connect(
            &broker,
            if i % 2 == 0 { V4 } else { V5 },
            &format!("real-{i}"),
        )
        .await;
        // Generous for a loaded CI machine; the point is "at once", not "after a timeout".
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        silent.push(c);
    }
    let m = broker.metrics();
    assert_eq!(m.clients_connected, 20, "every real client got in");
    // 20 silent ones made room for the next 20, and one more for the first real client.
    assert!(m.connections_evicted >= 21, "{m:?}");
    // The oldest silent sockets were closed by the broker.
    let mut first = silent.swap_remove(0);
    assert!(first.closed_promptly().await.is_empty());
    broker.shutdown().await;
}

#[tokio::test]
async fn shutdown_sends_v5_clients_server_shutting_down() {
    // MQTT-3.14.2-1 (v5): a DISCONNECT code from the list (the harness decoder refuses others,
    // codec::tests::rules::invalid_reason_codes).
    // MQTT-3.14.2-2 (v5): the server's DISCONNECT carries no Session Expiry Interval.
    let broker = start_broker().await;
    let mut raw = Raw::connect(&broker, V5, "bye").await;
    within(broker.shutdown()).await;
    let seen = raw.closed_promptly().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ServerShuttingDown && d.properties.session_expiry_interval.is_none())
    );
}

#[tokio::test]
async fn client_ids_of_1_to_23_letters_and_digits_are_accepted() {
    // MQTT-3.1.3-5 (both): the server allows identifiers of 1 to 23 bytes of [0-9a-zA-Z].
    let broker = start_broker().await;
    for v in [V4, V5] {
        for id in [
            "a",
            "Z9",
            "0123456789abcdefghijklm",
            "ABCDEFGHIJKLMNOPQRSTUVW",
        ] {
            let (_c, ack) = Raw::connect_with(&broker, Connect::new(v, id)).await;
            assert!(support::connack(ack).reason_code.is_success(), "{v:?} {id}");
        }
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn pingreq_gets_pingresp() {
    // MQTT-3.12.4-1 (both).
    let broker = start_broker().await;
    for v in [V4, V5] {
        let mut c = Raw::connect(&broker, v, "pinger").await;
        c.send(Packet::PingReq).await;
        assert_eq!(c.recv().await, Some(Packet::PingResp), "{v:?}");
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn nothing_after_a_refused_connect_is_processed() {
    // MQTT-3.14.0-1 (v5): no DISCONNECT before a successful CONNACK (the refusal is a CONNACK);
    // MQTT-4.13.2-1 (v5): a CONNACK of 0x80 or more closes the connection.
    // MQTT-3.1.4-5 (3.1.1) and MQTT-3.1.4-6 (v5): a PUBLISH sent right behind a CONNECT
    // the server refuses (bad password) is not processed; MQTT-3.2.2-4, -5 (3.1.1) and
    // MQTT-3.2.2-6, -7 (v5): the refusing CONNACK has Session Present 0, then the
    // connection closes.
    let users = roost::auth::StaticUsers::new()
        .with_user("alice", "a-pass")
        .expect("hashes");
    let broker = roost::Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .authenticator(std::sync::Arc::new(users))
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    let mut login = Connect::new(V5, "watcher");
    login.username = Some("alice".into());
    login.password = Some(bytes::Bytes::from_static(b"a-pass"));
    let (mut watcher, ack) = Raw::connect_with(&broker, login).await;
    assert!(support::connack(ack).reason_code.is_success());
    watcher.subscribe(1, "#", QoS::AtMostOnce).await;
    for v in [V4, V5] {
        let mut bad = Connect::new(v, "mallory");
        bad.username = Some("alice".into());
        bad.password = Some(bytes::Bytes::from_static(b"guess"));
        let mut out = bytes::BytesMut::new();
        Packet::Connect(Box::new(bad))
            .encode(v, &mut out)
            .expect("encodes");
        Packet::Publish(roost::codec::Publish::new(
            topic("smuggled"),
            PublishQoS::AtMostOnce,
            &b"x"[..],
        ))
        .encode(v, &mut out)
        .expect("encodes");
        let mut raw = Raw::open(&broker, v).await;
        raw.send_bytes(&out).await;
        let seen = raw.closed_promptly().await;
        match &seen[..] {
            [Packet::ConnAck(a)] => {
                assert!(!a.reason_code.is_success(), "{v:?}");
                assert!(!a.session_present, "{v:?}");
            }
            other => panic!("{v:?}: expected one refusing CONNACK, got {other:?}"),
        }
    }
    assert!(
        watcher.ping().await.is_empty(),
        "the smuggled PUBLISH was not routed"
    );
    assert_eq!(broker.metrics().messages_received, 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn protocol_errors_are_counted_by_the_rule_they_break() {
    // Issue 14 §5: every violation names its rule, in the log and in a per-rule counter.
    let broker = start_broker().await;
    // MQTT-3.1.0-2: a second CONNECT.
    let mut c = Raw::connect(&broker, V5, "twice").await;
    c.send(Packet::Connect(Box::new(Connect::new(V5, "twice"))))
        .await;
    c.closed_promptly().await;
    // MQTT-3.3.2-8: Topic Alias 0, twice.
    for id in ["alias-a", "alias-b"] {
        let mut c = Raw::connect(&broker, V5, id).await;
        let mut p = roost::codec::Publish::new(topic("t"), PublishQoS::AtMostOnce, &b"x"[..]);
        p.properties.topic_alias = Some(0);
        c.send(Packet::Publish(p)).await;
        c.closed_promptly().await;
    }
    // MQTT-3.3.1-2 (a decoder rule): DUP on QoS 0.
    let mut c = Raw::connect(&broker, V4, "dup").await;
    c.send_bytes(&[0x38, 0x04, 0x00, 0x01, b't', b'x']).await;
    c.closed_promptly().await;
    // MQTT-3.1.0-1: a first packet that is not CONNECT.
    let mut c = Raw::open(&broker, V4).await;
    c.send(Packet::PingReq).await;
    c.closed_promptly().await;
    let rules = broker.protocol_errors_by_rule();
    assert_eq!(
        rules,
        [
            ("MQTT-3.1.0-1", 1),
            ("MQTT-3.1.0-2", 1),
            ("MQTT-3.3.1-2", 1),
            ("MQTT-3.3.2-8 (v5)", 2)
        ]
    );
    assert_eq!(broker.metrics().protocol_errors, 5);
    broker.shutdown().await;
}
