//! The one accept path: every listener, the broker's own TCP ones and the application's,
//! goes through the same loop, with the same options (connection cap, packet size, PROXY
//! header, name) and the same steps for each connection: admission as a pending
//! connection, the PROXY header if required, the TLS and WebSocket upgrades its kind asks
//! for, then the MQTT connection.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::admission::ListenerCap;
use crate::connection::{self, PeerInfo};
use crate::context::Context;
use crate::metrics::Metrics;
use crate::shown::Shown;
use crate::transport::listener::{Accepted, BoxedStream, Listener};
use crate::transport::proxy;
#[cfg(feature = "tls")]
use crate::transport::tls::TlsConfig;
#[cfg(feature = "websocket")]
use crate::transport::ws;
use crate::transport::{NetReader, NetWriter};

/// What the per-listener setters of the builder set, for a network listener or one of the
/// application's own alike.
#[derive(Clone, Debug, Default)]
pub(crate) struct ListenerOptions {
    /// A PROXY protocol header is required before the connection's own bytes.
    pub(crate) proxy: bool,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_packet_size: Option<u32>,
}

impl ListenerOptions {
    /// The listener's connection cap, counted across its connections.
    fn cap(&self) -> Option<ListenerCap> {
        self.max_connections.map(|max| ListenerCap {
            open: Arc::new(AtomicUsize::new(0)),
            max,
        })
    }
}

/// The handshakes a listener's connections go through before MQTT.
#[derive(Clone)]
pub(crate) enum Upgrade {
    /// None: MQTT from the first byte (after a PROXY header, if required).
    Plain,
    /// TLS with this configuration.
    #[cfg(feature = "tls")]
    Tls(Arc<TlsConfig>),
    /// WebSocket at this path.
    #[cfg(feature = "websocket")]
    Ws(String),
    /// TLS, then WebSocket at this path.
    #[cfg(all(feature = "tls", feature = "websocket"))]
    Wss(Arc<TlsConfig>, String),
}

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

impl Upgrade {
    /// How logs name a listener of this kind.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Upgrade::Plain => "tcp",
            #[cfg(feature = "tls")]
            Upgrade::Tls(_) => "tls",
            #[cfg(feature = "websocket")]
            Upgrade::Ws(_) => "ws",
            #[cfg(all(feature = "tls", feature = "websocket"))]
            Upgrade::Wss(..) => "wss",
        }
    }

    /// True if clients are asked for certificates.
    pub(crate) fn asks_client_certificates(&self) -> bool {
        match self {
            #[cfg(feature = "tls")]
            Upgrade::Tls(t) => t.asks_client_certificates(),
            #[cfg(all(feature = "tls", feature = "websocket"))]
            Upgrade::Wss(t, _) => t.asks_client_certificates(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// A listener ready to serve: its connections, its name, its options, its handshakes.
pub(crate) struct Served<L> {
    pub(crate) listener: L,
    pub(crate) name: Arc<str>,
    pub(crate) options: ListenerOptions,
    pub(crate) upgrade: Upgrade,
}

/// A bound TCP socket as a [`Listener`]: Nagle off on every connection.
pub(crate) struct Tcp(pub(crate) TcpListener);

impl Listener for Tcp {
    type Stream = TcpStream;

    async fn accept(&mut self) -> std::io::Result<Accepted<TcpStream>> {
        let (stream, addr) = self.0.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(Accepted {
            stream,
            peer: Some(addr),
            certificates: Vec::new(),
        })
    }
}

/// A stream the loop can serve: split into halves that the reader and the writer own.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin + Sized + 'static {
    /// The reading half.
    type Read: AsyncRead + Send + Unpin + 'static;
    /// The writing half.
    type Write: AsyncWrite + Send + Unpin + 'static;
    /// Splits the stream.
    fn halves(self) -> (Self::Read, Self::Write);
}

impl Stream for TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;

    fn halves(self) -> (Self::Read, Self::Write) {
        // Owned halves: no lock between the reader and the writer.
        self.into_split()
    }
}

impl Stream for BoxedStream {
    type Read = tokio::io::ReadHalf<BoxedStream>;
    type Write = tokio::io::WriteHalf<BoxedStream>;

    fn halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

/// Accepts connections until shutdown and serves each in a task of its own.
pub(crate) async fn accept_loop<L>(ctx: Arc<Context>, served: Served<L>)
where
    L: Listener,
    L::Stream: Stream,
{
    let Served {
        mut listener,
        name,
        options,
        upgrade,
    } = served;
    let cap = options.cap();
    loop {
        let accepted = tokio::select! {
            _ = ctx.lifecycle.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let accepted = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly, keep serving.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::select! {
                    _ = ctx.lifecycle.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        Metrics::inc(&ctx.metrics.connections_total);
        // Pending until authenticated (see `admission`). Behind the PROXY protocol every
        // socket comes from the balancer: counted under the client's address once the
        // header names it.
        let source = accepted.peer.filter(|_| !options.proxy).map(|a| a.ip());
        let ticket = ctx.lifecycle.admission.admit(source, &ctx.settings.limits);
        let peer = PeerInfo {
            addr: accepted.peer,
            listener: Arc::clone(&name),
            certificates: accepted.certificates,
            max_packet_size: options.max_packet_size,
            in_process: false,
            internal: false,
            ticket: Some(ticket),
            listener_cap: cap.clone(),
            settings: ctx.connection_settings(),
        };
        let conn_ctx = Arc::clone(&ctx);
        let stream = accepted.stream;
        let proxy = options.proxy;
        let tracker = &ctx.lifecycle.tracker;
        match &upgrade {
            // Boxed (by `serve_plain`), this one too: a task's cell is aligned to 128 bytes,
            // so an inline future rounds up to the next 128 (~110 bytes per connection on
            // average), while a box holds just its size.
            Upgrade::Plain => tracker.spawn(serve_plain(conn_ctx, stream, peer, proxy)),
            // Boxed: the TLS and WebSocket paths are larger futures.
            #[allow(unreachable_patterns)]
            other => tracker.spawn(Box::pin(serve_upgraded(
                conn_ctx,
                stream,
                other.clone(),
                peer,
                proxy,
            ))),
        };
    }
}

/// A connection with no handshake before MQTT, from its first byte to its end. Without the
/// PROXY protocol (the default) the task holds the connection's own future and nothing
/// beside it (see `serve_stream`); with it, the header is read first.
fn serve_plain<S: Stream>(
    ctx: Arc<Context>,
    stream: S,
    peer: PeerInfo,
    proxy: bool,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    if !proxy {
        return Box::pin(serve_stream(ctx, stream, peer));
    }
    Box::pin(async move {
        let (mut stream, mut peer) = (stream, peer);
        if proxy_header(&ctx, &mut stream, &mut peer).await {
            serve_stream(ctx, stream, peer).await;
        }
    })
}

/// The connection over a stream's two halves: the task every plain TCP client keeps while
/// connected, so kept small (see the size test).
fn serve_stream<S: Stream>(
    ctx: Arc<Context>,
    stream: S,
    peer: PeerInfo,
) -> impl std::future::Future<Output = ()> + Send {
    let (read, write) = stream.halves();
    serve(ctx, read, write, peer)
}

/// Serves the MQTT connection over its two halves. A plain function returning the future,
/// so that it holds the connection's future alone, not its arguments beside it.
fn serve<R, W>(
    ctx: Arc<Context>,
    read: R,
    write: W,
    peer: PeerInfo,
) -> impl std::future::Future<Output = ()> + Send
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    connection::serve(ctx, NetReader::new(read), NetWriter::new(write), peer)
}

/// Reads the PROXY header if required, runs the TLS or WebSocket handshakes (under the
/// handshake deadline), then serves the connection over the upgraded stream.
async fn serve_upgraded<S: Stream>(
    ctx: Arc<Context>,
    mut stream: S,
    upgrade: Upgrade,
    mut peer: PeerInfo,
    proxy: bool,
) {
    if proxy && !proxy_header(&ctx, &mut stream, &mut peer).await {
        return;
    }
    let timeout = peer.settings.limits.handshake_timeout;
    let addr = peer.addr;
    let max_packet = peer
        .max_packet_size
        .unwrap_or(peer.settings.limits.max_packet_size);
    let upgraded = {
        // Scoped: the tokens are dropped before the connection is served (kept, their
        // allocations would live as long as the connection).
        let stop = ctx.lifecycle.shutdown.clone();
        let evicted = peer.evicted();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = evicted.cancelled() => return,
            r = tokio::time::timeout(timeout, handshakes(stream, &upgrade, peer, max_packet)) => r,
        }
    };
    match upgraded {
        Ok(Ok(Upgraded::Plain(s, peer))) => split_and_serve(ctx, s, peer).await,
        #[cfg(feature = "tls")]
        Ok(Ok(Upgraded::Tls(s, peer))) => split_and_serve(ctx, *s, peer).await,
        #[cfg(feature = "websocket")]
        Ok(Ok(Upgraded::Ws(s, peer))) => split_and_serve(ctx, *s, peer).await,
        #[cfg(all(feature = "tls", feature = "websocket"))]
        Ok(Ok(Upgraded::Wss(s, peer))) => split_and_serve(ctx, *s, peer).await,
        Ok(Err(e)) => match tls_failure(&e) {
            // A refused TLS handshake is what an operator setting up mTLS needs to see:
            // at info, once a minute per address (a client can retry in a loop).
            Some(reason) if addr.is_none_or(|a| ctx.lifecycle.tls_log.allow(a.ip())) => {
                tracing::info!(peer = %Shown(addr), %reason, "TLS handshake refused{}", tls_hint(&reason));
            }
            _ => tracing::debug!(peer = %Shown(addr), error = %e, "handshake failed"),
        },
        Err(_) => tracing::debug!(peer = %Shown(addr), "handshake timed out"),
    }
}

/// Serves a connection over any byte stream, split with a lock between the halves.
async fn split_and_serve<S>(ctx: Arc<Context>, stream: S, peer: PeerInfo)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (read, write) = tokio::io::split(stream);
    serve(ctx, read, write, peer).await;
}

/// Reads the PROXY protocol header a listener requires, within the handshake timeout; the
/// client address it names becomes the peer's. False if the connection is to be dropped
/// (no valid header in time, evicted, or shutting down).
async fn proxy_header<S: AsyncRead + Unpin>(
    ctx: &Context,
    stream: &mut S,
    peer: &mut PeerInfo,
) -> bool {
    let timeout = peer.settings.limits.handshake_timeout;
    // Only while the header is read: a token kept in the connection's task would keep its
    // allocation for the connection's whole life.
    let evicted = peer.evicted();
    let read = tokio::time::timeout(timeout, proxy::read_header(stream));
    let header = tokio::select! {
        _ = ctx.lifecycle.shutdown.cancelled() => return false,
        _ = evicted.cancelled() => return false,
        r = read => r,
    };
    match header {
        Ok(Ok(Some(client))) => {
            if let Some(ticket) = &peer.ticket {
                ticket.rekey(client.ip(), &ctx.settings.limits, &ctx.metrics);
            }
            peer.addr = Some(client);
            true
        }
        Ok(Ok(None)) => true,
        Ok(Err(e)) => {
            tracing::debug!(peer = ?peer.addr, error = %e, "PROXY header rejected");
            false
        }
        Err(_) => {
            tracing::debug!(peer = ?peer.addr, "PROXY header timed out");
            false
        }
    }
}

#[cfg(feature = "tls")]
type TlsStream<S> = tokio_rustls::server::TlsStream<S>;

/// A connection after its handshakes.
enum Upgraded<S> {
    Plain(S, PeerInfo),
    #[cfg(feature = "tls")]
    Tls(Box<TlsStream<S>>, PeerInfo),
    #[cfg(feature = "websocket")]
    Ws(Box<ws::WsStream<S>>, PeerInfo),
    #[cfg(all(feature = "tls", feature = "websocket"))]
    Wss(Box<ws::WsStream<TlsStream<S>>>, PeerInfo),
}

/// The TLS error behind a failed handshake, if it was one (rather than a WebSocket or
/// I/O failure).
fn tls_failure(e: &std::io::Error) -> Option<String> {
    #[cfg(feature = "tls")]
    return e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<tokio_rustls::rustls::Error>())
        .map(ToString::to_string);
    #[cfg(not(feature = "tls"))]
    {
        let _ = e;
        None
    }
}

/// What to do about a TLS refusal, where the reason alone does not say.
fn tls_hint(reason: &str) -> &'static str {
    if reason.contains("UnsupportedCertVersion") {
        // `openssl x509 -req` without `-extfile` makes X.509 v1 certificates, which
        // rustls refuses.
        ": the client certificate is X.509 v1; make a v3 one (openssl x509 -req ... -extfile \
         with extendedKeyUsage=clientAuth)"
    } else if reason.contains("UnknownIssuer") {
        ": the client certificate is not signed by the --client-ca"
    } else {
        ""
    }
}

/// The TLS handshake, recording the client's certificate chain.
#[cfg(feature = "tls")]
async fn tls_handshake<S: Stream>(
    stream: S,
    tls: &TlsConfig,
    peer: &mut PeerInfo,
) -> std::io::Result<TlsStream<S>> {
    let s = tls.acceptor().accept(stream).await?;
    peer.certificates = s
        .get_ref()
        .1
        .peer_certificates()
        .map(|chain| {
            chain
                .iter()
                .map(|c| bytes::Bytes::copy_from_slice(c.as_ref()))
                .collect()
        })
        .unwrap_or_default();
    Ok(s)
}

/// The handshakes `upgrade` asks for.
async fn handshakes<S: Stream>(
    stream: S,
    upgrade: &Upgrade,
    #[allow(unused_mut)] mut peer: PeerInfo,
    max_packet: u32,
) -> std::io::Result<Upgraded<S>> {
    let _ = max_packet;
    Ok(match upgrade {
        Upgrade::Plain => Upgraded::Plain(stream, peer),
        #[cfg(feature = "tls")]
        Upgrade::Tls(tls) => {
            let s = tls_handshake(stream, tls, &mut peer).await?;
            Upgraded::Tls(Box::new(s), peer)
        }
        #[cfg(feature = "websocket")]
        Upgrade::Ws(path) => {
            Upgraded::Ws(Box::new(ws::accept(stream, path, max_packet).await?), peer)
        }
        #[cfg(all(feature = "tls", feature = "websocket"))]
        Upgrade::Wss(tls, path) => {
            let s = tls_handshake(stream, tls, &mut peer).await?;
            Upgraded::Wss(Box::new(ws::accept(s, path, max_packet).await?), peer)
        }
    })
}

/// The address a network listener is bound to, for its default name.
pub(crate) fn default_name(upgrade: &Upgrade, local: SocketAddr) -> Arc<str> {
    format!("{}:{local}", upgrade.label()).into()
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// Issue 14 §6: the task of a plain TCP connection (what each connected client costs
    /// while idle) stays small. The PROXY header, the handshake, the TLS/WebSocket upgrade
    /// and the close path are boxed inside it so that they do not count here; this turns
    /// "boxed to keep the task small" into something a change cannot undo unnoticed.
    #[tokio::test]
    async fn a_tcp_connection_task_stays_small() {
        let ctx = Arc::new(crate::Broker::builder().into_context());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let client = TcpStream::connect(listener.local_addr().expect("address"));
        let (accepted, _client) = tokio::join!(listener.accept(), client);
        let (stream, addr) = accepted.expect("accepts");
        let peer = PeerInfo {
            addr: Some(addr),
            listener: Arc::from("tcp:test"),
            certificates: Vec::new(),
            max_packet_size: None,
            in_process: false,
            internal: false,
            ticket: None,
            listener_cap: None,
            settings: ctx.connection_settings(),
        };
        // What the accept loop spawns (boxed) for each connection without PROXY protocol.
        let task = serve_stream(ctx, stream, peer);
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= CONNECTION_TASK_BUDGET,
            "a TCP connection's task is {size} bytes, over its budget of {CONNECTION_TASK_BUDGET}: \
             box what a change added inline (reader {}, writer {}, peer {} bytes)",
            std::mem::size_of::<NetReader<tokio::net::tcp::OwnedReadHalf>>(),
            std::mem::size_of::<NetWriter<tokio::net::tcp::OwnedWriteHalf>>(),
            std::mem::size_of::<PeerInfo>(),
        );
    }

    /// Bytes a plain TCP connection's task may take: the whole future the accept loop
    /// spawns (boxed). Issue 19: 6,288 at first, with a 4 KiB read buffer of the closing
    /// path and the handshake's result inline; 1,408 before the rarely used parts of
    /// `Connection` and `Writer` were boxed; 1,256 before the reader and the writer stopped
    /// keeping a wait for the close signal each (`LinkSignals`) and the writer's gathered
    /// events went into a box; 1,024 before the reader, the writer and their waits became
    /// poll functions over flags (no read, flush or `Notify` future kept), the disabled span
    /// a null box and the large-payload list a box; 640 before the metrics were passed to
    /// the reader and the writer instead of kept by each, the connection's rarely used parts
    /// shared one box (will, re-authentication, inbound aliases) and the writer's another
    /// (outbound aliases, gathered events), and the task held the connection's future alone
    /// (no PROXY stage around it). 512 is the allocator's size class (mimalloc, the broker
    /// program's): one byte more and every connection takes 640. Growing it needs a reason.
    const CONNECTION_TASK_BUDGET: usize = 512;
}
