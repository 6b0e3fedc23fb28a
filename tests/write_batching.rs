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
