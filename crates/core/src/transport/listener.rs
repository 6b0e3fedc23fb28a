//! User-supplied transports: anything that yields byte streams can be a listener (a Unix
//! socket, QUIC streams, an in-memory pipe for tests).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::sync::mpsc;

use crate::broker::Shared;

/// A connection a [`Listener`] accepted.
#[derive(Debug)]
pub struct Accepted<S> {
    /// Its byte stream.
    pub stream: S,
    /// The peer's address, if it has one.
    pub peer: Option<SocketAddr>,
    /// The peer's certificate chain (DER, leaf first), if the transport authenticated it.
    pub certificates: Vec<Bytes>,
}

impl<S> Accepted<S> {
    /// A connection with no address and no certificates.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            peer: None,
            certificates: Vec::new(),
        }
    }
}

/// A source of connections, registered with
/// [`BrokerBuilder::listener`](crate::BrokerBuilder::listener).
///
/// `accept` should return as soon as a connection exists: the broker calls it in a loop and
/// serves each connection in its own task. Any slow handshake of your transport belongs in
/// the stream's first reads, not in `accept`.
pub trait Listener: Send + 'static {
    /// The byte stream of one connection.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Waits for the next connection. An error is logged and the loop goes on (after a short
    /// pause); to stop serving, return a pending future.
    fn accept(&mut self) -> impl Future<Output = io::Result<Accepted<Self::Stream>>> + Send;

    /// True if every connection comes from inside this process or machine and no stranger
    /// can reach it (an in-memory pipe; a Unix socket only its owner may open). Default
    /// false: a listener the broker knows nothing about turns
    /// [`AnonymousAccess::Auto`](crate::AnonymousAccess::Auto) off.
    fn local_only(&self) -> bool {
        false
    }
}

/// A listener with its type erased, run by the broker.
pub(crate) trait ErasedListener: Send {
    fn run(
        self: Box<Self>,
        shared: Arc<Shared>,
        name: Arc<str>,
        options: crate::broker::ListenerOptions,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

impl<L: Listener> ErasedListener for L {
    fn run(
        self: Box<Self>,
        shared: Arc<Shared>,
        name: Arc<str>,
        options: crate::broker::ListenerOptions,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(crate::broker::custom_accept_loop(
            shared, *self, name, options,
        ))
    }
}

/// An in-memory listener: [`DuplexConnector::connect`] gives the client end of a pipe whose
/// other end the broker serves. For tests and for embedding without sockets at the byte
/// level (the in-process [`Client`](crate::Client) is faster when packets are enough).
#[derive(Debug)]
pub struct DuplexListener {
    rx: mpsc::Receiver<DuplexStream>,
}

/// Makes connections to a [`DuplexListener`].
#[derive(Debug, Clone)]
pub struct DuplexConnector {
    tx: mpsc::Sender<DuplexStream>,
    buffer: usize,
}

/// A connected pair: a listener for the broker and a connector for clients. `buffer` is the
/// pipe's capacity in bytes in each direction.
pub fn duplex_listener(buffer: usize) -> (DuplexListener, DuplexConnector) {
    let (tx, rx) = mpsc::channel(64);
    (DuplexListener { rx }, DuplexConnector { tx, buffer })
}

impl DuplexConnector {
    /// Opens a connection; the returned stream is the client's end.
    pub async fn connect(&self) -> io::Result<DuplexStream> {
        let (client, server) = tokio::io::duplex(self.buffer);
        self.tx
            .send(server)
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
        Ok(client)
    }
}

impl Listener for DuplexListener {
    type Stream = DuplexStream;

    /// In-memory pipes reach only code in this process.
    fn local_only(&self) -> bool {
        true
    }

    async fn accept(&mut self) -> io::Result<Accepted<DuplexStream>> {
        match self.rx.recv().await {
            Some(stream) => Ok(Accepted::new(stream)),
            // Every connector is gone: no more connections will come.
            None => std::future::pending().await,
        }
    }
}
