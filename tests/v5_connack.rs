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
    let broker = start_broker_with(Limits {
        max_packet_size: 4096,
        ..Limits::default()
    })
    .await;
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
    let broker = start_broker_with_caps(Capabilities {
        maximum_qos: QoS::AtLeastOnce,
        retain_available: false,
        wildcard_subscriptions: false,
        subscription_identifiers: false,
        shared_subscriptions: false,
        ..Capabilities::default()
    })
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
    let seen = c.closed().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::QoSNotSupported)
    );
    // Retain not available: 0x9A.
    let (mut c, _) = Raw::connect_with(&broker, Connect::new(V5, "r")).await;
    c.publish("t", b"x", PublishQoS::AtMostOnce, true).await;
    let seen = c.closed().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::RetainNotSupported)
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn will_beyond_capabilities_is_refused_in_connack() {
    // MQTT-3.2.2-13 (retained will without retain support → 0x9A), and will QoS above the
    // maximum → 0x9B (v5 §3.2.2.3.4).
    let broker = start_broker_with_caps(Capabilities {
        maximum_qos: QoS::AtMostOnce,
        retain_available: false,
        ..Capabilities::default()
    })
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
            raw.closed().await.is_empty(),
            "MQTT-3.2.2-7: closed after the refusal"
        );
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn server_keep_alive_caps_the_clients_value() {
    // MQTT-3.2.2-21/-22: the client uses Server Keep Alive when sent.
    let broker = start_broker_with_caps(Capabilities {
        max_keep_alive: Some(30),
        ..Capabilities::default()
    })
    .await;
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
    let broker = start_broker_with_caps(Capabilities {
        max_session_expiry_interval: 60,
        ..Capabilities::default()
    })
    .await;
    let mut c = Connect::new(V5, "se");
    c.properties.session_expiry_interval = Some(3600);
    let (_c, ack) = Raw::connect_with(&broker, c).await;
    assert_eq!(connack(ack).properties.session_expiry_interval, Some(60));
    broker.shutdown().await;
}

#[tokio::test]
async fn response_information_only_when_requested() {
    // MQTT-3.1.2-28: not returned unless requested.
    let broker = start_broker_with_caps(Capabilities {
        response_information: Some("replies/".to_string()),
        ..Capabilities::default()
    })
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
        let broker = start_broker_with_caps(Capabilities {
            redirect: Some(Redirect {
                permanent,
                reference: "backup:1883".to_string(),
            }),
            ..Capabilities::default()
        })
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
