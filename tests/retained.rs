//! Retained messages (3.1.1 §3.3.1.3) and `$` topics (§4.7.2).

mod support;

use roost::codec::{Packet, ProtocolVersion, PublishQoS};
use roost::QoS;
use support::*;

const V4: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

#[tokio::test]
async fn retained_message_is_sent_to_new_subscribers_with_retain_set() {
    // MQTT-3.3.1-5 (3.1.1, stored), MQTT-3.3.1-6 (3.1.1, sent to new subscriptions), MQTT-3.3.1-8
    // (3.1.1, RETAIN 1 on that copy); MQTT-3.3.1-5 (v5, stored, replacing) and MQTT-3.3.1-9 (v5,
    // Retain Handling 0 sends it).
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut publ = Raw::connect(&broker, v, "pub").await;
        publ.publish("r/t", b"kept", PublishQoS::AtLeastOnce(pid(1)), true)
            .await;
        assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
        let mut sub = Raw::connect(&broker, v, "sub").await;
        assert!(matches!(
            sub.subscribe(1, "r/+", QoS::ExactlyOnce).await,
            Packet::SubAck(_)
        ));
        let p = sub.recv_publish().await;
        assert_eq!(&p.payload[..], b"kept");
        assert!(p.retain);
        // Stored with its QoS (1), delivered at min(1, granted 2).
        assert!(matches!(p.qos, PublishQoS::AtLeastOnce(_)));
        sub.ack(&p).await;
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn established_subscriptions_get_retain_0() {
    // MQTT-3.3.1-9 (3.1.1), MQTT-3.3.1-12 (v5: Retain As Published 0).
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut sub = Raw::connect(&broker, v, "sub").await;
        sub.subscribe(1, "live", QoS::AtMostOnce).await;
        let mut publ = Raw::connect(&broker, v, "pub").await;
        publ.publish("live", b"now", PublishQoS::AtMostOnce, true)
            .await;
        let p = sub.recv_publish().await;
        assert!(!p.retain);
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn new_retained_message_replaces_the_old_and_empty_payload_clears_it() {
    // MQTT-3.3.1-7 (3.1.1, replaced), MQTT-3.3.1-10 (3.1.1, zero bytes clears), MQTT-3.3.1-11
    // (3.1.1, a zero-byte retained message is not stored), MQTT-3.3.1-12 (3.1.1, RETAIN 0 leaves
    // it); in v5: MQTT-3.3.1-5 (v5: replaced), MQTT-3.3.1-6 (v5: cleared), MQTT-3.3.1-7 (v5: not stored),
    // MQTT-3.3.1-8 (v5: RETAIN 0 leaves it).
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut publ = Raw::connect(&broker, v, "pub").await;
        publ.publish("k", b"first", PublishQoS::AtMostOnce, true)
            .await;
        publ.publish("k", b"second", PublishQoS::AtMostOnce, true)
            .await;
        publ.publish("k", b"not retained", PublishQoS::AtMostOnce, false)
            .await;
        publ.ping().await;
        let mut sub = Raw::connect(&broker, v, "s1").await;
        sub.subscribe(1, "k", QoS::AtMostOnce).await;
        assert_eq!(&sub.recv_publish().await.payload[..], b"second");
        assert!(sub.ping().await.is_empty());
        assert_eq!(broker.metrics().retained, 1);
        publ.publish("k", b"", PublishQoS::AtMostOnce, true).await;
        publ.ping().await;
        // The live subscriber sees the empty message (it is a normal message to them).
        let cleared = sub.recv_publish().await;
        assert!(cleared.payload.is_empty());
        let mut late = Raw::connect(&broker, v, "s2").await;
        late.subscribe(1, "k", QoS::AtMostOnce).await;
        assert!(late.ping().await.is_empty(), "nothing retained any more");
        assert_eq!(broker.metrics().retained, 0);
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn wildcard_subscriptions_receive_matching_retained_messages() {
    let broker = start_broker().await;
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    for t in ["h/1/temp", "h/2/temp", "h/2/hum", "other"] {
        publ.publish(t, b"v", PublishQoS::AtMostOnce, true).await;
    }
    publ.ping().await;
    let mut sub = Raw::connect(&broker, V4, "sub").await;
    sub.subscribe(1, "h/+/temp", QoS::AtMostOnce).await;
    let mut topics: Vec<String> = sub
        .ping()
        .await
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => p.topic.to_string(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    topics.sort();
    assert_eq!(topics, vec!["h/1/temp", "h/2/temp"]);
    broker.shutdown().await;
}

#[tokio::test]
async fn dollar_topics_are_not_matched_by_leading_wildcards() {
    // MQTT-4.7.2-1: "#" and "+/..." do not match topics beginning with "$". (`$SYS` itself
    // is the broker's: clients may not publish there, so another `$` topic stands in.)
    let broker = start_broker().await;
    let mut all = Raw::connect(&broker, V4, "all").await;
    all.subscribe(1, "#", QoS::AtMostOnce).await;
    let mut plus = Raw::connect(&broker, V4, "plus").await;
    plus.subscribe(1, "+/info", QoS::AtMostOnce).await;
    let mut sys = Raw::connect(&broker, V4, "sys").await;
    sys.subscribe(1, "$app/#", QoS::AtMostOnce).await;
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    publ.publish("$app/info", b"s", PublishQoS::AtMostOnce, false)
        .await;
    publ.publish("x/info", b"x", PublishQoS::AtMostOnce, false)
        .await;
    publ.ping().await;
    assert_eq!(sys.recv_publish().await.topic, topic("$app/info"));
    assert_eq!(all.recv_publish().await.topic, topic("x/info"));
    assert_eq!(plus.recv_publish().await.topic, topic("x/info"));
    assert!(all.ping().await.is_empty());
    assert!(plus.ping().await.is_empty());
    broker.shutdown().await;
}

#[tokio::test]
async fn sys_counters_are_published_retained_at_the_interval() {
    // MQTT-3.3.2-3 (3.1.1): a copy sent to a subscriber names the topic it was published to
    // (what "#" receives is "plain/t").
    // README, observability: the counters of `broker.metrics()` are published as retained
    // `$SYS/broker/...` topics every `sys_interval`; MQTT-4.7.2-1: a `#` filter does not
    // match `$SYS`, an explicit `$SYS/...` filter does.
    let broker = roost::Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .sys_interval(Some(std::time::Duration::from_millis(200)))
        .build()
        .start()
        .await
        .expect("starts");
    let mut all = Raw::connect(&broker, V4, "all").await;
    all.subscribe(1, "#", QoS::AtMostOnce).await;
    let mut sys = Raw::connect(&broker, V4, "sys").await;
    sys.subscribe(1, "$SYS/broker/messages/received", QoS::AtMostOnce)
        .await;
    let mut p = Raw::connect(&broker, V4, "p").await;
    for _ in 0..3 {
        p.publish("plain/t", b"x", PublishQoS::AtMostOnce, false)
            .await;
    }
    // Updates arrive until one counts the three messages.
    let value = |m: &roost::codec::Publish| -> u64 {
        std::str::from_utf8(&m.payload)
            .expect("utf-8")
            .parse()
            .expect("a number")
    };
    loop {
        let m = sys.recv_publish().await;
        assert_eq!(m.topic, topic("$SYS/broker/messages/received"));
        if value(&m) >= 3 {
            break;
        }
    }
    assert!(broker.metrics().messages_received >= 3);
    // A late subscriber gets the last value at once: it is retained.
    let mut late = Raw::connect(&broker, V4, "late").await;
    late.subscribe(1, "$SYS/broker/clients/connected", QoS::AtMostOnce)
        .await;
    let m = late.recv_publish().await;
    assert!(m.retain, "retained");
    assert!(value(&m) >= 3, "all, sys and p were connected");
    // "#" saw the plain messages and no `$SYS` topic.
    for _ in 0..3 {
        assert_eq!(all.recv_publish().await.topic, topic("plain/t"));
    }
    assert!(all.ping().await.is_empty(), "no $SYS topic for #");
    broker.shutdown().await;
}

/// Issue 17 §5: the `$SYS` names the README lists under Mosquitto's names are all
/// published, and nothing under those names goes unlisted.
#[tokio::test]
async fn mosquitto_sys_names_are_published() {
    let readme = include_str!("../README.md");
    let table = readme
        .split("<!-- sys-topics -->")
        .nth(1)
        .and_then(|t| t.split("<!-- /sys-topics -->").next())
        .expect("the README's sys-topics table");
    // Each row's first cell: backquoted names, `.../x` meaning `$SYS/broker/x`, and
    // `{a,b}` meaning each of a and b.
    let mut listed = std::collections::BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cell = row.split(" | ").next().unwrap_or_default();
        for name in cell.split('`').skip(1).step_by(2) {
            let name = name.replace(".../", "$SYS/broker/");
            let mut names = vec![name];
            while let Some(i) = names.iter().position(|n| n.contains('{')) {
                let n = names.remove(i);
                let (head, rest) = n.split_once('{').expect("brace");
                let (alts, tail) = rest.split_once('}').expect("closing brace");
                for alt in alts.split(',') {
                    names.push(format!("{head}{alt}{tail}"));
                }
            }
            listed.extend(names);
        }
    }
    assert!(listed.len() > 40, "{listed:?}");
    let broker = roost::Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .sys_interval(Some(std::time::Duration::from_millis(100)))
        .build()
        .start()
        .await
        .expect("starts");
    let mut sys = Raw::connect(&broker, V4, "sys").await;
    sys.subscribe(1, "$SYS/#", QoS::AtMostOnce).await;
    let mut seen = std::collections::BTreeSet::new();
    while !listed.is_subset(&seen) {
        let m = sys.recv_publish().await;
        seen.insert(m.topic.to_string());
    }
    // Everything else published is under Roost's own names.
    let native: std::collections::BTreeSet<String> = roost::MetricsSnapshot::default()
        .sys_topics()
        .into_iter()
        .map(|(t, _)| t.to_string())
        .collect();
    let unlisted: Vec<_> = seen
        .iter()
        .filter(|t| !listed.contains(*t) && !native.contains(*t))
        .collect();
    assert!(
        unlisted.is_empty(),
        "published but not documented: {unlisted:?}"
    );
}
