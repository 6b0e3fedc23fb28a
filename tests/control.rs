//! Issue 17 §1–2: the control API on `BrokerHandle` and the event stream, each call over
//! loopback with real clients: list and inspect sessions, disconnect (v5 DISCONNECT 0x98,
//! the will published), discard a session, subscribe and unsubscribe on a client's behalf,
//! publish as the broker, list, read and clear retained messages in pages; and the events
//! each of those produces, with the overflow policy (drop and count).

mod support;

use std::time::Duration;

use roost::codec::{Connect, Disconnect, LastWill, Packet, ProtocolVersion, ReasonCode};
use roost::events::Event;
use roost::{ClientOptions, Message, QoS, TopicName};
use support::{connack, start_broker, topic, within, Raw};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// Waits for the first event `pick` accepts.
async fn event<T>(events: &mut roost::events::Events, pick: impl Fn(&Event) -> Option<T>) -> T {
    within(async {
        loop {
            let e = events.recv().await.expect("the stream is open");
            if let Some(t) = pick(&e) {
                return t;
            }
        }
    })
    .await
}

#[tokio::test]
async fn sessions_are_listed_in_pages_and_shown_in_detail() {
    let broker = start_broker().await;
    let mut clients = Vec::new();
    for id in ["c-3", "c-1", "c-2"] {
        let mut c = Connect::new(V5, id);
        c.keep_alive = 30;
        let (mut raw, ack) = Raw::connect_with(&broker, c).await;
        assert!(connack(ack).reason_code.is_success());
        raw.subscribe(1, &format!("{id}/#"), QoS::AtLeastOnce).await;
        clients.push(raw);
    }
    let first = broker.sessions(None, 2);
    let ids: Vec<_> = first.iter().map(|s| s.client_id.as_str()).collect();
    assert_eq!(ids, ["c-1", "c-2"]);
    let rest = broker.sessions(Some("c-2"), 2);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].client_id, "c-3");
    assert_eq!(rest[0].subscription_count, 1);

    let detail = broker.session("c-1").expect("exists");
    assert!(detail.connected);
    assert_eq!(detail.keep_alive, Some(Duration::from_secs(30)));
    assert!(detail.connected_since.is_some());
    let client = detail.client.expect("client info");
    assert_eq!(client.protocol, V5);
    assert!(client.peer.is_some());
    assert_eq!(detail.subscriptions.len(), 1);
    assert_eq!(detail.subscriptions[0].0.as_str(), "c-1/#");
    assert_eq!(detail.subscriptions[0].1.qos, QoS::AtLeastOnce);
    assert!(broker.session("nobody").is_none());
}

#[tokio::test]
async fn a_kicked_v5_client_gets_0x98_and_its_will_is_published() {
    let broker = start_broker().await;
    let mut events = broker.events();
    let (watcher, mut wills) = broker
        .client(ClientOptions::new("watcher"))
        .await
        .expect("connects");
    watcher
        .subscribe("wills/#", QoS::AtLeastOnce)
        .await
        .expect("subscribes");
    let mut c = Connect::new(V5, "kick-me");
    c.will = Some(LastWill {
        topic: topic("wills/kick-me"),
        payload: "gone".into(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    });
    let (mut raw, ack) = Raw::connect_with(&broker, c).await;
    assert!(connack(ack).reason_code.is_success());
    assert!(broker.disconnect_client("kick-me"));
    match raw.recv().await {
        Some(Packet::Disconnect(Disconnect { reason_code, .. })) => {
            assert_eq!(reason_code, ReasonCode::AdministrativeAction)
        }
        other => panic!("expected DISCONNECT 0x98, got {other:?}"),
    }
    let will = within(wills.recv()).await.expect("the will");
    assert_eq!(will.payload.as_ref(), b"gone");
    let reason = event(&mut events, |e| match e {
        Event::Disconnected { client, reason } if client.client_id == "kick-me" => Some(*reason),
        _ => None,
    })
    .await;
    assert_eq!(
        reason,
        roost::plugin::DisconnectReason::Server(ReasonCode::AdministrativeAction)
    );
    assert!(!broker.disconnect_client("kick-me"), "no longer connected");
}

#[tokio::test]
async fn discarding_a_session_ends_it_and_its_queue() {
    let broker = start_broker().await;
    let (sleeper, _d) = broker
        .client(ClientOptions::new("sleeper").persistent(true))
        .await
        .expect("connects");
    sleeper
        .subscribe("news/#", QoS::AtLeastOnce)
        .await
        .expect("subscribes");
    sleeper.disconnect().await.expect("disconnects");
    broker
        .publish(Message::new(
            topic("news/1"),
            "x".into(),
            QoS::AtLeastOnce,
            false,
        ))
        .await
        .expect("published");
    assert_eq!(broker.session("sleeper").expect("kept").queued, 1);
    let mut events = broker.events();
    assert!(broker.discard_session("sleeper"));
    assert!(broker.session("sleeper").is_none());
    event(&mut events, |e| match e {
        Event::SessionExpired { client_id } if client_id == "sleeper" => Some(()),
        _ => None,
    })
    .await;
    // It comes back to nothing.
    let (back, _d) = broker
        .client(ClientOptions::new("sleeper").persistent(true))
        .await
        .expect("connects");
    assert!(!back.session_present());
    assert!(!broker.discard_session("nobody"));
}

#[tokio::test]
async fn subscriptions_made_on_a_clients_behalf_deliver_and_can_be_removed() {
    let broker = start_broker().await;
    broker
        .publish(Message::new(
            topic("cfg/a"),
            "retained".into(),
            QoS::AtMostOnce,
            true,
        ))
        .await
        .expect("published");
    let mut raw = Raw::connect(&broker, V5, "managed").await;
    let mut events = broker.events();
    let granted = broker
        .subscribe_for(
            "managed",
            "cfg/#",
            roost::codec::SubscriptionOptions::new(QoS::AtLeastOnce),
        )
        .await
        .expect("subscribed");
    assert_eq!(granted, QoS::AtLeastOnce);
    // The retained message comes at once, then live ones.
    let first = raw.next_message().await;
    assert_eq!((first.topic.as_str(), first.retain), ("cfg/a", true));
    broker
        .publish(Message::new(
            topic("cfg/b"),
            "live".into(),
            QoS::AtLeastOnce,
            false,
        ))
        .await
        .expect("published");
    assert_eq!(raw.next_message().await.topic.as_str(), "cfg/b");
    let filter = event(&mut events, |e| match e {
        Event::Subscribed {
            client_id, filter, ..
        } if client_id == "managed" => Some(filter.to_string()),
        _ => None,
    })
    .await;
    assert_eq!(filter, "cfg/#");
    assert!(broker
        .unsubscribe_for("managed", "cfg/#")
        .await
        .expect("removed"));
    assert!(!broker
        .unsubscribe_for("managed", "cfg/#")
        .await
        .expect("none left"));
    assert_eq!(
        broker
            .subscribe_for(
                "nobody",
                "x",
                roost::codec::SubscriptionOptions::new(QoS::AtMostOnce)
            )
            .await,
        Err(roost::ControlError::NoSuchSession)
    );
    assert!(matches!(
        broker.unsubscribe_for("managed", "bad/#/filter").await,
        Err(roost::ControlError::InvalidTopic(_))
    ));
}

#[tokio::test]
async fn retained_messages_are_listed_in_pages_read_and_cleared() {
    let broker = start_broker().await;
    for i in 0..25u32 {
        broker
            .publish(Message::new(
                topic(&format!("dev/{i:02}/state")),
                format!("s{i}").into(),
                QoS::AtMostOnce,
                true,
            ))
            .await
            .expect("published");
    }
    broker
        .publish(Message::new(
            topic("other"),
            "o".into(),
            QoS::AtMostOnce,
            true,
        ))
        .await
        .expect("published");
    let mut seen = Vec::new();
    let mut after: Option<TopicName> = None;
    loop {
        let page = broker
            .retained("dev/#", after.as_ref(), 10)
            .expect("valid filter");
        assert!(page.messages.len() <= 10);
        seen.extend(page.messages.iter().map(|m| m.topic.to_string()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("dev/{i:02}/state")).collect();
    assert_eq!(seen, expected);
    let one = broker
        .retained_message("dev/07/state")
        .expect("valid")
        .expect("retained");
    assert_eq!(one.payload.as_ref(), b"s7");

    // Clearing sends nothing to subscribers.
    let mut raw = Raw::connect(&broker, V5, "listener").await;
    raw.subscribe(1, "dev/#", QoS::AtMostOnce).await;
    for _ in 0..25 {
        raw.next_message().await; // the retained ones, on subscribe
    }
    assert_eq!(broker.clear_retained("dev/#").await.expect("cleared"), 25);
    assert!(
        broker
            .retained("#", None, 100)
            .expect("valid")
            .messages
            .len()
            == 1
    );
    let quiet = tokio::time::timeout(Duration::from_millis(300), raw.recv()).await;
    assert!(quiet.is_err(), "clearing sent {quiet:?}");
}

#[tokio::test]
async fn events_report_connects_authentication_failures_and_overflow() {
    let broker = roost::Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .authenticator(std::sync::Arc::new(
            roost::auth::StaticUsers::new()
                .with_user("alice", "right")
                .expect("user"),
        ))
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    let mut events = broker.events();
    let mut c = Connect::new(V5, "intruder");
    c.username = Some("alice".into());
    c.password = Some("wrong".into());
    let (_raw, ack) = Raw::connect_with(&broker, c).await;
    assert!(!connack(ack).reason_code.is_success());
    let (id, reason) = event(&mut events, |e| match e {
        Event::AuthenticationFailed {
            client_id, reason, ..
        } => Some((client_id.to_string(), *reason)),
        _ => None,
    })
    .await;
    assert_eq!(
        (id.as_str(), reason),
        ("intruder", ReasonCode::BadUserNameOrPassword)
    );

    let mut c = Connect::new(V5, "alice-1");
    c.username = Some("alice".into());
    c.password = Some("right".into());
    let (_alice, ack) = Raw::connect_with(&broker, c).await;
    assert!(connack(ack).reason_code.is_success());
    let who = event(&mut events, |e| match e {
        Event::Connected { client } => Some(client.identity.username.clone()),
        _ => None,
    })
    .await;
    assert_eq!(who.as_deref(), Some("alice"));

    // A stream nobody reads loses events, counted; the broker does not wait for it.
    let small = broker.events_with_capacity(2);
    for i in 0..10 {
        let mut c = Connect::new(V5, format!("burst-{i}"));
        c.username = Some("alice".into());
        c.password = Some("right".into());
        let (_raw, ack) = Raw::connect_with(&broker, c).await;
        assert!(connack(ack).reason_code.is_success());
    }
    assert!(small.dropped() > 0);
    assert!(broker.metrics().events_dropped >= small.dropped());
    // Shutdown ends the streams.
    broker.shutdown().await;
    let mut rest = 0;
    while within(events.recv()).await.is_some() {
        rest += 1;
    }
    assert!(rest > 0);
}

/// Issue 17 §6: `examples/admin.rs` lists clients, kicks one (a v5 client gets 0x98), and
/// lists and clears retained messages over HTTP.
#[tokio::test]
async fn the_admin_example_lists_kicks_and_clears() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(support::example("admin"))
        .args(["127.0.0.1:0", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the admin example runs (cargo test builds it)");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut mqtt, mut admin) = (None, None);
    within(async {
        while mqtt.is_none() || admin.is_none() {
            let line = lines.next_line().await.expect("reads").expect("a line");
            let port = |prefix: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(prefix))
                    .and_then(|p| p.parse::<u16>().ok())
            };
            mqtt = mqtt.or(port("addr=127.0.0.1:"));
            admin = admin.or(port("http://127.0.0.1:"));
        }
    })
    .await;
    let (mqtt, admin) = (mqtt.expect("mqtt port"), admin.expect("admin port"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let to = format!("127.0.0.1:{mqtt}").parse().expect("address");
    let (mut sensor, ack) = Raw::connect_to(to, Connect::new(V5, "sensor-1")).await;
    assert!(connack(ack).reason_code.is_success());
    sensor
        .publish(
            "sensors/t",
            b"21",
            roost::codec::PublishQoS::AtMostOnce,
            true,
        )
        .await;
    let (status, body) = support::http(admin, "GET", "/clients").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"client_id\":\"sensor-1\""), "{body}");
    let listed = within(async {
        loop {
            let (_, body) = support::http(admin, "GET", "/retained?filter=sensors/%23").await;
            if body.contains("sensors/t") {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(listed.contains("\"next\":null"), "{listed}");
    assert_eq!(
        support::http(admin, "POST", "/clients/sensor-1/kick")
            .await
            .0,
        204
    );
    match sensor.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::AdministrativeAction),
        other => panic!("expected DISCONNECT 0x98, got {other:?}"),
    }
    assert_eq!(support::http(admin, "GET", "/clients/nobody").await.0, 404);
    let (status, body) = support::http(admin, "DELETE", "/retained?filter=sensors/%23").await;
    assert_eq!((status, body.as_str()), (200, "{\"cleared\":1}"));
}

/// Issue 17 §2: a message that does not fit a session's queue is reported with its reason,
/// as is a session whose expiry passes.
#[tokio::test]
async fn events_report_dropped_messages_with_their_reason() {
    let broker =
        support::start_broker_with(roost::Limits::default().with_max_queued_messages(1)).await;
    let (sleeper, _d) = broker
        .client(ClientOptions::new("sleeper").persistent(true))
        .await
        .expect("connects");
    sleeper
        .subscribe("q/#", QoS::AtLeastOnce)
        .await
        .expect("subscribes");
    sleeper.disconnect().await.expect("disconnects");
    let mut events = broker.events();
    for i in 0..3 {
        broker
            .publish(Message::new(
                topic("q/x"),
                format!("{i}").into(),
                QoS::AtLeastOnce,
                false,
            ))
            .await
            .expect("published");
    }
    let (client_id, reason) = event(&mut events, |e| match e {
        Event::MessageDropped {
            client_id, reason, ..
        } => Some((client_id.to_string(), *reason)),
        _ => None,
    })
    .await;
    assert_eq!(client_id, "sleeper");
    assert_eq!(reason, roost::plugin::DropReason::QueueFull);
}

/// Two brokers started from one builder have their own event streams.
#[tokio::test]
async fn brokers_from_one_builder_do_not_share_events() {
    let builder = roost::Broker::builder().sys_interval(None);
    let first = builder.clone().build().start().await.expect("starts");
    let second = builder.build().start().await.expect("starts");
    let mut first_events = first.events();
    let _second_events = second.events();
    let (_c, _d) = second
        .client(ClientOptions::new("on-second"))
        .await
        .expect("connects");
    let (_c1, _d1) = first
        .client(ClientOptions::new("on-first"))
        .await
        .expect("connects");
    let who = event(&mut first_events, |e| match e {
        Event::Connected { client } => Some(client.client_id.to_string()),
        _ => None,
    })
    .await;
    assert_eq!(who, "on-first");
}
