#![allow(missing_docs)] // criterion_group! generates undocumented items
//! Criterion benchmarks of the routing hot path: matching a topic against 1M subscriptions
//! (exact filters, and a wildcard-heavy mix), routing one PUBLISH to 1,000 sessions, and a
//! session queue's push/pop.
//!
//! Run with `cargo bench -p roost-core --bench router`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use roost_core::bench_support::{QueueBench, RouteBench};
use roost_core::codec::QoS;
use roost_core::topic::{SubscriptionTrie, TopicFilter, TopicName};

const SUBSCRIPTIONS: usize = 1_000_000;

fn trie(filter: impl Fn(usize) -> String) -> SubscriptionTrie<u64, ()> {
    let mut trie = SubscriptionTrie::new();
    for i in 0..SUBSCRIPTIONS {
        let f = TopicFilter::new(filter(i)).expect("valid filter");
        trie.insert(&f, i as u64, ());
    }
    trie
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("match_1M_subscriptions");
    group.throughput(Throughput::Elements(1));
    // Exact filters: one per device.
    let exact = trie(|i| format!("site/{}/dev/{}/temp", i % 1000, i / 1000));
    let topic = TopicName::new("site/7/dev/42/temp").expect("valid");
    let mut n = 0;
    exact.for_each_match(&topic, |_, _| n += 1);
    assert_eq!(n, 1);
    group.bench_function("exact", |b| {
        b.iter(|| {
            let mut n = 0usize;
            exact.for_each_match(black_box(&topic), |_, _| n += 1);
            n
        })
    });
    drop(exact);
    // A wildcard-heavy mix: four of five filters hold `+` or `#`.
    let wild = trie(|i| {
        // 997 (prime): the pattern kind and the first level vary independently.
        let (a, b) = (i % 997, i / 997);
        match i % 5 {
            0 => format!("site/{a}/dev/{b}/temp"),
            1 => format!("site/{a}/+/{b}/temp"),
            2 => format!("site/{a}/dev/#"),
            3 => format!("site/+/dev/{b}/+"),
            _ => format!("+/{a}/dev/{b}/#"),
        }
    });
    let mut n = 0;
    wild.for_each_match(&topic, |_, _| n += 1);
    println!("wildcard mix: {n} of {SUBSCRIPTIONS} filters match {topic:?}");
    group.bench_function("wildcard_mix", |b| {
        b.iter(|| {
            let mut n = 0usize;
            wild.for_each_match(black_box(&topic), |_, _| n += 1);
            n
        })
    });
    group.finish();
}

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_to_1000_sessions");
    group.throughput(Throughput::Elements(1000));
    for (name, qos, filter) in [
        ("qos0_same_filter", QoS::AtMostOnce, false),
        ("qos1_same_filter", QoS::AtLeastOnce, false),
        ("qos0_10_wildcard_filters_100_match", QoS::AtMostOnce, true),
    ] {
        let mut bench = RouteBench::new(
            1000,
            |i| {
                if filter {
                    format!("bench/+/{}/#", i % 10)
                } else {
                    "bench/#".to_string()
                }
            },
            if filter { "bench/x/3/y" } else { "bench/x" },
            qos,
        )
        .expect("valid filters");
        let expected = if filter { 100 } else { 1000 };
        assert_eq!(bench.route_and_take(), expected);
        group.throughput(Throughput::Elements(expected as u64));
        group.bench_function(name, |b| b.iter(|| bench.route_and_take()));
    }
    group.finish();
}

fn queue(c: &mut Criterion) {
    let mut group = c.benchmark_group("session_queue");
    let bench = QueueBench::new().expect("valid topic");
    group.throughput(Throughput::Elements(100));
    assert_eq!(bench.push_pop(100), 100);
    group.bench_function("push_100_then_pop", |b| b.iter(|| bench.push_pop(100)));
    group.finish();
}

criterion_group!(benches, matching, routing, queue);
criterion_main!(benches);
