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
    // MQTT-3.3.4-1 (both), MQTT-4.3.2-2 and MQTT-4.3.2-4 (v5): the receiver answers with a
    // PUBACK carrying the PUBLISH's packet id (MQTT-2.3.1-6, MQTT-2.2.1-5 (v5)); the copy sent
    // on goes out once with DUP 0 (MQTT-4.3.2-1, MQTT-4.3.2-2 (v5)).
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut sub = Raw::connect(&broker, v, "sub").await;
        sub.subscribe(1, "a/b", QoS::AtLeastOnce).await;
        let mut publ = Raw::connect(&broker, v, "pub").await;
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
        // MQTT-4.3.2-5 (v5; 3.1.1 §4.3.2): after the PUBACK, the same id is a new message.
        publ.publish("a/b", b"again", PublishQoS::AtLeastOnce(pid(7)), false)
            .await;
        assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
        let again = sub.recv_publish().await;
        assert_eq!(&again.payload[..], b"again");
        sub.ack(&again).await;
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn qos2_duplicate_before_pubrel_is_not_delivered_twice() {
    // MQTT-4.3.3-2 (3.1.1) and MQTT-4.3.3-8, -10, -11, -12 (v5): PUBREC with the PUBLISH's id;
    // until PUBREL a PUBLISH with the same id is acknowledged again and not delivered again;
    // PUBCOMP answers PUBREL; after it the id carries a new message.
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut sub = Raw::connect(&broker, v, "sub").await;
        sub.subscribe(1, "x", QoS::ExactlyOnce).await;
        let mut publ = Raw::connect(&broker, v, "pub").await;
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
}

#[tokio::test]
async fn delivery_qos_is_the_lower_of_published_and_granted() {
    // MQTT-3.8.4-6 (3.1.1) and MQTT-3.8.4-8 (v5): min(published QoS, granted QoS).
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut sub = Raw::connect(&broker, v, "sub").await;
        sub.subscribe(1, "q/0", QoS::AtMostOnce).await;
        sub.subscribe(2, "q/2", QoS::ExactlyOnce).await;
        let mut publ = Raw::connect(&broker, v, "pub").await;
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
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_one_copy_at_highest_qos() {
    // MQTT-3.3.5-1 (3.1.1) and MQTT-3.3.4-2 (v5): one copy, at the highest granted QoS.
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut sub = Raw::connect(&broker, v, "sub").await;
        sub.subscribe(1, "s/#", QoS::AtMostOnce).await;
        sub.subscribe(2, "s/+", QoS::AtLeastOnce).await;
        sub.subscribe(3, "s/t", QoS::AtMostOnce).await;
        let mut publ = Raw::connect(&broker, v, "pub").await;
        publ.publish("s/t", b"m", PublishQoS::ExactlyOnce(pid(9)), false)
            .await;
        let p = sub.recv_publish().await;
        assert!(matches!(p.qos, PublishQoS::AtLeastOnce(_)));
        sub.ack(&p).await;
        assert!(sub.ping().await.is_empty(), "exactly one copy");
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn unacknowledged_messages_are_resent_with_dup_on_resume() {
    // MQTT-4.4.0-1 (both): on reconnect with a kept session, re-send unacknowledged PUBLISH
    // (DUP=1, MQTT-3.3.1-1 (both)) and PUBREL packets with their ids, in their original order
    // (MQTT-4.6.0-1 (3.1.1)); a PUBLISH whose PUBREL was sent is not sent again
    // (MQTT-4.3.3-1 (3.1.1), MQTT-4.3.3-6 (v5)); the PUBREL is resent until PUBCOMP
    // (MQTT-4.3.3-5 (v5)).
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut c = Connect::new(v, "resume");
        c.clean_start = false;
        if v.is_v5() {
            c.properties.session_expiry_interval = Some(3600);
        }
        let (mut sub, _) = Raw::connect_with(&broker, c.clone()).await;
        sub.subscribe(1, "r/+", QoS::ExactlyOnce).await;
        let mut publ = Raw::connect(&broker, v, "pub").await;
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
}

#[tokio::test]
async fn inflight_window_holds_back_messages_until_acknowledged() {
    // MQTT-4.3.2-1 (3.1.1) and MQTT-4.3.2-3 (v5): a QoS 1 PUBLISH stays unacknowledged, and
    // holds its place in the window, until its PUBACK.
    for v in [V4, V5] {
        let broker = start_broker_with(Limits::default().with_max_inflight(2)).await;
        let mut sub = Raw::connect(&broker, v, "sub").await;
        sub.subscribe(1, "w", QoS::AtLeastOnce).await;
        let mut publ = Raw::connect(&broker, v, "pub").await;
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
}

/// MQTT-4.3.2-1 (3.1.1), MQTT-4.3.2-3 (v5): PUBACKs that arrive together (a subscriber
/// acknowledging a whole read in one write, as most do) each free their message's place in
/// the window, one for an id not in use among them changes nothing, and the PINGREQ behind
/// them is answered.
#[tokio::test]
async fn pubacks_written_together_each_free_a_place() {
    for v in [V4, V5] {
        let broker = start_broker_with(Limits::default().with_max_inflight(4)).await;
        let mut sub = Raw::connect(&broker, v, "sub").await;
        sub.subscribe(1, "w", QoS::AtLeastOnce).await;
        let mut publ = Raw::connect(&broker, v, "pub").await;
        for i in 1..=12u16 {
            let payload: &'static [u8] = Box::leak(i.to_be_bytes().to_vec().into_boxed_slice());
            publ.publish("w", payload, PublishQoS::AtLeastOnce(pid(i)), false)
                .await;
        }
        publ.ping().await;
        let mut window = Vec::new();
        for _ in 0..4 {
            window.push(sub.recv_publish().await);
        }
        let mut seen = Vec::new();
        while !window.is_empty() {
            let mut acks = bytes::BytesMut::new();
            for (n, m) in window.drain(..).enumerate() {
                let PublishQoS::AtLeastOnce(id) = m.qos else {
                    panic!("QoS 1 expected: {m:?}");
                };
                seen.push(u16::from_be_bytes([m.payload[0], m.payload[1]]));
                let ack = Packet::PubAck(PubResponse::new(id));
                ack.encode(v, &mut acks).expect("encodes");
                if n == 1 {
                    // An id the broker has no message under, between the others.
                    let stray = Packet::PubAck(PubResponse::new(pid(999)));
                    stray.encode(v, &mut acks).expect("encodes");
                }
            }
            Packet::PingReq.encode(v, &mut acks).expect("encodes");
            sub.send_bytes(&acks).await;
            // The next window (the four places freed) and the PINGRESP, in any order.
            let want = (12 - seen.len()).min(4);
            let mut answered = false;
            while window.len() < want || !answered {
                match sub.recv().await {
                    Some(Packet::Publish(m)) => window.push(m),
                    Some(Packet::PingResp) => answered = true,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(seen, (1..=12).collect::<Vec<u16>>());
        assert!(sub.ping().await.is_empty(), "nothing more in flight");
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn messages_of_one_publisher_keep_their_order() {
    // MQTT-4.6.0-5 / -6 (3.1.1) and MQTT-4.6.0-5, -6 (v5): ordered topics; the server forwards
    // in the order received.
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut sub = Raw::connect(&broker, v, "sub").await;
        sub.subscribe(1, "o/#", QoS::AtLeastOnce).await;
        let mut publ = Raw::connect(&broker, v, "pub").await;
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
}

#[tokio::test]
async fn offline_persistent_session_queues_qos1_and_qos2_but_not_qos0() {
    // MQTT-3.1.2-5 (3.1.1): a disconnected session with Clean Session 0 stores the QoS 1 and
    // 2 messages that match its subscriptions; MQTT-4.5.0-1 (both): they join its session
    // state; MQTT-3.1.2-23 (v5): the session outlives the connection while it has a
    // Session Expiry Interval.
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut c = Connect::new(v, "away");
        c.clean_start = false;
        if v.is_v5() {
            c.properties.session_expiry_interval = Some(3600);
        }
        let (mut sub, _) = Raw::connect_with(&broker, c.clone()).await;
        sub.subscribe(1, "q", QoS::ExactlyOnce).await;
        sub.send(Packet::Disconnect(Default::default())).await;
        sub.closed_promptly().await;
        let mut publ = Raw::connect(&broker, v, "pub").await;
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
}

#[tokio::test]
async fn full_queue_drops_newest_and_counts_it() {
    let broker = start_broker_with(Limits::default().with_max_queued_messages(3)).await;
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
    let broker = start_broker_with(Limits::default().with_max_queued_messages(100)).await;
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

#[tokio::test]
async fn dup_is_the_brokers_own_and_qos0_goes_out_with_dup_0() {
    // MQTT-3.3.1-3 (both): the DUP flag of a PUBLISH the broker sends says only whether that
    // PUBLISH is a re-delivery, whatever the publisher's said; MQTT-4.3.1-1 (both): QoS 0
    // goes out with QoS 0 and DUP 0.
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut sub = Raw::connect(&broker, v, "sub").await;
        sub.subscribe(1, "d/+", QoS::AtLeastOnce).await;
        let mut publ = Raw::connect(&broker, v, "pub").await;
        let mut resent =
            roost::codec::Publish::new(topic("d/1"), PublishQoS::AtLeastOnce(pid(5)), &b"1"[..]);
        resent.dup = true;
        publ.send(Packet::Publish(resent)).await;
        publ.publish("d/0", b"0", PublishQoS::AtMostOnce, false)
            .await;
        let first = sub.recv_publish().await;
        assert_eq!(&first.payload[..], b"1");
        assert!(!first.dup, "{v:?}: a first delivery, DUP 0");
        sub.ack(&first).await;
        let zero = sub.recv_publish().await;
        assert_eq!(zero.qos, PublishQoS::AtMostOnce);
        assert!(!zero.dup);
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn outbound_qos2_exchange() {
    // The broker as QoS 2 sender: MQTT-4.3.3-1 (3.1.1) and MQTT-4.3.3-1..-5 (v5): a new id
    // per message, PUBLISH with DUP 0, PUBREL with the same id on PUBREC (MQTT-2.3.1-6
    // (3.1.1), MQTT-2.2.1-5 (v5)), and the exchange ends with PUBCOMP. MQTT-2.3.1-4 (3.1.1),
    // MQTT-2.2.1-4 (v5): ids in use are not reused.
    for v in [V4, V5] {
        let broker = start_broker().await;
        let mut sub = Raw::connect(&broker, v, "sub").await;
        sub.subscribe(1, "x2", QoS::ExactlyOnce).await;
        let mut publ = Raw::connect(&broker, v, "pub").await;
        publ.publish("x2", b"a", PublishQoS::ExactlyOnce(pid(1)), false)
            .await;
        publ.publish("x2", b"b", PublishQoS::ExactlyOnce(pid(2)), false)
            .await;
        let a = sub.recv_publish().await;
        let b = sub.recv_publish().await;
        let (PublishQoS::ExactlyOnce(ia), PublishQoS::ExactlyOnce(ib)) = (a.qos, b.qos) else {
            panic!("QoS 2 copies expected")
        };
        assert_ne!(ia, ib, "{v:?}: two ids in use at once");
        assert!(!a.dup && !b.dup);
        for id in [ia, ib] {
            sub.send(Packet::PubRec(PubResponse::new(id))).await;
            assert!(
                matches!(sub.recv().await, Some(Packet::PubRel(r)) if r.packet_id == id),
                "{v:?}: PUBREL with the PUBLISH's id"
            );
            sub.send(Packet::PubComp(PubResponse::new(id))).await;
        }
        assert!(sub.ping().await.is_empty(), "the exchanges are over");
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn v5_a_refusing_pubrec_ends_the_exchange() {
    // MQTT-4.3.3-4 (v5): PUBREL only for a PUBREC below 0x80; MQTT-4.4.0-2 (v5) and
    // MQTT-4.8.2-6 (v5): a PUBREC (or PUBACK) of 0x80 or more acknowledges the message, which
    // is not sent again, not even when the session resumes.
    let broker = start_broker().await;
    let mut c = Connect::new(V5, "refuser");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    let (mut sub, _) = Raw::connect_with(&broker, c.clone()).await;
    sub.subscribe(1, "r/+", QoS::ExactlyOnce).await;
    let mut publ = Raw::connect(&broker, V5, "pub").await;
    publ.publish("r/2", b"two", PublishQoS::ExactlyOnce(pid(1)), false)
        .await;
    publ.publish("r/1", b"one", PublishQoS::AtLeastOnce(pid(2)), false)
        .await;
    let two = sub.recv_publish().await;
    let one = sub.recv_publish().await;
    let (PublishQoS::ExactlyOnce(i2), PublishQoS::AtLeastOnce(i1)) = (two.qos, one.qos) else {
        panic!("QoS 2 then QoS 1 expected")
    };
    let mut refuse = PubResponse::new(i2);
    refuse.reason_code = ReasonCode::UnspecifiedError;
    sub.send(Packet::PubRec(refuse)).await;
    let mut refuse = PubResponse::new(i1);
    refuse.reason_code = ReasonCode::ImplementationSpecificError;
    sub.send(Packet::PubAck(refuse)).await;
    assert!(
        sub.ping().await.is_empty(),
        "no PUBREL after a refusing PUBREC"
    );
    drop(sub);
    let (mut sub, ack) = Raw::connect_with(&broker, c).await;
    assert!(support::connack(ack).session_present);
    assert!(sub.ping().await.is_empty(), "nothing re-sent");
    broker.shutdown().await;
}
