//! User-supplied transports: an in-memory duplex listener and a Unix socket listener written
//! here against the `Listener` trait.

mod support;

use bytes::BytesMut;
use roost::codec::{decode, Connect, DecodeLimits, Packet, ProtocolVersion, Publish, PublishQoS};
use roost::{duplex_listener, Accepted, Broker, ClientOptions, Listener, QoS};
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const V4: ProtocolVersion = ProtocolVersion::V311;

/// Speaks MQTT over any byte stream with Roost's codec.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, send: Packet) -> Packet {
    let mut out = BytesMut::new();
    send.encode(V4, &mut out).expect("encodes");
    within(stream.write_all(&out)).await.expect("writes");
    let mut buf = BytesMut::new();
    loop {
        if let Some(p) = decode(&mut buf, &DecodeLimits::new(V4)).expect("valid") {
            return p;
        }
        let n = within(stream.read_buf(&mut buf)).await.expect("reads");
        assert!(n > 0, "closed");
    }
}

#[tokio::test]
async fn in_memory_duplex_listener() {
    let (listener, connector) = duplex_listener(64 * 1024);
    let broker = Broker::builder()
        .listener("memory", listener)
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    let (app, mut inbox) = within(broker.client(ClientOptions::new("app")))
        .await
        .expect("connects");
    within(app.subscribe("pipe/#", QoS::AtMostOnce))
        .await
        .expect("subscribed");
    let mut stream = within(connector.connect()).await.expect("connects");
    let ack = exchange(
        &mut stream,
        Packet::Connect(Box::new(Connect::new(V4, "piped"))),
    )
    .await;
    assert!(matches!(ack, Packet::ConnAck(a) if a.reason_code.is_success()));
    let ping = exchange(&mut stream, Packet::PingReq).await;
    assert_eq!(ping, Packet::PingResp);
    let p = Publish::new(
        topic("pipe/x"),
        PublishQoS::AtMostOnce,
        &b"through the pipe"[..],
    );
    let mut out = BytesMut::new();
    Packet::Publish(p).encode(V4, &mut out).expect("encodes");
    within(stream.write_all(&out)).await.expect("writes");
    let got = within(inbox.recv()).await.expect("delivered");
    assert_eq!(&got.payload[..], b"through the pipe");
    broker.shutdown().await;
}

/// A Unix socket listener, written against the public trait.
struct UnixSocket(tokio::net::UnixListener);

impl Listener for UnixSocket {
    type Stream = tokio::net::UnixStream;

    /// The socket sits in this test's own temporary directory: only this machine reaches it,
    /// so anonymous clients may stay on (AnonymousAccess::Auto).
    fn local_only(&self) -> bool {
        true
    }

    async fn accept(&mut self) -> std::io::Result<Accepted<tokio::net::UnixStream>> {
        let (stream, _) = self.0.accept().await?;
        Ok(Accepted::new(stream))
    }
}

#[tokio::test]
async fn unix_socket_listener_from_the_trait() {
    let path = std::env::temp_dir().join(format!("roost-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let unix = tokio::net::UnixListener::bind(&path).expect("binds");
    let broker = Broker::builder()
        .listener("unix", UnixSocket(unix))
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    let mut stream = within(tokio::net::UnixStream::connect(&path))
        .await
        .expect("connects");
    let ack = exchange(
        &mut stream,
        Packet::Connect(Box::new(Connect::new(V4, "local"))),
    )
    .await;
    assert!(matches!(ack, Packet::ConnAck(a) if a.reason_code.is_success()));
    assert_eq!(broker.metrics().clients_connected, 1);
    broker.shutdown().await;
    let _ = std::fs::remove_file(&path);
}
