//! What CONNACK advertises, and the broker enforcing it (v5 §3.2.2.3).

mod support;

use std::num::NonZeroU32;

use bytes::Bytes;
use roost::codec::{
    Connect, LastWill, Packet, ProtocolVersion, PublishQoS, ReasonCode, WillProperties,
};
use roost::{Capabilities, Limits, QoS, Redirect};
use support::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

#[tokio::test]
async fn default_connack_advertises_limits() {
    let broker = start_broker_with(Limits::default().with_max_packet_size(4096)).await;
    let (_c, ack) = Raw::connect_with(&broker, Connect::new(V5, "c")).await;
    let p = connack(ack).properties;
    assert_eq!(p.maximum_packet_size, NonZeroU32::new(4096));
    assert_eq!(p.receive_maximum.map(|r| r.get()), Some(1024));
    assert_eq!(p.topic_alias_maximum, Some(64));
    // Absent means "supported" for these (v5 §3.2.2.3.5, .11, .12, .13) and QoS 2.
    assert_eq!(p.maximum_qos, None);
    assert_eq!(p.retain_available, None);
    assert_eq!(p.wildcard_subscription_available, None);
    assert_eq!(p.subscription_identifiers_available, None);
    assert_eq!(p.shared_subscription_available, None);
    broker.shutdown().await;
}

#[tokio::test]
async fn restricted_broker_advertises_and_enforces() {
    // MQTT-3.2.2-9: without QoS 2 support the CONNACK says Maximum QoS.
    let broker = start_broker_with_caps(
        Capabilities::default()
            .with_maximum_qos(QoS::AtLeastOnce)
            .with_retain_available(false)
            .with_wildcard_subscriptions(false)
            .with_subscription_identifiers(false)
            .with_shared_subscriptions(false),
    )
    .await;
    let (mut c, ack) = Raw::connect_with(&broker, Connect::new(V5, "c")).await;
    let p = connack(ack).properties;
    assert_eq!(p.maximum_qos, Some(QoS::AtLeastOnce));
    assert_eq!(p.retain_available, Some(false));
    assert_eq!(p.wildcard_subscription_available, Some(false));
    assert_eq!(p.subscription_identifiers_available, Some(false));
    assert_eq!(p.shared_subscription_available, Some(false));
    // MQTT-3.2.2-11 is the client's duty; the broker answers a breach with 0x9B.
    c.publish("t", b"x", PublishQoS::ExactlyOnce(pid(1)), false)
        .await;
    let seen = c.closed_promptly().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::QoSNotSupported)
    );
    // Retain not available: 0x9A.
    let (mut c, _) = Raw::connect_with(&broker, Connect::new(V5, "r")).await;
    c.publish("t", b"x", PublishQoS::AtMostOnce, true).await;
    let seen = c.closed_promptly().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::RetainNotSupported)
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn will_beyond_capabilities_is_refused_in_connack() {
    // MQTT-3.2.2-12: a will above the Maximum QoS is refused.
    // MQTT-3.2.2-13 (retained will without retain support → 0x9A), and will QoS above the
    // maximum → 0x9B (v5 §3.2.2.3.4).
    let broker = start_broker_with_caps(
        Capabilities::default()
            .with_maximum_qos(QoS::AtMostOnce)
            .with_retain_available(false),
    )
    .await;
    for (qos, retain, code) in [
        (QoS::AtLeastOnce, false, ReasonCode::QoSNotSupported),
        (QoS::AtMostOnce, true, ReasonCode::RetainNotSupported),
    ] {
        let mut c = Connect::new(V5, "w");
        c.will = Some(LastWill {
            topic: topic("w"),
            payload: Bytes::new(),
            qos,
            retain,
            properties: WillProperties::default(),
        });
        let (mut raw, ack) = Raw::connect_with(&broker, c).await;
        let ack = connack(ack);
        assert_eq!(ack.reason_code, code);
        assert!(!ack.session_present, "MQTT-3.2.2-6");
        assert!(
            raw.closed_promptly().await.is_empty(),
            "MQTT-3.2.2-7: closed after the refusal"
        );
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn server_keep_alive_caps_the_clients_value() {
    // MQTT-3.2.2-21/-22: the client uses Server Keep Alive when sent.
    let broker =
        start_broker_with_caps(Capabilities::default().with_max_keep_alive(Some(30))).await;
    let mut c = Connect::new(V5, "ka");
    c.keep_alive = 600;
    let (_c, ack) = Raw::connect_with(&broker, c).await;
    assert_eq!(connack(ack).properties.server_keep_alive, Some(30));
    let mut c = Connect::new(V5, "ka2");
    c.keep_alive = 10;
    let (_c, ack) = Raw::connect_with(&broker, c).await;
    assert_eq!(connack(ack).properties.server_keep_alive, None);
    broker.shutdown().await;
}

#[tokio::test]
async fn session_expiry_is_capped_and_the_granted_value_returned() {
    let broker =
        start_broker_with_caps(Capabilities::default().with_max_session_expiry_interval(60)).await;
    let mut c = Connect::new(V5, "se");
    c.properties.session_expiry_interval = Some(3600);
    let (_c, ack) = Raw::connect_with(&broker, c).await;
    assert_eq!(connack(ack).properties.session_expiry_interval, Some(60));
    broker.shutdown().await;
}

#[tokio::test]
async fn response_information_only_when_requested() {
    // MQTT-3.1.2-28: not returned unless requested.
    let broker = start_broker_with_caps(
        Capabilities::default().with_response_information(Some("replies/".to_string())),
    )
    .await;
    let mut c = Connect::new(V5, "ri");
    c.properties.request_response_information = Some(true);
    let (_c, ack) = Raw::connect_with(&broker, c).await;
    assert_eq!(
        connack(ack).properties.response_information.as_deref(),
        Some("replies/")
    );
    let (_c, ack) = Raw::connect_with(&broker, Connect::new(V5, "ri2")).await;
    assert_eq!(connack(ack).properties.response_information, None);
    broker.shutdown().await;
}

#[tokio::test]
async fn redirect_refuses_with_server_reference() {
    // v5 §4.11: 0x9C Use another server / 0x9D Server moved, with Server Reference.
    for (permanent, code) in [
        (false, ReasonCode::UseAnotherServer),
        (true, ReasonCode::ServerMoved),
    ] {
        let broker =
            start_broker_with_caps(Capabilities::default().with_redirect(Some(Redirect {
                permanent,
                reference: "backup:1883".to_string(),
            })))
            .await;
        let (_c, ack) = Raw::connect_with(&broker, Connect::new(V5, "x")).await;
        let ack = connack(ack);
        assert_eq!(ack.reason_code, code);
        assert_eq!(
            ack.properties.server_reference.as_deref(),
            Some("backup:1883")
        );
        broker.shutdown().await;
    }
}

/// Issue 13 §3, graceful close: when the broker ends a connection with a reason, the
/// client can read it even if it had sent more than the broker read. Closing a socket with
/// unread input makes the kernel send a reset, which throws away what the client had not
/// read yet: the DISCONNECT 0x93 would be lost. A v5 client sends Receive Maximum + 1 QoS 2
/// PUBLISHes and more behind them, without reading, then reads: it finds its PUBRECs and
/// DISCONNECT 0x93 (MQTT-3.3.4-8), then the end of the stream.
#[tokio::test]
async fn a_client_reads_the_disconnect_reason_after_sending_more() {
    use bytes::BytesMut;
    use roost::codec::{Publish, PublishQoS};
    let broker = start_broker_with_caps(Capabilities::default().with_receive_maximum(10)).await;
    let raw = Raw::connect(&broker, V5, "flood").await;
    let mut out = BytesMut::new();
    for i in 1..=60u16 {
        let p = Publish::new(
            topic("q2"),
            PublishQoS::ExactlyOnce(pid(i)),
            bytes::Bytes::from(vec![0x55; 512]),
        );
        Packet::Publish(p).encode(V5, &mut out).expect("encodes");
    }
    // And 4 MB more behind them, more than the broker reads before it stops. Like a simple
    // client, write it all, then read: the write must not fail with a reset.
    for _ in 0..64 {
        let p = Publish::new(
            topic("more"),
            PublishQoS::AtMostOnce,
            bytes::Bytes::from(vec![0x66; 64 * 1024]),
        );
        Packet::Publish(p).encode(V5, &mut out).expect("encodes");
    }
    let (mut rd, mut wr) = raw.stream.into_split();
    {
        use tokio::io::AsyncWriteExt;
        let written =
            tokio::time::timeout(std::time::Duration::from_secs(10), wr.write_all(&out)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("writing failed ({e}): the broker reset the connection"),
            Err(_) => panic!("the broker neither read nor closed"),
        }
    }
    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    loop {
        use tokio::io::AsyncReadExt;
        while let Some(p) = roost::codec::decode(&mut buf, &roost::codec::DecodeLimits::new(V5))
            .expect("valid packets")
        {
            seen.push(p);
        }
        match tokio::time::timeout(std::time::Duration::from_secs(5), rd.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) => break,
            Ok(Err(e)) => panic!("{e} after {} packets: the reason was lost", seen.len()),
            Err(_) => panic!("the broker did not close"),
        }
    }
    drop(wr);
    let pubrecs = seen
        .iter()
        .filter(|p| matches!(p, Packet::PubRec(_)))
        .count();
    assert_eq!(pubrecs, 10, "{seen:?}");
    assert!(
        matches!(seen.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::ReceiveMaximumExceeded),
        "{:?}",
        seen.last()
    );
    broker.shutdown().await;
}

/// Issue 15 §8: `BrokerHandle::reconfigure` changes what new connections are offered and
/// held to; a connection already open keeps what its CONNACK advertised (v5 §3.2.2.3: the
/// CONNACK's Maximum QoS and Maximum Packet Size bind the client for the connection).
#[tokio::test]
async fn reconfigured_settings_reach_new_connections_and_spare_open_ones() {
    let broker = start_broker().await;
    let (mut before, ack) = Raw::connect_with(&broker, Connect::new(V5, "before")).await;
    assert_eq!(connack(ack).properties.maximum_qos, None);
    let done = broker
        .reconfigure(
            Limits::default().with_max_packet_size(4096),
            Capabilities::default().with_maximum_qos(QoS::AtLeastOnce),
        )
        .expect("valid settings");
    assert_eq!(done.applied, vec!["max_packet_size", "maximum_qos"]);

    let (mut after, ack) = Raw::connect_with(&broker, Connect::new(V5, "after")).await;
    let p = connack(ack).properties;
    assert_eq!(p.maximum_qos, Some(QoS::AtLeastOnce));
    assert_eq!(p.maximum_packet_size, NonZeroU32::new(4096));
    // The new connection is held to the new values: QoS 2 ends it with 0x9B.
    after
        .publish("t", b"x", PublishQoS::ExactlyOnce(pid(1)), false)
        .await;
    let seen = after.closed_promptly().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::QoSNotSupported),
        "{seen:?}"
    );
    // The one open before keeps its terms: QoS 2 and a 10 KB packet still go through.
    before
        .publish("t", &[b'x'; 10_000], PublishQoS::ExactlyOnce(pid(1)), false)
        .await;
    match before.recv().await {
        Some(Packet::PubRec(ack)) => assert!(ack.reason_code.is_success(), "{ack:?}"),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    broker.shutdown().await;
}
