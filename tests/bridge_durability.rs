//! Issue 16 §2: what a bridging broker acknowledged reaches the remote broker, across the
//! remote being down and the bridging broker being killed (SIGKILL) mid-transfer.
//!
//! The bridging broker is the example broker binary (acked durability, a `[[bridge]]`
//! table); the remote is a Roost broker in this process, restarted over the same store.
//! 10,000 QoS 1 and 1,000 QoS 2 messages are published and acknowledged while the remote
//! is down; the remote comes back, and the bridging broker is killed once part of the
//! backlog crossed, then started again. Every message reaches the remote's subscriber, no
//! QoS 2 message twice, and nothing echoes back.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use roost::codec::{Connect, Packet, ProtocolVersion, PubResponse, Publish, PublishQoS};
use roost::storage::{MemoryStorage, Storage};
use roost::{Broker, BrokerHandle, ClientOptions, Deliveries, Durability, QoS};
use support::{pid, start_example_broker, topic, Raw};

const QOS1: u32 = 10_000;
const QOS2: u32 = 1_000;
const V4: ProtocolVersion = ProtocolVersion::V311;

async fn remote_on(store: Arc<dyn Storage>, at: &str) -> BrokerHandle {
    Broker::builder()
        .listen(at.parse().expect("address"))
        .storage(store, Durability::Acked)
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("remote starts")
}

async fn far_subscriber(remote: &BrokerHandle) -> (roost::Client, Deliveries) {
    remote
        .client(ClientOptions::new("far-sub").persistent(true))
        .await
        .expect("subscriber connects")
}

/// Publishes every message, a window of 100 unacknowledged at a time, and waits for all
/// acknowledgements (PUBACK; PUBREC then PUBCOMP).
async fn publish_all(port: u16) {
    let to = format!("127.0.0.1:{port}").parse().expect("address");
    let (mut raw, ack) = Raw::connect_to(to, Connect::new(V4, "near-pub")).await;
    assert!(matches!(ack, Packet::ConnAck(a) if a.reason_code.is_success()));
    let total = QOS1 + QOS2;
    let (mut sent, mut done) = (0u32, 0u32);
    while done < total {
        while sent < total && sent - done < 100 {
            let n = sent + 1;
            let id = pid(u16::try_from((n - 1) % 60_000 + 1).expect("fits"));
            let (qos, body) = if n <= QOS1 {
                (PublishQoS::AtLeastOnce(id), format!("q1-{n}"))
            } else {
                (PublishQoS::ExactlyOnce(id), format!("q2-{n}"))
            };
            raw.send(Packet::Publish(Publish::new(topic("load/m"), qos, body)))
                .await;
            sent += 1;
        }
        match raw.recv().await.expect("the broker answers") {
            Packet::PubAck(_) | Packet::PubComp(_) => done += 1,
            Packet::PubRec(r) => {
                raw.send(Packet::PubRel(PubResponse::new(r.packet_id)))
                    .await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_reach_the_remote_across_a_sigkill_mid_transfer() {
    let dir = std::env::temp_dir().join(format!("roost-bridge-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");

    // The remote, with its subscriber's persistent session; then it goes down.
    let store: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let remote = remote_on(Arc::clone(&store), "127.0.0.1:0").await;
    let remote_port = support::addr(&remote).port();
    let (sub, _) = far_subscriber(&remote).await;
    sub.subscribe("load/#", QoS::ExactlyOnce)
        .await
        .expect("subscribes");
    sub.disconnect().await.expect("disconnects");
    remote.shutdown().await;

    let conf = dir.join("roost.toml");
    std::fs::write(
        &conf,
        format!(
            "data_dir = {data:?}\ndurability = \"acked\"\n\n[limits]\nmax_queued_messages = 20000\n\n\
             [[bridge]]\nconnection = \"durable\"\naddress = \"127.0.0.1:{remote_port}\"\n\
             topic = [\"load/# both 2\"]\nrestart_timeout = [1, 1]\n",
            data = dir.join("data"),
        ),
    )
    .expect("config written");
    let conf = conf.to_str().expect("utf-8 path").to_string();
    let (mut local, port) = start_example_broker(&["--config", &conf]).await;
    tokio::time::timeout(Duration::from_secs(120), publish_all(port))
        .await
        .expect("all acknowledged within two minutes");

    // The remote comes back; once part of the backlog crossed, the local broker is killed.
    let remote = remote_on(Arc::clone(&store), &format!("127.0.0.1:{remote_port}")).await;
    let (_sub, mut deliveries) = far_subscriber(&remote).await;
    let mut seen: HashMap<String, u32> = HashMap::new();
    while seen.len() < 1_000 {
        let m = support::within(deliveries.recv()).await.expect("a message");
        *seen
            .entry(String::from_utf8_lossy(&m.payload).into_owned())
            .or_default() += 1;
    }
    local.start_kill().expect("SIGKILL");
    // Mid-transfer: the remote had not taken in the whole backlog yet.
    let taken = remote.metrics().messages_received;
    assert!(
        taken < u64::from(QOS1 + QOS2),
        "killed after the transfer: {taken}"
    );
    local.wait().await.expect("ended");
    let (_local, port) = start_example_broker(&["--config", &conf]).await;

    // Everything arrives, within a minute.
    tokio::time::timeout(Duration::from_secs(60), async {
        while seen.len() < (QOS1 + QOS2) as usize {
            let m = support::within(deliveries.recv()).await.expect("a message");
            *seen
                .entry(String::from_utf8_lossy(&m.payload).into_owned())
                .or_default() += 1;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {} arrived", seen.len(), QOS1 + QOS2));
    for n in 1..=QOS1 + QOS2 {
        let key = if n <= QOS1 {
            format!("q1-{n}")
        } else {
            format!("q2-{n}")
        };
        assert!(
            seen.contains_key(&key),
            "{key} was acknowledged and never arrived"
        );
    }
    let twice: Vec<_> = seen
        .iter()
        .filter(|(k, n)| k.starts_with("q2-") && **n > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "QoS 2 messages delivered twice: {twice:?}"
    );

    // Nothing echoes back: a local subscriber sees the remote's marker and nothing before it.
    let to = format!("127.0.0.1:{port}").parse().expect("address");
    let (mut near, _) = Raw::connect_to(to, Connect::new(V4, "near-sub")).await;
    near.subscribe(1, "load/#", roost::QoS::AtLeastOnce).await;
    let (marker, _) = remote
        .client(ClientOptions::new("far-pub"))
        .await
        .expect("connects");
    // The bridge may still be reconnecting: publish the marker until it comes through.
    let first = support::within(async {
        loop {
            marker
                .publish("load/marker", "end", QoS::AtLeastOnce, false)
                .await
                .expect("published");
            if let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(500), near.recv()).await
            {
                return p;
            }
        }
    })
    .await;
    match first {
        Packet::Publish(p) => assert_eq!(p.topic.as_str(), "load/marker", "an echo: {p:?}"),
        other => panic!("unexpected {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
