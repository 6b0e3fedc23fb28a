//! Load shapes of raw clients (issue 19): publishers that write fixed-size batches with a
//! window of unacknowledged QoS 1/2 messages, and subscribers that read 64 KiB at a time
//! and acknowledge as they parse, all acknowledgements of one read in one write. MQTT 3.1.1
//! on plain sockets: no client library between the shape and the broker.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};

use crate::raw;

/// Bytes a subscriber asks for per read.
const READ: usize = 64 * 1024;

/// A buffer of received bytes and the complete packets in it.
struct Parser {
    buf: Vec<u8>,
}

impl Parser {
    fn new() -> Self {
        Parser {
            buf: Vec::with_capacity(2 * READ),
        }
    }

    /// Reads once (up to 64 KiB); `false` at the end of the stream.
    async fn fill(&mut self, stream: &mut tokio::net::tcp::OwnedReadHalf) -> io::Result<bool> {
        let len = self.buf.len();
        self.buf.resize(len + READ, 0);
        let n = stream.read(&mut self.buf[len..]).await?;
        self.buf.truncate(len + n);
        Ok(n > 0)
    }

    /// Calls `f(first byte, body)` for each complete packet and keeps the rest.
    fn each(&mut self, mut f: impl FnMut(u8, &[u8])) {
        let mut at = 0;
        while let Some((first, len, header)) = raw::fixed_header(&self.buf[at..]) {
            if self.buf.len() - at < header + len {
                break;
            }
            f(first, &self.buf[at + header..at + header + len]);
            at += header + len;
        }
        self.buf.drain(..at);
    }
}

fn packet_id(body: &[u8], at: usize) -> u16 {
    body.get(at..at + 2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

/// A subscriber on `bench/#` at `qos`: counts PUBLISHes into `count`, answering each QoS 1
/// (PUBACK), QoS 2 (PUBREC) and PUBREL (PUBCOMP) in one write per read.
pub(crate) async fn subscriber(
    target: SocketAddr,
    id: String,
    qos: u8,
    count: Arc<AtomicU64>,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let mut stream = raw::connect(target, &id).await?;
    stream
        .write_all(&raw::subscribe_packet(1, "bench/#", qos))
        .await?;
    let mut suback = [0u8; 5];
    stream.read_exact(&mut suback).await?;
    if suback[0] != 0x90 || suback[4] > 2 {
        return Err(io::Error::other(format!("SUBSCRIBE refused: {suback:?}")));
    }
    let (mut rd, mut wr) = stream.into_split();
    Ok(tokio::spawn(async move {
        let mut parser = Parser::new();
        let mut acks = Vec::with_capacity(4096);
        while let Ok(true) = parser.fill(&mut rd).await {
            let mut got = 0;
            parser.each(|first, body| match first >> 4 {
                3 => {
                    got += 1;
                    let q = (first >> 1) & 3;
                    if q > 0 {
                        let at = 2 + usize::from(packet_id(body, 0));
                        let reply = if q == 1 { 0x40 } else { 0x50 };
                        acks.extend_from_slice(&raw::ack_packet(reply, packet_id(body, at)));
                    }
                }
                6 => acks.extend_from_slice(&raw::ack_packet(0x70, packet_id(body, 0))),
                _ => {}
            });
            count.fetch_add(got, Ordering::Relaxed);
            if !acks.is_empty() {
                if wr.write_all(&acks).await.is_err() {
                    return;
                }
                acks.clear();
            }
        }
    }))
}

/// One raw publisher's load.
pub(crate) struct Publisher {
    pub(crate) target: SocketAddr,
    pub(crate) id: String,
    pub(crate) topic: String,
    pub(crate) qos: u8,
    pub(crate) payload: Vec<u8>,
    /// Messages to publish.
    pub(crate) total: u64,
    /// Bytes per write, about.
    pub(crate) batch: usize,
    /// Unacknowledged QoS 1/2 messages at most.
    pub(crate) window: usize,
}

/// Publishes `p.total` messages on `p.topic`: PUBLISHes are encoded into batches of about
/// `p.batch` bytes, each written at once; at QoS 1/2 at most `p.window` are
/// unacknowledged. Returns once all are acknowledged (QoS 0: written, then DISCONNECT).
pub(crate) async fn publisher(p: Publisher) -> io::Result<()> {
    let Publisher {
        target,
        id,
        topic,
        qos,
        payload,
        total,
        batch,
        window,
    } = p;
    let stream = raw::connect(target, &id).await?;
    let (mut rd, mut wr) = stream.into_split();
    let window = Arc::new(Semaphore::new(if qos == 0 { 0 } else { window }));
    let done = Arc::new(AtomicU64::new(0));
    // PUBRELs the reader owes the broker, written with the next batch (or on their own).
    let pubrels = Arc::new(Mutex::new(Vec::<u8>::new()));
    let wake = Arc::new(Notify::new());
    let reader = {
        let (window, done, pubrels, wake) = (
            Arc::clone(&window),
            Arc::clone(&done),
            Arc::clone(&pubrels),
            Arc::clone(&wake),
        );
        tokio::spawn(async move {
            let mut parser = Parser::new();
            while let Ok(true) = parser.fill(&mut rd).await {
                let mut finished = 0;
                let mut rel = false;
                parser.each(|first, body| match first >> 4 {
                    4 | 7 => finished += 1,
                    5 => {
                        pubrels
                            .lock()
                            .extend_from_slice(&raw::ack_packet(0x62, packet_id(body, 0)));
                        rel = true;
                    }
                    _ => {}
                });
                if rel {
                    wake.notify_one();
                }
                if finished > 0 {
                    window.add_permits(finished);
                    if done.fetch_add(finished as u64, Ordering::Relaxed) + finished as u64 >= total
                    {
                        wake.notify_one();
                    }
                }
            }
        })
    };
    let mut out = Vec::with_capacity(batch + 2048);
    let mut sent = 0u64;
    let mut next_id: u16 = 0;
    while sent < total {
        // At QoS 1/2 take what the window allows (waiting for at least one), then fill.
        let mut room = usize::MAX;
        if qos > 0 {
            tokio::select! {
                permit = window.acquire() => {
                    permit.map_err(io::Error::other)?.forget();
                    room = 1 + window.available_permits();
                    if room > 1 {
                        window.acquire_many(room as u32 - 1).await.map_err(io::Error::other)?.forget();
                    }
                }
                _ = wake.notified() => {
                    let rels = std::mem::take(&mut *pubrels.lock());
                    wr.write_all(&rels).await?;
                    continue;
                }
            }
        }
        out.extend_from_slice(&std::mem::take(&mut *pubrels.lock()));
        let mut taken = 0usize;
        while sent < total && out.len() < batch && taken < room {
            next_id = next_id.wrapping_add(1).max(1);
            raw::publish_into(&mut out, &topic, qos, next_id, &payload);
            sent += 1;
            taken += 1;
        }
        if taken < room && qos > 0 {
            window.add_permits(room - taken);
        }
        wr.write_all(&out).await?;
        out.clear();
    }
    if qos > 0 {
        while done.load(Ordering::Relaxed) < total {
            wake.notified().await;
            let rels = std::mem::take(&mut *pubrels.lock());
            if !rels.is_empty() {
                wr.write_all(&rels).await?;
            }
        }
    }
    wr.write_all(&[0xE0, 0]).await?;
    reader.abort();
    Ok(())
}
