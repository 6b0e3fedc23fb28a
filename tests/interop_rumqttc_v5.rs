//! MQTT 5.0 through an independent client: rumqttc's v5 codec and state machine, not
//! Roost's. Properties, reason codes, subscription identifiers, topic aliases both ways,
//! session expiry and will delay, each checked from what rumqttc decoded.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{
    ConnectProperties, LastWill, LastWillProperties, Packet, PubAckReason, Publish,
    PublishProperties, SubscribeProperties, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use support::*;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A rumqttc v5 client whose incoming packets come out of a channel; dropping (aborting)
/// the task closes its socket without a DISCONNECT.
struct Client {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Packet>,
    task: JoinHandle<()>,
}

fn options(broker: &roost::BrokerHandle, id: &str) -> MqttOptions {
    let a = addr(broker);
    let mut o = MqttOptions::new(id, a.ip().to_string(), a.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

fn start(options: MqttOptions) -> Client {
    let (client, mut el) = AsyncClient::new(options, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok(event) = el.poll().await {
            if let Event::Incoming(p) = event {
                if tx.send(p).is_err() {
                    return;
                }
            }
        }
    });
    Client { client, rx, task }
}

impl Client {
    /// The next incoming packet `pick` accepts, skipping the others.
    async fn next<T>(&mut self, mut pick: impl FnMut(Packet) -> Option<T>) -> T {
        loop {
            let p = within(self.rx.recv()).await.expect("event loop alive");
            if let Some(t) = pick(p) {
                return t;
            }
        }
    }

    async fn connack(&mut self) -> rumqttc::v5::mqttbytes::v5::ConnAck {
        self.next(|p| match p {
            Packet::ConnAck(a) => Some(a),
            _ => None,
        })
        .await
    }

    async fn suback(&mut self) -> Vec<SubscribeReasonCode> {
        self.next(|p| match p {
            Packet::SubAck(a) => Some(a.return_codes),
            _ => None,
        })
        .await
    }

    async fn publish(&mut self) -> Publish {
        self.next(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .await
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        within(self.client.subscribe(filter, qos))
            .await
            .expect("queued");
        assert_eq!(self.suback().await, [SubscribeReasonCode::Success(qos)]);
    }
}

#[tokio::test]
async fn properties_and_reason_codes_as_rumqttc_decodes_them() {
    // MQTT-3.4.2-1, MQTT-3.9.3-2: the PUBACK and SUBACK codes are from their lists (rumqttc
    // decodes them).
    // MQTT-3.3.2-4 (payload format), -16 (correlation data), -17/-18 (user properties in
    // order), -20 (content type), §3.3.2.3.5 (response topic); §3.4.2.1 PUBACK 0x10 No
    // matching subscribers; §3.9.3 SUBACK 0x9E Shared Subscriptions not supported.
    let broker =
        start_broker_with_caps(roost::Capabilities::default().with_shared_subscriptions(false))
            .await;
    let mut sub = start(options(&broker, "props-sub"));
    sub.connack().await;
    sub.subscribe("req/+", QoS::AtLeastOnce).await;
    within(sub.client.subscribe("$share/g/req/+", QoS::AtMostOnce))
        .await
        .expect("queued");
    assert_eq!(
        sub.suback().await,
        [SubscribeReasonCode::SharedSubscriptionsNotSupported]
    );

    let mut publ = start(options(&broker, "props-pub"));
    publ.connack().await;
    let properties = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("resp/1".into()),
        correlation_data: Some(Bytes::from_static(&[9, 8, 7])),
        user_properties: vec![
            ("z".into(), "1".into()),
            ("a".into(), "2".into()),
            ("z".into(), "3".into()),
        ],
        ..PublishProperties::default()
    };
    within(publ.client.publish_with_properties(
        "req/1",
        QoS::AtLeastOnce,
        false,
        "{}",
        properties.clone(),
    ))
    .await
    .expect("queued");
    let got = sub.publish().await;
    assert_eq!(&got.topic[..], b"req/1");
    assert_eq!(&got.payload[..], b"{}");
    let p = got.properties.expect("properties forwarded");
    assert_eq!(p.payload_format_indicator, Some(1));
    assert_eq!(p.content_type, properties.content_type);
    assert_eq!(p.response_topic, properties.response_topic);
    assert_eq!(p.correlation_data, properties.correlation_data);
    assert_eq!(p.user_properties, properties.user_properties);
    let ack = publ
        .next(|p| match p {
            Packet::PubAck(a) => Some(a),
            _ => None,
        })
        .await;
    assert_eq!(ack.reason, PubAckReason::Success);

    within(
        publ.client
            .publish("nobody/listens", QoS::AtLeastOnce, false, "x"),
    )
    .await
    .expect("queued");
    let ack = publ
        .next(|p| match p {
            Packet::PubAck(a) => Some(a),
            _ => None,
        })
        .await;
    assert_eq!(ack.reason, PubAckReason::NoMatchingSubscribers);
    broker.shutdown().await;
}

#[tokio::test]
async fn subscription_identifiers_reach_rumqttc() {
    // MQTT-3.3.4-3: the Subscription Identifier of the matching subscription is sent with
    // the message; MQTT-3.3.4-4/-5: one per matching subscription (non-shared).
    let broker = start_broker().await;
    let mut sub = start(options(&broker, "sid-sub"));
    sub.connack().await;
    for (filter, id) in [("s/+", 7usize), ("s/#", 300)] {
        let props = SubscribeProperties {
            id: Some(id),
            user_properties: Vec::new(),
        };
        within(
            sub.client
                .subscribe_with_properties(filter, QoS::AtMostOnce, props),
        )
        .await
        .expect("queued");
        assert_eq!(
            sub.suback().await,
            [SubscribeReasonCode::Success(QoS::AtMostOnce)]
        );
    }
    let mut publ = start(options(&broker, "sid-pub"));
    publ.connack().await;
    within(publ.client.publish("s/x", QoS::AtMostOnce, false, "1"))
        .await
        .expect("queued");
    let got = sub.publish().await;
    let mut ids = got
        .properties
        .expect("identifiers")
        .subscription_identifiers;
    ids.sort_unstable();
    assert_eq!(ids, [7, 300]);
    broker.shutdown().await;
}

#[tokio::test]
async fn topic_aliases_both_ways_with_rumqttc() {
    // §3.3.2.3.4. Inbound: rumqttc sets alias 1 with a topic, then sends an empty topic
    // with alias 1 (MQTT-3.3.2-12, within the broker's maximum). Outbound: rumqttc accepts
    // 2 aliases (MQTT-3.1.2-26) and checks the broker's: an alias it does not know is a
    // protocol error that ends its event loop (and this test). rumqttc hands out the
    // PUBLISH as received, before it resolves the alias, so the test resolves it too.
    let broker = start_broker().await;
    let mut o = options(&broker, "alias-sub");
    o.set_topic_alias_max(Some(2));
    let mut sub = start(o);
    sub.connack().await;
    sub.subscribe("fleet/#", QoS::AtLeastOnce).await;

    let mut publ = start(options(&broker, "alias-pub"));
    let connack = publ.connack().await;
    let server_max = connack
        .properties
        .and_then(|p| p.topic_alias_max)
        .expect("the broker offers topic aliases");
    assert!(server_max >= 1);
    let alias = |a| PublishProperties {
        topic_alias: Some(a),
        ..PublishProperties::default()
    };
    within(publ.client.publish_with_properties(
        "fleet/truck-7/position",
        QoS::AtLeastOnce,
        false,
        "0",
        alias(1),
    ))
    .await
    .expect("queued");
    let topics = [
        "fleet/truck-7/position",
        "fleet/truck-7/position",
        "fleet/truck-9/position",
        "fleet/truck-7/position",
        "fleet/truck-3/position",
        "fleet/truck-9/position",
        "fleet/truck-7/position",
    ];
    for (i, t) in topics.iter().enumerate().skip(1) {
        let payload = i.to_string();
        if *t == topics[0] {
            // Inbound alias use: no topic at all.
            within(publ.client.publish_with_properties(
                "",
                QoS::AtLeastOnce,
                false,
                payload,
                alias(1),
            ))
            .await
            .expect("queued");
        } else {
            within(publ.client.publish(*t, QoS::AtLeastOnce, false, payload))
                .await
                .expect("queued");
        }
    }
    let mut known = std::collections::HashMap::new();
    let mut by_alias_only = 0;
    for (i, want) in topics.iter().enumerate() {
        let got = sub.publish().await;
        let a = got
            .properties
            .and_then(|p| p.topic_alias)
            .expect("every copy carries an alias");
        assert!((1..=2).contains(&a), "alias {a}");
        let topic = if got.topic.is_empty() {
            by_alias_only += 1;
            known.get(&a).cloned().expect("an alias set before")
        } else {
            known.insert(a, got.topic.clone());
            got.topic.clone()
        };
        assert_eq!(&topic[..], want.as_bytes(), "message {i}");
        assert_eq!(&got.payload[..], i.to_string().as_bytes());
    }
    // Messages 1 and 3 name a topic still held. From 4 on, three topics take turns on two
    // aliases and each replaces the least recently used one, so each is set again.
    assert_eq!(by_alias_only, 2);
    // rumqttc accepted every alias: its event loop is still alive.
    within(
        publ.client
            .publish("fleet/check", QoS::AtLeastOnce, false, "end"),
    )
    .await
    .expect("queued");
    let got = sub.publish().await;
    assert_eq!(&got.payload[..], b"end");
    broker.shutdown().await;
}

#[tokio::test]
async fn session_expiry_keeps_a_rumqttc_session_across_a_reconnect() {
    // MQTT-3.1.2-23: with a Session Expiry Interval > 0 the session outlives the network
    // connection; MQTT-3.2.2-3: CONNACK then says Session Present; the QoS 1 message
    // published meanwhile is delivered (MQTT-3.1.2-5 for the queued message).
    let broker = start_broker().await;
    let persistent = |id: &str| {
        let mut o = options(&broker, id);
        o.set_clean_start(false);
        o.set_connect_properties(ConnectProperties {
            session_expiry_interval: Some(60),
            ..ConnectProperties::new()
        });
        o
    };
    let mut sub = start(persistent("expiry-sub"));
    assert!(!sub.connack().await.session_present);
    sub.subscribe("q/1", QoS::AtLeastOnce).await;
    within(sub.client.disconnect()).await.expect("queued");
    // Wait for the event loop to end with the connection.
    within(&mut sub.task).await.expect("event loop ended");

    let mut publ = start(options(&broker, "expiry-pub"));
    publ.connack().await;
    within(publ.client.publish("q/1", QoS::AtLeastOnce, false, "kept"))
        .await
        .expect("queued");
    publ.next(|p| matches!(p, Packet::PubAck(_)).then_some(()))
        .await;

    let mut back = start(persistent("expiry-sub"));
    assert!(back.connack().await.session_present);
    let got = back.publish().await;
    assert_eq!(&got.payload[..], b"kept");
    broker.shutdown().await;
}

#[tokio::test]
async fn will_delay_with_rumqttc() {
    // MQTT-3.1.3-9: the will is published once the Will Delay Interval has passed, not
    // before; MQTT-3.1.2-8: it is published when the connection closes without a
    // DISCONNECT.
    let broker = start_broker().await;
    let mut watcher = start(options(&broker, "will-watch"));
    watcher.connack().await;
    watcher.subscribe("wills/+", QoS::AtLeastOnce).await;

    let mut o = options(&broker, "will-dies");
    o.set_connect_properties(ConnectProperties {
        session_expiry_interval: Some(30),
        ..ConnectProperties::new()
    });
    o.set_last_will(LastWill::new(
        "wills/dies",
        "gone",
        QoS::AtLeastOnce,
        false,
        Some(LastWillProperties {
            delay_interval: Some(1),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: vec![("why".into(), "test".into())],
        }),
    ));
    let mut dying = start(o);
    dying.connack().await;
    let lost = Instant::now();
    dying.task.abort();
    let will = watcher.publish().await;
    let waited = lost.elapsed();
    assert_eq!(&will.topic[..], b"wills/dies");
    assert_eq!(&will.payload[..], b"gone");
    assert!(
        waited >= Duration::from_millis(900),
        "will sent after {waited:?}, before its 1 s delay"
    );
    let props = will.properties.expect("will properties forwarded");
    assert_eq!(props.user_properties, [("why".into(), "test".into())]);
    broker.shutdown().await;
}

#[tokio::test]
async fn qos2_both_ways_and_unsubscribe_through_rumqttc() {
    // The codes of every acknowledgement the broker sends, as rumqttc decodes them (it
    // refuses codes outside each packet's list): MQTT-3.2.2-8 (CONNACK), MQTT-3.5.2-1
    // (PUBREC), MQTT-3.6.2-1 (PUBREL), MQTT-3.7.2-1 (PUBCOMP), MQTT-3.11.3-2 (UNSUBACK); and
    // the QoS 2 exchange both ways (MQTT-4.3.3-1..-5 as sender, -8, -11 as receiver).
    let broker = start_broker().await;
    let mut sub = start(options(&broker, "q2-sub"));
    let ack = sub.connack().await;
    assert_eq!(
        ack.code,
        rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
    );
    sub.subscribe("q2/#", QoS::ExactlyOnce).await;
    let mut publ = start(options(&broker, "q2-pub"));
    publ.connack().await;
    within(
        publ.client
            .publish("q2/a", QoS::ExactlyOnce, false, "exactly"),
    )
    .await
    .expect("queued");
    let rec = publ
        .next(|p| match p {
            Packet::PubRec(r) => Some(r),
            _ => None,
        })
        .await;
    assert_eq!(
        rec.reason,
        rumqttc::v5::mqttbytes::v5::PubRecReason::Success
    );
    let comp = publ
        .next(|p| match p {
            Packet::PubComp(c) => Some(c),
            _ => None,
        })
        .await;
    assert_eq!(
        comp.reason,
        rumqttc::v5::mqttbytes::v5::PubCompReason::Success
    );
    let got = sub.publish().await;
    assert_eq!(&got.payload[..], b"exactly");
    assert_eq!(got.qos, QoS::ExactlyOnce);
    let rel = sub
        .next(|p| match p {
            Packet::PubRel(r) => Some(r),
            _ => None,
        })
        .await;
    assert_eq!(
        rel.reason,
        rumqttc::v5::mqttbytes::v5::PubRelReason::Success
    );
    within(sub.client.unsubscribe("q2/#"))
        .await
        .expect("queued");
    let unsuback = sub
        .next(|p| match p {
            Packet::UnsubAck(u) => Some(u),
            _ => None,
        })
        .await;
    assert_eq!(
        unsuback.reasons,
        [rumqttc::v5::mqttbytes::v5::UnsubAckReason::Success]
    );
    broker.shutdown().await;
}
