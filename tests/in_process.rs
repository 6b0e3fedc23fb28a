//! The in-process client: same pipeline as network clients, payloads shared without copies.

mod support;

use std::future::poll_fn;
use std::pin::Pin;

use bytes::Bytes;
use roost::codec::{LastWill, Packet, ProtocolVersion, PublishQoS, WillProperties};
use roost::{Broker, ClientError, ClientOptions, QoS};
use support::*;

const V4: ProtocolVersion = ProtocolVersion::V311;

#[tokio::test]
async fn in_process_payload_reaches_in_process_subscriber_without_a_copy() {
    let broker = start_broker().await;
    let (sub, mut deliveries) = within(broker.client(ClientOptions::new("sub")))
        .await
        .expect("connects");
    assert_eq!(
        within(sub.subscribe("z/#", QoS::ExactlyOnce)).await,
        Ok(QoS::ExactlyOnce)
    );
    let (publ, _) = within(broker.client(ClientOptions::new("pub")))
        .await
        .expect("connects");
    let payload = Bytes::from(vec![7u8; 64 * 1024]);
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        within(publ.publish("z/1", payload.clone(), qos, false))
            .await
            .expect("published");
        let got = within(deliveries.recv()).await.expect("delivered");
        assert_eq!(got.qos, qos);
        assert_eq!(got.payload.as_ptr(), payload.as_ptr(), "payload was copied");
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn in_process_and_network_clients_see_each_other() {
    let broker = start_broker().await;
    let (app, mut deliveries) = within(broker.client(ClientOptions::new("app")))
        .await
        .expect("connects");
    within(app.subscribe("from/net", QoS::AtLeastOnce))
        .await
        .expect("subscribed");
    let mut net = Raw::connect(&broker, V4, "net").await;
    net.subscribe(1, "from/app", QoS::AtLeastOnce).await;
    net.publish(
        "from/net",
        b"hi app",
        PublishQoS::AtLeastOnce(pid(1)),
        false,
    )
    .await;
    let got = within(deliveries.recv()).await.expect("delivered");
    assert_eq!(&got.payload[..], b"hi app");
    within(app.publish("from/app", "hi net", QoS::AtLeastOnce, false))
        .await
        .expect("published");
    // The network client sees the PUBACK for its own publish, then the message.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(net.recv().await.expect("packet"));
    }
    let p = seen
        .iter()
        .find_map(|p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .expect("message from the app");
    assert_eq!(&p.payload[..], b"hi net");
    broker.shutdown().await;
}

#[tokio::test]
async fn in_process_persistent_session_gets_messages_queued_while_away() {
    let broker = start_broker().await;
    let options = ClientOptions::new("keeper").persistent(true);
    let (c, _) = within(broker.client(options.clone()))
        .await
        .expect("connects");
    within(c.subscribe("q", QoS::AtLeastOnce))
        .await
        .expect("subscribed");
    within(c.disconnect()).await.expect("disconnects");
    let (publ, _) = within(broker.client(ClientOptions::new("pub")))
        .await
        .expect("connects");
    within(publ.publish("q", "while away", QoS::AtLeastOnce, false))
        .await
        .expect("published");
    let (_c, mut deliveries) = within(broker.client(options)).await.expect("reconnects");
    let got = within(deliveries.recv()).await.expect("queued message");
    assert_eq!(&got.payload[..], b"while away");
    broker.shutdown().await;
}

#[tokio::test]
async fn retained_messages_and_unsubscribe_work_in_process() {
    let broker = start_broker().await;
    let (c, mut deliveries) = within(broker.client(ClientOptions::new("c")))
        .await
        .expect("connects");
    within(c.publish("cfg/mode", "eco", QoS::AtLeastOnce, true))
        .await
        .expect("published");
    within(c.subscribe("cfg/+", QoS::AtMostOnce))
        .await
        .expect("subscribed");
    let got = within(deliveries.recv()).await.expect("retained");
    assert!(got.retain);
    assert_eq!(
        within(c.unsubscribe("cfg/+")).await,
        Ok(roost::ReasonCode::Success)
    );
    assert_eq!(
        within(c.unsubscribe("cfg/+")).await,
        Ok(roost::ReasonCode::NoSubscriptionExisted)
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn deliveries_is_a_stream() {
    let broker = start_broker().await;
    let (c, mut deliveries) = within(broker.client(ClientOptions::new("s")))
        .await
        .expect("connects");
    within(c.subscribe("s", QoS::AtMostOnce))
        .await
        .expect("subscribed");
    within(c.publish("s", "x", QoS::AtMostOnce, false))
        .await
        .expect("published");
    let next = within(poll_fn(|cx| {
        futures_core::Stream::poll_next(Pin::new(&mut deliveries), cx)
    }))
    .await;
    assert_eq!(next.map(|r| r.payload), Some(Bytes::from_static(b"x")));
    broker.shutdown().await;
}

#[tokio::test]
async fn dropping_the_client_publishes_its_will() {
    let broker = start_broker().await;
    let mut watcher = Raw::connect(&broker, V4, "watcher").await;
    watcher.subscribe(1, "wills/#", QoS::AtMostOnce).await;
    let will = LastWill {
        topic: topic("wills/app"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties::default(),
    };
    let (c, deliveries) = within(broker.client(ClientOptions::new("app").will(will)))
        .await
        .expect("connects");
    drop(c);
    drop(deliveries);
    assert_eq!(&watcher.recv_publish().await.payload[..], b"gone");
    broker.shutdown().await;
}

#[tokio::test]
async fn shutdown_disconnects_in_process_clients() {
    let broker = Broker::builder()
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    let (c, mut deliveries) = within(broker.client(ClientOptions::new("c")))
        .await
        .expect("connects");
    within(broker.shutdown()).await;
    assert_eq!(within(deliveries.recv()).await, None);
    assert!(c.is_closed());
    assert_eq!(
        within(c.publish("t", "x", QoS::AtLeastOnce, false)).await,
        Err(ClientError::Disconnected)
    );
    assert_eq!(
        within(broker.client(ClientOptions::new("late")))
            .await
            .err(),
        Some(ClientError::Disconnected)
    );
}

#[tokio::test]
async fn invalid_topics_are_refused_by_the_client() {
    let broker = start_broker().await;
    let (c, _) = within(broker.client(ClientOptions::new("c")))
        .await
        .expect("connects");
    assert!(matches!(
        c.publish("a/+", "x", QoS::AtMostOnce, false).await,
        Err(ClientError::InvalidTopic(_))
    ));
    assert!(matches!(
        c.subscribe("a/#/b", QoS::AtMostOnce).await,
        Err(ClientError::InvalidTopic(_))
    ));
    broker.shutdown().await;
}

#[tokio::test]
async fn several_brokers_live_in_one_process() {
    let a = start_broker().await;
    let b = start_broker().await;
    let (ca, mut da) = within(a.client(ClientOptions::new("same")))
        .await
        .expect("connects");
    let (cb, _db) = within(b.client(ClientOptions::new("same")))
        .await
        .expect("connects");
    within(ca.subscribe("t", QoS::AtMostOnce))
        .await
        .expect("subscribed");
    within(cb.publish("t", "b", QoS::AtMostOnce, false))
        .await
        .expect("published");
    within(ca.publish("t", "a", QoS::AtMostOnce, false))
        .await
        .expect("published");
    assert_eq!(
        &within(da.recv()).await.expect("own broker").payload[..],
        b"a"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn in_process_client_has_v5_features() {
    use roost::codec::{PublishProperties, SubscribeProperties, SubscriptionOptions, UserProperty};
    use roost::PublishOptions;
    use std::num::NonZeroU32;

    let broker = start_broker().await;
    let (c, mut deliveries) = within(broker.client(ClientOptions::new("v5")))
        .await
        .expect("connects");
    // Reason codes in results: nobody subscribed yet.
    let code = within(c.publish_with("p/1", "x", PublishOptions::new(QoS::AtLeastOnce)))
        .await
        .expect("published");
    assert_eq!(code, roost::ReasonCode::NoMatchingSubscribers);
    // Subscription options and identifiers.
    let mut no_local = SubscriptionOptions::new(QoS::AtLeastOnce);
    no_local.no_local = true;
    let codes = within(c.subscribe_with(
        vec![(filter("p/+"), no_local)],
        SubscribeProperties {
            subscription_identifier: NonZeroU32::new(9),
            user_properties: Vec::new(),
        },
    ))
    .await
    .expect("subscribed");
    assert_eq!(codes, vec![roost::ReasonCode::GrantedQoS1]);
    // Own messages are not delivered back (No Local); another client's are, with properties.
    within(c.publish("p/own", "mine", QoS::AtMostOnce, false))
        .await
        .expect("published");
    let (other, _) = within(broker.client(ClientOptions::new("other")))
        .await
        .expect("connects");
    let options = PublishOptions {
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: PublishProperties {
            content_type: Some("text/plain".into()),
            user_properties: vec![UserProperty::new("k", "v")],
            ..PublishProperties::default()
        },
    };
    let code = within(other.publish_with("p/2", "theirs", options))
        .await
        .expect("published");
    assert_eq!(code, roost::ReasonCode::Success);
    let got = within(deliveries.recv()).await.expect("delivered");
    assert_eq!(&got.payload[..], b"theirs");
    assert_eq!(got.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        got.properties.user_properties,
        vec![UserProperty::new("k", "v")]
    );
    assert_eq!(
        got.properties.subscription_identifiers,
        vec![NonZeroU32::new(9).expect("non-zero")]
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn client_methods_take_topic_names_and_filters_as_well_as_strings() {
    let broker = start_broker().await;
    let (client, mut deliveries) = broker
        .client(ClientOptions::new("typed"))
        .await
        .expect("connects");
    client
        .subscribe(filter("typed/#"), QoS::AtMostOnce)
        .await
        .expect("subscribes");
    let name = topic("typed/a");
    for _ in 0..2 {
        // A ready TopicName, reused without re-validating.
        client
            .publish(name.clone(), "x", QoS::AtMostOnce, false)
            .await
            .expect("publishes");
        let got = within(deliveries.recv()).await.expect("delivered");
        assert_eq!(got.topic, name);
    }
    client
        .unsubscribe(filter("typed/#"))
        .await
        .expect("unsubscribes");
    broker.shutdown().await;
}
