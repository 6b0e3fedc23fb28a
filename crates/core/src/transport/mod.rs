//! The two halves of a connection as the broker sees them: a source of decoded packets and a
//! sink that batches outgoing ones.
//!
//! Network streams decode and encode MQTT bytes ([`NetReader`], [`NetWriter`]); in-process
//! clients exchange [`Packet`] values over channels ([`LocalReader`], [`LocalWriter`]), so a
//! payload published in-process reaches an in-process subscriber without a copy. Both go
//! through the same connection and session code.

pub(crate) mod listener;
pub(crate) mod proxy;
#[cfg(feature = "tls")]
pub(crate) mod tls;
#[cfg(feature = "websocket")]
pub(crate) mod ws;

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::codec::{
    decode, DecodeError, DecodeLimits, EncodeError, Packet, PacketId, PacketType, ProtocolVersion,
    PublishQoS, TopicAliasUse,
};
use crate::message::{Delivery, Message};
use crate::metrics::Metrics;

/// Why a connection could not produce its next packet.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("malformed packet: {0}")]
    Decode(#[from] DecodeError),
}

/// The incoming half of a connection.
pub(crate) trait PacketReader: Send + 'static {
    /// Polls for the next packet; `Ok(None)` at a clean end of stream. What was read but
    /// not yet decoded stays in the reader, so a caller may stop polling at any time.
    ///
    /// Polled, not awaited: the connection waits for its next packet, its close signal and
    /// its keep-alive timer in one poll function, so that an idle connection's task holds
    /// no read future (issue 19).
    ///
    /// Reads from the network are counted in `metrics` (passed, not kept: one pointer less
    /// in every connection).
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        limits: &DecodeLimits,
        metrics: &Metrics,
    ) -> Poll<Result<Option<Packet>, ReadError>>;

    /// The next packet; `Ok(None)` at a clean end of stream. Cancel safe.
    fn read<'a>(
        &'a mut self,
        limits: &'a DecodeLimits,
        metrics: &'a Metrics,
    ) -> impl Future<Output = Result<Option<Packet>, ReadError>> + Send + 'a {
        std::future::poll_fn(move |cx| self.poll_read(cx, limits, metrics))
    }

    /// When the last complete packet arrived, if this reader keeps track (one clock
    /// reading per read from the stream rather than one per packet); `None` if it does
    /// not. Bytes of an unfinished packet do not count (MQTT-3.1.2-24: keep-alive is about
    /// control packets).
    fn last_packet(&self) -> Option<tokio::time::Instant> {
        None
    }

    /// Takes the next packet if it is a buffered PUBACK, PUBREC, PUBREL or PUBCOMP of only a
    /// Packet Identifier (see [`crate::codec::peek_short_ack`]), of type `only` if given;
    /// `None` leaves everything to [`PacketReader::poll_read`]. Readers that cannot tell
    /// return `None`.
    fn take_short_ack(&mut self, only: Option<PacketType>) -> Option<(PacketType, PacketId)> {
        let _ = only;
        None
    }

    /// Whether a whole packet is buffered already, so the next `read` will not wait for
    /// the peer. False if the reader cannot tell.
    fn holds_packet(&self) -> bool {
        false
    }

    /// Reads and throws away whatever the peer still sends, until it closes or the read
    /// fails. Called when the server ends a connection, after its last packet went out and
    /// the write side was shut: a socket closed with unread input resets the connection,
    /// and the peer's writes then fail before it reads that last packet (a reason code).
    /// The caller bounds it in time.
    fn discard(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// The outgoing half of a connection. `packet` and `publish` buffer; `flush` writes.
pub(crate) trait PacketWriter: Send + 'static {
    /// Buffers a control packet.
    fn packet(&mut self, packet: &Packet, version: ProtocolVersion) -> Result<(), EncodeError>;
    /// Buffers one delivery of a shared message, with a Topic Alias if `alias` says so
    /// (v5 only; writers whose client does not decode wire packets ignore it).
    fn publish(
        &mut self,
        delivery: &Delivery,
        qos: PublishQoS,
        dup: bool,
        version: ProtocolVersion,
        alias: Option<TopicAliasUse>,
    ) -> Result<(), EncodeError>;
    /// Buffers packets already encoded for this connection's protocol level (a shared run
    /// of QoS 0 PUBLISHes, see `session::Run`), if this writer writes bytes; false, with
    /// nothing buffered, if it does not (its caller then sends them one by one).
    fn encoded(&mut self, bytes: &Bytes) -> bool {
        let _ = bytes;
        false
    }
    /// Bytes or packets buffered and not yet written.
    fn pending(&self) -> usize;
    /// Polls to write everything buffered. What was not written stays buffered, so a
    /// caller may stop polling at any time. Polled, for the same reason as
    /// [`PacketReader::poll_read`].
    /// Writes to the network are counted in `metrics`.
    fn poll_flush(&mut self, cx: &mut Context<'_>, metrics: &Metrics) -> Poll<io::Result<()>>;

    /// Writes everything buffered. Cancel safe: what was not written stays buffered.
    fn flush<'a>(
        &'a mut self,
        metrics: &'a Metrics,
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        std::future::poll_fn(move |cx| self.poll_flush(cx, metrics))
    }
    /// Closes the outgoing direction.
    fn shutdown(&mut self) -> impl Future<Output = ()> + Send;
}

/// Reads MQTT packets from a byte stream.
pub(crate) struct NetReader<R> {
    io: R,
    buf: BytesMut,
    /// How much to ask the socket for next: grows while reads fill it (a busy publisher),
    /// shrinks while they do not (an idle client), so idle connections hold little memory.
    chunk: u32,
    /// Bytes arrived since the last complete packet was taken.
    fresh: bool,
    /// When the last complete packet arrived (for keep-alive, which counts packets, not
    /// bytes: MQTT-3.1.2-24): the clock is read for the first packet a read completed,
    /// not per packet.
    last_packet: tokio::time::Instant,
}

impl<R> NetReader<R> {
    pub(crate) fn new(io: R) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            chunk: READ_CHUNK_MIN,
            fresh: false,
            last_packet: tokio::time::Instant::now(),
        }
    }
}

/// The most to ask the socket for at a time.
const READ_CHUNK: u32 = 8 * 1024;
/// The least: enough for CONNECT, PINGREQ and small publishes of a quiet client.
const READ_CHUNK_MIN: u32 = 512;

/// Bytes read into the connection's own stack frame while it holds no buffer: enough for a
/// PINGREQ or a small PUBLISH, and the buffer is allocated only once something arrived.
const READ_PROBE: usize = 32;

impl<R: AsyncRead + Unpin + Send + 'static> PacketReader for NetReader<R> {
    fn last_packet(&self) -> Option<tokio::time::Instant> {
        Some(self.last_packet)
    }

    fn holds_packet(&self) -> bool {
        crate::codec::holds_packet(&self.buf)
    }

    fn take_short_ack(&mut self, only: Option<PacketType>) -> Option<(PacketType, PacketId)> {
        let ack = crate::codec::peek_short_ack(&self.buf)
            .filter(|(kind, _)| only.is_none_or(|k| k == *kind))?;
        self.buf.advance(4);
        if std::mem::take(&mut self.fresh) {
            self.last_packet = tokio::time::Instant::now();
        }
        Some(ack)
    }

    async fn discard(&mut self) {
        self.buf = BytesMut::new();
        // On the heap, only while closing: an array here would sit in every connection's
        // task (the closing path is part of its future) for the connection's whole life.
        let mut scratch = vec![0u8; 4096];
        while let Ok(n) = self.io.read(&mut scratch).await {
            if n == 0 {
                return;
            }
        }
    }

    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        limits: &DecodeLimits,
        metrics: &Metrics,
    ) -> Poll<Result<Option<Packet>, ReadError>> {
        loop {
            if let Some(packet) = decode(&mut self.buf, limits)? {
                // Completed by the latest read: no clock reading per packet. Bytes of a
                // packet that never completes keep nobody alive (a slowloris defence).
                if std::mem::take(&mut self.fresh) {
                    self.last_packet = tokio::time::Instant::now();
                }
                return Poll::Ready(Ok(Some(packet)));
            }
            let n = if self.buf.is_empty() && self.chunk == READ_CHUNK_MIN {
                // A quiet client: give the buffer back and wait with none, so an idle
                // connection holds no read buffer at all.
                self.buf = BytesMut::new();
                let mut probe = [0u8; READ_PROBE];
                let mut filled = tokio::io::ReadBuf::new(&mut probe);
                ready!(std::pin::Pin::new(&mut self.io).poll_read(cx, &mut filled))?;
                let n = filled.filled().len();
                self.buf.reserve((self.chunk as usize).max(n));
                self.buf.extend_from_slice(&probe[..n]);
                if n == READ_PROBE {
                    // More may be waiting: a busy client after a quiet spell.
                    self.chunk = (self.chunk * 2).min(READ_CHUNK);
                }
                n
            } else {
                self.buf.reserve(self.chunk as usize);
                let room = self.buf.capacity() - self.buf.len();
                let n = ready!(tokio_util::io::poll_read_buf(
                    std::pin::Pin::new(&mut self.io),
                    cx,
                    &mut self.buf
                ))?;
                if n >= room {
                    self.chunk = (self.chunk * 2).min(READ_CHUNK);
                } else if n < (self.chunk / 4) as usize {
                    self.chunk = (self.chunk / 2).max(READ_CHUNK_MIN);
                }
                n
            };
            if n == 0 {
                return Poll::Ready(if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::from(io::ErrorKind::UnexpectedEof).into())
                });
            }
            Metrics::add(&metrics.bytes_received, n as u64);
            Metrics::inc(&metrics.network_reads);
            self.fresh = true;
        }
    }
}

/// Payloads at least this large are written from their own buffer (vectored write) instead
/// of being copied into the batch.
const ZERO_COPY_MIN: usize = 2048;

/// Encodes packets into a batch and writes it with as few system calls as it can.
pub(crate) struct NetWriter<W> {
    io: W,
    buf: BytesMut,
    /// Buffers written from where they are (large payloads), behind the batch; boxed, as
    /// most connections never send one.
    #[allow(clippy::box_collection)] // on purpose: 8 bytes per connection, not 32
    chunks: Option<Box<VecDeque<Bytes>>>,
    /// While a batch is being written: whether it was small (see `poll_flush`).
    small: Option<bool>,
}

impl<W> NetWriter<W> {
    pub(crate) fn new(io: W) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            chunks: None,
            small: None,
        }
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> PacketWriter for NetWriter<W> {
    fn packet(&mut self, packet: &Packet, version: ProtocolVersion) -> Result<(), EncodeError> {
        packet.encode(version, &mut self.buf)
    }

    fn publish(
        &mut self,
        delivery: &Delivery,
        qos: PublishQoS,
        dup: bool,
        version: ProtocolVersion,
        alias: Option<TopicAliasUse>,
    ) -> Result<(), EncodeError> {
        let message = &delivery.message;
        if !message.shares_form(&delivery.subscription_ids, version) {
            // Per-subscriber properties: this copy has a wire form of its own.
            let mut publish =
                message.to_publish(qos, delivery.retain, dup, &delivery.subscription_ids);
            if let Some(alias) = alias {
                publish.properties.topic_alias = Some(alias.alias());
                if let TopicAliasUse::Use(_) = alias {
                    publish.topic = crate::topic::TopicName::empty();
                }
            }
            return Packet::Publish(publish).encode(version, &mut self.buf);
        }
        let with_id = qos.packet_id().is_some();
        let payload = if alias.is_none() && Message::encodes_alone(message, version, with_id) {
            let properties = version.is_v5().then_some(&message.properties);
            let flags = (dup, qos, delivery.retain);
            crate::codec::write_publish_head(
                &mut self.buf,
                flags,
                &message.topic,
                properties,
                message.payload.len(),
            )?;
            &message.payload
        } else {
            let form = message.encoded(version, with_id)?;
            match alias {
                Some(alias) => {
                    form.write_head_aliased(&mut self.buf, dup, qos, delivery.retain, alias)?
                }
                None => form.write_head(&mut self.buf, dup, qos, delivery.retain)?,
            }
        };
        if payload.len() >= ZERO_COPY_MIN {
            let chunks = self.chunks.get_or_insert_with(Box::default);
            chunks.push_back(self.buf.split().freeze());
            chunks.push_back(payload.clone());
        } else {
            self.buf.extend_from_slice(payload);
        }
        Ok(())
    }

    fn encoded(&mut self, bytes: &Bytes) -> bool {
        if bytes.len() >= ZERO_COPY_MIN {
            // Written from where it is, shared with the other subscribers' writers.
            let chunks = self.chunks.get_or_insert_with(Box::default);
            if !self.buf.is_empty() {
                chunks.push_back(self.buf.split().freeze());
            }
            chunks.push_back(bytes.clone());
        } else {
            self.buf.extend_from_slice(bytes);
        }
        true
    }

    fn pending(&self) -> usize {
        let chunks = self.chunks.iter().flat_map(|c| c.iter());
        self.buf.len() + chunks.map(Bytes::len).sum::<usize>()
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>, metrics: &Metrics) -> Poll<io::Result<()>> {
        // A small batch (a CONNACK, a PINGRESP, a quiet subscriber's message) gives its
        // buffer back once written, so an idle connection holds none; a busy writer keeps
        // its buffer from batch to batch. Decided when the batch starts to be written.
        let small = *self.small.get_or_insert_with(|| {
            self.chunks.is_none() && self.buf.len() <= WRITE_BUFFER_KEPT_FROM
        });
        let written = ready!(self.poll_write_pending(cx, metrics));
        self.small = None;
        written?;
        if small {
            self.buf = BytesMut::new();
        }
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

/// A batch at most this long frees the write buffer once written (see `NetWriter::flush`).
const WRITE_BUFFER_KEPT_FROM: usize = 512;

impl<W: AsyncWrite + Unpin + Send + 'static> NetWriter<W> {
    /// Writes the batch buffer and the chunks queued behind it.
    fn poll_write_pending(
        &mut self,
        cx: &mut Context<'_>,
        metrics: &Metrics,
    ) -> Poll<io::Result<()>> {
        // The common case, everything in the batch buffer: written from it directly, with
        // no list of slices to build.
        while self.chunks.is_none() && !self.buf.is_empty() {
            let n = ready!(std::pin::Pin::new(&mut self.io).poll_write(cx, &self.buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            Metrics::add(&metrics.bytes_sent, n as u64);
            Metrics::inc(&metrics.network_writes);
            self.buf.advance(n);
        }
        let Some(chunks) = self.chunks.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        if !self.buf.is_empty() {
            chunks.push_back(self.buf.split().freeze());
        }
        while !chunks.is_empty() {
            let slices: Vec<IoSlice<'_>> =
                chunks.iter().take(64).map(|c| IoSlice::new(c)).collect();
            let mut n = ready!(std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, &slices))?;
            drop(slices);
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            Metrics::add(&metrics.bytes_sent, n as u64);
            Metrics::inc(&metrics.network_writes);
            while n > 0 {
                let Some(front) = chunks.front_mut() else {
                    break;
                };
                if n >= front.len() {
                    n -= front.len();
                    chunks.pop_front();
                } else {
                    front.advance(n);
                    n = 0;
                }
            }
        }
        // Written: the list goes until the next large payload.
        self.chunks = None;
        Poll::Ready(Ok(()))
    }
}

/// The broker's end of an in-process client: packets arrive as values.
#[derive(Debug)]
pub(crate) struct LocalReader {
    pub(crate) rx: mpsc::Receiver<Packet>,
}

impl PacketReader for LocalReader {
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        _limits: &DecodeLimits,
        _metrics: &Metrics,
    ) -> Poll<Result<Option<Packet>, ReadError>> {
        self.rx.poll_recv(cx).map(Ok)
    }
}

/// What the broker hands an in-process client.
#[derive(Debug)]
pub(crate) enum ToClient {
    /// A control packet (boxed: most items are messages, and this keeps each item small).
    Packet(Box<Packet>),
    /// A message, still shared: the client builds what its application receives from it.
    Message(LocalMessage),
}

/// One copy of a message for an in-process client.
#[derive(Debug)]
pub(crate) struct LocalMessage {
    pub(crate) message: Arc<crate::message::Message>,
    pub(crate) qos: PublishQoS,
    pub(crate) retain: bool,
    pub(crate) dup: bool,
    pub(crate) subscription_ids: Vec<std::num::NonZeroU32>,
}

/// The broker's end of an in-process client: packets and shared messages leave as values,
/// a whole batch per channel send.
#[derive(Debug)]
pub(crate) struct LocalWriter {
    pub(crate) tx: tokio_util::sync::PollSender<Vec<ToClient>>,
    pub(crate) pending: Vec<ToClient>,
}

impl PacketWriter for LocalWriter {
    fn packet(&mut self, packet: &Packet, _version: ProtocolVersion) -> Result<(), EncodeError> {
        self.pending
            .push(ToClient::Packet(Box::new(packet.clone())));
        Ok(())
    }

    fn publish(
        &mut self,
        delivery: &Delivery,
        qos: PublishQoS,
        dup: bool,
        _version: ProtocolVersion,
        _alias: Option<TopicAliasUse>,
    ) -> Result<(), EncodeError> {
        self.pending.push(ToClient::Message(LocalMessage {
            message: Arc::clone(&delivery.message),
            qos,
            retain: delivery.retain,
            dup,
            subscription_ids: delivery.subscription_ids.clone(),
        }));
        Ok(())
    }

    fn pending(&self) -> usize {
        self.pending.len()
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>, _metrics: &Metrics) -> Poll<io::Result<()>> {
        if self.pending.is_empty() {
            return Poll::Ready(Ok(()));
        }
        // Reserved first, so the batch stays buffered if polling stops while waiting.
        let broken = |_| io::Error::from(io::ErrorKind::BrokenPipe);
        ready!(self.tx.poll_reserve(cx)).map_err(broken)?;
        let batch = std::mem::take(&mut self.pending);
        self.tx.send_item(batch).map_err(broken)?;
        Poll::Ready(Ok(()))
    }

    async fn shutdown(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::{NetWriter, PacketWriter, WRITE_BUFFER_KEPT_FROM};
    use crate::codec::{Packet, ProtocolVersion};
    use crate::metrics::Metrics;

    /// An idle connection holds no write buffer: a small batch frees it once written, a
    /// batch of a busy writer keeps it for the next one.
    #[tokio::test]
    async fn a_small_batch_gives_its_write_buffer_back() {
        let metrics = Metrics::default();
        let mut w = NetWriter::new(Vec::new());
        let v = ProtocolVersion::V311;
        w.packet(&Packet::PingResp, v).expect("encodes");
        assert!(w.buf.capacity() > 0);
        w.flush(&metrics).await.expect("writes");
        assert_eq!(w.io, [0xD0, 0x00], "the PINGRESP was written");
        assert_eq!(
            metrics.snapshot().bytes_sent,
            2,
            "counted where the caller said"
        );
        assert_eq!(w.buf.capacity(), 0, "a small batch frees its buffer");

        // Two bytes a PINGRESP: enough of them to pass the threshold.
        for _ in 0..=WRITE_BUFFER_KEPT_FROM / 2 {
            w.packet(&Packet::PingResp, v).expect("encodes");
        }
        w.flush(&metrics).await.expect("writes");
        assert_eq!(w.io.len(), 2 + 2 * (WRITE_BUFFER_KEPT_FROM / 2 + 1));
        assert!(w.buf.capacity() > 0, "a large batch keeps its buffer");
    }
}
