//! The load generator's own smoke run against an embedded Roost broker: delivery counts only,
//! no speed is asserted.

use std::time::Duration;

use roost_bench::{run, Scenario, Settings};
use roost_core::{Broker, Limits};

/// A broker whose session queues hold a whole run: with the default 1,000 messages, a
/// subscriber that falls behind a fast fan-in overflows its queue and the broker drops by its
/// stated policy (counted in `messages_dropped`), which is not what this test is about.
async fn broker() -> roost_core::BrokerHandle {
    let limits = Limits::default().with_max_queued_messages(100_000);
    Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .limits(limits)
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts")
}

fn settings(broker: &roost_core::BrokerHandle, scenario: Scenario, qos: u8) -> Settings {
    Settings {
        port: broker.local_addrs()[0].port(),
        pid: Some(std::process::id()),
        scenario,
        qos,
        publishers: 4,
        subscribers: 4,
        messages: 500,
        timeout: Duration::from_secs(30),
        ..Settings::default()
    }
}

/// Runs fan-in and fan-out at QoS 1 and 2 with the clients `batch` selects (0: rumqttc,
/// else the raw shapes) and checks every delivery arrived.
async fn deliver_everything(batch: usize) {
    let broker = broker().await;
    for (scenario, qos) in [
        (Scenario::FanIn, 1),
        (Scenario::FanIn, 2),
        (Scenario::FanOut, 1),
        (Scenario::FanOut, 2),
    ] {
        let mut s = settings(&broker, scenario, qos);
        s.batch = batch;
        s.window = 10;
        let report = run(&s).await.expect("runs");
        assert_eq!(report.expected, 2_000, "{report}");
        assert_eq!(report.delivered, report.expected, "{report}");
        assert!(report.broker_cpu.is_some(), "CPU time read from /proc");
        assert!(report.peak_rss_kib.is_some_and(|k| k > 0), "{report}");
    }
    assert_eq!(broker.metrics().messages_dropped, 0);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_and_fan_out_deliver_everything_at_qos_1_and_2() {
    deliver_everything(0).await;
}

/// Issue 19 §1: the raw shapes (batched publishers with a window, 64 KiB-read subscribers
/// acknowledging per read) complete every QoS 1/2 exchange, and report the peak RSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_publishers_and_bulk_reading_subscribers_deliver_everything() {
    deliver_everything(16 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_0_counts_are_reported() {
    let broker = broker().await;
    let report = run(&settings(&broker, Scenario::FanIn, 0))
        .await
        .expect("runs");
    assert_eq!(report.published, 2_000);
    // QoS 0 may drop under overload; on an idle loopback nothing should be lost.
    assert!(report.delivered <= report.expected, "{report}");
    assert!(report.delivered > 0, "{report}");
    broker.shutdown().await;
}

#[test]
fn reads_cpu_time_of_this_process() {
    // Burn a little CPU so the figure is above zero at 100 ticks per second.
    let start = std::time::Instant::now();
    let mut x = 0u64;
    while start.elapsed() < Duration::from_millis(50) {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    assert!(x != 1);
    let cpu = roost_bench::process_cpu(std::process::id()).expect("reads /proc");
    assert!(cpu > Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_run_receives_every_message() {
    let broker = broker().await;
    let settings = Settings {
        scenario: Scenario::Latency,
        qos: 1,
        rate: 200,
        duration: Duration::from_secs(1),
        ..settings(&broker, Scenario::Latency, 1)
    };
    let report = roost_bench::run_latency(&settings).await.expect("runs");
    assert_eq!(report.sent, 200, "{report}");
    assert_eq!(report.received, 200, "{report}");
    let [p50, p99, p999, max] = report.percentiles_us;
    assert!(p50 <= p99 && p99 <= p999 && p999 <= max, "{report}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_run_opens_every_connection() {
    let broker = broker().await;
    let settings = Settings {
        connections: 200,
        ..settings(&broker, Scenario::Idle, 0)
    };
    let report = roost_bench::run_idle(&settings).await.expect("runs");
    assert_eq!(report.connected, 200, "{report}");
    assert!(report.rss_growth_kib.is_some() && report.broker_cpu.is_some());
    broker.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn in_process_run_delivers_everything() {
    for qos in [0, 1, 2] {
        let settings = Settings {
            scenario: Scenario::InProcess,
            qos,
            publishers: 2,
            subscribers: 2,
            messages: 500,
            timeout: Duration::from_secs(30),
            ..Settings::default()
        };
        let report = roost_bench::run_in_process(&settings).await.expect("runs");
        assert_eq!(report.published, 1_000, "{report}");
        assert_eq!(report.delivered, 2_000, "{report}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn idle_in_process_run_holds_every_connection() {
    let settings = Settings {
        scenario: Scenario::IdleInProcess,
        connections: 300,
        timeout: Duration::from_secs(30),
        ..Settings::default()
    };
    let report = roost_bench::run_idle_in_process(&settings)
        .await
        .expect("runs");
    assert_eq!(report.connected, 300, "{report}");
    assert!(report.rss_growth_kib.is_some(), "{report}");
}

/// The memory scenarios run to completion against an embedded broker (its RSS is this
/// process's); what they measure is reported by `scripts/memory-compare.sh`, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_scenarios_complete() {
    let broker = Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .listen_ws("127.0.0.1:0".parse().expect("address"), "/mqtt")
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    let target = roost_bench::MemoryTarget {
        addr: broker.local_addrs()[0],
        ws: Some(broker.local_addrs()[1]),
        pid: std::process::id(),
        only: vec!["ws-headers".into(), "aliases".into(), "dup-filters".into()],
    };
    let cases = roost_bench::run_memory(&target).await.expect("runs");
    let notes: Vec<_> = cases.iter().map(|c| (c.name, c.note.clone())).collect();
    assert_eq!(
        notes,
        vec![
            ("ws-headers", "64 upgraded".to_string()),
            ("aliases", "256 aliases set".to_string()),
            ("dup-filters", "subscriber not reading".to_string()),
        ]
    );
    broker.shutdown().await;
}
