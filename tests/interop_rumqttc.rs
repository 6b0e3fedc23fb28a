//! Interoperability with a real third-party client: rumqttc, at MQTT 3.1.1 and 5.0.

mod support;

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, LastWill, MqttOptions, QoS};
use support::*;
use tokio::sync::mpsc;

/// Starts polling `eventloop` in a task; incoming publishes and SUBACKs come out of the
/// channel.
fn pump(mut eventloop: EventLoop) -> mpsc::UnboundedReceiver<Incoming> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(packet) = event {
                if tx.send(packet).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

fn options(broker: &roost::BrokerHandle, id: &str) -> MqttOptions {
    let a = addr(broker);
    let mut o = MqttOptions::new(id, a.ip().to_string(), a.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

async fn next_publish(rx: &mut mpsc::UnboundedReceiver<Incoming>) -> rumqttc::Publish {
    loop {
        match within(rx.recv()).await.expect("event loop alive") {
            Incoming::Publish(p) => return p,
            _ => continue,
        }
    }
}

async fn suback(rx: &mut mpsc::UnboundedReceiver<Incoming>) -> rumqttc::SubAck {
    loop {
        match within(rx.recv()).await.expect("event loop alive") {
            Incoming::SubAck(a) => return a,
            _ => continue,
        }
    }
}

#[tokio::test]
async fn rumqttc_v311_pub_sub_all_qos_and_retained() {
    let broker = start_broker().await;
    let (sub, el) = AsyncClient::new(options(&broker, "rsub"), 100);
    let mut sub_rx = pump(el);
    within(sub.subscribe("r/#", QoS::ExactlyOnce))
        .await
        .expect("queued");
    suback(&mut sub_rx).await;
    let (publ, el) = AsyncClient::new(options(&broker, "rpub"), 100);
    let _pub_rx = pump(el);
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        within(publ.publish(format!("r/{i}"), qos, false, vec![i as u8; 10]))
            .await
            .expect("queued");
        let p = next_publish(&mut sub_rx).await;
        assert_eq!(p.topic, format!("r/{i}"));
        assert_eq!(p.qos, qos);
        assert_eq!(&p.payload[..], &[i as u8; 10]);
    }
    within(publ.publish("r/kept", QoS::AtLeastOnce, true, "state"))
        .await
        .expect("queued");
    next_publish(&mut sub_rx).await;
    let (late, el) = AsyncClient::new(options(&broker, "rlate"), 100);
    let mut late_rx = pump(el);
    within(late.subscribe("r/kept", QoS::AtLeastOnce))
        .await
        .expect("queued");
    let p = next_publish(&mut late_rx).await;
    assert!(p.retain);
    assert_eq!(&p.payload[..], b"state");
    broker.shutdown().await;
}

#[tokio::test]
async fn rumqttc_last_will_on_lost_connection() {
    let broker = start_broker().await;
    let (watcher, el) = AsyncClient::new(options(&broker, "watch"), 100);
    let mut rx = pump(el);
    within(watcher.subscribe("dead/#", QoS::AtLeastOnce))
        .await
        .expect("queued");
    suback(&mut rx).await;
    let mut o = options(&broker, "doomed");
    o.set_last_will(LastWill::new("dead/doomed", "bye", QoS::AtLeastOnce, false));
    let (_doomed, mut el) = AsyncClient::new(o, 10);
    // Connect, then drop the event loop (and its socket) without DISCONNECT.
    loop {
        if let Event::Incoming(Incoming::ConnAck(_)) = within(el.poll()).await.expect("connects") {
            break;
        }
    }
    drop(el);
    let p = next_publish(&mut rx).await;
    assert_eq!(&p.payload[..], b"bye");
    broker.shutdown().await;
}

#[tokio::test]
async fn rumqttc_v5_pub_sub() {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::mqttbytes::QoS as Qos5;
    use rumqttc::v5::{AsyncClient as Client5, Event as Event5, MqttOptions as Options5};

    let broker = start_broker().await;
    let a = addr(&broker);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (sub, mut el) = Client5::new(Options5::new("v5sub", a.ip().to_string(), a.port()), 100);
    tokio::spawn(async move {
        while let Ok(event) = el.poll().await {
            if let Event5::Incoming(p) = event {
                if tx.send(p).is_err() {
                    return;
                }
            }
        }
    });
    within(sub.subscribe("v5/+", Qos5::AtLeastOnce))
        .await
        .expect("queued");
    loop {
        if let Packet::SubAck(_) = within(rx.recv()).await.expect("alive") {
            break;
        }
    }
    let (publ, mut el2) = Client5::new(Options5::new("v5pub", a.ip().to_string(), a.port()), 100);
    tokio::spawn(async move { while el2.poll().await.is_ok() {} });
    within(publ.publish("v5/x", Qos5::AtLeastOnce, false, "five"))
        .await
        .expect("queued");
    loop {
        if let Packet::Publish(p) = within(rx.recv()).await.expect("alive") {
            assert_eq!(&p.topic[..], b"v5/x");
            assert_eq!(&p.payload[..], b"five");
            break;
        }
    }
    broker.shutdown().await;
}
