//! Deliveries are written in batches (STYLE: "writes are batched"; issue 19): a run of
//! PUBLISHes that arrives in one read reaches each subscriber in a few writes, not one
//! write per message. The broker's `network_writes` counter is what a user reads to see it
//! (`bytes_sent / network_writes` is the bytes per write).

mod support;

use bytes::BytesMut;
use roost::codec::{Packet, ProtocolVersion, Publish, PublishQoS};
use roost::QoS;
use support::*;

const V4: ProtocolVersion = ProtocolVersion::V311;
const SUBSCRIBERS: usize = 8;
const MESSAGES: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_publishes_reaches_each_subscriber_in_a_few_writes() {
    let broker = start_broker().await;
    let mut subs = Vec::new();
    for i in 0..SUBSCRIBERS {
        let mut sub = Raw::connect(&broker, V4, &format!("sub-{i}")).await;
        sub.subscribe(1, "batch/#", QoS::AtMostOnce).await;
        subs.push(sub);
    }
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    // The whole run in one write, so the broker reads it in a handful of reads.
    let mut run = BytesMut::new();
    for i in 0..MESSAGES {
        let payload = format!("{i:08}").into_bytes();
        Packet::Publish(Publish::new(
            topic("batch/x"),
            PublishQoS::AtMostOnce,
            payload,
        ))
        .encode(V4, &mut run)
        .expect("encodes");
    }
    let before = broker.metrics();
    publ.send_bytes(&run).await;
    for sub in &mut subs {
        for i in 0..MESSAGES {
            let p = sub.recv_publish().await;
            assert_eq!(&p.payload[..], format!("{i:08}").as_bytes(), "in order");
        }
    }
    let after = broker.metrics();
    let reads = after.network_reads - before.network_reads;
    let writes = after.network_writes - before.network_writes;
    let delivered = (SUBSCRIBERS * MESSAGES) as u64;
    // A subscriber's writer is woken once per run of routed messages (per read of the
    // publisher, which grows its reads from 32 bytes to 8 KiB, and at least every 256
    // packets), not once per message; a wake costs at most a write or two (one more if
    // the next run was queued meanwhile). Woken per message, the writers ran beside the
    // publisher's reader on the other worker and wrote a few messages at a time: 500
    // writes for these 3,200 deliveries from 5 reads.
    assert!(
        writes <= (reads + 2) * SUBSCRIBERS as u64 * 3,
        "{writes} writes for {delivered} deliveries from {reads} reads"
    );
    assert!(
        (after.bytes_sent - before.bytes_sent) / writes.max(1) >= 100,
        "bytes per write: {}",
        (after.bytes_sent - before.bytes_sent) / writes.max(1)
    );
    drop((subs, publ));
    broker.shutdown().await;
}

/// MQTT-4.6.0-6: copies of QoS 0 messages are queued per session at the end of a run, but
/// a QoS 1 message from the same publisher in the same run does not overtake them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_qos0_copies_are_not_overtaken_by_qos1_ones() {
    let broker = start_broker().await;
    let mut sub = Raw::connect(&broker, V4, "sub").await;
    sub.subscribe(1, "order/#", QoS::AtLeastOnce).await;
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    let mut run = BytesMut::new();
    let mut next_id = 1u16;
    for i in 0..300u32 {
        let qos = if i % 3 == 2 {
            next_id += 1;
            PublishQoS::AtLeastOnce(pid(next_id))
        } else {
            PublishQoS::AtMostOnce
        };
        let payload = format!("{i:08}").into_bytes();
        Packet::Publish(Publish::new(topic("order/x"), qos, payload))
            .encode(V4, &mut run)
            .expect("encodes");
    }
    publ.send_bytes(&run).await;
    for i in 0..300u32 {
        let p = sub.recv_publish().await;
        assert_eq!(&p.payload[..], format!("{i:08}").as_bytes(), "message {i}");
        sub.ack(&p).await;
    }
    drop((sub, publ));
    broker.shutdown().await;
}

/// What one subscriber of [`each_subscriber_gets_its_own_form_of_a_shared_run`] must see.
struct Wanted {
    messages: Vec<usize>,
    /// Its Subscription Identifier on every copy.
    sid: Option<u32>,
    /// RETAIN as published (else never set on these established subscriptions).
    retain_as_published: bool,
    /// Some copies name their topic through an alias.
    aliased: bool,
}

/// One run of QoS 0 messages to subscribers that each need something else: the same
/// messages as others (a shared run), some of them (another run), a Subscription
/// Identifier (MQTT-3.3.4-3), topic aliases (MQTT-3.3.2-12), a Maximum Packet Size the large
/// messages exceed (MQTT-3.1.2-24: those are not sent to it), Retain As Published
/// (MQTT-3.3.1-12; else MQTT-3.3.1-9). Each gets exactly its copies, in the order published
/// (MQTT-4.6.0-6), whichever way its writer sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subscriber_gets_its_own_form_of_a_shared_run() {
    use roost::codec::{Connect, Subscribe, SubscribeProperties, SubscriptionOptions};
    use std::num::NonZeroU32;
    const V5: ProtocolVersion = ProtocolVersion::V5;
    const N: usize = 300;
    let broker = start_broker().await;
    let mut with_alias = Connect::new(V5, "alias");
    with_alias.properties.topic_alias_maximum = Some(4);
    let (alias, _) = Raw::connect_with(&broker, with_alias).await;
    let mut with_max = Connect::new(V5, "small");
    with_max.properties.maximum_packet_size = NonZeroU32::new(200);
    let (small, _) = Raw::connect_with(&broker, with_max).await;
    let qos0 = SubscriptionOptions::new(QoS::AtMostOnce);
    let mut rap = qos0;
    rap.retain_as_published = true;
    let large = |i: usize| i.is_multiple_of(5);
    let all = || Wanted {
        messages: (0..N).collect(),
        sid: None,
        retain_as_published: false,
        aliased: false,
    };
    let mut subs = vec![
        (
            Raw::connect(&broker, V4, "plain").await,
            "mix/#",
            qos0,
            all(),
        ),
        (Raw::connect(&broker, V5, "v5").await, "mix/#", qos0, all()),
        (
            Raw::connect(&broker, V4, "only-a").await,
            "mix/a",
            qos0,
            Wanted {
                messages: (0..N).filter(|i| i % 2 == 0).collect(),
                ..all()
            },
        ),
        (
            alias,
            "mix/#",
            qos0,
            Wanted {
                aliased: true,
                ..all()
            },
        ),
        (
            small,
            "mix/#",
            qos0,
            Wanted {
                messages: (0..N).filter(|&i| !large(i)).collect(),
                ..all()
            },
        ),
        (
            Raw::connect(&broker, V5, "sid").await,
            "mix/#",
            qos0,
            Wanted {
                sid: Some(7),
                ..all()
            },
        ),
        (
            Raw::connect(&broker, V5, "rap").await,
            "mix/#",
            rap,
            Wanted {
                retain_as_published: true,
                ..all()
            },
        ),
    ];
    for (c, f, options, wanted) in &mut subs {
        c.send(Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: SubscribeProperties {
                subscription_identifier: wanted.sid.and_then(NonZeroU32::new),
                user_properties: Vec::new(),
            },
            filters: vec![(filter(f), *options)],
        }))
        .await;
        assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    }
    // Message i: on mix/a when even, mix/b when odd; every fifth 600 bytes long; every
    // seventh retained. All in one write, so the broker routes them in a few runs.
    let topic_of = |i: usize| {
        if i.is_multiple_of(2) {
            "mix/a"
        } else {
            "mix/b"
        }
    };
    let mut run = BytesMut::new();
    for i in 0..N {
        let mut payload = format!("{i:08}").into_bytes();
        if large(i) {
            payload.resize(600, b'.');
        }
        let mut p = Publish::new(topic(topic_of(i)), PublishQoS::AtMostOnce, payload);
        p.retain = i % 7 == 0;
        Packet::Publish(p).encode(V4, &mut run).expect("encodes");
    }
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    publ.send_bytes(&run).await;

    for (c, f, _, wanted) in &mut subs {
        let mut aliases = std::collections::HashMap::new();
        let mut used_alias = false;
        for &i in &wanted.messages {
            let p = c.recv_publish().await;
            assert_eq!(
                &p.payload[..8],
                format!("{i:08}").as_bytes(),
                "{f}: in order"
            );
            // The topic, named or through an alias the client was told before.
            let named = match (p.topic.as_str(), p.properties.topic_alias) {
                ("", Some(a)) => {
                    used_alias = true;
                    aliases.get(&a).cloned().expect("an alias set before")
                }
                (name, Some(a)) => {
                    aliases.insert(a, name.to_string());
                    name.to_string()
                }
                (name, None) => name.to_string(),
            };
            assert_eq!(named, topic_of(i));
            let sids: Vec<u32> = p
                .properties
                .subscription_identifiers
                .iter()
                .map(|s| s.get())
                .collect();
            assert_eq!(
                sids,
                wanted.sid.into_iter().collect::<Vec<_>>(),
                "message {i}"
            );
            assert_eq!(
                p.retain,
                wanted.retain_as_published && i % 7 == 0,
                "message {i}"
            );
        }
        assert_eq!(used_alias, wanted.aliased);
    }
    drop((subs, publ));
    broker.shutdown().await;
}

/// A run counts as its messages against the queue's bound (`Limits::max_queued_messages`;
/// the newest copies are the ones dropped, see `roost::Limits`): with room for 10, a
/// subscriber of a long run gets some and the rest are dropped and counted, none lost
/// without a count and none out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_run_is_bounded_by_the_queue_like_single_copies() {
    const N: usize = 2000;
    let broker = start_broker_with(roost::Limits::default().with_max_queued_messages(10)).await;
    let mut sub = Raw::connect(&broker, V4, "sub").await;
    sub.subscribe(1, "bound/#", QoS::AtMostOnce).await;
    let mut run = BytesMut::new();
    for i in 0..N {
        let payload = format!("{i:08}").into_bytes();
        Packet::Publish(Publish::new(
            topic("bound/x"),
            PublishQoS::AtMostOnce,
            payload,
        ))
        .encode(V4, &mut run)
        .expect("encodes");
    }
    let before = broker.metrics();
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    publ.send_bytes(&run).await;
    // Every copy is either received or counted as dropped.
    let dropped = || broker.metrics().messages_dropped - before.messages_dropped;
    let mut received: Vec<usize> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while received.len() as u64 + dropped() < N as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "copies neither received nor counted"
        );
        let Ok(p) = tokio::time::timeout(std::time::Duration::from_millis(100), sub.recv()).await
        else {
            continue; // the rest may be dropped: look at the count again
        };
        let Some(Packet::Publish(p)) = p else {
            panic!("expected PUBLISH, got {p:?}");
        };
        let text = std::str::from_utf8(&p.payload).expect("text");
        received.push(text.parse().expect("a number"));
    }
    assert_eq!(
        received.len() as u64 + dropped(),
        N as u64,
        "nothing lost uncounted"
    );
    assert!(received.windows(2).all(|w| w[0] < w[1]), "in order");
    assert!(dropped() > 0, "a run longer than the queue's room is cut");
    assert!(received.len() >= 10);
    drop((sub, publ));
    broker.shutdown().await;
}
