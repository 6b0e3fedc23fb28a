//! MQTT 5.0 sessions and wills: Session Expiry Interval, DISCONNECT rules, Will Delay
//! Interval (v5 §3.1.2.5, §3.1.2.11.2, §3.1.3.2.2, §3.14.2.2.2).

mod support;

use std::time::Duration;

use bytes::Bytes;
use roost::codec::{
    Connect, Disconnect, LastWill, Packet, ProtocolVersion, ReasonCode, WillProperties,
};
use roost::QoS;
use support::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn session(id: &str, expiry: u32) -> Connect {
    let mut c = Connect::new(V5, id);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(expiry);
    c
}

fn present(ack: &Packet) -> bool {
    match ack {
        Packet::ConnAck(a) => {
            assert_eq!(a.reason_code, ReasonCode::Success);
            a.session_present
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn will(delay: Option<u32>) -> LastWill {
    LastWill {
        topic: topic("wills/dev"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: delay,
            ..WillProperties::default()
        },
    }
}

async fn watcher(broker: &roost::BrokerHandle) -> Raw {
    let mut w = Raw::connect(broker, V5, "watcher").await;
    w.subscribe(1, "wills/#", QoS::AtMostOnce).await;
    w
}

#[tokio::test]
async fn session_survives_within_its_expiry_and_ends_after_it() {
    // MQTT-4.1.0-2: the session is discarded once the connection is closed and the Session
    // Expiry Interval has passed.
    // MQTT-3.1.2-23 (v5): the session is kept after the connection closes while the Session
    // Expiry Interval lasts; MQTT-3.1.2-5/-6: resumed with Session Present 1, or new.
    let broker = start_broker().await;
    let (mut c, ack) = Raw::connect_with(&broker, session("exp", 1)).await;
    assert!(!present(&ack));
    c.subscribe(1, "e", QoS::AtLeastOnce).await;
    drop(c);
    let (c, ack) = Raw::connect_with(&broker, session("exp", 1)).await;
    assert!(present(&ack), "back within the interval");
    drop(c);
    // Wait out the interval (the behaviour under test is the passing of time).
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (_c, ack) = Raw::connect_with(&broker, session("exp", 1)).await;
    assert!(!present(&ack), "expired while away");
    assert_eq!(broker.metrics().sessions_expired, 1);
    assert_eq!(broker.metrics().subscriptions, 0, "its state was freed");
    broker.shutdown().await;
}

#[tokio::test]
async fn session_expiry_zero_ends_with_the_connection() {
    let broker = start_broker().await;
    let (mut c, _) = Raw::connect_with(&broker, session("zero", 0)).await;
    c.subscribe(1, "z", QoS::AtMostOnce).await;
    c.send(Packet::Disconnect(Disconnect::default())).await;
    // The broker closes the stream only after the session is detached (and here ended).
    assert!(c.closed_promptly().await.is_empty());
    assert_eq!(broker.metrics().subscriptions, 0);
    let (_c, ack) = Raw::connect_with(&broker, session("zero", 0)).await;
    assert!(!present(&ack));
    broker.shutdown().await;
}

#[tokio::test]
async fn disconnect_may_not_raise_a_zero_session_expiry() {
    // v5 §3.14.2.2.2: CONNECT had 0, DISCONNECT sets non-zero → protocol error 0x82.
    let broker = start_broker().await;
    let (mut c, _) = Raw::connect_with(&broker, session("raise", 0)).await;
    let mut d = Disconnect::default();
    d.properties.session_expiry_interval = Some(60);
    c.send(Packet::Disconnect(d)).await;
    let seen = c.closed_promptly().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ProtocolError),
        "{seen:?}"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn disconnect_can_shorten_the_session_expiry_to_zero() {
    let broker = start_broker().await;
    let (mut c, _) = Raw::connect_with(&broker, session("shorten", 3600)).await;
    c.subscribe(1, "s", QoS::AtMostOnce).await;
    let mut d = Disconnect::default();
    d.properties.session_expiry_interval = Some(0);
    c.send(Packet::Disconnect(d)).await;
    assert!(c.closed_promptly().await.is_empty());
    let (_c, ack) = Raw::connect_with(&broker, session("shorten", 3600)).await;
    assert!(!present(&ack), "the session ended at DISCONNECT");
    broker.shutdown().await;
}

#[tokio::test]
async fn delayed_will_is_published_after_the_delay() {
    // MQTT-3.1.2-8 (v5): published once the Will Delay Interval has elapsed.
    let broker = start_broker().await;
    let mut w = watcher(&broker).await;
    let mut c = session("late", 60);
    c.will = Some(will(Some(1)));
    let (dev, _) = Raw::connect_with(&broker, c).await;
    let lost = tokio::time::Instant::now();
    drop(dev);
    let p = w.recv_publish().await;
    assert_eq!(&p.payload[..], b"gone");
    assert!(
        lost.elapsed() >= Duration::from_millis(900),
        "published too early"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn will_is_suppressed_when_the_client_returns_within_the_delay() {
    // MQTT-3.1.3-9: a new connection to the session before the delay → no will.
    let broker = start_broker().await;
    let mut w = watcher(&broker).await;
    let mut c = session("back", 60);
    c.will = Some(will(Some(1)));
    let (dev, _) = Raw::connect_with(&broker, c.clone()).await;
    drop(dev);
    let (_dev, ack) = Raw::connect_with(&broker, session("back", 60)).await;
    assert!(present(&ack));
    // Past the delay: still nothing. Another client's message arrives first.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_no_will_yet(&broker, &mut w).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn session_end_publishes_a_will_still_waiting_for_its_delay() {
    // MQTT-3.1.2-8 (v5): the will goes when the delay passes or the session ends, whichever
    // is first.
    let broker = start_broker().await;
    let mut w = watcher(&broker).await;
    let mut c = session("short", 1);
    c.will = Some(will(Some(3600)));
    let (dev, _) = Raw::connect_with(&broker, c).await;
    drop(dev);
    assert_eq!(&w.recv_publish().await.payload[..], b"gone");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_clean_start_takeover_ends_the_session_and_publishes_its_delayed_will() {
    // MQTT-3.1.4-3 (v5): the existing connection is closed (0x8E Session taken over); with
    // Clean Start the new connection starts a new session, so the old one ends, and its
    // will, still waiting out its delay, goes with it (v5 §3.1.3.2.2: the delay passing or
    // the session ending, whichever comes first). MQTT-3.1.3-9 does not apply: the new
    // connection is not to the same session.
    let broker = start_broker().await;
    let mut w = watcher(&broker).await;
    let mut c = session("taken", 60);
    c.will = Some(will(Some(3600)));
    let (mut old, _) = Raw::connect_with(&broker, c).await;
    let mut fresh = session("taken", 60);
    fresh.clean_start = true;
    let (_new, ack) = Raw::connect_with(&broker, fresh).await;
    assert!(!present(&ack), "a new session");
    match old.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::SessionTakenOver),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    assert_eq!(&w.recv_publish().await.payload[..], b"gone");
    broker.shutdown().await;
}

#[tokio::test]
async fn disconnect_with_will_message_publishes_the_will() {
    // v5 §3.14.2.1: reason 0x04 keeps the will.
    let broker = start_broker().await;
    let mut w = watcher(&broker).await;
    let mut c = Connect::new(V5, "dww");
    c.will = Some(will(None));
    let (mut dev, _) = Raw::connect_with(&broker, c).await;
    dev.send(Packet::Disconnect(Disconnect::new(
        ReasonCode::DisconnectWithWillMessage,
    )))
    .await;
    assert_eq!(&w.recv_publish().await.payload[..], b"gone");
    broker.shutdown().await;
}

#[tokio::test]
async fn normal_disconnect_discards_the_will() {
    // MQTT-3.14.4-3: DISCONNECT 0x00 discards the will.
    // MQTT-3.1.2-10 (v5): DISCONNECT 0x00 deletes the will.
    let broker = start_broker().await;
    let mut w = watcher(&broker).await;
    let mut c = Connect::new(V5, "nw");
    c.will = Some(will(None));
    let (mut dev, _) = Raw::connect_with(&broker, c).await;
    dev.send(Packet::Disconnect(Disconnect::default())).await;
    dev.closed_promptly().await;
    assert_no_will_yet(&broker, &mut w).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn will_properties_are_carried_onto_the_will_publish() {
    // v5 §3.1.3.2: Message Expiry, Content Type, Response Topic, Correlation Data, User
    // Properties (order kept, MQTT-3.1.3-10) and Payload Format travel with the will.
    let broker = start_broker().await;
    let mut w = watcher(&broker).await;
    let mut c = Connect::new(V5, "props");
    let mut wl = will(None);
    wl.properties.content_type = Some("text/plain".into());
    wl.properties.response_topic = Some(topic("reply/here"));
    wl.properties.correlation_data = Some(Bytes::from_static(b"corr"));
    wl.properties.message_expiry_interval = Some(300);
    wl.properties.payload_format_indicator = Some(roost::codec::PayloadFormat::Utf8);
    wl.properties.user_properties = vec![
        roost::codec::UserProperty::new("b", "2"),
        roost::codec::UserProperty::new("a", "1"),
    ];
    c.will = Some(wl);
    let (dev, _) = Raw::connect_with(&broker, c).await;
    drop(dev);
    let p = w.recv_publish().await;
    let props = p.properties;
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.response_topic, Some(topic("reply/here")));
    assert_eq!(props.correlation_data, Some(Bytes::from_static(b"corr")));
    assert!(props
        .message_expiry_interval
        .is_some_and(|s| (299..=300).contains(&s)));
    assert_eq!(
        props.payload_format_indicator,
        Some(roost::codec::PayloadFormat::Utf8)
    );
    let names: Vec<&str> = props.user_properties.iter().map(|u| &*u.name).collect();
    assert_eq!(names, vec!["b", "a"]);
    broker.shutdown().await;
}

/// Publishes a marker from another client and checks that it is the next thing `w` gets:
/// no will was published before it.
async fn assert_no_will_yet(broker: &roost::BrokerHandle, w: &mut Raw) {
    let mut other = Raw::connect(broker, V5, "other").await;
    other
        .publish(
            "wills/other",
            b"x",
            roost::codec::PublishQoS::AtMostOnce,
            false,
        )
        .await;
    assert_eq!(w.recv_publish().await.topic, topic("wills/other"));
}
