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

/// Issue 14 §4: every per-listener option applies to a listener of your own as it does to
/// a network one (packet size, connection cap, PROXY header, name).
#[tokio::test]
async fn per_listener_options_apply_to_a_custom_listener() {
    let (listener, connector) = duplex_listener(64 * 1024);
    let broker = Broker::builder()
        .listener("memory", listener)
        .listener_max_packet_size(300)
        .listener_max_connections(1)
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    // MQTT-3.2.2-... (v5 Maximum Packet Size): the listener's own, in CONNACK.
    let mut first = within(connector.connect()).await.expect("connects");
    let mut c = Connect::new(ProtocolVersion::V5, "first");
    c.keep_alive = 0;
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(c))
        .encode(ProtocolVersion::V5, &mut out)
        .expect("encodes");
    within(first.write_all(&out)).await.expect("writes");
    let mut buf = BytesMut::new();
    let ack = loop {
        if let Some(p) = decode(&mut buf, &DecodeLimits::new(ProtocolVersion::V5)).expect("valid") {
            break p;
        }
        let n = within(first.read_buf(&mut buf)).await.expect("reads");
        assert!(n > 0, "closed");
    };
    let Packet::ConnAck(ack) = ack else {
        panic!("expected CONNACK, got {ack:?}")
    };
    assert_eq!(
        ack.properties.maximum_packet_size.map(|n| n.get()),
        Some(300)
    );
    // The cap of one connection: a second one is refused.
    let mut second = within(connector.connect()).await.expect("connects");
    let refused = exchange(
        &mut second,
        Packet::Connect(Box::new(Connect::new(V4, "second"))),
    )
    .await;
    assert!(
        matches!(&refused, Packet::ConnAck(a) if !a.reason_code.is_success()),
        "{refused:?}"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_custom_listener_can_require_the_proxy_protocol() {
    let (listener, connector) = duplex_listener(64 * 1024);
    let broker = Broker::builder()
        .listener("behind-balancer", listener)
        .proxy_protocol(true)
        // Behind a balancer anonymous access is off by default (clients come from
        // anywhere); this test lets them in to look at the header alone.
        .allow_anonymous(roost::AnonymousAccess::Allow)
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    // With a header: the client address is the one it names.
    let mut s = within(connector.connect()).await.expect("connects");
    within(s.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 5000 1883\r\n"))
        .await
        .expect("writes");
    let ack = exchange(&mut s, Packet::Connect(Box::new(Connect::new(V4, "via")))).await;
    assert!(matches!(ack, Packet::ConnAck(a) if a.reason_code.is_success()));
    // And without credentials, by default, refused: the PROXY protocol on a custom
    // listener turns automatic anonymous access off, as on a network one.
    let (strict_listener, strict_connector) = duplex_listener(64 * 1024);
    let strict = Broker::builder()
        .listener("behind-balancer", strict_listener)
        .proxy_protocol(true)
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    let mut s = within(strict_connector.connect()).await.expect("connects");
    within(s.write_all(b"PROXY TCP4 192.0.2.8 127.0.0.1 5000 1883\r\n"))
        .await
        .expect("writes");
    let ack = exchange(&mut s, Packet::Connect(Box::new(Connect::new(V4, "anon")))).await;
    assert!(matches!(ack, Packet::ConnAck(a) if !a.reason_code.is_success()));
    strict.shutdown().await;
    // Without one: closed.
    let mut bare = within(connector.connect()).await.expect("connects");
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(Connect::new(V4, "bare")))
        .encode(V4, &mut out)
        .expect("encodes");
    let _ = bare.write_all(&out).await;
    let mut buf = [0u8; 8];
    let n = within(bare.read(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_listener_option_before_any_listener_is_an_error() {
    // No setter silently does nothing.
    let started = Broker::builder()
        .listener_max_packet_size(100)
        .sys_interval(None)
        .build()
        .start()
        .await;
    let Err(err) = started else {
        panic!("started without a listener for the option")
    };
    assert!(
        err.to_string().contains("listener_max_packet_size"),
        "{err}"
    );
}
