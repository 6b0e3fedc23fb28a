//! Publisher flow control (`Limits::flow_control_queue`): a publisher whose messages pile up
//! in a connected subscriber's queue stops being read until that queue drains, so messages
//! are delivered while they are published instead of being dropped or buffered without end.
//! A subscriber that does not drain within `flow_control_pause` costs one pause and is then
//! served by its queue's overflow policy; nobody waits for their own session, and two
//! clients never wait for each other.

mod support;

use std::time::{Duration, Instant};

use roost::codec::{Packet, ProtocolVersion, PubResponse, PublishQoS};
use roost::{Limits, QoS};
use support::*;

const V4: ProtocolVersion = ProtocolVersion::V311;

fn limits(max_inflight: u16, max_queued: usize, threshold: usize, pause: Duration) -> Limits {
    Limits::default()
        .with_max_inflight(max_inflight)
        .with_max_queued_messages(max_queued)
        .with_flow_control_queue(threshold)
        .with_flow_control_pause(pause)
}

#[tokio::test]
async fn publisher_waits_for_the_subscriber_instead_of_overflowing_its_queue() {
    // Queue of 20, window of 4: without flow control, 200 messages sent at once would
    // overflow it. With it, the publisher is read only as fast as the subscriber acks.
    let broker = start_broker_with(limits(4, 20, 8, Duration::from_secs(30))).await;
    let mut sub = Raw::connect(&broker, V4, "sub").await;
    sub.subscribe(1, "fc", QoS::AtLeastOnce).await;
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    for i in 1..=200u16 {
        publ.publish("fc", &[], PublishQoS::AtLeastOnce(pid(i)), false)
            .await;
    }
    let mut payloads = Vec::new();
    for n in 0..200u16 {
        let p = sub.recv_publish().await;
        payloads.push(p.payload.len());
        sub.ack(&p).await;
        if n % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert_eq!(payloads.len(), 200);
    let m = broker.metrics();
    assert_eq!(m.messages_dropped, 0, "nothing dropped");
    assert!(m.flow_control_pauses > 0, "the publisher was paused");
    assert_eq!(m.flow_control_timeouts, 0);
    // The publisher's acks all arrive: its connection was only paused, never stalled.
    for i in 1..=200u16 {
        publ.ack_publish(PublishQoS::AtLeastOnce(pid(i))).await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn a_stuck_subscriber_costs_one_pause_then_its_queue_overflows() {
    let broker = start_broker_with(limits(1, 20, 8, Duration::from_millis(300))).await;
    // Takes one message and never acknowledges it.
    let mut stuck = Raw::connect(&broker, V4, "stuck").await;
    stuck.subscribe(1, "s", QoS::AtLeastOnce).await;
    let mut fast = Raw::connect(&broker, V4, "fast").await;
    fast.subscribe(1, "s", QoS::AtMostOnce).await;
    let reader = tokio::spawn(async move {
        for _ in 0..100 {
            fast.recv_publish().await;
        }
        fast
    });
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    let started = Instant::now();
    for i in 1..=100u16 {
        publ.publish("s", b"x", PublishQoS::AtLeastOnce(pid(i)), false)
            .await;
    }
    publ.ping().await;
    let elapsed = started.elapsed();
    within(reader)
        .await
        .expect("the fast subscriber got all 100");
    let m = broker.metrics();
    assert_eq!(
        m.flow_control_timeouts, 1,
        "one pause for the stuck subscriber"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "the publisher went on after the pause ({elapsed:?})"
    );
    // 1 in flight + 20 queued; the rest overflowed.
    assert_eq!(m.messages_dropped, 79);
    // Once it drains, it is no longer slow: acknowledging lets the queue empty.
    let first = stuck.recv_publish().await;
    stuck.ack(&first).await;
    for _ in 0..20 {
        let p = stuck.recv_publish().await;
        stuck.ack(&p).await;
    }
    assert!(stuck.ping().await.is_empty());
    broker.shutdown().await;
}

/// Sends `n` QoS 1 PUBLISHes to `to`, then reads until it has both its `n` PUBACKs and `n`
/// messages (acknowledged as they come).
async fn blast_and_drain(client: &mut Raw, to: &str, n: u16) {
    for i in 1..=n {
        client
            .publish(to, b"m", PublishQoS::AtLeastOnce(pid(i)), false)
            .await;
    }
    let (mut acks, mut messages) = (0, 0);
    while acks < n || messages < n {
        match client.recv().await {
            Some(Packet::PubAck(_)) => acks += 1,
            Some(Packet::Publish(p)) => {
                if let PublishQoS::AtLeastOnce(id) = p.qos {
                    client.send(Packet::PubAck(PubResponse::new(id))).await;
                }
                messages += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_client_is_never_paused_for_its_own_session() {
    // Paused for its own queue, the reader could not read the PUBACKs that drain it. The
    // pause is 30 s, longer than `within` allows: any self-wait fails the test.
    let broker = start_broker_with(limits(1, 1000, 4, Duration::from_secs(30))).await;
    let mut me = Raw::connect(&broker, V4, "me").await;
    me.subscribe(1, "me", QoS::AtLeastOnce).await;
    within(blast_and_drain(&mut me, "me", 100)).await;
    assert_eq!(broker.metrics().flow_control_timeouts, 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn two_clients_publishing_to_each_other_do_not_deadlock() {
    // A publishes to B and B to A, each sending everything before reading. If both readers
    // waited for the other's queue, neither would read the PUBACKs that drain it.
    let broker = start_broker_with(limits(1, 1000, 4, Duration::from_secs(30))).await;
    let mut a = Raw::connect(&broker, V4, "a").await;
    a.subscribe(1, "to/a", QoS::AtLeastOnce).await;
    let mut b = Raw::connect(&broker, V4, "b").await;
    b.subscribe(1, "to/b", QoS::AtLeastOnce).await;
    let ta = tokio::spawn(async move { blast_and_drain(&mut a, "to/b", 200).await });
    let tb = tokio::spawn(async move { blast_and_drain(&mut b, "to/a", 200).await });
    within(ta).await.expect("a done");
    within(tb).await.expect("b done");
    let m = broker.metrics();
    assert_eq!(m.flow_control_timeouts, 0);
    assert_eq!(m.messages_dropped, 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn flow_control_off_keeps_the_drop_newest_policy() {
    let broker = start_broker_with(limits(1, 5, 0, Duration::from_secs(30))).await;
    let mut sub = Raw::connect(&broker, V4, "sub").await;
    sub.subscribe(1, "off", QoS::AtLeastOnce).await;
    let mut publ = Raw::connect(&broker, V4, "pub").await;
    for i in 1..=50u16 {
        let m = roost::codec::Publish::new(
            topic("off"),
            PublishQoS::AtLeastOnce(pid(i)),
            i.to_string().into_bytes(),
        );
        publ.send(Packet::Publish(m)).await;
    }
    publ.ping().await;
    let m = broker.metrics();
    assert_eq!(m.flow_control_pauses, 0);
    let dropped = m.messages_dropped as usize;
    assert!(dropped > 0, "without flow control the queue overflows");
    // Drop-newest: what the subscriber gets is the oldest messages, in order, starting
    // with the first; the newest never arrives.
    let mut got = Vec::new();
    for _ in 0..50 - dropped {
        let p = sub.recv_publish().await;
        sub.ack(&p).await;
        let n: u16 = std::str::from_utf8(&p.payload)
            .expect("utf-8")
            .parse()
            .expect("a number");
        got.push(n);
    }
    assert!(sub.ping().await.is_empty(), "no more than 50 - dropped");
    assert_eq!(got[0], 1, "the oldest is kept");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    assert!(!got.contains(&50), "the newest was dropped: {got:?}");
    assert!(
        got.len() <= 1 + 5 + 1,
        "window + queue (+1 taken while queued): {got:?}"
    );
    broker.shutdown().await;
}
