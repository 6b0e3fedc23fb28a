//! Memory scenarios: what a broker's resident memory grows by when clients send what the
//! trust-boundary review sent (issue 12 §2). Each case opens its own connections, does its
//! thing, waits until the broker has answered everything (a PINGREQ round trip), reads the
//! broker's RSS from `/proc`, and closes its connections before the next case; the figure is
//! RSS after minus RSS before. Works against any broker on loopback (Roost, Mosquitto).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use roost_core::codec::QoS;
use roost_core::codec::{
    decode, Connect, DecodeLimits, Packet, PacketId, ProtocolVersion, Publish, PublishQoS,
    Subscribe, SubscriptionOptions, UserProperty,
};
use roost_core::topic::{TopicFilter, TopicName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{process_rss_kib, BenchError};

/// One case's outcome.
#[derive(Debug, Clone)]
pub struct MemoryCase {
    /// The case's name.
    pub name: &'static str,
    /// What it does.
    pub what: String,
    /// RSS growth of the broker, KiB (negative when it shrank).
    pub growth_kib: i64,
    /// What the broker accepted, where that matters (e.g. subscriptions granted).
    pub note: String,
}

/// Where the broker listens and which process it is.
#[derive(Debug, Clone)]
pub struct MemoryTarget {
    /// MQTT over TCP.
    pub addr: std::net::SocketAddr,
    /// MQTT over WebSocket on `/mqtt`, if the broker has such a listener.
    pub ws: Option<std::net::SocketAddr>,
    /// The broker's process id (RSS is read from `/proc/PID/status`).
    pub pid: u32,
    /// Cases to run (all when empty).
    pub only: Vec<String>,
}

/// A raw MQTT connection speaking through Roost's codec.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    version: ProtocolVersion,
}

fn err(what: impl std::fmt::Display) -> BenchError {
    BenchError::Client(what.to_string())
}

fn topic(s: &str) -> Result<TopicName, BenchError> {
    TopicName::new(s.to_string()).map_err(err)
}

fn filter(s: &str) -> Result<TopicFilter, BenchError> {
    TopicFilter::new(s.to_string()).map_err(err)
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap_or(PacketId::MIN)
}

impl Conn {
    async fn open(addr: std::net::SocketAddr, connect: Connect) -> Result<Conn, BenchError> {
        let stream = TcpStream::connect(addr).await.map_err(err)?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            buf: BytesMut::new(),
            version: connect.protocol,
        };
        conn.send(&Packet::Connect(Box::new(connect))).await?;
        match conn.recv().await? {
            Packet::ConnAck(a) if a.reason_code.is_success() => Ok(conn),
            other => Err(err(format!("connect refused: {other:?}"))),
        }
    }

    async fn send(&mut self, packet: &Packet) -> Result<(), BenchError> {
        let mut out = BytesMut::new();
        packet.encode(self.version, &mut out).map_err(err)?;
        self.stream.write_all(&out).await.map_err(err)
    }

    async fn recv(&mut self) -> Result<Packet, BenchError> {
        let limits = DecodeLimits::new(self.version).with_max_packet_size(64 * 1024 * 1024);
        loop {
            if let Some(p) = decode(&mut self.buf, &limits).map_err(err)? {
                return Ok(p);
            }
            let read =
                tokio::time::timeout(Duration::from_secs(30), self.stream.read_buf(&mut self.buf))
                    .await
                    .map_err(|_| err("no answer within 30 s"))?
                    .map_err(err)?;
            if read == 0 {
                return Err(err("connection closed"));
            }
        }
    }

    /// Waits until the broker has handled everything sent before; returns what came first.
    async fn ping(&mut self) -> Result<Vec<Packet>, BenchError> {
        self.send(&Packet::PingReq).await?;
        let mut seen = Vec::new();
        loop {
            match self.recv().await? {
                Packet::PingResp => return Ok(seen),
                p => seen.push(p),
            }
        }
    }
}

fn v5(id: &str) -> Connect {
    Connect::new(ProtocolVersion::V5, id)
}

fn persistent_v5(id: &str) -> Connect {
    let mut c = v5(id);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    c
}

async fn settle() {
    // Let the allocator and the kernel's accounting catch up with what was freed.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn rss(pid: u32) -> Result<i64, BenchError> {
    Ok(process_rss_kib(pid)? as i64)
}

/// Runs the cases; each result as it comes.
pub async fn run_memory(target: &MemoryTarget) -> Result<Vec<MemoryCase>, BenchError> {
    type Case = (&'static str, String);
    let cases: Vec<Case> = vec![
        (
            "ws-headers",
            "64 WebSocket frame headers declaring 16 MB each".into(),
        ),
        (
            "ws-partial",
            "16 WebSocket frames declaring 12 MB, 2 MB of each sent".into(),
        ),
        (
            "aliases",
            "256 topic aliases set by ~1 MB PUBLISHes (4 connections × 64)".into(),
        ),
        (
            "filters",
            "200 persistent sessions, one short filter each in a ~1 MB SUBSCRIBE".into(),
        ),
        (
            "retained-props",
            "2,000 one-byte retained messages with a 3-byte user property, each behind 64 KB"
                .into(),
        ),
        (
            "queue-props",
            "1,000 one-byte QoS 1 messages with 60 KB of user properties for an offline session"
                .into(),
        ),
        (
            "dup-filters",
            "one SUBSCRIBE repeating a filter 4,000 times against 2,000 retained topics".into(),
        ),
        (
            "trie",
            "10 clients × 1,000 distinct 32-level filters".into(),
        ),
    ];
    let mut out = Vec::new();
    for (n, (name, what)) in cases.into_iter().enumerate() {
        if !target.only.is_empty() && !target.only.iter().any(|o| o == name) {
            continue;
        }
        if name.starts_with("ws-") && target.ws.is_none() {
            continue;
        }
        settle().await;
        let before = rss(target.pid)?;
        let (note, keep) = match name {
            "ws-headers" => ws_frames(target, 64, 16 << 20, 0).await?,
            "ws-partial" => ws_frames(target, 16, 12 << 20, 2 << 20).await?,
            "aliases" => aliases(target).await?,
            "filters" => filters(target, n).await?,
            "retained-props" => retained_props(target, n).await?,
            "queue-props" => queue_props(target, n).await?,
            "dup-filters" => dup_filters(target, n).await?,
            _ => trie(target, n).await?,
        };
        settle().await;
        let after = rss(target.pid)?;
        drop(keep);
        out.push(MemoryCase {
            name,
            what,
            growth_kib: after - before,
            note,
        });
    }
    Ok(out)
}

/// What a case keeps open until its RSS is read.
type Kept = Vec<Box<dyn std::any::Any + Send>>;

async fn ws_frames(
    target: &MemoryTarget,
    count: usize,
    claim: u64,
    send: usize,
) -> Result<(String, Kept), BenchError> {
    let Some(ws) = target.ws else {
        return Ok(("no WebSocket listener".into(), Vec::new()));
    };
    let mut kept: Kept = Vec::new();
    let mut open = 0;
    for _ in 0..count {
        let mut s = TcpStream::connect(ws).await.map_err(err)?;
        s.write_all(
            b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Protocol: mqtt\r\n\r\n",
        )
        .await
        .map_err(err)?;
        let mut response = Vec::new();
        while !response.ends_with(b"\r\n\r\n") && response.len() < 4096 {
            let mut byte = [0u8; 1];
            if s.read_exact(&mut byte).await.is_err() {
                break;
            }
            response.push(byte[0]);
        }
        let mut frame = vec![0x82, 0xFF];
        frame.extend_from_slice(&claim.to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        let _ = s.write_all(&frame).await;
        let chunk = vec![0u8; 64 * 1024];
        let mut sent = 0;
        while sent < send {
            match tokio::time::timeout(Duration::from_secs(2), s.write_all(&chunk)).await {
                Ok(Ok(())) => sent += chunk.len(),
                _ => break, // refused (closed) or not read any more
            }
        }
        if response.starts_with(b"HTTP/1.1 101") {
            open += 1;
        }
        kept.push(Box::new(s));
    }
    Ok((format!("{open} upgraded"), kept))
}

async fn aliases(target: &MemoryTarget) -> Result<(String, Kept), BenchError> {
    let mut kept: Kept = Vec::new();
    let mut set = 0;
    for c in 0..4 {
        let mut conn = Conn::open(target.addr, v5(&format!("mem-alias-{c}"))).await?;
        for alias in 1..=64u16 {
            let mut p = Publish::new(
                topic(&format!("mem/alias/{c}/{alias}"))?,
                PublishQoS::AtMostOnce,
                Bytes::from(vec![b'x'; 1_000_000]),
            );
            p.properties.topic_alias = Some(alias);
            conn.send(&Packet::Publish(p)).await?;
        }
        if conn.ping().await.is_ok() {
            set += 64;
        }
        kept.push(Box::new(conn.stream));
    }
    Ok((format!("{set} aliases set"), kept))
}

async fn filters(target: &MemoryTarget, run: usize) -> Result<(String, Kept), BenchError> {
    let mut granted = 0;
    for i in 0..200 {
        let id = format!("mem-filter-{run}-{i}");
        let mut conn = Conn::open(target.addr, persistent_v5(&id)).await?;
        let mut sub = Subscribe {
            packet_id: pid(1),
            properties: Default::default(),
            filters: vec![(
                filter(&format!("f/{i}"))?,
                SubscriptionOptions::new(QoS::AtLeastOnce),
            )],
        };
        // About 1 MB of padding (a string is at most 65,535 bytes).
        sub.properties.user_properties = vec![UserProperty::new("pad", "p".repeat(60_000)); 16];
        conn.send(&Packet::Subscribe(sub)).await?;
        if let Ok(Packet::SubAck(a)) = conn.recv().await {
            granted += a.reason_codes.iter().filter(|c| c.is_success()).count();
        }
        // Disconnect: the session (and its filter) stays.
        let _ = conn.send(&Packet::Disconnect(Default::default())).await;
    }
    Ok((format!("{granted} subscriptions kept"), Vec::new()))
}

async fn retained_props(target: &MemoryTarget, run: usize) -> Result<(String, Kept), BenchError> {
    let mut conn = Conn::open(target.addr, v5(&format!("mem-retain-{run}"))).await?;
    for i in 0..2000 {
        // Padding nobody subscribes to, in the same write as the retained message.
        let pad = Publish::new(
            topic("mem/pad")?,
            PublishQoS::AtMostOnce,
            Bytes::from(vec![b'x'; 64 * 1024]),
        );
        let mut p = Publish::new(
            topic(&format!("mem/ret/{run}/{i}"))?,
            PublishQoS::AtMostOnce,
            &b"1"[..],
        );
        p.retain = true;
        p.properties.user_properties = vec![UserProperty::new("k", "v")];
        let mut out = BytesMut::new();
        Packet::Publish(pad)
            .encode(conn.version, &mut out)
            .map_err(err)?;
        Packet::Publish(p)
            .encode(conn.version, &mut out)
            .map_err(err)?;
        conn.stream.write_all(&out).await.map_err(err)?;
    }
    conn.ping().await?;
    Ok(("2000 retained".into(), vec![Box::new(conn.stream)]))
}

async fn queue_props(target: &MemoryTarget, run: usize) -> Result<(String, Kept), BenchError> {
    let id = format!("mem-queue-{run}");
    let mut away = Conn::open(target.addr, persistent_v5(&id)).await?;
    away.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![(
            filter("memq/#")?,
            SubscriptionOptions::new(QoS::AtLeastOnce),
        )],
    }))
    .await?;
    away.recv().await?;
    away.send(&Packet::Disconnect(Default::default())).await?;
    drop(away);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut p = Conn::open(target.addr, v5(&format!("mem-queue-pub-{run}"))).await?;
    let mut acked = 0;
    for i in 0..1000u16 {
        let mut publish = Publish::new(
            topic("memq/x")?,
            PublishQoS::AtLeastOnce(pid(i + 1)),
            &b"1"[..],
        );
        publish.properties.user_properties = vec![UserProperty::new("k", "v".repeat(60 * 1024))];
        p.send(&Packet::Publish(publish)).await?;
        if let Ok(Packet::PubAck(_)) = p.recv().await {
            acked += 1;
        }
    }
    Ok((format!("{acked} acknowledged"), vec![Box::new(p.stream)]))
}

async fn dup_filters(target: &MemoryTarget, run: usize) -> Result<(String, Kept), BenchError> {
    let mut p = Conn::open(target.addr, v5(&format!("mem-dup-pub-{run}"))).await?;
    for i in 0..2000 {
        let mut publish = Publish::new(
            topic(&format!("memd/{run}/{i}"))?,
            PublishQoS::AtMostOnce,
            &b"v"[..],
        );
        publish.retain = true;
        p.send(&Packet::Publish(publish)).await?;
    }
    p.ping().await?;
    let mut s = Conn::open(target.addr, v5(&format!("mem-dup-sub-{run}"))).await?;
    let f = filter(&format!("memd/{run}/#"))?;
    s.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![(f, SubscriptionOptions::new(QoS::AtMostOnce)); 4000],
    }))
    .await?;
    // Do not read: what the broker holds for this subscriber is what is measured.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok((
        "subscriber not reading".into(),
        vec![Box::new(p.stream), Box::new(s.stream)],
    ))
}

async fn trie(target: &MemoryTarget, run: usize) -> Result<(String, Kept), BenchError> {
    let mut kept: Kept = Vec::new();
    let mut granted = 0;
    for c in 0..10 {
        let mut conn = Conn::open(target.addr, v5(&format!("mem-trie-{run}-{c}"))).await?;
        for batch in 0..10u16 {
            let mut filters = Vec::with_capacity(100);
            for j in 0..100 {
                let mut levels: Vec<String> = (0..31).map(|l| format!("l{l}")).collect();
                levels.insert(0, format!("t{run}c{c}f{}", batch as usize * 100 + j));
                filters.push((
                    filter(&levels.join("/"))?,
                    SubscriptionOptions::new(QoS::AtMostOnce),
                ));
            }
            conn.send(&Packet::Subscribe(Subscribe {
                packet_id: pid(batch + 1),
                properties: Default::default(),
                filters,
            }))
            .await?;
            if let Ok(Packet::SubAck(a)) = conn.recv().await {
                granted += a.reason_codes.iter().filter(|c| c.is_success()).count();
            }
        }
        kept.push(Box::new(conn.stream));
    }
    Ok((format!("{granted} of 10000 granted"), kept))
}
