//! Scenario: 1,000 clients, mixed protocol levels and QoS; every message accounted for.
//!
//! 980 publishers each send 6 messages (QoS 0, 1, 2, 0, 1, 2) on their own topic; 20
//! subscribers take `load/#` at QoS 2. Queues are sized so nothing may be dropped; then every
//! subscriber must get every message exactly once, in each publisher's order, at the
//! published QoS.

mod support;

use std::collections::HashMap;

use roost::codec::{ProtocolVersion, PublishQoS};
use roost::{Limits, QoS};
use support::*;

const PUBLISHERS: usize = 980;
const SUBSCRIBERS: usize = 20;
const PER_PUBLISHER: u16 = 6;

fn version(i: usize) -> ProtocolVersion {
    match i % 3 {
        0 => ProtocolVersion::V311,
        1 => ProtocolVersion::V5,
        _ => ProtocolVersion::V31,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_clients_mixed_qos_every_message_accounted_for() {
    // Each connection needs two descriptors here (client and broker ends in one process).
    let _ = rlimit::increase_nofile_limit(8192);
    let broker = start_broker_with(
        Limits::default()
            .with_max_connections(2 * (PUBLISHERS + SUBSCRIBERS))
            .with_max_queued_messages(100_000)
            .with_max_inflight(64)
            // All 1,000 connect at once from 127.0.0.1, as clients behind one NAT address
            // would after an outage: the per-address bound on pending connections must allow it.
            .with_max_pending_per_address(2 * (PUBLISHERS + SUBSCRIBERS))
            .with_max_pending_connections(2 * (PUBLISHERS + SUBSCRIBERS)),
    )
    .await;

    let mut subscribers = Vec::new();
    for i in 0..SUBSCRIBERS {
        let mut s = Raw::connect(&broker, version(i), &format!("sub-{i}")).await;
        s.subscribe(1, "load/#", QoS::ExactlyOnce).await;
        subscribers.push(s);
    }
    let total = PUBLISHERS * usize::from(PER_PUBLISHER);
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut seen: HashMap<String, Vec<(u16, PublishQoS)>> = HashMap::new();
                for _ in 0..total {
                    let p = s.next_message().await;
                    let seq = u16::from_be_bytes([p.payload[0], p.payload[1]]);
                    seen.entry(p.topic.to_string())
                        .or_default()
                        .push((seq, p.qos));
                }
                seen
            })
        })
        .collect();

    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|i| {
            let broker = broker.clone();
            tokio::spawn(async move {
                let mut p = Raw::connect(&broker, version(i), &format!("pub-{i}")).await;
                let t = format!("load/{i}");
                for seq in 0..PER_PUBLISHER {
                    let id = pid(seq + 1);
                    let qos = match seq % 3 {
                        0 => PublishQoS::AtMostOnce,
                        1 => PublishQoS::AtLeastOnce(id),
                        _ => PublishQoS::ExactlyOnce(id),
                    };
                    let payload: &'static [u8] =
                        Box::leak(seq.to_be_bytes().to_vec().into_boxed_slice());
                    p.publish(&t, payload, qos, false).await;
                    if !matches!(qos, PublishQoS::AtMostOnce) {
                        p.ack_publish(qos).await;
                    }
                }
                p.send(roost::codec::Packet::Disconnect(Default::default()))
                    .await;
                p.closed_promptly().await;
            })
        })
        .collect();
    for p in publishers {
        within(p).await.expect("publisher finished");
    }
    for r in readers {
        let seen = tokio::time::timeout(std::time::Duration::from_secs(60), r)
            .await
            .expect("subscriber finished in time")
            .expect("subscriber task");
        assert_eq!(seen.len(), PUBLISHERS, "a message from every publisher");
        for (t, messages) in seen {
            let seqs: Vec<u16> = messages.iter().map(|(s, _)| *s).collect();
            assert_eq!(
                seqs,
                (0..PER_PUBLISHER).collect::<Vec<_>>(),
                "order and completeness on {t}"
            );
            for (seq, qos) in messages {
                let want = match seq % 3 {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => QoS::ExactlyOnce,
                };
                assert_eq!(qos.qos(), want, "{t} #{seq}");
            }
        }
    }
    let m = broker.metrics();
    assert_eq!(m.messages_dropped, 0);
    assert_eq!(m.messages_received, total as u64);
    broker.shutdown().await;
}
