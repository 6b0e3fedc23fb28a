//! User-supplied transports: anything that yields byte streams can be a listener (a Unix
//! socket, QUIC streams, an in-memory pipe for tests).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::sync::mpsc;

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

/// The byte stream of a listener whose type is erased.
pub(crate) trait AnyStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> AnyStream for T {}

/// What an erased listener accepts next.
type AcceptFuture<'a> =
    Pin<Box<dyn Future<Output = io::Result<Accepted<BoxedStream>>> + Send + 'a>>;

/// A boxed byte stream.
pub(crate) type BoxedStream = Box<dyn AnyStream>;

/// A listener of any type, as the builder keeps the application's listeners until a
/// broker starts with them. It is a [`Listener`] itself, whose streams are boxed.
pub(crate) struct ErasedListener(Box<dyn Erased>);

trait Erased: Send {
    fn accept(&mut self) -> AcceptFuture<'_>;
}

impl<L: Listener> Erased for L {
    fn accept(&mut self) -> AcceptFuture<'_> {
        Box::pin(async move {
            let accepted = Listener::accept(self).await?;
            Ok(Accepted {
                stream: Box::new(accepted.stream) as BoxedStream,
                peer: accepted.peer,
                certificates: accepted.certificates,
            })
        })
    }
}

impl ErasedListener {
    /// Erases `listener`'s type.
    pub(crate) fn new(listener: impl Listener) -> Self {
        ErasedListener(Box::new(listener))
    }
}

impl Listener for ErasedListener {
    type Stream = BoxedStream;

    async fn accept(&mut self) -> io::Result<Accepted<BoxedStream>> {
        self.0.accept().await
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
