#![allow(missing_docs)] // criterion_group! generates undocumented items
//! Criterion benchmarks of the codec's hot path: PUBLISH decode and encode (64 B and 4 KiB
//! payloads, QoS 0 and 1, MQTT 3.1.1 and 5.0), the encode-once fan-out form, and CONNECT.
//!
//! Run with `cargo bench -p roost-core --bench codec`.

use bytes::{Bytes, BytesMut};
use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput,
};
use roost_core::codec::{
    decode, Connect, DecodeLimits, EncodedPublish, Packet, PacketId, ProtocolVersion, Publish,
    PublishQoS, QoS,
};
use roost_core::topic::TopicName;

fn publish(size: usize, qos: QoS) -> Publish {
    let topic = TopicName::new("sensors/building-7/floor-3/temperature").expect("valid");
    let id = PacketId::new(42).expect("non-zero");
    Publish::new(
        topic,
        PublishQoS::new(qos, id),
        Bytes::from(vec![0xA5; size]),
    )
}

fn cases() -> Vec<(String, ProtocolVersion, Publish)> {
    let mut out = Vec::new();
    for (vname, v) in [("v311", ProtocolVersion::V311), ("v5", ProtocolVersion::V5)] {
        for size in [64usize, 4096] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
                let name = format!("{vname}/{size}B/qos{}", qos.as_u8());
                out.push((name, v, publish(size, qos)));
            }
        }
    }
    out
}

fn bench_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    group.throughput(Throughput::Elements(1));
    for (name, v, p) in cases() {
        let packet = Packet::Publish(p.clone());
        let mut wire = BytesMut::new();
        packet.encode(v, &mut wire).expect("encodes");
        let wire = wire.freeze();
        let limits = DecodeLimits::new(v);
        // The read buffer is refilled outside the timed section.
        group.bench_with_input(BenchmarkId::new("decode", &name), &wire, |b, wire| {
            b.iter_batched(
                || BytesMut::from(&wire[..]),
                |mut buf| black_box(decode(&mut buf, &limits).expect("valid")),
                BatchSize::SmallInput,
            )
        });
        // 100 packets back to back in one read buffer, as a connection sees them: per-packet
        // cost of decoding a stream (the buffer is shared after the first split).
        let stream: Vec<u8> = wire
            .iter()
            .copied()
            .cycle()
            .take(wire.len() * 100)
            .collect();
        group.bench_with_input(
            BenchmarkId::new("decode_stream_x100", &name),
            &stream,
            |b, stream| {
                b.iter_batched(
                    || BytesMut::from(&stream[..]),
                    |mut buf| {
                        for _ in 0..100 {
                            black_box(decode(&mut buf, &limits).expect("valid"));
                        }
                    },
                    BatchSize::SmallInput,
                )
            },
        );
        let mut out = BytesMut::with_capacity(8192);
        group.bench_with_input(BenchmarkId::new("encode", &name), &packet, |b, packet| {
            b.iter(|| {
                out.clear();
                packet.encode(v, &mut out).expect("encodes");
                black_box(out.len())
            })
        });
        let form = EncodedPublish::new(&p, v).expect("encodes");
        group.bench_with_input(BenchmarkId::new("fanout_copy", &name), &form, |b, form| {
            b.iter(|| {
                out.clear();
                let payload = form
                    .write_head(&mut out, false, p.qos, false)
                    .expect("same form");
                black_box((out.len(), payload.len()))
            })
        });
    }
    group.finish();
}

fn bench_connect(c: &mut Criterion) {
    let mut group = c.benchmark_group("connect");
    for (vname, v) in [("v311", ProtocolVersion::V311), ("v5", ProtocolVersion::V5)] {
        let mut connect = Connect::new(v, "client-0001");
        connect.username = Some("user".into());
        connect.password = Some(Bytes::from_static(b"secret"));
        let packet = Packet::Connect(Box::new(connect));
        let mut wire = BytesMut::new();
        packet.encode(v, &mut wire).expect("encodes");
        let wire = wire.freeze();
        let limits = DecodeLimits::new(v);
        group.bench_function(BenchmarkId::new("decode", vname), |b| {
            b.iter_batched(
                || BytesMut::from(&wire[..]),
                |mut buf| black_box(decode(&mut buf, &limits).expect("valid")),
                BatchSize::SmallInput,
            )
        });
        let mut out = BytesMut::with_capacity(256);
        group.bench_function(BenchmarkId::new("encode", vname), |b| {
            b.iter(|| {
                out.clear();
                packet.encode(v, &mut out).expect("encodes");
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = bench_publish, bench_connect
}
criterion_main!(benches);
