//! Issue 16: Roost bridges to another broker. Two Roost brokers on loopback, the local one
//! with a bridge to the remote one over TCP: topic rules in both directions at QoS 0/1/2
//! with prefix remaps, retained messages carried as retained, no echo when bridged both
//! ways on `#` (v5, 3.1.1 with the bridge bit, 3.1.1 without it), remotes that refuse or
//! never answer, and the bridge's status and `$SYS` topics.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use roost::bridge::{BridgeConfig, BridgeError, BridgeProtocol, BridgeStatus, BridgeTopic};
use roost::plugin::{Authorizer, ClientInfo, Decision};
use roost::{Broker, BrokerHandle, ClientOptions, Deliveries, QoS, ReasonCode, TopicName};
use support::{addr, start_broker, within};

/// A bridge to `remote` with these Mosquitto-form topic lines, reconnecting quickly.
fn bridge(name: &str, remote: &BrokerHandle, topics: &[&str]) -> BridgeConfig {
    let mut config = BridgeConfig::new(name, addr(remote).to_string())
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .connect_timeout(Duration::from_secs(2));
    for line in topics {
        config = config.topic(BridgeTopic::parse(line).expect("valid rule"));
    }
    config
}

/// A broker on loopback with these bridges.
async fn start_with_bridges(bridges: Vec<BridgeConfig>) -> BrokerHandle {
    let mut builder = Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .sys_interval(None);
    for b in bridges {
        builder = builder.bridge(b);
    }
    builder.build().start().await.expect("broker starts")
}

/// Waits until the broker's first bridge is connected and subscribed on both sides.
async fn connected(broker: &BrokerHandle) -> BridgeStatus {
    within(async {
        loop {
            let status = broker.bridges().remove(0);
            if status.connected {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Waits until the first bridge's status satisfies `what`.
async fn status_until(broker: &BrokerHandle, what: impl Fn(&BridgeStatus) -> bool) -> BridgeStatus {
    within(async {
        loop {
            let status = broker.bridges().remove(0);
            if what(&status) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// An in-process subscriber (the client must be kept: dropping it disconnects).
async fn subscriber(
    broker: &BrokerHandle,
    id: &str,
    filter: &str,
    qos: QoS,
) -> (roost::Client, Deliveries) {
    let (client, deliveries) = broker
        .client(ClientOptions::new(id))
        .await
        .expect("client connects");
    client.subscribe(filter, qos).await.expect("subscribes");
    (client, deliveries)
}

async fn publisher(broker: &BrokerHandle, id: &str) -> roost::Client {
    broker
        .client(ClientOptions::new(id))
        .await
        .expect("client connects")
        .0
}

async fn next(deliveries: &mut Deliveries) -> roost::Received {
    within(deliveries.recv()).await.expect("a message")
}

/// Publishes on `topics.0` with `from` at `qos`; `to` must get it on `topics.1` at `qos`.
async fn crosses(from: &roost::Client, topics: (&str, &str), qos: QoS, to: &mut Deliveries) {
    let body = format!("{} at {qos:?}", topics.0);
    from.publish(topics.0, body.clone(), qos, false)
        .await
        .expect("published");
    let got = next(to).await;
    assert_eq!(got.topic.as_str(), topics.1);
    assert_eq!((got.payload.as_ref(), got.qos), (body.as_bytes(), qos));
}

#[tokio::test]
async fn out_and_in_rules_carry_each_qos_with_prefix_remaps() {
    let remote = start_broker().await;
    let local = start_with_bridges(vec![bridge(
        "edge",
        &remote,
        &["sensors/# out 2 \"\" site7/", "# in 2 cmd/ site7/cmd/"],
    )])
    .await;
    connected(&local).await;
    let (_far, mut far) = subscriber(&remote, "far-sub", "site7/sensors/#", QoS::ExactlyOnce).await;
    let (_near, mut near) = subscriber(&local, "near-sub", "cmd/#", QoS::ExactlyOnce).await;
    let near_pub = publisher(&local, "near-pub").await;
    let far_pub = publisher(&remote, "far-pub").await;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        crosses(&near_pub, ("sensors/t1", "site7/sensors/t1"), qos, &mut far).await;
        crosses(&far_pub, ("site7/cmd/valve", "cmd/valve"), qos, &mut near).await;
    }
    // Topics no rule places are not forwarded: a local `cmd/` message stays local.
    near_pub
        .publish("other/x", "stays", QoS::AtLeastOnce, false)
        .await
        .expect("published");
    near_pub
        .publish("sensors/last", "marker", QoS::AtLeastOnce, false)
        .await
        .expect("published");
    assert_eq!(next(&mut far).await.topic.as_str(), "site7/sensors/last");
    let status = status_until(&local, |s| s.messages_out >= 4 && s.messages_in >= 3).await;
    assert_eq!(
        (status.messages_out, status.messages_in),
        (4, 3),
        "{status:?}"
    );
    assert_eq!(status.inflight, 0, "{status:?}");
}

#[tokio::test]
async fn retained_messages_cross_as_retained_both_ways() {
    let remote = start_broker().await;
    let far_pub = publisher(&remote, "far-pub").await;
    far_pub
        .publish("cfg/rate", "10s", QoS::AtLeastOnce, true)
        .await
        .expect("retained remotely");
    let local = start_broker_then_bridge(&remote, &["state/# out 1", "cfg/# in 1"]).await;
    // The remote's retained message came in as retained: a local subscriber gets it so.
    let got = retained_on(&local, "cfg/#").await;
    assert_eq!(
        (got.topic.as_str(), got.payload.as_ref()),
        ("cfg/rate", &b"10s"[..])
    );
    let near_pub = publisher(&local, "near-pub").await;
    near_pub
        .publish("state/door", "open", QoS::AtLeastOnce, true)
        .await
        .expect("retained locally");
    // A remote subscriber that comes later gets the local one as a retained message.
    let got = retained_on(&remote, "state/#").await;
    assert_eq!(
        (got.topic.as_str(), got.payload.as_ref()),
        ("state/door", &b"open"[..])
    );
}

/// The retained message a new subscription to `filter` gets, once there is one (asked
/// again until then: it may still be on its way across the bridge).
async fn retained_on(broker: &BrokerHandle, filter: &str) -> roost::Received {
    within(async {
        loop {
            let (_late, mut late) = subscriber(broker, "late", filter, QoS::AtLeastOnce).await;
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), late.recv()).await
            {
                assert!(m.retain, "sent on subscribe, so retained: {m:?}");
                return m;
            }
        }
    })
    .await
}

async fn start_broker_then_bridge(remote: &BrokerHandle, topics: &[&str]) -> BrokerHandle {
    let local = start_with_bridges(vec![bridge("b", remote, topics)]).await;
    connected(&local).await;
    local
}

/// Two brokers bridged both ways on `#`, 1,000 QoS 1 messages published on each side:
/// every subscriber gets each message once, and nothing comes back.
async fn no_echo(config: impl Fn(BridgeConfig) -> BridgeConfig) {
    let remote = start_broker().await;
    let local = start_with_bridges(vec![config(bridge("loop", &remote, &["# both 1"]))]).await;
    connected(&local).await;
    let (_near, mut near) = subscriber(&local, "near-sub", "#", QoS::AtLeastOnce).await;
    let (_far, mut far) = subscriber(&remote, "far-sub", "#", QoS::AtLeastOnce).await;
    let near_pub = publisher(&local, "near-pub").await;
    let far_pub = publisher(&remote, "far-pub").await;
    for i in 0..500 {
        near_pub
            .publish("from/near", format!("n{i}"), QoS::AtLeastOnce, false)
            .await
            .expect("published");
        far_pub
            .publish("from/far", format!("f{i}"), QoS::AtLeastOnce, false)
            .await
            .expect("published");
    }
    near_pub
        .publish("end/near", "end", QoS::AtLeastOnce, false)
        .await
        .expect("published");
    far_pub
        .publish("end/far", "end", QoS::AtLeastOnce, false)
        .await
        .expect("published");
    for (side, deliveries) in [("local", &mut near), ("remote", &mut far)] {
        let mut seen: HashMap<String, u32> = HashMap::new();
        let mut ends = 0;
        while ends < 2 {
            let m = next(deliveries).await;
            if m.topic.as_str().starts_with("end/") {
                ends += 1;
            }
            *seen
                .entry(format!("{}:{:?}", m.topic, m.payload))
                .or_default() += 1;
        }
        // Whatever would echo was sent before the end markers on the same path.
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{side} got duplicates: {twice:?}");
        assert_eq!(seen.len(), 1002, "{side} subscriber");
    }
}

#[tokio::test]
async fn bridged_both_ways_on_hash_nothing_echoes_v5() {
    no_echo(|c| c.protocol(BridgeProtocol::V5)).await;
}

#[tokio::test]
async fn bridged_both_ways_on_hash_nothing_echoes_v311_bridge_bit() {
    no_echo(|c| c.protocol(BridgeProtocol::V311)).await;
}

#[tokio::test]
async fn bridged_both_ways_on_hash_nothing_echoes_v311_without_bridge_bit() {
    // The rule-level guard: the remote echoes, the bridge recognises its own messages.
    no_echo(|c| c.protocol(BridgeProtocol::V311).try_private(false)).await;
}

/// The local broker keeps serving its own clients while its bridge fails.
async fn still_serving(local: &BrokerHandle) {
    let (_sub, mut sub) = subscriber(local, "local-sub", "local/#", QoS::AtLeastOnce).await;
    publisher(local, "local-pub")
        .await
        .publish("local/x", "ok", QoS::AtLeastOnce, false)
        .await
        .expect("published");
    assert_eq!(next(&mut sub).await.payload.as_ref(), b"ok");
}

/// Waits for two failed attempts (so it backed off and tried again), then checks the error.
async fn failing(local: &BrokerHandle, expected: impl Fn(&BridgeError) -> bool) {
    let status = status_until(local, |s| s.connect_failures >= 2).await;
    assert!(!status.connected);
    let error = status.last_error.expect("an error is recorded");
    assert!(expected(&error), "unexpected error: {error:?}");
    still_serving(local).await;
}

#[tokio::test]
async fn wrong_credentials_are_refused_and_retried_with_backoff() {
    let remote = Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .authenticator(Arc::new(
            roost::auth::StaticUsers::new()
                .with_user("edge", "right")
                .expect("user"),
        ))
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    let config = bridge("bad-login", &remote, &["a/# out 1"])
        .protocol(BridgeProtocol::V5)
        .credentials("edge", "wrong");
    let local = start_with_bridges(vec![config]).await;
    failing(&local, |e| {
        matches!(e, BridgeError::Refused(ReasonCode::BadUserNameOrPassword))
    })
    .await;

    // The right password connects.
    let config = bridge("good-login", &remote, &["a/# out 1"]).credentials("edge", "right");
    let local = start_with_bridges(vec![config]).await;
    connected(&local).await;
}

#[tokio::test]
async fn a_remote_that_never_answers_times_out_and_is_retried() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let at = silent.local_addr().expect("address");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let config = BridgeConfig::new("silent", at.to_string())
        .topic(BridgeTopic::parse("a/# out 1").expect("rule"))
        .backoff(Duration::from_millis(50), Duration::from_millis(100))
        .connect_timeout(Duration::from_millis(300));
    let local = start_with_bridges(vec![config]).await;
    failing(&local, |e| matches!(e, BridgeError::Timeout)).await;
    held.abort();
}

/// A bridge `name` forwarding `a/#` out at QoS 1 to a loopback port nobody listens on,
/// retrying after `backoff`.
fn to_nobody(name: &str, backoff: Duration) -> BridgeConfig {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    BridgeConfig::new(name, free.to_string())
        .topic(BridgeTopic::parse("a/# out 1").expect("rule"))
        .backoff(backoff, backoff * 2)
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error_and_is_retried() {
    let config = to_nobody("nobody", Duration::from_millis(50));
    let local = start_with_bridges(vec![config]).await;
    failing(&local, |e| matches!(e, BridgeError::Connect(_))).await;
}

/// Issue 16 §2 (what is acknowledged while the remote is away waits for it): the bridge's
/// local session and its subscriptions exist once `start` returns, so a message published
/// at once is queued for the remote, not routed to nobody. (The session was made by a task
/// racing the first clients: the SIGKILL durability test lost its first window of 100
/// messages in about one run of 30.)
#[tokio::test]
async fn what_is_published_as_soon_as_the_broker_is_up_waits_for_the_remote() {
    let local = start_with_bridges(vec![to_nobody("later", Duration::from_secs(5))]).await;
    let session = local
        .session("$bridge/later")
        .expect("made before start returns");
    assert_eq!(session.subscription_count, 1, "{:?}", session.subscriptions);
    publisher(&local, "early")
        .await
        .publish("a/x", "first", QoS::AtLeastOnce, false)
        .await
        .expect("acknowledged");
    let held = local.session("$bridge/later").expect("kept");
    assert_eq!(held.queued + held.inflight, 1, "queued for the remote");
    local.shutdown().await;
}

/// Denies everything: the bridge's local side is not subject to it.
struct DenyAll;

#[roost::async_trait]
impl Authorizer for DenyAll {
    async fn authorize_client(&self, _client: &ClientInfo) -> Decision {
        Decision::Deny(ReasonCode::NotAuthorized)
    }

    async fn authorize_publish(
        &self,
        _client: &ClientInfo,
        _topic: &TopicName,
        _qos: QoS,
        _retain: bool,
    ) -> Decision {
        Decision::Deny(ReasonCode::NotAuthorized)
    }
}

#[tokio::test]
async fn the_bridge_is_not_subject_to_the_local_authorizers_and_its_session_is_its_own() {
    let remote = start_broker().await;
    let local = Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .authorizer(Arc::new(DenyAll))
        .sys_interval(None)
        .bridge(bridge("guarded", &remote, &["# in 1"]))
        .build()
        .start()
        .await
        .expect("starts");
    connected(&local).await;
    // A network client cannot take the bridge's local session (client identifiers under
    // `$bridge/` are the bridges' own).
    let mut raw = support::Raw::open(&local, roost::codec::ProtocolVersion::V5).await;
    let mut c = roost::codec::Connect::new(roost::codec::ProtocolVersion::V5, "$bridge/guarded");
    c.clean_start = false;
    raw.send(roost::codec::Packet::Connect(Box::new(c))).await;
    let ack = support::connack(raw.recv().await.expect("CONNACK"));
    assert_eq!(ack.reason_code, ReasonCode::ClientIdentifierNotValid);
    assert!(local.bridges()[0].connected);
}

#[tokio::test]
async fn status_and_sys_topics_show_the_bridge() {
    let remote = start_broker().await;
    let local = Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .sys_interval(Some(Duration::from_millis(50)))
        .bridge(bridge("sys", &remote, &["a/# out 1"]))
        .build()
        .start()
        .await
        .expect("starts");
    let status = connected(&local).await;
    assert_eq!((status.name.as_str(), status.connects), ("sys", 1));
    assert_eq!(status.address, addr(&remote).to_string());
    let (_sys, mut sys) = subscriber(
        &local,
        "watcher",
        "$SYS/broker/bridge/sys/#",
        QoS::AtMostOnce,
    )
    .await;
    let mut seen: HashMap<String, bytes::Bytes> = HashMap::new();
    // The first retained state may be from before the bridge connected; newer ones follow.
    within(async {
        while seen.len() < 7
            || seen.get("$SYS/broker/bridge/sys/state").map(|b| b.as_ref())
                != Some(&b"connected"[..])
        {
            let m = next(&mut sys).await;
            seen.insert(m.topic.to_string(), m.payload);
        }
    })
    .await;
    assert!(seen.contains_key("$SYS/broker/bridge/sys/messages/sent"));
    assert!(seen.contains_key("$SYS/broker/bridge/sys/queued"));
    // The remote goes away: the state says so.
    remote.shutdown().await;
    status_until(&local, |s| !s.connected).await;
}

#[tokio::test]
async fn bad_bridge_configurations_are_refused_at_start() {
    let cases = [
        BridgeConfig::new("no-topics", "127.0.0.1:1883"),
        BridgeConfig::new("a/b", "127.0.0.1:1883").topic(BridgeTopic::parse("x").expect("rule")),
        BridgeConfig::new("no-port", "127.0.0.1").topic(BridgeTopic::parse("x").expect("rule")),
    ];
    for config in cases {
        let started = Broker::builder().bridge(config).build().start().await;
        assert!(matches!(started, Err(roost::Error::Config(_))));
    }
}

/// Issue 16 §7: `examples/bridge.rs` runs on its own (a second embedded broker as the
/// central one) and shows both directions.
#[tokio::test]
async fn the_bridge_example_forwards_both_ways() {
    let text = support::run_example("bridge", None).await;
    assert!(
        text.contains("central got site/edge7/sensors/temp 21.5"),
        "{text}"
    );
    assert!(text.contains("edge got cmd/fan on"), "{text}");
}

/// Issue 16 §4: a remote that answers CONNECT and then goes silent is noticed within one
/// and a half keep-alive intervals, and the bridge reconnects.
#[tokio::test]
async fn a_remote_that_stops_answering_is_dropped_after_the_keep_alive() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let at = silent.local_addr().expect("address");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((mut stream, _)) = silent.accept().await {
            let mut buf = [0u8; 256];
            // CONNECT in, CONNACK (3.1.1, accepted) out, then nothing ever again.
            if stream.read(&mut buf).await.unwrap_or(0) > 0 {
                let _ = stream.write_all(&[0x20, 0x02, 0x00, 0x00]).await;
            }
            open.push(stream);
        }
    });
    let config = BridgeConfig::new("mute", at.to_string())
        .topic(BridgeTopic::parse("a/# out 1").expect("rule"))
        .keep_alive(Duration::from_secs(1))
        .backoff(Duration::from_millis(50), Duration::from_millis(100));
    let local = start_with_bridges(vec![config]).await;
    let status = status_until(&local, |s| s.connects >= 2).await;
    assert!(
        matches!(status.last_error, Some(BridgeError::KeepAlive)),
        "{status:?}"
    );
    held.abort();
}

/// Issue 16 §4: the will of a local client goes out as the message it is.
#[tokio::test]
async fn wills_of_local_clients_are_forwarded() {
    let remote = start_broker().await;
    let local = start_broker_then_bridge(&remote, &["status/# out 1"]).await;
    let (_far, mut far) = subscriber(&remote, "far-sub", "status/#", QoS::AtLeastOnce).await;
    let will = roost::codec::LastWill {
        topic: TopicName::new("status/device-1").expect("topic"),
        payload: "gone".into(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    };
    let (device, _d) = local
        .client(ClientOptions::new("device-1").will(will))
        .await
        .expect("connects");
    // Dropping the last handle ends the connection without DISCONNECT: the will goes.
    drop(device);
    let got = next(&mut far).await;
    assert_eq!(
        (got.topic.as_str(), got.payload.as_ref()),
        ("status/device-1", &b"gone"[..])
    );
}

/// Issue 16 §1: a message larger than the v5 remote's Maximum Packet Size is not sent (the
/// remote would have to close the connection); it is counted as dropped and the next one
/// goes through.
#[tokio::test]
async fn messages_over_the_remotes_maximum_packet_size_are_dropped_and_counted() {
    let remote =
        support::start_broker_with(roost::Limits::default().with_max_packet_size(256)).await;
    let config = bridge("small", &remote, &["big/# out 1"]).protocol(BridgeProtocol::V5);
    let local = start_with_bridges(vec![config]).await;
    connected(&local).await;
    let (_far, mut far) = subscriber(&remote, "far-sub", "big/#", QoS::AtLeastOnce).await;
    let near = publisher(&local, "near-pub").await;
    near.publish("big/one", vec![b'x'; 1000], QoS::AtLeastOnce, false)
        .await
        .expect("published");
    near.publish("big/two", "small", QoS::AtLeastOnce, false)
        .await
        .expect("published");
    let got = next(&mut far).await;
    assert_eq!(got.topic.as_str(), "big/two");
    let status = status_until(&local, |s| s.messages_out >= 1).await;
    assert_eq!(
        (status.dropped, status.inflight, status.connects),
        (1, 0, 1),
        "{status:?}"
    );
}
