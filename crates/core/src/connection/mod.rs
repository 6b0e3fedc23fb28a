//! One client connection: the CONNECT handshake, then a reader loop that applies each packet
//! to the session, with a writer (see [`writer`]) sending what the session queues. Both run
//! in the connection's one task, side by side.
//!
//! The reader owns the protocol state of the connection (keep-alive, the will, the protocol
//! level). It never writes to the stream itself: it queues control packets in the session's
//! outbox and wakes the writer, so a client that stops reading cannot stall the reader. A
//! publisher is slowed only by flow control (see `session`), never by a write.
//!
//! Closing: any path out of the reader loop goes through [`Connection::close`]: it signals the
//! writer (which sends a v5 DISCONNECT when one is due and flushes, bounded in time), detaches
//! the session, and publishes the will unless the client disconnected normally.

mod acks;
mod aliases;
mod auth;
mod handshake;
mod local;
mod packets;
mod publish;
mod subscribe;
mod violation;
pub(crate) mod writer;

pub(crate) use local::{open_local, LocalLink};
pub(crate) use violation::Violation;

use hashbrown::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;

use crate::codec::{DecodeLimits, LastWill, ProtocolVersion, ReasonCode};
use crate::context::Context;
use crate::metrics::Metrics;
use crate::plugin::{ClientInfo, ConnectInfo, DisconnectReason};
use crate::session::{CloseReason, LinkSignals, Session, Wait};
use crate::shown::{Shown, Text};
use crate::topic::TopicName;
use crate::transport::{PacketReader, PacketWriter, ReadError};

/// Facts about the peer, for logs and plugins.
#[derive(Debug)]
pub(crate) struct PeerInfo {
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) listener: Arc<str>,
    /// TLS client certificate chain (DER), leaf first.
    pub(crate) certificates: Vec<Bytes>,
    /// The listener's own largest accepted packet, replacing `Limits::max_packet_size`.
    pub(crate) max_packet_size: Option<u32>,
    /// An in-process client of the embedding application: with no authenticator registered
    /// it is let in whatever the anonymous-access policy says (it is not a stranger).
    pub(crate) in_process: bool,
    /// The broker's own bridge link (see `bridge`): authenticated by construction as the
    /// bridge, and not subject to the authorizers (its topic rules are its access rules).
    /// Only the bridge module sets it; no peer can.
    pub(crate) internal: bool,
    /// Its place among the pending connections until it is authenticated (network only).
    pub(crate) ticket: Option<crate::admission::Ticket>,
    /// The listener's connection cap, taken once authenticated.
    pub(crate) listener_cap: Option<crate::admission::ListenerCap>,
    /// The settings this connection takes for its life (`Context::connection_settings`,
    /// read when it was accepted).
    pub(crate) settings: Arc<crate::context::Settings>,
}

impl PeerInfo {
    /// Cancelled if a newer connection evicts this one while it is pending (see
    /// `admission`); never cancelled for a connection that is not pending. Hold it only
    /// while waiting on the handshake: each token is an allocation of its own.
    pub(crate) fn evicted(&self) -> tokio_util::sync::CancellationToken {
        self.ticket
            .as_ref()
            .map(|t| t.evicted().clone())
            .unwrap_or_default()
    }
}

/// The reader side of an established connection.
pub(crate) struct Connection {
    ctx: Arc<Context>,
    /// The settings this connection started with (see `Context::connection_settings`):
    /// what its CONNACK advertised is what it is held to.
    settings: Arc<crate::context::Settings>,
    session: Arc<Session>,
    link_id: u64,
    version: ProtocolVersion,
    signals: Arc<LinkSignals>,
    limits: DecodeLimits,
    /// Keep Alive in force, in seconds (0: none); see `handshake::keep_alive_timeout`.
    keep_alive: u16,
    /// The will, re-authentication state and inbound topic aliases: boxed together, made
    /// only for a connection that has one of them (most have none).
    extras: Option<Box<Extras>>,
    /// Will Delay Interval in seconds (v5; 0 before).
    will_delay: u32,
    /// The client as plugins see it (identity updated by re-authentication).
    info: Arc<ClientInfo>,
    /// Writers to wake and sessions that asked this publisher to pause (flow control),
    /// gathered while routing what the read buffer holds.
    fanout: crate::session::Fanout,
    /// PUBLISH packets received in this run, added to the shared counter at its end (an
    /// atomic add per packet on a line every connection's reader shares costs more).
    received: u32,
    /// CONNECT had Session Expiry Interval 0, so DISCONNECT may not raise it (v5 §3.14.2.2.2).
    connect_expiry_zero: bool,
    /// Another broker's bridge (protocol level 0x83/0x84): its subscriptions never send a
    /// message back to it and keep retain flags as published.
    bridge: bool,
    /// Its places in `max_connections` and its listener's cap, held until it ends.
    _slots: crate::admission::Slots,
}

/// What few connections have, boxed together (see `Connection::extras`).
#[derive(Default)]
struct Extras {
    /// The will, published when the connection ends without a normal DISCONNECT.
    will: Option<Box<LastWill>>,
    /// What re-authentication needs, kept only when enhanced authentication is in use
    /// (v5); other connections never need it again.
    reauth: Option<Reauth>,
    /// Inbound Topic Alias mappings of this connection (MQTT-3.3.2-7: never carried over),
    /// from the client's first alias on.
    aliases: HashMap<u16, TopicName>,
}

impl Extras {
    /// The box for a connection with a will or re-authentication state, `None` for one
    /// with neither.
    fn new(will: Option<Box<LastWill>>, reauth: Option<Reauth>) -> Option<Box<Self>> {
        (will.is_some() || reauth.is_some()).then(|| {
            Box::new(Self {
                will,
                reauth,
                aliases: HashMap::new(),
            })
        })
    }
}

/// An enhanced-authentication connection's state for re-authentication (v5 §4.12.1).
struct Reauth {
    /// The method in use and its exchange.
    exchange: auth::EnhancedAuth,
    /// What the client presented at CONNECT.
    client: ConnectInfo,
}

/// How the reader loop ended.
#[derive(Debug)]
pub(crate) enum Exit {
    /// DISCONNECT from the client; `keep_will` for v5 reason 0x04.
    Disconnected { keep_will: bool },
    /// Closed by the broker (shutdown or takeover): the reason is in the link signals.
    Closed,
    /// The stream ended or failed without DISCONNECT.
    Lost,
    /// A protocol violation or malformed packet; v5 clients are told its code.
    Violation(Violation),
    /// No packet within 1.5 × Keep Alive (MQTT-3.1.2-24).
    KeepAliveTimeout,
}

/// Serves one connection from its first byte to its end, in a `conn` span (peer, listener,
/// client id) at DEBUG level. At the default level (info) no span is made: one kept for a
/// connection's whole life costs ~0.4 KiB of the subscriber's memory per connection (its
/// fields formatted and stored) and a few microseconds per connect, more than the rest of
/// an idle connection's state allows (issue 19). The connection's own events at info and
/// above carry `peer` and `client_id` themselves.
///
/// A plain function returning the future (not an `async fn`): an `async fn` would keep its
/// arguments and the block's copies of them side by side for the connection's lifetime.
pub(crate) fn serve<R: PacketReader, W: PacketWriter>(
    ctx: Arc<Context>,
    mut reader: R,
    wire: W,
    peer: PeerInfo,
) -> impl std::future::Future<Output = ()> + Send {
    let span = tracing::debug_span!("conn", peer = ?peer.addr, listener = %peer.listener, client_id = tracing::field::Empty);
    // The handshake is boxed, as is `close` below: both run once, and inline they would make
    // every connection's task, held for as long as the connection, several KiB larger.
    let start = Box::pin(async move {
        // Until authenticated, a newer connection may evict this one (see `admission`).
        let evicted = peer.evicted();
        let accepted = tokio::select! {
            r = handshake::accept(&ctx, &mut reader, wire, &peer) => r,
            // Evicted to make room: dropped at once, nothing to say.
            _ = evicted.cancelled() => return None,
        };
        match accepted {
            // Boxed: inline, the parts would keep a slot of their size in the task beside
            // the same values once they are moved out (the layout cannot overlap them).
            Some((conn, writer)) => Some(Box::new((conn, writer, reader))),
            // Refused (or failed) in the handshake: a refusing CONNACK may be on its way.
            // Lingered here, so that what this future returns is a pointer, not a reader.
            None => {
                linger(reader).await;
                None
            }
        }
    });
    let serving = async move {
        // Moved out of the box in the match arm, so that the box is freed here, not held
        // for the connection's life.
        let (mut conn, writer, mut reader) = match start.await {
            Some(parts) => *parts,
            None => return,
        };
        tracing::Span::current().record(
            "client_id",
            tracing::field::display(Text(&conn.session.client_id)),
        );
        // The connection's own `ctx`, not a copy kept beside it for the connection's life.
        let ctx = &conn.ctx;
        Metrics::inc(&ctx.metrics.clients_connected);
        ctx.policy
            .hooks
            .each(&ctx.metrics, |h| h.client_connected(&conn.info));
        // The writer runs in this same task, beside the reader: one task per connection, and
        // waking the writer is a re-poll of this task rather than scheduling another.
        let mut writer = std::pin::pin!(writer.run());
        let (exit, wire) = {
            let read = conn.read_loop(&mut reader);
            tokio::pin!(read);
            // The writer ends first only once the connection is closing (taken over, shut
            // down, or a write failed); the reader then sees the close signal. Boxed while
            // the reader finishes, to keep this future small.
            match first_to_end(read.as_mut(), writer.as_mut()).await {
                Err(exit) => (exit, None),
                Ok(wire) => (read.await, Some(wire)),
            }
        };
        Box::pin(conn.close(exit, writer, wire)).await;
        // The last packet (a DISCONNECT with its reason) is out and the write side shut:
        // read what the client still sends for a moment, so that closing does not reset
        // the connection before the client could read it.
        linger(reader).await;
    };
    InSpan {
        span: (!span.is_disabled()).then(|| Box::new(span)),
        inner: serving,
    }
}

/// Polls the writer's and the reader's futures (both in the connection's task) until one
/// ends: `Err` with the reader's exit, or `Ok` with the writer's wire. Both are polled on each
/// poll, the writer first: it takes little of the task's budget (a few writes per batch) and
/// so cannot starve the reader, while a reader with a busy client could use it all up and
/// hold back the acknowledgements its client waits for.
fn first_to_end<'a, A: Future, B: Future>(
    mut read: std::pin::Pin<&'a mut A>,
    mut writer: std::pin::Pin<&'a mut B>,
) -> impl Future<Output = Result<Box<B::Output>, A::Output>> + 'a {
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(wire) = writer.as_mut().poll(cx) {
            return Poll::Ready(Ok(Box::new(wire)));
        }
        read.as_mut().poll(cx).map(Err)
    })
}

pin_project_lite::pin_project! {
    /// A connection's future, entering its `conn` span on each poll when that span is
    /// enabled (`tracing::Instrumented` would keep a disabled span's 40 bytes in every
    /// connection's task; this keeps a pointer).
    struct InSpan<F> {
        span: Option<Box<tracing::Span>>,
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for InSpan<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.as_ref().map(|span| span.enter());
        this.inner.poll(cx)
    }
}

/// Reads and drops what the client still sends, for at most `CLOSE_LINGER`. Boxed, with the
/// reader moved in: it runs once, at the end, and inline its state would take room in every
/// connection's task for the connection's whole life.
fn linger<R: PacketReader>(
    mut reader: R,
) -> std::pin::Pin<Box<impl std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        let _ = tokio::time::timeout(writer::CLOSE_LINGER, reader.discard()).await;
    })
}

impl Connection {
    /// Reads and applies packets until the connection ends. A plain function returning the
    /// future, for the reason given at `serve`.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn read_loop<'a, R: PacketReader>(
        &'a mut self,
        reader: &'a mut R,
    ) -> impl Future<Output = Exit> + Send + 'a {
        async move {
            // MQTT-3.1.2-24: one timer for the connection, re-armed only when it fires, rather
            // than a timer per packet; it checks the time of the last packet.
            let mut keep_alive = handshake::keep_alive_timeout(self.keep_alive)
                .map(|limit| Box::pin(tokio::time::sleep(limit)));
            let mut last_packet = tokio::time::Instant::now();
            // A packet that is already buffered is read first: the close flag and the timer are
            // looked at when the reader would wait, and every 32 packets.
            let mut packets = 0u32;
            loop {
                packets = packets.wrapping_add(1);
                if packets.is_multiple_of(32) && self.signals.is_closed() {
                    return Exit::Closed;
                }
                let mut waited = false;
                // Most packets of a QoS 1/2 exchange: no `Packet` is made for them.
                if !self.on_short_ack(reader) {
                    let limits = (&self.limits, &*self.ctx.metrics);
                    let next = next_step(reader, limits, &self.signals, &mut keep_alive);
                    // Matched as the await's value, not kept in a local: a local would keep
                    // a packet's size in this future while the packet's handling waits.
                    let result = match next.await {
                        Step::Read(r) => r,
                        Step::Closed => return Exit::Closed,
                        Step::Timer => {
                            let last = reader
                                .last_packet()
                                .map_or(last_packet, |t| t.max(last_packet));
                            if self.keep_alive_expired(&mut keep_alive, last) {
                                return Exit::KeepAliveTimeout;
                            }
                            continue;
                        }
                    };
                    // Taken apart in a function: a match here would keep the whole result
                    // (a packet's size) in this future while the packet's handling waits.
                    let packet = match packet_or_exit(result) {
                        Ok(packet) => packet,
                        Err(exit) => return exit,
                    };
                    match self.handle(packet, reader.last_packet()) {
                        Ok(None) => {}
                        Ok(Some(later)) => {
                            waited = true;
                            if let Err(exit) = later.await {
                                return exit;
                            }
                        }
                        Err(exit) => return exit,
                    }
                }
                // Writers are woken once the buffered packets are routed (at most 256 at a
                // time), not per message: see `session::Fanout`.
                if (self.received > 0 || self.fanout.has_work())
                    && (packets.is_multiple_of(256) || !reader.holds_packet())
                {
                    self.end_run();
                }
                if self.fanout.is_congested() {
                    waited = true;
                    // Boxed: pauses are rare, and inline the wait would enlarge every task.
                    if let Err(exit) = Box::pin(self.flow_control()).await {
                        return exit;
                    }
                }
                if keep_alive.is_some() && (waited || reader.last_packet().is_none()) {
                    // After a wait (for a plugin, storage or a paused subscriber): that time is
                    // not the client's silence. A reader that records when bytes arrive needs
                    // no clock reading per packet otherwise.
                    last_packet = tokio::time::Instant::now();
                }
            }
        }
    }

    /// When the keep-alive timer fires: whether the client has been silent for longer than
    /// the limit since `last` (its last packet); if not, the timer is re-armed for then.
    fn keep_alive_expired(
        &self,
        timer: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
        last: tokio::time::Instant,
    ) -> bool {
        let (Some(limit), Some(timer)) = (handshake::keep_alive_timeout(self.keep_alive), timer)
        else {
            return false;
        };
        let due = last + limit;
        if tokio::time::Instant::now() >= due {
            return true;
        }
        timer.as_mut().reset(due);
        false
    }

    /// Ends a run of packets: queues what routing held back, wakes the writers, counts.
    fn end_run(&mut self) {
        crate::router::settle(&mut self.fanout, self.ctx.routing());
        Metrics::add(
            &self.ctx.metrics.messages_received,
            u64::from(std::mem::take(&mut self.received)),
        );
    }

    /// Stops reading until the sessions this connection's last PUBLISH congested have
    /// drained (bounded by `Limits::flow_control_pause`). Never waits for its own session.
    async fn flow_control(&mut self) -> Result<(), Exit> {
        use std::sync::atomic::Ordering;
        let limits = &self.settings.limits;
        let threshold = limits.flow_control_queue;
        let deadline = tokio::time::Instant::now() + limits.flow_control_pause;
        // The writers this reader would wait for must be running.
        self.end_run();
        let congested = self.fanout.take_congested();
        // SeqCst on both sides (store here, load in `wait_drained`): of two readers pausing
        // for each other at once, at least one sees the other paused and does not wait.
        self.signals.paused.store(true, Ordering::SeqCst);
        let mut result = Ok(());
        for session in &congested {
            if Arc::ptr_eq(session, &self.session) {
                continue;
            }
            let wait = tokio::select! {
                biased;
                _ = std::future::poll_fn(|cx| self.signals.closing(cx)) => {
                    result = Err(Exit::Closed);
                    break;
                }
                wait = session.wait_drained(threshold, deadline) => wait,
            };
            let metrics = &self.ctx.metrics;
            match wait {
                Wait::NotNeeded => {}
                Wait::Drained => Metrics::inc(&metrics.flow_control_pauses),
                Wait::TimedOut => {
                    Metrics::inc(&metrics.flow_control_pauses);
                    Metrics::inc(&metrics.flow_control_timeouts);
                    tracing::debug!(client_id = %session.client_id, "subscriber did not drain in time: marked slow");
                }
            }
        }
        self.signals.paused.store(false, Ordering::SeqCst);
        // Keep the allocation for the next time.
        self.fanout.keep_congested(congested);
        result
    }

    /// Ends the connection: goodbye, detach, will, and only then the end of the stream.
    async fn close<W: PacketWriter>(
        mut self,
        exit: Exit,
        writer: std::pin::Pin<&mut impl std::future::Future<Output = W>>,
        wire: Option<Box<W>>,
    ) {
        // What the last packets routed is sent before anything here waits.
        self.end_run();
        let (reason, publish_will) = match &exit {
            Exit::Disconnected { keep_will } => (CloseReason::Silent, *keep_will),
            Exit::Closed => (CloseReason::Shutdown, true),
            Exit::Lost => (CloseReason::Silent, true),
            Exit::Violation(v) => {
                tracing::info!(peer = %Shown(self.info.peer), client_id = %Text(&self.session.client_id), rule = v.rule(), code = %v.reason_code(), "protocol violation: connection closed");
                self.ctx.metrics.protocol_error(v.rule());
                (CloseReason::Disconnect(v.reason_code()), true)
            }
            Exit::KeepAliveTimeout => (CloseReason::Disconnect(ReasonCode::KeepAliveTimeout), true),
        };
        tracing::debug!(?exit, "connection closing");
        let hook_reason = match &exit {
            Exit::Disconnected { keep_will } => DisconnectReason::Client(if *keep_will {
                ReasonCode::DisconnectWithWillMessage
            } else {
                ReasonCode::Success
            }),
            Exit::Closed => DisconnectReason::Server(match self.signals.reason() {
                CloseReason::Disconnect(code) => code,
                _ => ReasonCode::ServerShuttingDown,
            }),
            Exit::Lost => DisconnectReason::Lost,
            Exit::Violation(v) => DisconnectReason::Server(v.reason_code()),
            Exit::KeepAliveTimeout => DisconnectReason::KeepAliveTimeout,
        };
        let info = Arc::clone(&self.info);
        let ctx = Arc::clone(&self.ctx);
        let close_flush = self.settings.limits.close_flush_timeout;
        self.signals.close(reason);
        let wire = match wire {
            Some(wire) => *wire,
            None => writer.await,
        };
        let will = self.extras.and_then(|e| e.will).filter(|_| publish_will);
        let due = ctx.sessions.detach(
            &self.session,
            self.link_id,
            will,
            self.will_delay,
            &ctx.router,
            &ctx.journal,
        );
        if let Some(due) = due {
            crate::pipeline::publish_will(&ctx, due);
        }
        ctx.policy
            .hooks
            .each(&ctx.metrics, |h| h.client_disconnected(&info, hook_reason));
        let mut wire = wire;
        let _ = tokio::time::timeout(close_flush, wire.shutdown()).await;
        Metrics::dec(&ctx.metrics.clients_connected);
    }
}

/// The next packet, the close signal or the keep-alive timer, in that order, in one poll
/// function: the task holds no future of its own for any of them while the connection
/// waits (issue 19).
fn next_step<'a, R: PacketReader>(
    reader: &'a mut R,
    (limits, metrics): (&'a DecodeLimits, &'a Metrics),
    signals: &'a LinkSignals,
    keep_alive: &'a mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
) -> impl Future<Output = Step> + Send + 'a {
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(r) = reader.poll_read(cx, limits, metrics) {
            return Poll::Ready(Step::Read(r));
        }
        if signals.closing(cx).is_ready() {
            return Poll::Ready(Step::Closed);
        }
        match keep_alive.as_mut() {
            Some(timer) => timer.as_mut().poll(cx).map(|()| Step::Timer),
            None => Poll::Pending,
        }
    })
}

/// What woke the reader loop. A value handed out of a poll and matched at once, never
/// kept, so its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Step {
    Read(Result<Option<crate::codec::Packet>, ReadError>),
    Closed,
    Timer,
}

/// The packet a read produced, or why the connection ends.
fn packet_or_exit(
    result: Result<Option<crate::codec::Packet>, ReadError>,
) -> Result<crate::codec::Packet, Exit> {
    match result {
        Ok(Some(packet)) => Ok(packet),
        Ok(None) => Err(Exit::Lost),
        Err(ReadError::Io(e)) => {
            tracing::debug!(error = %e, "read failed");
            Err(Exit::Lost)
        }
        Err(ReadError::Decode(e)) => {
            tracing::debug!(error = %e, "malformed packet");
            Err(Exit::Violation(Violation::Malformed(e)))
        }
    }
}
