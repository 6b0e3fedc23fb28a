//! A minimal MQTT 3.1.1 client over a raw socket, for the latency run: no event loop or
//! request channel between the timestamp and the socket, so the figure is the broker's.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Appends an MQTT Remaining Length.
fn remaining_length(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return;
        }
    }
}

/// A packet with its fixed header.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    remaining_length(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A 3.1.1 CONNECT, clean session, Keep Alive 300 s (rumqttd refuses 0).
pub(crate) fn connect_packet(id: &str) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x01, 0x2C];
    string(&mut body, id);
    packet(0x10, &body)
}

/// A SUBSCRIBE of one filter.
pub(crate) fn subscribe_packet(packet_id: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    string(&mut body, filter);
    body.push(qos);
    packet(0x82, &body)
}

/// Appends a PUBLISH to `out`; `packet_id` is used for QoS 1 and 2.
pub(crate) fn publish_into(
    out: &mut Vec<u8>,
    topic: &str,
    qos: u8,
    packet_id: u16,
    payload: &[u8],
) {
    let len = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + payload.len();
    out.push(0x30 | (qos << 1));
    remaining_length(out, len);
    string(out, topic);
    if qos > 0 {
        out.extend_from_slice(&packet_id.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// A PUBLISH; `packet_id` is used for QoS 1 and 2.
pub(crate) fn publish_packet(topic: &str, qos: u8, packet_id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
    string(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// An acknowledgement (PUBACK 0x40, PUBREC 0x50, PUBREL 0x62, PUBCOMP 0x70).
pub(crate) fn ack_packet(first: u8, packet_id: u16) -> [u8; 4] {
    let [a, b] = packet_id.to_be_bytes();
    [first, 2, a, b]
}

/// Reads whole packets from a stream.
pub(crate) struct Packets<R> {
    stream: R,
    buf: Vec<u8>,
    start: usize,
}

impl<R: AsyncRead + Unpin> Packets<R> {
    pub(crate) fn new(stream: R) -> Self {
        Packets {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
        }
    }

    /// The next packet: its first byte and body. `None` at the end of the stream.
    pub(crate) async fn next(&mut self) -> io::Result<Option<(u8, Vec<u8>)>> {
        loop {
            if let Some((first, len, header)) = self.header() {
                if self.buf.len() - self.start >= header + len {
                    let body_start = self.start + header;
                    let body = self.buf[body_start..body_start + len].to_vec();
                    self.start = body_start + len;
                    return Ok(Some((first, body)));
                }
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// First byte, Remaining Length and fixed-header size of the buffered packet, if its
    /// fixed header is complete.
    fn header(&self) -> Option<(u8, usize, usize)> {
        fixed_header(&self.buf[self.start..])
    }
}

/// First byte, Remaining Length and fixed-header size of the packet `bytes` start with, if
/// its fixed header is complete.
pub(crate) fn fixed_header(bytes: &[u8]) -> Option<(u8, usize, usize)> {
    let first = *bytes.first()?;
    let mut len = 0usize;
    for (i, &b) in bytes.iter().skip(1).take(4).enumerate() {
        len |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Some((first, len, i + 2));
        }
    }
    None
}

/// Sends CONNECT as client `id` over `stream` and waits for a successful CONNACK.
pub(crate) async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    id: &str,
) -> io::Result<()> {
    stream.write_all(&connect_packet(id)).await?;
    let mut ack = [0u8; 4];
    stream.read_exact(&mut ack).await?;
    if ack[0] != 0x20 || ack[3] != 0 {
        return Err(io::Error::other(format!("CONNECT refused: {ack:?}")));
    }
    Ok(())
}

/// Connects and completes CONNECT/CONNACK, with Nagle's algorithm off.
pub(crate) async fn connect(target: SocketAddr, id: &str) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    handshake(&mut stream, id).await?;
    Ok(stream)
}

/// Answers what a QoS 1/2 PUBLISH or PUBREL needs from a receiver; returns the payload of a
/// PUBLISH.
pub(crate) async fn receive<W: AsyncWrite + Unpin>(
    first: u8,
    body: &[u8],
    out: &mut W,
) -> io::Result<Option<Vec<u8>>> {
    let id_at = |i: usize| -> io::Result<u16> {
        body.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| io::Error::other("short packet"))
    };
    match first >> 4 {
        3 => {
            let qos = (first >> 1) & 3;
            let topic_len = usize::from(id_at(0)?);
            let mut at = 2 + topic_len;
            if qos > 0 {
                let id = id_at(at)?;
                at += 2;
                let reply = if qos == 1 { 0x40 } else { 0x50 };
                out.write_all(&ack_packet(reply, id)).await?;
            }
            Ok(Some(body.get(at..).unwrap_or_default().to_vec()))
        }
        6 => {
            out.write_all(&ack_packet(0x70, id_at(0)?)).await?;
            Ok(None)
        }
        _ => Ok(None),
    }
}
