//! Will Messages (3.1.1 §3.1.2.5 to §3.1.2.7, §3.1.3.2/3).

mod support;

use bytes::Bytes;
use roost::codec::{Connect, LastWill, Packet, ProtocolVersion, PublishQoS, WillProperties};
use roost::QoS;
use support::*;

const V4: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn with_will(id: &str, retain: bool) -> Connect {
    with_will_at(V4, id, retain)
}

fn with_will_at(v: ProtocolVersion, id: &str, retain: bool) -> Connect {
    let mut c = Connect::new(v, id);
    c.will = Some(LastWill {
        topic: topic("status/dev"),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain,
        properties: WillProperties::default(),
    });
    c
}

#[tokio::test]
async fn will_is_published_when_the_connection_is_lost() {
    // MQTT-3.1.2-8 (both): published when the network connection closes without DISCONNECT;
    // MQTT-3.1.2-7 (v5): the will was stored with the session.
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut watcher = Raw::connect(&broker, v, "watcher").await;
        watcher.subscribe(1, "status/#", QoS::AtLeastOnce).await;
        let (dev, _) = Raw::connect_with(&broker, with_will_at(v, "dev", false)).await;
        drop(dev);
        let p = watcher.recv_publish().await;
        assert_eq!(&p.payload[..], b"offline");
        assert!(matches!(p.qos, PublishQoS::AtLeastOnce(_)), "will QoS kept");
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn will_without_will_retain_is_not_retained() {
    // MQTT-3.1.2-16 (3.1.1), MQTT-3.1.2-14 (v5): Will Retain 0 → published as a non-retained
    // message. (The RETAIN flag seen by a client subscribed beforehand is 0 either way,
    // MQTT-3.3.1-9, so this asks a subscriber that comes afterwards.)
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut watcher = Raw::connect(&broker, v, "watcher").await;
        watcher.subscribe(1, "status/#", QoS::AtLeastOnce).await;
        let (dev, _) = Raw::connect_with(&broker, with_will_at(v, "dev", false)).await;
        drop(dev);
        assert_eq!(&watcher.recv_publish().await.payload[..], b"offline");
        let mut late = Raw::connect(&broker, v, "late").await;
        late.subscribe(1, "status/#", QoS::AtMostOnce).await;
        let mut other = Raw::connect(&broker, v, "other").await;
        other
            .publish("status/marker", b"marker", PublishQoS::AtMostOnce, false)
            .await;
        // The first message the late subscriber gets is the marker: no retained will.
        let p = late.recv_publish().await;
        assert_eq!(&p.payload[..], b"marker");
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn will_is_not_published_after_disconnect() {
    // MQTT-3.1.2-10 / MQTT-3.14.4-3: DISCONNECT discards the will.
    let broker = start_broker().await;
    let mut watcher = Raw::connect(&broker, V4, "watcher").await;
    watcher.subscribe(1, "status/#", QoS::AtLeastOnce).await;
    let (mut dev, _) = Raw::connect_with(&broker, with_will("dev", false)).await;
    dev.send(Packet::Disconnect(Default::default())).await;
    assert!(dev.closed_promptly().await.is_empty());
    // Another client publishes after the disconnect: it arrives, and no will before it.
    let mut other = Raw::connect(&broker, V4, "other").await;
    other
        .publish("status/other", b"here", PublishQoS::AtMostOnce, false)
        .await;
    let p = watcher.recv_publish().await;
    assert_eq!(&p.payload[..], b"here");
    broker.shutdown().await;
}

#[tokio::test]
async fn retained_will_is_retained() {
    // MQTT-3.1.2-17 (3.1.1), MQTT-3.1.2-15 (v5): Will Retain 1 → published retained.
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut watcher = Raw::connect(&broker, v, "watcher").await;
        watcher.subscribe(1, "status/dev", QoS::AtMostOnce).await;
        let (dev, _) = Raw::connect_with(&broker, with_will_at(v, "dev", true)).await;
        drop(dev);
        // Once the watcher has it, it has been retained too.
        assert_eq!(&watcher.recv_publish().await.payload[..], b"offline");
        let mut late = Raw::connect(&broker, v, "late").await;
        late.subscribe(1, "status/dev", QoS::AtMostOnce).await;
        let p = late.recv_publish().await;
        assert!(p.retain);
        assert_eq!(&p.payload[..], b"offline");
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn will_is_published_on_protocol_violation() {
    // MQTT-3.1.2-8 covers any close other than DISCONNECT: here a malformed packet.
    let broker = start_broker().await;
    let mut watcher = Raw::connect(&broker, V4, "watcher").await;
    watcher.subscribe(1, "status/#", QoS::AtMostOnce).await;
    let (mut dev, _) = Raw::connect_with(&broker, with_will("dev", false)).await;
    dev.send_bytes(&[0x00, 0x00]).await; // reserved packet type 0
    assert!(dev.closed_promptly().await.is_empty());
    assert_eq!(&watcher.recv_publish().await.payload[..], b"offline");
    broker.shutdown().await;
}

#[tokio::test]
async fn no_will_flag_no_will() {
    // MQTT-3.1.2-12 (3.1.1): without the Will Flag, nothing is published when the
    // connection ends, even abruptly.
    let broker = start_broker().await;
    let mut watcher = Raw::connect(&broker, V4, "watcher").await;
    watcher.subscribe(1, "#", QoS::AtLeastOnce).await;
    let dev = Raw::connect(&broker, V4, "dev").await;
    drop(dev);
    // The connection is gone once the session count drops; then nothing may follow.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while broker.metrics().clients_connected > 1 {
        assert!(std::time::Instant::now() < deadline, "dev never went away");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(watcher.ping().await.is_empty(), "no will");
    assert_eq!(broker.metrics().messages_received, 0);
    broker.shutdown().await;
}
