//! Issue 17 §3: the broker's figures through the `metrics` facade, seen by metrics-util's
//! debugging recorder: every documented name is reported, and the ones this traffic
//! touches move (counters, gauges, the storage histograms).

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use roost::storage::MemoryStorage;
use roost::{Broker, ClientOptions, Durability, QoS};
use roost_core::metrics_export::metric_name;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_metric_is_reported_and_traffic_moves_them() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    let broker = Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .storage(Arc::new(MemoryStorage::new()), Durability::Acked)
        .metrics_interval(Duration::from_millis(20))
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    let (sub, mut rx) = broker
        .client(ClientOptions::new("sub").persistent(true))
        .await
        .expect("connects");
    sub.subscribe("m/#", QoS::AtLeastOnce)
        .await
        .expect("subscribes");
    let (publisher, _) = broker
        .client(ClientOptions::new("pub"))
        .await
        .expect("connects");
    for i in 0..10 {
        publisher
            .publish("m/x", format!("{i}"), QoS::AtLeastOnce, i == 9)
            .await
            .expect("published");
        support::within(rx.recv()).await.expect("delivered");
    }
    // A network client too (connections are counted as they are accepted).
    let _raw = support::Raw::connect(&broker, roost::codec::ProtocolVersion::V5, "net").await;
    let mut names: Vec<String> = roost::MetricsSnapshot::default()
        .fields()
        .into_iter()
        .map(|(field, _)| metric_name(field))
        .collect();
    names.extend(
        [
            "roost_queued_messages",
            "roost_storage_bytes",
            "roost_storage_write_seconds",
        ]
        .map(String::from),
    );
    // Wait for an export that shows the traffic.
    let values = support::within(async {
        loop {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let values: HashMap<String, DebugValue> = snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| (key.key().name().to_string(), value))
                .collect();
            let received = values.get("roost_messages_received_total");
            let connected = values.get("roost_clients_connected");
            if matches!(received, Some(DebugValue::Counter(n)) if *n >= 10)
                && matches!(connected, Some(DebugValue::Gauge(n)) if n.into_inner() == 3.0)
            {
                return values;
            }
        }
    })
    .await;
    let missing: Vec<_> = names.iter().filter(|n| !values.contains_key(*n)).collect();
    assert!(missing.is_empty(), "not reported: {missing:?}");
    let counter = |n: &str| match values.get(n) {
        Some(DebugValue::Counter(v)) => *v,
        other => panic!("{n}: {other:?}"),
    };
    let gauge = |n: &str| match values.get(n) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        other => panic!("{n}: {other:?}"),
    };
    assert!(counter("roost_messages_sent_total") >= 10);
    assert!(counter("roost_connections_total") >= 1);
    assert_eq!(gauge("roost_clients_connected"), 3.0);
    assert_eq!(gauge("roost_sessions"), 3.0);
    assert_eq!(gauge("roost_subscriptions"), 1.0);
    assert_eq!(gauge("roost_retained"), 1.0);
    assert!(gauge("roost_retained_bytes") > 0.0);
    match values.get("roost_storage_write_seconds") {
        Some(DebugValue::Histogram(samples)) => assert!(!samples.is_empty()),
        other => panic!("storage writes: {other:?}"),
    }
    broker.shutdown().await;
}
