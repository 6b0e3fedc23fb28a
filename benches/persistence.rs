//! QoS 1 fan-in throughput with `Durability::Acked` (sled, then redb) against no storage, reported as
//! a ratio, with the number of `fdatasync`/`fsync` calls the store made (group commit: one
//! per flush, shared by every message of the batch) and the data directory's size after
//! the run (space is reclaimed as messages are acknowledged).
//!
//! ```sh
//! cargo bench --bench persistence            # 8 publishers x 5,000 messages
//! cargo bench --bench persistence -- 4 20000 # publishers, messages each
//! cargo bench --bench persistence -- 4 2000 1 # ... and window (1: one message at a time)
//! ```
//!
//! Publishers pipeline up to 64 (or the window given) unacknowledged QoS 1 PUBLISHes each
//! over loopback TCP; one
//! persistent-session subscriber takes everything at QoS 1. The clock stops when every
//! PUBACK has reached its publisher and every message its subscriber.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use roost::codec::{
    decode, Connect, DecodeLimits, Packet, PacketId, ProtocolVersion, PubResponse, Publish,
    PublishQoS, Subscribe, SubscriptionOptions,
};
use roost::storage::{Backend, OnCorrupt, RedbStorage, SledStorage, Storage};
use roost::{Broker, BrokerHandle, Durability, Limits, QoS, TopicFilter, TopicName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const V: ProtocolVersion = ProtocolVersion::V311;

async fn write(w: &mut OwnedWriteHalf, p: &Packet) {
    let mut out = BytesMut::new();
    p.encode(V, &mut out).expect("encodes");
    w.write_all(&out).await.expect("writes");
}

async fn read(r: &mut OwnedReadHalf, buf: &mut BytesMut) -> Packet {
    loop {
        if let Some(p) = decode(buf, &DecodeLimits::new(V)).expect("valid") {
            return p;
        }
        let n = r.read_buf(buf).await.expect("reads");
        assert!(n > 0, "connection closed");
    }
}

async fn connect(port: u16, id: &str, clean: bool) -> (OwnedReadHalf, OwnedWriteHalf, BytesMut) {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    stream.set_nodelay(true).expect("nodelay");
    let (mut r, mut w) = stream.into_split();
    let mut c = Connect::new(V, id);
    c.clean_start = clean;
    c.keep_alive = 0;
    write(&mut w, &Packet::Connect(Box::new(c))).await;
    let mut buf = BytesMut::new();
    assert!(matches!(read(&mut r, &mut buf).await, Packet::ConnAck(_)));
    (r, w, buf)
}

async fn run(
    window_size: usize,
    broker: &BrokerHandle,
    publishers: usize,
    each: usize,
) -> Duration {
    let port = broker.local_addrs()[0].port();
    let (mut sr, mut sw, mut sbuf) = connect(port, "bench-sub", false).await;
    let sub = Subscribe {
        packet_id: PacketId::MIN,
        properties: Default::default(),
        filters: vec![(
            TopicFilter::new("bench/#").expect("valid"),
            SubscriptionOptions::new(QoS::AtLeastOnce),
        )],
    };
    write(&mut sw, &Packet::Subscribe(sub)).await;
    assert!(matches!(read(&mut sr, &mut sbuf).await, Packet::SubAck(_)));
    let total = publishers * each;
    let start = Instant::now();
    let subscriber = tokio::spawn(async move {
        let mut got = 0;
        while got < total {
            if let Packet::Publish(p) = read(&mut sr, &mut sbuf).await {
                got += 1;
                if let Some(id) = p.qos.packet_id() {
                    write(&mut sw, &Packet::PubAck(PubResponse::new(id))).await;
                }
            }
        }
    });
    let mut pubs = Vec::new();
    for p in 0..publishers {
        let (mut r, mut w, mut buf) = connect(port, &format!("bench-pub-{p}"), true).await;
        let window = Arc::new(Semaphore::new(window_size));
        let acks = window.clone();
        let reader = tokio::spawn(async move {
            for _ in 0..each {
                assert!(matches!(read(&mut r, &mut buf).await, Packet::PubAck(_)));
                acks.add_permits(1);
            }
        });
        let topic = TopicName::new(format!("bench/{p}")).expect("valid");
        let sender = tokio::spawn(async move {
            let payload = bytes::Bytes::from(vec![0x42; 64]);
            for i in 0..each {
                window.acquire().await.expect("open").forget();
                let id = PacketId::new((i % 60_000 + 1) as u16).expect("non-zero");
                let m = Publish::new(topic.clone(), PublishQoS::AtLeastOnce(id), payload.clone());
                write(&mut w, &Packet::Publish(m)).await;
            }
            w
        });
        pubs.push((reader, sender));
    }
    for (reader, sender) in pubs {
        reader.await.expect("publisher acks");
        drop(sender.await.expect("publisher"));
    }
    subscriber.await.expect("subscriber");
    start.elapsed()
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let publishers: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(8);
    let each: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let window: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(64);
    let limits = Limits::default()
        .with_max_queued_messages(1_000_000)
        .with_max_queued_bytes(1 << 30)
        .with_max_inflight(64);
    let none = Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .limits(limits.clone())
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    let t_none = run(window, &none, publishers, each).await;
    none.shutdown().await;

    let total = (publishers * each) as f64;
    let r_none = total / t_none.as_secs_f64();
    println!(
        "QoS 1 fan-in, {publishers} publishers x {each} messages of 64 B (window {window}), 1 persistent subscriber"
    );
    println!("  durability none : {r_none:>10.0} msg/s ({t_none:.2?})");
    for backend in [Backend::Sled, Backend::Redb] {
        let name = backend.name();
        let dir = std::env::temp_dir().join(format!("roost-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (store, syncs): (Arc<dyn Storage>, Box<dyn Fn() -> u64>) = match backend {
            Backend::Sled => {
                let s = SledStorage::open(&dir, OnCorrupt::Fail).expect("opens");
                let c = s.clone();
                (Arc::new(s), Box::new(move || c.syncs()))
            }
            Backend::Redb => {
                let s = RedbStorage::open(&dir, OnCorrupt::Fail).expect("opens");
                let c = s.clone();
                (Arc::new(s), Box::new(move || c.syncs()))
            }
        };
        let acked = Broker::builder()
            .listen("127.0.0.1:0".parse().expect("address"))
            .limits(limits.clone())
            .storage(store, Durability::Acked)
            .sys_interval(None)
            .build()
            .start()
            .await
            .expect("starts");
        let syncs_before = syncs();
        let t_acked = run(window, &acked, publishers, each).await;
        let n = syncs() - syncs_before;
        acked.shutdown().await;
        drop(acked);
        let size = dir_size(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let r_acked = total / t_acked.as_secs_f64();
        println!(
            "  acked, {name}: {r_acked:>10.0} msg/s ({t_acked:.2?}), {:.0}% of none; \
             {n} syncs ({:.0}/s, {:.1} messages per sync); data dir after the run {} KiB",
            100.0 * r_acked / r_none,
            n as f64 / t_acked.as_secs_f64(),
            total / n.max(1) as f64,
            size / 1024
        );
    }
}
