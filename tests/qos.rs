//! QoS 0/1/2 flows (3.1.1 sections 3.3 to 3.7 and 4.3 to 4.6): acknowledgements, exactly
//! once, downgrade, overlapping subscriptions, redelivery, inflight window, ordering,
//! offline queues and a slow subscriber.

mod support;

use roost::codec::{Connect, Packet, ProtocolVersion, PubResponse, PublishQoS, ReasonCode};
use roost::{Limits, QoS};
use support::*;

const V4: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

#[tokio::test]
async fn qos1_publish_gets_puback_and_is_delivered() {
    // MQTT-3.3.4-1 (response PUBACK) and MQTT-4.3.2-2 (receiver answers with PUBACK).
    let broker = start_broker().await;
    let mut sub = Raw::connect(&broker, V4, "sub").await;
    sub.subscribe(1, "a/b", QoS::AtLeastOnce).await;
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    publ.publish("a/b", b"hello", PublishQoS::AtLeastOnce(pid(7)), false)
        .await;
    match publ.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, pid(7)),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let p = sub.recv_publish().await;
    assert_eq!(&p.payload[..], b"hello");
    assert!(matches!(p.qos, PublishQoS::AtLeastOnce(_)));
    assert!(!p.dup && !p.retain);
    sub.ack(&p).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn qos2_duplicate_before_pubrel_is_not_delivered_twice() {
    // MQTT-4.3.3-2: after PUBREC, a PUBLISH with the same id is not a new message.
    let broker = start_broker().await;
    let mut sub = Raw::connect(&broker, V4, "sub").await;
    sub.subscribe(1, "x", QoS::ExactlyOnce).await;
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    publ.publish("x", b"once", PublishQoS::ExactlyOnce(pid(3)), false)
        .await;
    assert!(matches!(publ.recv().await, Some(Packet::PubRec(r)) if r.packet_id == pid(3)));
    // Re-sent with DUP before PUBREL.
    let mut dup =
        roost::codec::Publish::new(topic("x"), PublishQoS::ExactlyOnce(pid(3)), &b"once"[..]);
    dup.dup = true;
    publ.send(Packet::Publish(dup)).await;
    assert!(matches!(publ.recv().await, Some(Packet::PubRec(r)) if r.packet_id == pid(3)));
    publ.send(Packet::PubRel(PubResponse::new(pid(3)))).await;
    assert!(matches!(publ.recv().await, Some(Packet::PubComp(r)) if r.packet_id == pid(3)));
    // After PUBCOMP the id is free: the same id is a new message.
    publ.publish("x", b"twice", PublishQoS::ExactlyOnce(pid(3)), false)
        .await;
    assert!(matches!(publ.recv().await, Some(Packet::PubRec(_))));
    let first = sub.recv_publish().await;
    assert_eq!(&first.payload[..], b"once");
    let second = sub.recv_publish().await;
    assert_eq!(&second.payload[..], b"twice");
    sub.ack(&first).await;
    sub.ack(&second).await;
    assert!(sub.ping().await.is_empty(), "no third copy");
    broker.shutdown().await;
}

#[tokio::test]
async fn delivery_qos_is_the_lower_of_published_and_granted() {
    // MQTT-3.8.4-6 (3.1.1 numbering): min(published QoS, granted QoS).
    let broker = start_broker().await;
    let mut sub = Raw::connect(&broker, V4, "sub").await;
    sub.subscribe(1, "q/0", QoS::AtMostOnce).await;
    sub.subscribe(2, "q/2", QoS::ExactlyOnce).await;
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    publ.publish("q/0", b"a", PublishQoS::ExactlyOnce(pid(1)), false)
        .await;
    publ.publish("q/2", b"b", PublishQoS::AtLeastOnce(pid(2)), false)
        .await;
    let a = sub.recv_publish().await;
    assert_eq!(a.qos, PublishQoS::AtMostOnce);
    let b = sub.recv_publish().await;
    assert!(matches!(b.qos, PublishQoS::AtLeastOnce(_)));
    broker.shutdown().await;
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_one_copy_at_highest_qos() {
    // MQTT-3.3.5-1
    let broker = start_broker().await;
    let mut sub = Raw::connect(&broker, V4, "sub").await;
    sub.subscribe(1, "s/#", QoS::AtMostOnce).await;
    sub.subscribe(2, "s/+", QoS::AtLeastOnce).await;
    sub.subscribe(3, "s/t", QoS::AtMostOnce).await;
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    publ.publish("s/t", b"m", PublishQoS::ExactlyOnce(pid(9)), false)
        .await;
    let p = sub.recv_publish().await;
    assert!(matches!(p.qos, PublishQoS::AtLeastOnce(_)));
    sub.ack(&p).await;
    assert!(sub.ping().await.is_empty(), "exactly one copy");
    broker.shutdown().await;
}

#[tokio::test]
async fn unacknowledged_messages_are_resent_with_dup_on_resume() {
    // MQTT-4.4.0-1: on reconnect with Clean Session 0, re-send unacknowledged PUBLISH
    // (DUP=1, MQTT-3.3.1-1) and PUBREL packets, in their original order.
    let broker = start_broker().await;
    let mut c = Connect::new(V4, "resume");
    c.clean_start = false;
    let (mut sub, _) = Raw::connect_with(&broker, c.clone()).await;
    sub.subscribe(1, "r/+", QoS::ExactlyOnce).await;
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    publ.publish("r/1", b"one", PublishQoS::AtLeastOnce(pid(1)), false)
        .await;
    publ.publish("r/2", b"two", PublishQoS::ExactlyOnce(pid(2)), false)
        .await;
    publ.publish("r/3", b"three", PublishQoS::ExactlyOnce(pid(3)), false)
        .await;
    let one = sub.recv_publish().await;
    let two = sub.recv_publish().await;
    let three = sub.recv_publish().await;
    // Acknowledge the second only half-way: PUBREC, so the broker owes a PUBREL.
    let PublishQoS::ExactlyOnce(two_id) = two.qos else {
        panic!("QoS 2 expected")
    };
    sub.send(Packet::PubRec(PubResponse::new(two_id))).await;
    assert!(matches!(sub.recv().await, Some(Packet::PubRel(r)) if r.packet_id == two_id));
    drop(sub);
    let (mut sub, ack) = Raw::connect_with(&broker, c).await;
    assert!(matches!(ack, Packet::ConnAck(a) if a.session_present));
    let again_one = sub.recv_publish().await;
    assert_eq!(again_one.payload, one.payload);
    assert_eq!(again_one.qos, one.qos, "same packet id");
    assert!(again_one.dup);
    assert!(matches!(sub.recv().await, Some(Packet::PubRel(r)) if r.packet_id == two_id));
    let again_three = sub.recv_publish().await;
    assert_eq!(again_three.payload, three.payload);
    assert!(again_three.dup);
    broker.shutdown().await;
}

#[tokio::test]
async fn inflight_window_holds_back_messages_until_acknowledged() {
    let broker = start_broker_with(Limits {
        max_inflight: 2,
        ..Limits::default()
    })
    .await;
    let mut sub = Raw::connect(&broker, V4, "sub").await;
    sub.subscribe(1, "w", QoS::AtLeastOnce).await;
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    for i in 1..=5u16 {
        publ.publish("w", b"m", PublishQoS::AtLeastOnce(pid(i)), false)
            .await;
    }
    publ.ping().await;
    let first = sub.recv_publish().await;
    let second = sub.recv_publish().await;
    assert!(sub.ping().await.is_empty(), "only two in flight");
    sub.ack(&first).await;
    let third = sub.recv_publish().await;
    sub.ack(&second).await;
    sub.ack(&third).await;
    let fourth = sub.recv_publish().await;
    let fifth = sub.recv_publish().await;
    sub.ack(&fourth).await;
    sub.ack(&fifth).await;
    assert!(sub.ping().await.is_empty());
    broker.shutdown().await;
}

#[tokio::test]
async fn messages_of_one_publisher_keep_their_order() {
    // MQTT-4.6.0-5 / -6: ordered topic; the server forwards in the order received.
    let broker = start_broker().await;
    let mut sub = Raw::connect(&broker, V4, "sub").await;
    sub.subscribe(1, "o/#", QoS::AtLeastOnce).await;
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    for i in 0..200u16 {
        let qos = match i % 3 {
            0 => PublishQoS::AtMostOnce,
            1 => PublishQoS::AtLeastOnce(pid(i + 1)),
            _ => PublishQoS::ExactlyOnce(pid(i + 1)),
        };
        let payload: &'static [u8] = Box::leak(i.to_be_bytes().to_vec().into_boxed_slice());
        publ.publish("o/t", payload, qos, false).await;
    }
    for i in 0..200u16 {
        let p = sub.recv_publish().await;
        assert_eq!(&p.payload[..], &i.to_be_bytes());
        sub.ack(&p).await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn offline_persistent_session_queues_qos1_and_qos2_but_not_qos0() {
    let broker = start_broker().await;
    let mut c = Connect::new(V4, "away");
    c.clean_start = false;
    let (mut sub, _) = Raw::connect_with(&broker, c.clone()).await;
    sub.subscribe(1, "q", QoS::ExactlyOnce).await;
    sub.send(Packet::Disconnect(Default::default())).await;
    sub.closed_promptly().await;
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    publ.publish("q", b"zero", PublishQoS::AtMostOnce, false)
        .await;
    publ.publish("q", b"one", PublishQoS::AtLeastOnce(pid(1)), false)
        .await;
    publ.publish("q", b"two", PublishQoS::ExactlyOnce(pid(2)), false)
        .await;
    publ.ping().await;
    let (mut sub, _) = Raw::connect_with(&broker, c).await;
    let one = sub.recv_publish().await;
    assert_eq!(&one.payload[..], b"one");
    sub.ack(&one).await;
    let two = sub.recv_publish().await;
    assert_eq!(&two.payload[..], b"two");
    sub.ack(&two).await;
    assert!(sub.ping().await.is_empty());
    assert_eq!(broker.metrics().messages_dropped_offline, 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn full_queue_drops_newest_and_counts_it() {
    let broker = start_broker_with(Limits {
        max_queued_messages: 3,
        ..Limits::default()
    })
    .await;
    let mut c = Connect::new(V4, "full");
    c.clean_start = false;
    let (mut sub, _) = Raw::connect_with(&broker, c.clone()).await;
    sub.subscribe(1, "f", QoS::AtLeastOnce).await;
    sub.send(Packet::Disconnect(Default::default())).await;
    sub.closed_promptly().await;
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    for i in 1..=5u16 {
        let payload: &'static [u8] = Box::leak(vec![i as u8].into_boxed_slice());
        publ.publish("f", payload, PublishQoS::AtLeastOnce(pid(i)), false)
            .await;
    }
    publ.ping().await;
    assert_eq!(broker.metrics().messages_dropped, 2);
    let (mut sub, _) = Raw::connect_with(&broker, c).await;
    for i in 1..=3u8 {
        let p = sub.recv_publish().await;
        assert_eq!(&p.payload[..], &[i], "the oldest are kept");
        sub.ack(&p).await;
    }
    assert!(sub.ping().await.is_empty());
    broker.shutdown().await;
}

#[tokio::test]
async fn slow_subscriber_does_not_stall_publisher_or_others() {
    let broker = start_broker_with(Limits {
        max_queued_messages: 100,
        ..Limits::default()
    })
    .await;
    // A subscriber that never reads.
    let mut stuck = Raw::connect(&broker, V4, "stuck").await;
    stuck.subscribe(1, "load", QoS::AtMostOnce).await;
    let mut fast = Raw::connect(&broker, V4, "fast").await;
    fast.subscribe(1, "load", QoS::AtMostOnce).await;
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    // 2,000 × 16 KiB = 32 MiB: far more than the socket buffers of the stuck client.
    let payload: &'static [u8] = Box::leak(vec![0x55; 16 * 1024].into_boxed_slice());
    let (progress_tx, mut progress) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        for n in 1..=2000 {
            let p = fast.recv_publish().await;
            assert_eq!(p.payload.len(), payload.len());
            let _ = progress_tx.send(n);
        }
    });
    // Publish in batches, each once the fast subscriber has the previous one, so its own
    // queue never overflows: only the stuck subscriber's does.
    for batch in 1..=20 {
        for _ in 0..100 {
            publ.publish("load", payload, PublishQoS::AtMostOnce, false)
                .await;
        }
        while within(progress.recv()).await.expect("reader alive") < batch * 100 {}
    }
    within(reader)
        .await
        .expect("fast subscriber got everything");
    assert!(
        broker.metrics().messages_dropped > 0,
        "the stuck subscriber's queue overflowed"
    );
    drop(stuck);
    broker.shutdown().await;
}

#[tokio::test]
async fn v5_puback_reports_no_matching_subscribers() {
    // v5 §3.4.2.1: 0x10 when nobody is subscribed. Issue 13 §5: with no Reason String, so
    // the acknowledgement stays 4 bytes on the wire (PUBREC too); a success has none either.
    let broker = start_broker().await;
    let mut publ = Raw::connect(&broker, V5, "pub5").await;
    publ.publish("nobody", b"x", PublishQoS::AtLeastOnce(pid(1)), false)
        .await;
    assert!(publ.buf.is_empty());
    match publ.recv().await {
        Some(Packet::PubAck(a)) => {
            assert_eq!(a.reason_code, ReasonCode::NoMatchingSubscribers);
            assert_eq!(a.properties.reason_string, None);
        }
        other => panic!("{other:?}"),
    }
    publ.publish("nobody", b"x", PublishQoS::ExactlyOnce(pid(2)), false)
        .await;
    match publ.recv().await {
        Some(Packet::PubRec(r)) => {
            assert_eq!(r.reason_code, ReasonCode::NoMatchingSubscribers);
            assert_eq!(r.properties.reason_string, None);
        }
        other => panic!("{other:?}"),
    }
    // On the wire: PUBACK, Remaining Length 3 (packet id, reason code; no properties).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = Raw::connect(&broker, V5, "pub5-wire").await;
    raw.stream
        .write_all(&[0x32, 0x06, 0x00, 0x01, b'n', 0x00, 0x07, 0x00])
        .await
        .expect("writes");
    let mut bytes = [0u8; 8];
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        raw.stream.read(&mut bytes),
    )
    .await
    .expect("answers")
    .expect("reads");
    assert_eq!(&bytes[..n], &[0x40, 0x03, 0x00, 0x07, 0x10]);
    broker.shutdown().await;
}
